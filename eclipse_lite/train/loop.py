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
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from eclipse_lite.files import atomic_write_text
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


@dataclass
class RunState:
    """A run's progress: what ``trainer_state.json`` records besides the configs.

    epoch        epochs completed             batch   batches of the current epoch consumed
    global_step  optimizer steps taken        total_steps  steps the run will take
    history      one record per step          val     one record per validation
    best         the best validation record   items_skipped  training items that failed to load
    """

    epoch: int = 0
    batch: int = 0
    global_step: int = 0
    total_steps: int = 0
    history: List[dict] = field(default_factory=list)
    val: List[dict] = field(default_factory=list)
    best: Optional[dict] = None
    train_seconds: float = 0.0
    log_lines: int = 0
    finished: bool = False
    items_skipped: int = 0

    def as_dict(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass
class _Run:
    """The fixed parts of one ``fit`` call: model, optimiser, data, where things go."""

    tc: TrainConfig
    model: nn.Module
    module: nn.Module                 # the TrainingModule, or its DistributedDataParallel
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Optional[torch.amp.GradScaler]
    autocast_dtype: Optional[torch.dtype]
    audio_encoder: Optional[nn.Module]
    trained_encoder: Optional[nn.Module]
    device: torch.device
    world: int
    local_batch: int
    dataset: Dataset
    collate: Callable
    sampler: ShardedBatchSampler
    val_loader: Any
    out: Optional[Path]
    logger: "_JsonlLog"
    callbacks: Sequence[Callable]

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.batches_per_epoch

    @property
    def writes(self) -> bool:
        return self.out is not None and is_main_process()


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
    run, state = _start(model, train_loader, val_loader, tc, out_dir, audio_encoder, resume,
                        callbacks or ())
    stop = False
    model.train()
    wall0 = time.time()
    while not state.finished and not stop:
        if state.epoch >= tc.epochs or state.global_step >= state.total_steps:
            state.finished = True
            break
        stop = _train_epoch(run, state)
        if state.batch >= run.steps_per_epoch:                       # a complete epoch
            stop = _end_epoch(run, state) or stop
        elif state.global_step >= state.total_steps:                 # max_steps ended mid-epoch
            state.finished = True
            if val_loader is not None and _validate(run, state, partial=True):
                _save(run, state, "best")
            _save(run, state, "last")
        else:                                                        # stop requested
            _save(run, state, "last")
    barrier()
    log.info("fit: %d steps in %.1f s (wall %.1f s)", state.global_step, state.train_seconds,
             time.time() - wall0)
    return _result(run, state, stop)


def _check_arguments(tc: TrainConfig, world: int, out: Optional[Path], resume: bool,
                     audio_encoder: Optional[nn.Module], train_loader: Any) -> int:
    """The per-process batch; errors for arguments that cannot work together."""
    if tc.batch_size % world:
        raise ValueError(f"TrainConfig.batch_size={tc.batch_size} is not divisible by the "
                         f"{world} processes")
    local_batch = tc.batch_size // world
    if local_batch < tc.grad_accum_steps:
        raise ValueError(f"each of the {world} processes gets {local_batch} samples per step, "
                         f"fewer than grad_accum_steps={tc.grad_accum_steps}")
    if resume and out is None:
        raise ValueError("resume=True needs out_dir (the run directory holding last/)")
    if tc.train_audio_encoder and audio_encoder is None:
        raise ValueError("TrainConfig.train_audio_encoder=True but no audio_encoder was passed")
    if isinstance(train_loader, DataLoader) and train_loader.batch_size not in (None, local_batch):
        raise ValueError(f"train_loader is a DataLoader with batch_size={train_loader.batch_size}, "
                         f"but fit draws {local_batch} samples per process per step "
                         f"(TrainConfig.batch_size={tc.batch_size} over {world} processes); "
                         "set TrainConfig.batch_size instead")
    return local_batch


def _start(model, train_loader, val_loader, tc: TrainConfig, out_dir, audio_encoder, resume: bool,
           callbacks) -> Tuple[_Run, RunState]:
    """Join the process group, build optimiser and schedule, then resume or seed."""
    info = init_distributed(tc.device)
    device, world = info.device, info.world_size
    out = Path(out_dir) if out_dir is not None else None
    local_batch = _check_arguments(tc, world, out, resume, audio_encoder, train_loader)
    dataset, collate = as_dataset(train_loader, "train_loader")
    sampler = ShardedBatchSampler(len(dataset), tc.batch_size, seed=tc.seed, shuffle=True,
                                  rank=info.rank, world_size=world)
    total_steps = tc.epochs * sampler.batches_per_epoch
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
    state = _resume_or_seed(out, resume, tc, model, optimizer, scheduler, scaler, trained_encoder,
                            RunState(total_steps=total_steps))
    trainee = TrainingModule(model, audio_encoder, tc.train_audio_encoder)
    module: nn.Module = trainee
    if world > 1:
        # find_unused_parameters: the last layer's V2A output is discarded (the audio stream
        # ends there), so those parameters get no gradient.
        module = DistributedDataParallel(trainee, device_ids=[device.index] if device.type == "cuda" else None,
                                         find_unused_parameters=True)
    logger = _JsonlLog(out / "log.jsonl" if out is not None else None, keep=state.log_lines)
    run = _Run(tc=tc, model=model, module=module, optimizer=optimizer, scheduler=scheduler,
               scaler=scaler, autocast_dtype=autocast_dtype, audio_encoder=audio_encoder,
               trained_encoder=trained_encoder, device=device, world=world,
               local_batch=local_batch, dataset=dataset, collate=collate, sampler=sampler,
               val_loader=val_loader, out=out, logger=logger, callbacks=callbacks)
    return run, state


def _resume_or_seed(out: Optional[Path], resume: bool, tc: TrainConfig, model, optimizer, scheduler,
                    scaler, trained_encoder, fresh: RunState) -> RunState:
    """The state stored in ``out/last`` when resuming from it, else ``fresh`` after seeding.

    A fresh run keeps ``log_lines`` 0, so its ``log.jsonl`` starts empty."""
    resumed_from = find_checkpoint(out / "last") if resume else None
    if resume and resumed_from is None:
        log.warning("resume=True but %s has no checkpoint yet: starting a new run", out / "last")
    if resumed_from is None:
        seed_everything(tc.seed)
        if out is not None and (out / "last").exists() and is_main_process():
            log.warning("%s already holds a checkpoint; starting a new run over it "
                        "(pass resume=True to continue it)", out / "last")
        return fresh
    stored = json.loads((resumed_from / "trainer_state.json").read_text())
    check_resumable(stored, tc, getattr(model, "config", None), resumed_from)
    loaded = load_checkpoint(resumed_from, model, optimizer, scheduler, scaler, trained_encoder,
                             restore_rng=True)
    state = RunState(**{k: loaded.get(k, v) for k, v in fresh.as_dict().items()})
    if state.total_steps != fresh.total_steps:
        raise ValueError(f"cannot resume from {resumed_from}: it planned {state.total_steps} "
                         f"steps, this run {fresh.total_steps} (did the training set change size?)")
    log.info("resumed from %s at epoch %d, batch %d, step %d", resumed_from, state.epoch,
             state.batch, state.global_step)
    return state


def _train_epoch(run: _Run, state: RunState) -> bool:
    """The rest of epoch ``state.epoch``, one optimizer step per batch; True = stop requested."""
    epoch, tc, device = state.epoch, run.tc, run.device
    run.sampler.set_epoch(epoch, start_batch=state.batch)
    if hasattr(run.dataset, "set_epoch"):
        run.dataset.set_epoch(epoch)
    loader = epoch_loader(run.dataset, run.collate, run.sampler, epoch, tc, device)
    bar = _tqdm(total=run.steps_per_epoch, initial=state.batch, desc=f"epoch {epoch}",
                disable=not _progress_enabled(tc.progress), leave=False)
    stop = False
    for batch in loader:
        state.batch += 1
        if any_across_ranks(batch is None, device):
            warnings.warn(f"epoch {epoch}, batch {state.batch}: every item of a batch "
                          "failed to load on some process; the batch is skipped")
            state.items_skipped += run.local_batch if batch is None else int(batch.get("num_skipped") or 0)
            bar.update(1)
            continue
        record = _step(run, state, batch)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4f}", step=state.global_step)
        stop = any_across_ranks(_run_callbacks(run.callbacks, "step", record, run.model), device)
        if stop or state.global_step >= state.total_steps:
            break
        if (tc.checkpoint_every and state.global_step % tc.checkpoint_every == 0
                and state.batch < run.steps_per_epoch):
            _save(run, state, "last")
    bar.close()
    return stop


