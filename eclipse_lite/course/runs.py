"""Run reuse for the notebooks: a model is fine-tuned once, then every notebook loads it.

    model, losses, source = finetuned("eclipse", cfg, clips, clip_state, tc, OUT / "models" / "eclipse",
                                      data_dir=data_dir, reuse=earlier_runs("eclipse", SEED, tc))

``finetuned`` loads the first finished run that matches the model, the recipe and the benchmark
(``finished_run``) among the demo's and notebook 04's runs and its own folder, and fine-tunes
only when there is none.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from eclipse_lite.config import ModelConfig
from eclipse_lite.model import ECLIPSE
from eclipse_lite.studies.demo import DEMO_OUT, fine_tune

NOTEBOOK_RUNS = Path("runs/notebooks")
TRAINING_NOTEBOOK = "04_contrastive_training"      # the notebook that fine-tunes the models


def finished_run(run_dir: Path, cfg: ModelConfig, recipe=None,
                 data_dir: Optional[Path] = None) -> Optional[Tuple[Path, dict]]:
    """``(checkpoint dir, trainer state)`` of a finished fine-tuning run in ``run_dir`` (as
    :func:`eclipse_lite.train.loop.fit` writes it: ``best/`` when kept, else ``last/``), or None when
    there is none, it is unfinished, it trained another model than ``cfg``, another recipe than
    ``recipe`` (a TrainConfig; None accepts any), or it is older than the benchmark in
    ``data_dir`` (its ``meta.json`` is written when the benchmark is made)."""
    run_dir = Path(run_dir)
    state_file = run_dir / "last" / "trainer_state.json"
    best = run_dir / "best" if (run_dir / "best" / "model.safetensors").exists() else run_dir / "last"
    if not (state_file.exists() and (best / "model.safetensors").exists()):
        return None
    state = json.loads(state_file.read_text())
    stored = state.get("model_config")
    if (not state.get("finished") or stored is None
            or cfg.fields_differing_from(stored, ignore=("name", "gradient_checkpointing"))):
        return None                                    # unfinished, or another model / preset
    meta = Path(data_dir) / "meta.json" if data_dir is not None else None
    if meta is not None and meta.exists() and state_file.stat().st_mtime < meta.stat().st_mtime:
        return None                                    # trained before the benchmark was remade
    if recipe is not None and state.get("train_config") != recipe.to_dict():
        return None                                    # other settings (e.g. max_steps)
    return best, state


def notebook_out(name: str) -> Path:
    """A notebook's ``OUT_DIR``: ``runs/notebooks/<notebook name>`` (every notebook's parameters
    cell says so; ``tests/test_notebooks.py`` checks it)."""
    return NOTEBOOK_RUNS / name


def earlier_runs(fusion: str, seed: int, recipe) -> List[Tuple[Path, object]]:
    """Where ``make demo`` (``runs/demo/models/<fusion>-seed<seed>``, its own recipe: any is
    accepted) and notebook 04 (``<its OUT_DIR>/models/<fusion>``, only with ``recipe``) leave
    fine-tuned models, relative to the repository root: :func:`finetuned`'s ``reuse``."""
    return [(DEMO_OUT / "models" / f"{fusion}-seed{seed}", None),
            (notebook_out(TRAINING_NOTEBOOK) / "models" / fusion, recipe)]


def finetuned(fusion: str, cfg: ModelConfig, clips, clip_state, tc, out_dir: Path,
              data_dir: Optional[Path] = None,
              reuse: Sequence[Tuple[Path, object]] = ()) -> Tuple[ECLIPSE, List[float], str]:
    """A fine-tuned ``fusion`` model of ``cfg``: ``(model, loss per step, where it came from)``.

    Loads the checkpoint of the first finished run that :func:`finished_run` accepts among
    ``reuse`` (``(run dir, recipe or None)`` pairs, e.g. the demo's and notebook 04's runs) and
    ``out_dir`` with recipe ``tc``; otherwise fine-tunes now into ``out_dir`` (:func:`fine_tune`).
    The notebooks use this so that a model is trained once and then shared between them.
    """
    model_cfg = cfg.replace(fusion=fusion)
    for run_dir, recipe in [*reuse, (Path(out_dir), tc)]:
        found = finished_run(run_dir, model_cfg, recipe, data_dir)
        if found is not None:
            best, state = found
            return ECLIPSE.from_pretrained(best), [r["loss"] for r in state.get("history", [])], str(best)
    model, result = fine_tune(fusion, cfg, clips, clip_state, tc, Path(out_dir))
    return model, result.losses, "fine-tuned now"
