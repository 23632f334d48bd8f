"""The one route from any dataset into ``fit``: train, keep the best epoch, score the test split.

    res = train_and_test(model, {"train": ..., "val": ..., "test": ...}, tc, "runs/x")
    res["t2v"]["R@1"], res["best_epoch"]

The splits are any map-style datasets ``fit`` takes: the bundled benchmark decoded in memory
(``data.benchmark.load_benchmark``) or real manifests streamed from disk with cached or
on-the-fly audio (``train.realdata.make_datasets``). ``eclipse-lite train``, ``eval``, the demo and
the ablations all score through here, so one model gets one number whichever command asked.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Optional

from torch import nn
from torch.utils.data import Dataset

from eclipse_lite.checkpoints import read_state_dict
from eclipse_lite.train.config import TrainConfig
from eclipse_lite.train.evaluate import evaluate
from eclipse_lite.train.loop import FitResult, fit

EVAL_BATCH = 64                          # videos per evaluation batch (train's test = eval's)


def fit_best(model: nn.Module, train: Dataset, val: Optional[Dataset], tc: TrainConfig,
             out_dir: Any = None, audio_encoder: Optional[nn.Module] = None,
             resume: bool = False) -> FitResult:
    """``fit``, then load the best validation epoch's weights (``out_dir/best``) into ``model``.

    Raises RuntimeError when ``out_dir/best`` is missing or holds another epoch than the run's
    best one (a run folder damaged by hand or by an older version): the test split is never
    scored with weights that are not the ones validation chose.
    """
    result = fit(model, train, val, tc, out_dir=out_dir, audio_encoder=audio_encoder, resume=resume)
    if result.best_dir is not None:
        best = Path(result.best_dir)
        _check_best(best, result)
        model.load_state_dict(read_state_dict(best / "model.safetensors"))
    return result


def _check_best(best: Path, result: FitResult) -> None:
    """``best`` holds the weights of the run's best validation epoch, or an error says why not."""
    where = f"{best} should hold the weights of validation epoch {result.best_epoch}"
    state_file = best / "trainer_state.json"
    if not (state_file.is_file() and (best / "model.safetensors").is_file()):
        raise RuntimeError(f"{where}, but it has no complete checkpoint; train again into a new "
                           "--out (or delete this run folder)")
    stored = json.loads(state_file.read_text()).get("best") or {}
    if stored.get("epoch") != result.best_epoch or stored.get("t2v") != (result.best_metrics or {}).get("t2v"):
        raise RuntimeError(f"{where}, but it holds epoch {stored.get('epoch')}; train again into a "
                           "new --out (or delete this run folder)")


def score_split(model: nn.Module, dataset: Dataset, audio_encoder: Optional[nn.Module] = None,
                device: Any = None, precision: str = "auto", num_workers: int = 0,
                return_sim: bool = False) -> dict:
    """``evaluate`` with the batch size every command uses (same numbers)."""
    return evaluate(model, dataset, audio_encoder=audio_encoder, device=device,
                    batch_size=EVAL_BATCH, precision=precision, num_workers=num_workers,
                    return_sim=return_sim)


def train_and_test(model: nn.Module, data: Dict[str, Dataset], tc: TrainConfig, out_dir: Any,
                   audio_encoder: Optional[nn.Module] = None, resume: bool = False,
                   return_sim: bool = False) -> dict:
    """:func:`fit_best` on ``data["train"]`` (best epoch on ``data["val"]``, checkpoints in
    ``out_dir``), then the best weights on ``data["test"]``.

    Returns ``{"t2v", "v2t"}`` (test metrics) plus ``"best_epoch"``, ``"val"`` (its validation
    metrics), ``"steps"``, ``"train_seconds"`` (optimizer steps only), ``"fit_seconds"`` (the whole
    of ``fit``, validation and checkpoints included), ``"losses"`` (one per step) and, with
    ``return_sim``, ``"sim"`` (test ``[N, N]``).
    """
    t0 = time.time()
    result = fit_best(model, data["train"], data["val"], tc, out_dir, audio_encoder, resume)
    fit_seconds = time.time() - t0
    test = score_split(model, data["test"], audio_encoder, precision=tc.precision,
                       num_workers=tc.num_workers, return_sim=return_sim)
    return {"t2v": test["t2v"], "v2t": test["v2t"], "best_epoch": result.best_epoch,
            "val": result.best_metrics, "steps": result.global_step,
            "train_seconds": result.train_seconds, "fit_seconds": fit_seconds,
            "losses": result.losses, "sim": test.get("sim")}
