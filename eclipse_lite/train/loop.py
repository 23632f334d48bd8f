"""``fit``: contrastive fine-tuning with validation, checkpoints and resumption.

    result = fit(model, train_set, val_set, tc, out_dir="runs/x")      # resume=True continues

Each step is ``step.train_step`` + ``step.optimizer_step`` on a batch of a
:class:`~eclipse_lite.train.distributed.ShardedBatchSampler`; the symmetric InfoNCE (Sec. 3.3,
``losses.py``) is taken over the batch gathered from all processes under ``torchrun``.
Checkpoints and resumption: ``state.py``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from eclipse_lite.checkpoints import atomic_write_text
from eclipse_lite.train.config import TrainConfig, resolve_precision, seed_everything
from eclipse_lite.train.distributed import (
    ShardedBatchSampler,
    all_gather_variable,
    any_across_ranks,
    barrier,
    init_distributed,
    is_main_process,
)
from eclipse_lite.train.evaluate import evaluate
from eclipse_lite.train.optim import build_optimizer, build_scheduler
from eclipse_lite.train.state import (
    check_resumable,
    find_checkpoint,
    json_ready,
    load_checkpoint,
    save_checkpoint,
)
from eclipse_lite.train.step import (
    TrainingModule,
    as_dataset,
    batch_inputs,
    optimizer_step,
    train_step,
)

log = logging.getLogger(__name__)



def epoch_loader(dataset: Dataset, collate: Callable, sampler: ShardedBatchSampler, epoch: int,
                 tc: TrainConfig, device: torch.device) -> DataLoader:
    """The DataLoader of one epoch: ``sampler``'s batches, worker seeds drawn from a generator
    seeded by ``(seed, epoch)`` (the global RNG is not touched, which keeps resumption exact)."""
    generator = torch.Generator()
    generator.manual_seed(int(np.random.default_rng([tc.seed, epoch, 7]).integers(2 ** 62)))
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                      num_workers=tc.num_workers, pin_memory=device.type == "cuda",
                      generator=generator)


def _progress_enabled(tc_progress: bool = True) -> bool:
    ci = os.environ.get("CI", "")
    return bool(tc_progress) and is_main_process() and ci in ("", "0", "false", "False")


def _tqdm(**kw):
    from tqdm.auto import tqdm
    return tqdm(**kw)


class _JsonlLog:
    """``log.jsonl`` of rank 0: one JSON object per line, flushed per line. Resuming keeps the
    first ``keep`` lines (those written before the checkpoint) and drops the rest."""

    def __init__(self, path: Optional[Path], keep: int = 0) -> None:
        self.path, self.lines = path, 0
        if path is None or not is_main_process():
            self.path = None
            return
        kept: List[str] = []
        if keep and path.exists():
            kept = path.read_text().splitlines()[:keep]
        atomic_write_text("".join(line + "\n" for line in kept), path)
        self.lines = len(kept)

    def write(self, record: dict) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(json_ready(record), allow_nan=False) + "\n")
        self.lines += 1




@dataclass
class FitResult:
    """What ``fit`` did.

    steps       one record per optimizer step: step (1-based), epoch (0-based), batch (batches
                of that epoch consumed), loss (global batch), lr {group: lr used}, logit_scale,
                grad_norm (before clipping; None if not finite), skipped (fp16 overflow), secs.
    val         one record per validation: epoch, step, partial (the run ended mid-epoch),
                t2v, v2t (``retrieval_metrics``), n.
    best_epoch  epoch of the best validation T2V R@1 (R@5 breaks ties); None without validation.
    items_skipped  training items that failed to load over the whole run (all processes; a
                whole batch that failed counts as its size), also warned about at the end.
    """

    steps: List[dict] = field(default_factory=list)
    val: List[dict] = field(default_factory=list)
    best_epoch: Optional[int] = None
    best_metrics: Optional[dict] = None
    global_step: int = 0
    epochs_completed: int = 0
    total_steps: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0
    out_dir: Optional[str] = None
    last_dir: Optional[str] = None
    best_dir: Optional[str] = None
    log_path: Optional[str] = None
    items_skipped: int = 0

    @property
    def losses(self) -> List[float]:
        return [r["loss"] for r in self.steps]

    def to_dict(self) -> dict:
        return json_ready(dataclasses.asdict(self))


def _selection_key(metrics: dict) -> Tuple[float, float]:
    """Best-epoch criterion: validation T2V R@1, then R@5."""
    return float(metrics["t2v"]["R@1"]), float(metrics["t2v"]["R@5"])



def _run_callbacks(callbacks, event: str, record: dict, model: nn.Module) -> bool:
    stop = False
    for cb in callbacks or ():
        if cb(event, record, model):
            stop = True
    return stop


def fit(model: nn.Module, train_loader: Union[Dataset, DataLoader],
        val_loader: Union[Dataset, DataLoader, None] = None, tc: Optional[TrainConfig] = None,
        out_dir: Union[str, Path, None] = None, audio_encoder: Optional[nn.Module] = None,
        resume: bool = False,
        callbacks: Optional[Sequence[Callable[[str, dict, nn.Module], Optional[bool]]]] = None) -> FitResult:
    """Train ``model`` contrastively; validate, checkpoint, log. Works unchanged under ``torchrun``.

    Args:
        model: an ``ECLIPSE`` (any fusion). Moved to the device; trained in place.
        train_loader: a map-style Dataset, or a DataLoader over one, whose collated batches
            (the DataLoader's collate_fn, else the dataset's ``collate`` attribute, else torch's
            default) are dicts with "frames" [B,T,3,H,W], "frame_mask" [B,T], "audio"
            (embeddings [B,T,A], or windows [B,T,W] with ``audio_encoder``), "audio_mask" [B,T],
            "caption" list[str], "video_id" list[str]. Of a DataLoader only the dataset,
            collate_fn and batch size (which must be ``tc.batch_size`` / processes) are used:
            batches come from a :class:`ShardedBatchSampler` (seeded per epoch, sharded over
            processes, resumable) with ``tc.num_workers`` workers.
        val_loader: the *validation* split (Dataset or DataLoader, same format); the best epoch
            is chosen on it (T2V R@1, then R@5). Never pass the test split here.
        tc: the :class:`TrainConfig`.
        out_dir: where ``log.jsonl``, ``last/`` and ``best/`` go (rank 0 writes). None: nothing
            is written.
        audio_encoder: turns waveform windows into per-frame embeddings; frozen (eval mode, no
            gradient) unless ``tc.train_audio_encoder``.
        resume: continue from ``out_dir/last`` when it exists (model, optimizer, schedule, scaler,
            RNG, data position, history): the continued run computes what the uninterrupted one
            would have. Starts fresh, with a warning, when there is no checkpoint yet.
        callbacks: ``cb(event, record, model)`` with event "step" (after every optimizer step) or
            "epoch" (after every completed epoch, its validation and checkpoint); called on every
            process. Returning True requests a stop: ``last/`` is saved and ``fit`` returns
            (``stopped_early``); an exception propagates without saving.
    Returns:
        :class:`FitResult`.

    Under ``torchrun`` the process group is joined here (:func:`init_distributed`) and left
    open; call ``eclipse_lite.train.distributed.cleanup_distributed()`` when the program is done.
    """
    tc = TrainConfig() if tc is None else tc
    tc.validate()
    info = init_distributed(tc.device)
    device, world = info.device, info.world_size
    if tc.batch_size % world:
        raise ValueError(f"TrainConfig.batch_size={tc.batch_size} is not divisible by the "
                         f"{world} processes")
    local_batch = tc.batch_size // world
    if local_batch < tc.grad_accum_steps:
        raise ValueError(f"each of the {world} processes gets {local_batch} samples per step, "
                         f"fewer than grad_accum_steps={tc.grad_accum_steps}")
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ValueError("resume=True needs out_dir (the run directory holding last/)")
    if tc.train_audio_encoder and audio_encoder is None:
        raise ValueError("TrainConfig.train_audio_encoder=True but no audio_encoder was passed")
    dataset, collate = as_dataset(train_loader, "train_loader")
    if isinstance(train_loader, DataLoader) and train_loader.batch_size not in (None, local_batch):
        raise ValueError(f"train_loader is a DataLoader with batch_size={train_loader.batch_size}, "
                         f"but fit draws {local_batch} samples per process per step "
                         f"(TrainConfig.batch_size={tc.batch_size} over {world} processes); "
                         "set TrainConfig.batch_size instead")
    sampler = ShardedBatchSampler(len(dataset), tc.batch_size, seed=tc.seed, shuffle=True,
                                  rank=info.rank, world_size=world)
    steps_per_epoch = sampler.batches_per_epoch
    total_steps = tc.epochs * steps_per_epoch
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps)

    cfg = getattr(model, "config", None)
    if tc.gradient_checkpointing is not None:
        if cfg is None:
            raise ValueError("gradient_checkpointing needs a model with a .config")
        cfg.gradient_checkpointing = bool(tc.gradient_checkpointing)
    model.to(device)
    if audio_encoder is not None:
        audio_encoder.to(device)
        audio_encoder.train(tc.train_audio_encoder)
    autocast_dtype, use_scaler = resolve_precision(tc.precision, device)
    scaler = torch.amp.GradScaler(device.type) if use_scaler else None
    trained_encoder = audio_encoder if tc.train_audio_encoder else None
    optimizer = build_optimizer(model, tc, trained_encoder)
    scheduler = build_scheduler(optimizer, tc, total_steps)

    state: Dict[str, Any] = dict(epoch=0, batch=0, global_step=0, total_steps=total_steps,
                                 history=[], val=[], best=None, train_seconds=0.0, log_lines=0,
                                 finished=False, items_skipped=0)
    resumed_from = None
    if resume:
        resumed_from = find_checkpoint(out / "last")
        if resumed_from is None:
            log.warning("resume=True but %s has no checkpoint yet: starting a new run", out / "last")
    if resumed_from is not None:
        stored = json.loads((resumed_from / "trainer_state.json").read_text())
        check_resumable(stored, tc, cfg, resumed_from)
        loaded = load_checkpoint(resumed_from, model, optimizer, scheduler, scaler,
                                 trained_encoder, restore_rng=True)
        for key in state:
            if key in loaded:
                state[key] = loaded[key]
        if state["total_steps"] != total_steps:
            raise ValueError(f"cannot resume from {resumed_from}: it planned {state['total_steps']} "
                             f"steps, this run {total_steps} (did the training set change size?)")
        log.info("resumed from %s at epoch %d, batch %d, step %d", resumed_from, state["epoch"],
                 state["batch"], state["global_step"])
    else:
        seed_everything(tc.seed)
        if out is not None and (out / "last").exists() and is_main_process():
            log.warning("%s already holds a checkpoint; starting a new run over it "
                        "(pass resume=True to continue it)", out / "last")

    trainee = TrainingModule(model, audio_encoder, tc.train_audio_encoder)
    module: nn.Module = trainee
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        # find_unused_parameters: the last layer's V2A output is discarded (the audio stream
        # ends there), so those parameters get no gradient.
        module = DistributedDataParallel(trainee, device_ids=[device.index] if device.type == "cuda" else None,
                                         find_unused_parameters=True)
    main = is_main_process()
    write = out is not None and main
    logger = _JsonlLog(out / "log.jsonl" if out is not None else None,
                       keep=state["log_lines"] if resumed_from is not None else 0)

    def checkpoint_state() -> dict:
        return dict(state, log_lines=logger.lines, train_config=tc.to_dict(),
                    model_config=cfg.to_dict() if cfg is not None else None,
                    scheduler=scheduler.state_dict(),
                    scaler=scaler.state_dict() if scaler is not None else None,
                    world_size=world)

    def save_last() -> None:
        if write:
            save_checkpoint(out / "last", model, checkpoint_state(), optimizer, trained_encoder)

    def validate(partial: bool) -> bool:
        """Evaluate on val_loader, record, return whether it is the best so far."""
        metrics = evaluate(model, val_loader, audio_encoder=audio_encoder, device=device,
                           batch_size=max(1, local_batch), precision=tc.precision,
                           num_workers=tc.num_workers)
        record = dict(kind="val", epoch=state["epoch"] - (0 if partial else 1),
                      step=state["global_step"], partial=partial, t2v=metrics["t2v"],
                      v2t=metrics["v2t"], n=metrics["n"])
        state["val"].append(record)
        logger.write(record)
        best = state["best"]
        if best is None or _selection_key(record) > _selection_key(best):
            state["best"] = record
            return True
        return False

    stop = False
    model.train()
    wall0 = time.time()
    while not state["finished"] and not stop:
        if state["epoch"] >= tc.epochs or state["global_step"] >= total_steps:
            state["finished"] = True
            break
        epoch = state["epoch"]
        sampler.set_epoch(epoch, start_batch=state["batch"])
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        loader = epoch_loader(dataset, collate, sampler, epoch, tc, device)
        bar = _tqdm(total=steps_per_epoch, initial=state["batch"], desc=f"epoch {epoch}",
                    disable=not _progress_enabled(tc.progress), leave=False)
        for batch in loader:
            state["batch"] += 1
            if any_across_ranks(batch is None, device):
                warnings.warn(f"epoch {epoch}, batch {state['batch']}: every item of a batch "
                              "failed to load on some process; the batch is skipped")
                state["items_skipped"] += local_batch if batch is None else int(batch.get("num_skipped") or 0)
                bar.update(1)
                continue
            t0 = time.time()
            inputs = batch_inputs(batch, model.config, device)
            lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
            loss = train_step(module, inputs, tc.grad_accum_steps, autocast_dtype, scaler)
            norm, skipped = optimizer_step(optimizer, scheduler, scaler, tc.grad_clip,
                                           state["global_step"] + 1)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            secs = time.time() - t0
            state["global_step"] += 1
            state["train_seconds"] += secs
            record = dict(kind="step", step=state["global_step"], epoch=epoch, batch=state["batch"],
                          loss=loss, lr=lrs, logit_scale=float(model.scale().detach()),
                          grad_norm=norm, skipped=skipped, secs=secs)
            if batch.get("num_skipped"):
                record["num_skipped"] = int(batch["num_skipped"])
                state["items_skipped"] += int(batch["num_skipped"])
            state["history"].append(record)
            if state["global_step"] % tc.log_every == 0 or state["global_step"] == 1:
                logger.write(record)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", step=state["global_step"])
            stop = any_across_ranks(_run_callbacks(callbacks, "step", record, model), device)
            if stop or state["global_step"] >= total_steps:
                break
            if (tc.checkpoint_every and state["global_step"] % tc.checkpoint_every == 0
                    and state["batch"] < steps_per_epoch):
                save_last()
        bar.close()
        if state["batch"] >= steps_per_epoch:                       # a complete epoch
            state["epoch"] += 1
            state["batch"] = 0
            done = state["epoch"] >= tc.epochs or state["global_step"] >= total_steps
            state["finished"] = done
            improved = False
            if val_loader is not None and (state["epoch"] % tc.eval_every == 0 or done):
                improved = validate(partial=False)
            epoch_record = dict(kind="epoch", epoch=epoch, step=state["global_step"],
                                train_seconds=state["train_seconds"])
            logger.write(epoch_record)
            save_last()
            if improved and write:
                save_checkpoint(out / "best", model, checkpoint_state(), None, trained_encoder)
            if any_across_ranks(_run_callbacks(callbacks, "epoch", epoch_record, model), device):
                stop = True
        elif state["global_step"] >= total_steps:                  # max_steps ended mid-epoch
            state["finished"] = True
            if val_loader is not None and validate(partial=True) and write:
                save_checkpoint(out / "best", model, checkpoint_state(), None, trained_encoder)
            save_last()
        else:                                                        # stop requested
            save_last()
    barrier()
    best = state["best"]
    items_skipped = int(state["items_skipped"])
    if world > 1:
        items_skipped = int(all_gather_variable(torch.tensor([items_skipped], device=device)).sum())
    if items_skipped:
        warnings.warn(f"fit: {items_skipped} training item(s) failed to load and were left out of "
                      "their batches (the DecodeError warnings above name the files)")
    result = FitResult(
        items_skipped=items_skipped,
        steps=list(state["history"]), val=list(state["val"]),
        best_epoch=None if best is None else best["epoch"],
        best_metrics=None if best is None else {"t2v": best["t2v"], "v2t": best["v2t"], "n": best["n"]},
        global_step=state["global_step"], epochs_completed=state["epoch"],
        total_steps=total_steps, stopped_early=stop and not state["finished"],
        train_seconds=state["train_seconds"],
        out_dir=str(out) if out is not None else None,
        last_dir=str(out / "last") if out is not None else None,
        best_dir=str(out / "best") if (out is not None and best is not None) else None,
        log_path=str(out / "log.jsonl") if out is not None else None)
    log.info("fit: %d steps in %.1f s (wall %.1f s)", state["global_step"], state["train_seconds"],
             time.time() - wall0)
    return result
