"""The course's layer: what the notebooks use beyond the library, and the teacher's tools.

    import eclipse_lite as el
    from eclipse_lite.course import ensure_benchmark, finetuned, write_metrics, ...

    notebook.py     write_metrics: OUT_DIR/metrics.json, the numbers the notebook tests read
    runs.py         finetuned / earlier_runs: a model is fine-tuned once, then every notebook
                    loads it (the demo's runs and notebook 04's)
    assignments.py  student notebooks made from the teaching ones (``eclipse-lite assignments``)

The set-up a notebook needs (the bundled benchmark, the pretrained towers, the demo's recipe) is
imported here from its layer, so that a notebook imports ``eclipse_lite``, this module, and the
module its lesson is about.
"""
from eclipse_lite.course.notebook import write_metrics
from eclipse_lite.course.runs import earlier_runs, finetuned, notebook_out
from eclipse_lite.data.benchmark import ensure_benchmark, load_benchmark
from eclipse_lite.studies.demo import demo_train_config, pretrain_config_for
from eclipse_lite.train.pretrain import (
           init_from_pretrained,
           pretrained_audio_encoder,
           pretrained_towers,
)

__all__ = ["write_metrics", "earlier_runs", "finetuned", "notebook_out", "ensure_benchmark",
           "load_benchmark", "demo_train_config", "pretrain_config_for", "init_from_pretrained",
           "pretrained_audio_encoder", "pretrained_towers"]
