"""eclipse_lite.course.runs.finetuned: the notebooks train a model once and then share it, but never
reuse a run of another model, another recipe, an unfinished one, or one older than the data."""
import inspect
import json
import os
from pathlib import Path

import torch
from test_train import Pairs, tc_

import eclipse_lite as el
from eclipse_lite.config import ModelConfig
from eclipse_lite.course.runs import earlier_runs, finetuned, finished_run, notebook_out
from eclipse_lite.studies.demo import fine_tune, run_demo

ROOT = Path(__file__).resolve().parent.parent


def towers(cfg):
    torch.manual_seed(0)
    model = el.ECLIPSE(cfg.replace(fusion="none"))
    return {k: v for k, v in model.state_dict().items() if not model.is_new_parameter(k)}


def test_finetuned_trains_once_then_reuses_only_a_matching_finished_run(tmp_path):
    cfg = ModelConfig.preset("ci")
    clip_state, clips, tc = towers(cfg), {"train": Pairs(8), "val": Pairs(4, seed=1)}, tc_(epochs=1)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    meta = data_dir / "meta.json"
    meta.write_text("{}")
    os.utime(meta, (1e9, 1e9))
    out = tmp_path / "mine"

    model, losses, source = finetuned("eclipse", cfg, clips, clip_state, tc, out, data_dir)
    assert source == "fine-tuned now" and len(losses) == 1
    loaded, loaded_losses, loaded_source = finetuned("eclipse", cfg, clips, clip_state, tc, out, data_dir)
    assert loaded_source == str(out / "best") and loaded_losses == losses
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    # the same seed and recipe give the same model without the reuse logic
    again, _ = fine_tune("eclipse", cfg, clips, clip_state, tc, None)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))

    eclipse = cfg.replace(fusion="eclipse")
    assert finished_run(out, eclipse, tc, data_dir)[0] == out / "best"
    assert finished_run(out, eclipse, None, data_dir) is not None          # None: any recipe
    assert finished_run(out, eclipse, tc_(epochs=2), data_dir) is None     # another recipe
    assert finished_run(out, cfg.replace(fusion="a2v"), tc, data_dir) is None       # another model
    assert finished_run(out, eclipse.replace(gradient_checkpointing=True), tc, data_dir) is not None
    assert finished_run(tmp_path / "nothing-here", eclipse, tc, data_dir) is None

    # a run in `reuse` is taken before training into out_dir, whatever its recipe when None
    other_out = tmp_path / "other"
    _, _, source = finetuned("eclipse", cfg, clips, clip_state, tc_(epochs=2), other_out, data_dir,
                             reuse=[(tmp_path / "missing", None), (out, None)])
    assert source == str(out / "best") and not other_out.exists()

    # unfinished: not reused
    state_file = out / "last" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps(dict(state, finished=False)))
    assert finished_run(out, eclipse, tc, data_dir) is None
    state_file.write_text(json.dumps(state))
    assert finished_run(out, eclipse, tc, data_dir) is not None

    # the benchmark was remade after the run: trained again
    os.utime(meta, None)
    os.utime(state_file, (1e9 - 10, 1e9 - 10))
    assert finished_run(out, eclipse, tc, data_dir) is None
    assert finished_run(out, eclipse, tc, None) is not None                 # no data dir to compare
    _, _, source = finetuned("eclipse", cfg, clips, clip_state, tc, out, data_dir)
    assert source == "fine-tuned now"
    assert finished_run(out, eclipse, tc, data_dir) is not None


def test_earlier_runs_are_where_the_demo_and_notebook_04_write_their_models():
    """finetuned's reuse list follows run_demo's default out and the notebooks' OUT_DIR rule
    (runs/notebooks/<name>, which tests/test_notebooks.py checks in every parameters cell)."""
    demo_out = inspect.signature(run_demo).parameters["out"].default
    tc = tc_()
    assert notebook_out("04_contrastive_training") == Path("runs/notebooks/04_contrastive_training")
    assert (ROOT / "notebooks" / "04_contrastive_training.ipynb").exists()
    assert earlier_runs("none", 3, tc) == [
        (Path(demo_out) / "models" / "none-seed3", None),
        (notebook_out("04_contrastive_training") / "models" / "none", tc)]