def _step(run: _Run, state: RunState, batch: Dict[str, Any]) -> dict:
    """One optimizer step on ``batch``; its record goes to the history (and the log)."""
    t0 = time.time()
    inputs = batch_inputs(batch, run.model.config, run.device)
    lrs = {g["name"]: g["lr"] for g in run.optimizer.param_groups}
    loss = train_step(run.module, inputs, run.tc.grad_accum_steps, run.autocast_dtype, run.scaler)
    norm, skipped = optimizer_step(run.optimizer, run.scheduler, run.scaler, run.tc.grad_clip,
                                   state.global_step + 1)
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    secs = time.time() - t0
    state.global_step += 1
    state.train_seconds += secs
    record = dict(kind="step", step=state.global_step, epoch=state.epoch, batch=state.batch,
                  loss=loss, lr=lrs, logit_scale=float(run.model.scale().detach()),
                  grad_norm=norm, skipped=skipped, secs=secs)
    if batch.get("num_skipped"):
        record["num_skipped"] = int(batch["num_skipped"])
        state.items_skipped += int(batch["num_skipped"])
    state.history.append(record)
    if state.global_step % run.tc.log_every == 0 or state.global_step == 1:
        run.logger.write(record)
    return record


def _end_epoch(run: _Run, state: RunState) -> bool:
    """After a complete epoch: validate (every ``eval_every``), log, checkpoint; True = stop."""
    epoch = state.epoch
    state.epoch += 1
    state.batch = 0
    state.finished = state.epoch >= run.tc.epochs or state.global_step >= state.total_steps
    improved = False
    if run.val_loader is not None and (state.epoch % run.tc.eval_every == 0 or state.finished):
        improved = _validate(run, state, partial=False)
    epoch_record = dict(kind="epoch", epoch=epoch, step=state.global_step,
                        train_seconds=state.train_seconds)
    run.logger.write(epoch_record)
    if improved:            # best/ first: last/ must never name a best epoch that best/ lacks
        _save(run, state, "best")
    _save(run, state, "last")
    return any_across_ranks(_run_callbacks(run.callbacks, "epoch", epoch_record, run.model), run.device)


def _validate(run: _Run, state: RunState, partial: bool) -> bool:
    """Evaluate on the validation split, record it; True when it is the best so far."""
    metrics = evaluate(run.model, run.val_loader, audio_encoder=run.audio_encoder, device=run.device,
                       batch_size=max(1, run.local_batch), precision=run.tc.precision,
                       num_workers=run.tc.num_workers)
    record = dict(kind="val", epoch=state.epoch - (0 if partial else 1), step=state.global_step,
                  partial=partial, t2v=metrics["t2v"], v2t=metrics["v2t"], n=metrics["n"])
    state.val.append(record)
    run.logger.write(record)
    if state.best is None or _selection_key(record) > _selection_key(state.best):
        state.best = record
        return True
    return False


def _save(run: _Run, state: RunState, which: str) -> None:
    """Checkpoint ``out/last`` (with the optimizer, to resume) or ``out/best`` (rank 0 only)."""
    if not run.writes:
        return
    cfg = getattr(run.model, "config", None)
    payload = dict(state.as_dict(), log_lines=run.logger.lines, train_config=run.tc.to_dict(),
                   model_config=cfg.to_dict() if cfg is not None else None,
                   scheduler=run.scheduler.state_dict(),
                   scaler=run.scaler.state_dict() if run.scaler is not None else None,
                   world_size=run.world)
    optimizer = run.optimizer if which == "last" else None
    save_checkpoint(run.out / which, run.model, payload, optimizer, run.trained_encoder)


def _result(run: _Run, state: RunState, stop: bool) -> FitResult:
    items_skipped = int(state.items_skipped)
    if run.world > 1:
        items_skipped = int(all_gather_variable(torch.tensor([items_skipped], device=run.device)).sum())
    if items_skipped:
        warnings.warn(f"fit: {items_skipped} training item(s) failed to load and were left out of "
                      "their batches (the DecodeError warnings above name the files)")
    best, out = state.best, run.out
    return FitResult(
        items_skipped=items_skipped, steps=list(state.history), val=list(state.val),
        best_epoch=None if best is None else best["epoch"],
        best_metrics=None if best is None else {"t2v": best["t2v"], "v2t": best["v2t"], "n": best["n"]},
        global_step=state.global_step, epochs_completed=state.epoch,
        total_steps=state.total_steps, stopped_early=stop and not state.finished,
        train_seconds=state.train_seconds,
        out_dir=str(out) if out is not None else None,
        last_dir=str(out / "last") if out is not None else None,
        best_dir=str(out / "best") if (out is not None and best is not None) else None,
        log_path=str(out / "log.jsonl") if out is not None else None)
