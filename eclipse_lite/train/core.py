"""Training and evaluation: ``fit``, ``evaluate``, checkpoints, results files.

    tc = TrainConfig(epochs=5, batch_size=32, lr_clip=1e-4, lr_new=1e-4)
    result = fit(model, train_set, val_set, tc, out_dir="runs/x")      # resume=True continues
    metrics = evaluate(model, test_set)            # {"t2v": {...}, "v2t": {...}, "n": N}
    write_results("runs/x/results.json", metrics, model.config, tc, seed=tc.seed)

The recipe (ECLIPSE Sec. 4 "Training details" and the released CLIP4Clip-style code): AdamW in
two learning-rate groups — the pretrained CLIP weights at a small rate (paper: 1e-7), the new
audiovisual blocks and audio projection at their own — weight decay 0.2 except on norms, biases,
positional/class embeddings and the temperature; linear warm-up then cosine decay to zero;
gradient-norm clipping at 1.0; the symmetric InfoNCE of CLIP4Clip (``losses.py``) over the
batch, gathered over all processes under ``torchrun`` (``distributed.py``).

Memory (the ``base`` preset on one GPU): autocast mixed precision (bf16 where the GPU has it,
else fp16 with a gradient scaler), per-layer gradient checkpointing
(``ModelConfig.gradient_checkpointing``), and gradient accumulation that is *exact* for the
contrastive loss (every sample still sees all ``batch_size - 1`` negatives; see
:func:`train_step`). :func:`estimate_peak_memory` computes the peak.

Checkpoints: ``out_dir/last/`` holds ``model.safetensors`` + ``config.json`` (loadable with
``ECLIPSE.from_pretrained``), ``optimizer.safetensors`` (AdamW moments and RNG tensors) and
``trainer_state.json`` (everything else: schedule, scaler, RNG, data position, history);
``out_dir/best/`` (best validation epoch) the same without the optimizer file, which would
double its size and is only needed to resume. A directory is written whole under a temporary
name and swapped in with renames (see :func:`save_checkpoint`), so a crash never leaves a broken
``last``.
Resuming restores all of it and skips the batches the interrupted epoch already used, so a
resumed run reproduces the uninterrupted loss curve bit for bit on a CPU.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset
from torch.utils.data.dataloader import default_collate

from eclipse_lite.checkpoints import atomic_save_safetensors, atomic_write_text, read_state_dict
from eclipse_lite.config import ModelConfig
from eclipse_lite.train.distributed import (ShardedBatchSampler, ShardedEvalSampler, all_gather_variable,
                          any_across_ranks, barrier, get_world_size, global_infonce,
                          init_distributed, is_main_process, resolve_device)
from eclipse_lite.metrics import retrieval_metrics
from eclipse_lite.tokenizer import tokenize

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "FitResult", "fit", "evaluate", "write_results", "build_optimizer",
           "build_scheduler", "param_groups", "lr_factor", "WarmupCosine", "train_step",
           "resolve_precision", "save_checkpoint", "load_checkpoint", "find_checkpoint",
           "seed_everything", "git_commit", "estimate_peak_memory", "estimate_base_memory",
           "TrainingModule", "batch_inputs", "prepare_audio", "optimizer_step", "epoch_loader",
           "no_weight_decay", "warmup_steps_for", "split_inputs"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
STATE_FORMAT = 1
# TrainConfig fields that may change between an interrupted run and its resumption: they do not
# change what is computed. Every other field must match (or the "resumed" run is another run).
RESUMABLE_CHANGES = ("log_every", "num_workers", "device", "checkpoint_every", "progress")


# =============================================================================================
# configuration
# =============================================================================================
@dataclass
class TrainConfig:
    """Everything ``fit`` needs besides the model and the data. JSON round-trips.

    batch_size        global batch per optimizer step (all processes and micro-batches
                      together); the contrastive loss sees all of it. Paper: 64.
    epochs, max_steps the run is ``epochs`` passes, cut at ``max_steps`` optimizer steps when set;
                      the warm-up/cosine schedule spans the steps actually run.
    lr_clip           learning rate of the pretrained CLIP weights. The paper uses 1e-7 on
                      ViT-B/32 from OpenAI's weights (``TrainConfig.paper()``); our default 1e-4
                      suits the ``ci``/``tiny`` towers, which are small, pretrained on the
                      bundled generator only, and fine-tuned for minutes instead of 20 epochs.
    lr_new            learning rate of what CLIP does not have: AV blocks (A2V/V2A, Eq. 3-4),
                      audio projection, audio-only head. The paper does not print it (its
                      scripts set it per dataset); 1e-4 is CLIP4Clip's base rate. The tiny
                      prototype got *worse* with this raised 10x (issue 5), hence equal defaults.
    lr_audio_encoder  only with ``train_audio_encoder``; ``None`` = ``lr_clip`` (a pretrained net).
    weight_decay      0.2 (paper), not on norms, biases, position/class embeddings, temperature.
    betas, eps        AdamW; CLIP's (0.9, 0.98), 1e-6.
    warmup_fraction   linear warm-up over this fraction of the steps, then cosine to zero.
    grad_clip         max global gradient norm (``None`` = no clipping; the norm is still logged).
    grad_accum_steps  split each batch into this many micro-batches (exact; see ``train_step``).
    precision         "auto" (bf16 on CUDA where supported, else fp16 + GradScaler; fp32 on
                      CPU), or "fp32", "bf16", "fp16" explicitly (bf16/fp16 autocast also run
                      on a CPU, slowly — useful for tests).
    gradient_checkpointing  True/False sets ``model.config.gradient_checkpointing``; None leaves it.
    train_audio_encoder     fine-tune the ``audio_encoder`` passed to ``fit`` (default: frozen,
                      run without gradients in eval mode, as the paper's precomputed features).
    seed              seeds python/numpy/torch and the data order (permutation per (seed, epoch)).
    eval_every        evaluate on the validation set every this many epochs (and after the last).
    log_every         write every n-th step record to ``log.jsonl`` (the history keeps all).
    checkpoint_every  also save ``last/`` every n optimizer steps (default: end of epoch and run).
    num_workers       DataLoader worker processes.
    device            "auto", "cpu", "cuda", "cuda:1", ... (under torchrun: cuda:LOCAL_RANK).
    progress          tqdm progress bars (always off when the environment variable CI is set).
    """

    epochs: int = 10
    max_steps: Optional[int] = None
    batch_size: int = 32
    lr_clip: float = 1e-4
    lr_new: float = 1e-4
    lr_audio_encoder: Optional[float] = None
    weight_decay: float = 0.2
    betas: Tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_fraction: float = 0.1
    grad_clip: Optional[float] = 1.0
    grad_accum_steps: int = 1
    precision: str = "auto"
    gradient_checkpointing: Optional[bool] = None
    train_audio_encoder: bool = False
    seed: int = 0
    eval_every: int = 1
    log_every: int = 10
    checkpoint_every: Optional[int] = None
    num_workers: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field whose value cannot work."""
        def positive_int(name: str, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {v!r}")

        for name in ("epochs", "batch_size", "grad_accum_steps", "eval_every", "log_every"):
            positive_int(name)
        for name in ("max_steps", "checkpoint_every"):
            positive_int(name, allow_none=True)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"TrainConfig.seed must be an integer, got {self.seed!r}")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"TrainConfig.num_workers must be >= 0, got {self.num_workers!r}")
        for name in ("lr_clip", "lr_new", "lr_audio_encoder"):
            v = getattr(self, name)
            if v is None and name == "lr_audio_encoder":
                continue
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"TrainConfig.{name} must be a finite number >= 0, got {v!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        if not self.eps > 0:
            raise ValueError(f"TrainConfig.eps must be positive, got {self.eps!r}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"TrainConfig.warmup_fraction must be in [0, 1), got "
                             f"{self.warmup_fraction!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be positive or None, got {self.grad_clip!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision={self.precision!r} is not one of {PRECISIONS}")
        if self.gradient_checkpointing not in (None, True, False):
            raise ValueError(f"TrainConfig.gradient_checkpointing must be True, False or None, "
                             f"got {self.gradient_checkpointing!r}")
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(f"TrainConfig.batch_size={self.batch_size} is not divisible by "
                             f"grad_accum_steps={self.grad_accum_steps}")

    @classmethod
    def paper(cls, **overrides: Any) -> "TrainConfig":
        """The paper's recipe for the ``base`` preset: batch 64, CLIP at lr 1e-7, AV blocks at
        1e-4 (CLIP4Clip's base rate; the paper does not print its own), weight decay 0.2, mixed
        precision, gradient checkpointing (to fit one 24 GB GPU). The paper does not state the
        number of epochs (the released scripts allow up to 40): pass ``epochs=``."""
        values = dict(batch_size=64, lr_clip=1e-7, lr_new=1e-4, weight_decay=0.2,
                      precision="auto", gradient_checkpointing=True)
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(d["betas"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def resolve_precision(precision: str, device: Union[str, torch.device]) -> Tuple[Optional[torch.dtype], bool]:
    """``(autocast dtype or None for fp32, use a GradScaler)`` for a precision name on a device.

    "auto": CUDA → bf16 when ``torch.cuda.is_bf16_supported()`` (Ampere and later), else fp16
    with a gradient scaler; CPU → fp32. Explicit "bf16"/"fp16" also run on a CPU (autocast).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}")
    device = torch.device(device)
    if precision == "auto":
        if device.type != "cuda":
            return None, False
        return (torch.bfloat16, False) if torch.cuda.is_bf16_supported() else (torch.float16, True)
    if precision == "fp32":
        return None, False
    if precision == "bf16":
        return torch.bfloat16, False
    return torch.float16, True


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


# =============================================================================================
# optimizer and schedule
# =============================================================================================
def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """True for parameters AdamW must not decay: biases and norm weights (every tensor with fewer
    than 2 dimensions — this includes the class embedding and the temperature ``logit_scale``),
    and the positional embeddings."""
    return param.ndim < 2 or "position_embedding" in name or name.endswith("class_embedding") \
        or name.endswith("logit_scale")


def param_groups(model: nn.Module, tc: TrainConfig,
                 audio_encoder: Optional[nn.Module] = None) -> List[dict]:
    """AdamW parameter groups: {CLIP, new} x {decay, no decay} (+ audio encoder when trained).

    "new" = ``model.is_new_parameter(name)`` (AV blocks, audio projection, audio-only head) at
    ``tc.lr_new``; everything else is CLIP's at ``tc.lr_clip``. Frozen parameters
    (``requires_grad=False``) are left out; empty groups are dropped. Each group carries a
    ``"name"`` key (``clip_decay``, ``clip_no_decay``, ``new_decay``, ...) used in the logs.
    """
    is_new = getattr(model, "is_new_parameter", lambda name: False)
    buckets: Dict[str, List[nn.Parameter]] = {}
    settings: Dict[str, Tuple[float, float]] = {}

    def add(prefix: str, lr: float, named) -> None:
        for name, p in named:
            if not p.requires_grad:
                continue
            decay = not no_weight_decay(name, p)
            key = f"{prefix}_{'decay' if decay else 'no_decay'}"
            buckets.setdefault(key, []).append(p)
            settings[key] = (lr, tc.weight_decay if decay else 0.0)

    clip = [(n, p) for n, p in model.named_parameters() if not is_new(n)]
    new = [(n, p) for n, p in model.named_parameters() if is_new(n)]
    add("clip", tc.lr_clip, clip)
    add("new", tc.lr_new, new)
    if audio_encoder is not None and tc.train_audio_encoder:
        lr = tc.lr_clip if tc.lr_audio_encoder is None else tc.lr_audio_encoder
        add("audio_encoder", lr, audio_encoder.named_parameters())
    order = [f"{p}_{d}" for p in ("clip", "new", "audio_encoder") for d in ("decay", "no_decay")]
    groups = [dict(name=k, params=buckets[k], lr=settings[k][0], weight_decay=settings[k][1])
              for k in order if k in buckets]
    if not groups:
        raise ValueError("the model has no trainable parameters (every requires_grad is False)")
    return groups


def build_optimizer(model: nn.Module, tc: TrainConfig,
                    audio_encoder: Optional[nn.Module] = None) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` with ``tc.betas``, ``tc.eps`` (decoupled weight decay).

    Uses PyTorch's fused kernel where the parameters' device supports it (CPU and CUDA; about
    3x faster than the default on a CPU), else the default implementation.
    """
    try:
        return torch.optim.AdamW(param_groups(model, tc, audio_encoder), betas=tuple(tc.betas),
                                 eps=tc.eps, fused=True)
    except (RuntimeError, ValueError):   # (the failed attempt filled in its group dicts)
        return torch.optim.AdamW(param_groups(model, tc, audio_encoder), betas=tuple(tc.betas),
                                 eps=tc.eps)


def warmup_steps_for(total_steps: int, warmup_fraction: float) -> int:
    """Number of warm-up steps: ``round(fraction * total)``, at least 1 when the fraction is > 0."""
    if warmup_fraction <= 0:
        return 0
    return max(1, int(round(warmup_fraction * total_steps)))


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base learning rate for optimizer update ``step`` (0-based).

    Warm-up: ``(step + 1) / W`` for ``step < W`` (the first update already moves, the W-th is at
    full rate). Then a half cosine ``0.5 (1 + cos(pi (step - W + 1) / (S - W + 1)))`` that
    reaches 0 one update after the last (``S`` = total), so no update is wasted at lr 0.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps={warmup_steps} must lie in 0..total_steps={total_steps}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps + 1) / (total_steps - warmup_steps + 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class WarmupCosine:
    """``lr_factor`` as a picklable callable for ``LambdaLR`` (its state is two integers)."""

    def __init__(self, warmup_steps: int, total_steps: int) -> None:
        lr_factor(0, warmup_steps, total_steps)  # validates
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.warmup_steps, self.total_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, tc: TrainConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_fraction`` of ``total_steps`` then cosine to zero, per group."""
    schedule = WarmupCosine(warmup_steps_for(total_steps, tc.warmup_fraction), total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


# =============================================================================================
# one optimizer step
# =============================================================================================
def prepare_audio(cfg: ModelConfig, audio: Optional[Tensor], audio_mask: Optional[Tensor],
                  audio_encoder: Optional[nn.Module], train_encoder: bool = False) -> Optional[Tensor]:
    """Per-frame audio embeddings ``[B, T, A]`` for the model, or None (video-only models).

    ``audio`` is either embeddings ``[B, T, A]`` (``A == cfg.audio_dim``; no ``audio_encoder``)
    or waveform windows ``[B, T, W]`` that ``audio_encoder`` turns into embeddings
    (``audio.encode_windows``; no gradient unless ``train_encoder``).
    """
    if cfg.fusion == "none" or audio is None:
        return None
    if audio_encoder is None:
        if audio.shape[-1] != cfg.audio_dim:
            raise ValueError(f"batch['audio'] has last dimension {audio.shape[-1]} but the model "
                             f"takes audio_dim={cfg.audio_dim} embeddings: pass audio_encoder= to "
                             f"turn waveform windows [B, T, W] into embeddings")
        return audio
    from eclipse_lite.audio import encode_windows
    if audio.dim() != 3:
        raise ValueError(f"batch['audio'] must be windows [B, T, W], got {tuple(audio.shape)}")
    mask = torch.ones(audio.shape[:2], device=audio.device) if audio_mask is None else audio_mask
    if train_encoder:
        return encode_windows(audio_encoder, audio, mask)
    with torch.no_grad():
        return encode_windows(audio_encoder, audio, mask)


class TrainingModule(nn.Module):
    """What one process back-propagates through: audio encoding + both towers.

    forward(frames, audio, frame_mask, audio_mask, input_ids, attention_mask) ->
    (text_emb [b, E], video_emb [b, E], logit scale) — the loss needs nothing else. A frozen audio
    encoder is kept outside the module tree (so ``DistributedDataParallel`` ignores it).
    """

    def __init__(self, model: nn.Module, audio_encoder: Optional[nn.Module] = None,
                 train_audio_encoder: bool = False) -> None:
        super().__init__()
        self.model = model
        self.train_audio_encoder = bool(train_audio_encoder and audio_encoder is not None)
        if self.train_audio_encoder:
            self.audio_encoder = audio_encoder
        else:
            object.__setattr__(self, "frozen_audio_encoder", audio_encoder)

    def encoder(self) -> Optional[nn.Module]:
        return self.audio_encoder if self.train_audio_encoder else self.frozen_audio_encoder

    def forward(self, frames, audio, frame_mask, audio_mask, input_ids, attention_mask):
        cfg = self.model.config
        audio = prepare_audio(cfg, audio, audio_mask, self.encoder(), self.train_audio_encoder)
        video = self.model.encode_video(frames, audio, frame_mask, audio_mask)
        text = self.model.encode_text(input_ids, attention_mask)
        if text.shape[0] != video.shape[0]:
            raise ValueError(f"{text.shape[0]} captions for {video.shape[0]} videos: the "
                             "contrastive loss needs one caption per video")
        return text, video, self.model.scale()


def batch_inputs(batch: Dict[str, Any], cfg: ModelConfig, device: torch.device) -> Dict[str, Optional[Tensor]]:
    """The model inputs of a data-loader batch, on ``device``; captions tokenized here.

    Uses ``batch["input_ids"]``/``["attention_mask"]`` when present, else tokenizes
    ``batch["caption"]`` (list of str) at ``cfg.context_length``. Audio is dropped for video-only
    models and frames for audio-only ones (nothing is moved that is not used). A compact batch
    (``RetrievalDataset(compact=True)``) is moved as it is and expanded on ``device``.
    """
    if not isinstance(batch, dict):
        raise TypeError(f"a batch must be a dict (frames, audio, caption, ...), got "
                        f"{type(batch).__name__}")
    if "waveform" in batch:
        from eclipse_lite.data.dataset import expand_compact

        batch = expand_compact(batch, device)
    if "input_ids" in batch:
        ids, mask = batch["input_ids"], batch.get("attention_mask")
    elif "caption" in batch:
        captions = batch["caption"]
        if isinstance(captions, str):
            captions = [captions]
        ids, mask = tokenize(list(captions), context_length=cfg.context_length)
    else:
        raise KeyError("batch has neither 'caption' nor 'input_ids'")
    out: Dict[str, Optional[Tensor]] = {
        "frames": None if cfg.fusion == "audio_only" else batch.get("frames"),
        "frame_mask": batch.get("frame_mask"),
        "audio": None if cfg.fusion == "none" else batch.get("audio"),
        "audio_mask": None if cfg.fusion == "none" else batch.get("audio_mask"),
        "input_ids": ids, "attention_mask": mask,
    }
    if out["frames"] is None and cfg.fusion != "audio_only":
        raise KeyError("batch has no 'frames'")
    non_blocking = device.type == "cuda"
    return {k: (v.to(device, non_blocking=non_blocking) if isinstance(v, Tensor) else v)
            for k, v in out.items()}


def batch_size_of(inputs: Dict[str, Optional[Tensor]]) -> int:
    return int(inputs["input_ids"].shape[0])


def split_inputs(inputs: Dict[str, Optional[Tensor]], parts: int) -> List[Dict[str, Optional[Tensor]]]:
    """``parts`` micro-batches (consecutive rows, sizes differing by at most one)."""
    n = batch_size_of(inputs)
    if parts > n:
        raise ValueError(f"cannot split a batch of {n} into {parts} micro-batches: lower "
                         "grad_accum_steps")
    pieces = {k: (torch.tensor_split(v, parts) if isinstance(v, Tensor) else [v] * parts)
              for k, v in inputs.items()}
    return [{k: pieces[k][j] for k in inputs} for j in range(parts)]


def _rng_snapshot(device: torch.device):
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _rng_restore(snapshot, device: torch.device) -> None:
    cpu, cuda = snapshot
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def train_step(module: nn.Module, inputs: Dict[str, Optional[Tensor]], accum_steps: int = 1,
               autocast_dtype: Optional[torch.dtype] = None,
               scaler: Optional[torch.amp.GradScaler] = None) -> float:
    """Forward + backward of one optimizer batch; gradients are left in ``.grad``. Returns the loss.

    ``module`` is a :class:`TrainingModule` (or its ``DistributedDataParallel`` wrapper). The loss
    is :func:`~eclipse_lite.train.distributed.global_infonce` — the symmetric InfoNCE (Sec. 3.3) of the
    global batch, gathered over processes — computed in float32 outside autocast.

    ``accum_steps = k > 1`` splits this process's batch into ``k`` micro-batches with the exact
    full-batch gradient (GradCache, Gao et al. 2021): (1) embed every micro-batch without a graph,
    (2) compute the loss of the whole batch on those embeddings and its gradient w.r.t. each
    embedding and the scale, (3) re-run each micro-batch with a graph and back-propagate its slice
    of that gradient. Activations of one micro-batch at a time, every sample still contrasted
    with all others; costs one extra forward pass. (Independent micro-batch losses would instead
    see only ``b/k - 1`` negatives each — a different objective.) Exact because every sample's
    embedding depends on that sample only (ECLIPSE has layer norms, no batch norm, no dropout);
    a *trained* BatchNorm audio encoder would see micro-batch statistics instead, and updates
    its running statistics in both passes. RNG states are replayed in pass (3) all the same.
    """
    device = next(module.parameters()).device
    raw = getattr(module, "module", module)
    scale_out = (lambda g: scaler.scale(g)) if scaler is not None else (lambda g: g)
    if accum_steps == 1:
        with _autocast(device, autocast_dtype):
            text, video, scale = module(**inputs)
        loss = global_infonce(text.float(), video.float(), scale.float())
        scale_out(loss).backward()
        return float(loss.detach())
    micro = split_inputs(inputs, accum_steps)
    snapshots, texts, videos = [], [], []
    with torch.no_grad():                                              # (1)
        for mb in micro:
            snapshots.append(_rng_snapshot(device))
            with _autocast(device, autocast_dtype):
                t, v, s = raw(**mb)
            texts.append(t.float())
            videos.append(v.float())
    text_all = torch.cat(texts).requires_grad_()                       # (2)
    video_all = torch.cat(videos).requires_grad_()
    scale_leaf = s.detach().float().requires_grad_()
    loss = global_infonce(text_all, video_all, scale_leaf)
    loss.backward()
    sizes = [t.shape[0] for t in texts]
    grad_text = text_all.grad.split(sizes)
    grad_video = video_all.grad.split(sizes)
    last = len(micro) - 1
    for j, mb in enumerate(micro):                                     # (3)
        no_sync = getattr(module, "no_sync", None)
        sync = contextlib.nullcontext() if (j == last or no_sync is None) else no_sync()
        with sync:
            _rng_restore(snapshots[j], device)
            with _autocast(device, autocast_dtype):
                t, v, s = module(**mb)
            outputs, grads = [t, v], [grad_text[j], grad_video[j]]
            if j == last:  # the scale's gradient covers the whole batch: add it once
                outputs.append(s)
                grads.append(scale_leaf.grad.reshape(s.shape))
            grads = [scale_out(g).to(o.dtype) for o, g in zip(outputs, grads)]
            torch.autograd.backward(outputs, grads)
    return float(loss.detach())


def optimizer_step(optimizer: torch.optim.Optimizer, scheduler, scaler: Optional[torch.amp.GradScaler],
                   grad_clip: Optional[float], step: int) -> Tuple[Optional[float], bool]:
    """Unscale, clip, step, advance the schedule, zero the gradients.

    Returns ``(grad norm before clipping or None when not finite, skipped)``; ``skipped`` is True
    when the fp16 scaler found inf/NaN gradients and skipped the update (it then lowers its
    scale). Without a scaler a non-finite gradient is an error, never a silent NaN model.
    """
    if scaler is not None:
        scaler.unscale_(optimizer)
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    max_norm = float(grad_clip) if grad_clip is not None else float("inf")
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm)) if params else 0.0
    skipped = False
    if scaler is not None:
        scaler.step(optimizer)   # skips the update when unscale_ found inf/NaN gradients
        scaler.update()
        skipped = not math.isfinite(norm)
    else:
        if not math.isfinite(norm):
            raise FloatingPointError(f"step {step}: the gradient norm is {norm} (NaN/inf "
                                     "gradients); lower the learning rate or use fp32/bf16")
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return (norm if math.isfinite(norm) else None), skipped


# =============================================================================================
# checkpoints
# =============================================================================================
def _flatten_optimizer(sd: dict) -> Tuple[dict, Dict[str, Tensor]]:
    """An optimizer state dict as (JSON-able dict, tensors for safetensors)."""
    tensors: Dict[str, Tensor] = {}
    state = {}
    for pid, entry in sd["state"].items():
        flat = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                name = f"optimizer.{pid}.{key}"
                tensors[name] = value
                flat[key] = {"tensor": name}
            else:
                flat[key] = value
        state[str(pid)] = flat
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
              for g in sd["param_groups"]]
    return {"state": state, "param_groups": groups}, tensors


def _unflatten_optimizer(meta: dict, tensors: Dict[str, Tensor]) -> dict:
    state = {}
    for pid, entry in meta["state"].items():
        state[int(pid)] = {k: (tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v)
                           for k, v in entry.items()}
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()}
              for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _capture_rng() -> Tuple[dict, Dict[str, Tensor]]:
    """Python, numpy and torch (CPU + every initialised GPU) RNG states: (JSON part, tensors)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {"python": [version, list(internal), gauss],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = st
    return meta, tensors


def _restore_rng(meta: dict, tensors: Dict[str, Tensor]) -> None:
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][:torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)


def _json_ready(obj: Any) -> Any:
    """Tuples → lists, numpy/torch scalars → python, non-finite floats → None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    if torch.is_tensor(obj) and obj.numel() == 1:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _swap_in(partial: Path, final: Path) -> None:
    """Replace directory ``final`` by the complete directory ``partial`` with two renames.

    ``final`` → ``final.old``, ``partial`` → ``final``, remove ``final.old``. At every instant a
    complete copy exists as ``final`` or ``final.old``; :func:`find_checkpoint` falls back to the
    latter if a crash came between the renames.
    """
    old = final.with_name(final.name + ".old")
    if final.exists():
        if old.exists():
            shutil.rmtree(old)   # final is complete, so the older copy is not needed
        os.replace(final, old)
    os.replace(partial, final)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(directory: Union[str, Path], model: nn.Module, state: dict,
                    optimizer: Optional[torch.optim.Optimizer] = None,
                    audio_encoder: Optional[nn.Module] = None) -> Path:
    """Write a checkpoint directory atomically.

    Files: ``model.safetensors`` + ``config.json`` (as ``ECLIPSE.save_pretrained``: load with
    ``ECLIPSE.from_pretrained``), ``audio_encoder.safetensors`` (when given: a fine-tuned
    encoder), ``optimizer.safetensors`` (AdamW moments + RNG tensors; when ``optimizer`` is given)
    and ``trainer_state.json`` (``state`` plus the optimizer's hyper-parameters and the python /
    numpy RNG states). Everything goes to ``<directory>.partial`` first, which then replaces
    ``directory`` by renames (:func:`_swap_in`): a crash at any point leaves the previous
    checkpoint loadable.
    """
    final = Path(directory)
    partial = final.with_name(final.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    atomic_save_safetensors(dict(model.state_dict()), partial / "model.safetensors")
    if getattr(model, "config", None) is not None and hasattr(model.config, "to_json"):
        atomic_write_text(model.config.to_json(), partial / "config.json")
    if audio_encoder is not None:
        atomic_save_safetensors(dict(audio_encoder.state_dict()), partial / "audio_encoder.safetensors")
    state = dict(state, format=STATE_FORMAT)
    if optimizer is not None:
        opt_meta, tensors = _flatten_optimizer(optimizer.state_dict())
        rng_meta, rng_tensors = _capture_rng()
        tensors.update(rng_tensors)
        atomic_save_safetensors(tensors, partial / "optimizer.safetensors")
        state.update(optimizer=opt_meta, rng=rng_meta)
    text = json.dumps(_json_ready(state), indent=1, allow_nan=False)
    atomic_write_text(text + "\n", partial / "trainer_state.json")   # last: marks completeness
    _swap_in(partial, final)
    return final


def find_checkpoint(directory: Union[str, Path]) -> Optional[Path]:
    """The complete checkpoint at ``directory``, or at ``directory.old`` when a crash came between
    the two renames of :func:`save_checkpoint`, or None when there is none."""
    directory = Path(directory)
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if (candidate / "trainer_state.json").is_file() and (candidate / "model.safetensors").is_file():
            if candidate != directory:
                log.warning("using %s: %s is missing or incomplete (interrupted save)",
                            candidate, directory)
            return candidate
    return None


def load_checkpoint(directory: Union[str, Path], model: nn.Module,
                    optimizer: Optional[torch.optim.Optimizer] = None, scheduler=None,
                    scaler: Optional[torch.amp.GradScaler] = None,
                    audio_encoder: Optional[nn.Module] = None, restore_rng: bool = True) -> dict:
    """Load what :func:`save_checkpoint` wrote into the given objects; returns the trainer state.

    Tensors are read with safetensors (no pickle); a torch file would be read with
    ``weights_only=True``. Raises ``FileNotFoundError`` naming the missing file and ``KeyError``
    on parameter-name mismatches.
    """
    found = find_checkpoint(directory)
    if found is None:
        raise FileNotFoundError(f"no checkpoint in {directory} (expected model.safetensors and "
                                "trainer_state.json)")
    state = json.loads((found / "trainer_state.json").read_text())
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{found}/trainer_state.json has format {state.get('format')!r}; this "
                         f"version reads format {STATE_FORMAT}")
    weights = read_state_dict(found / "model.safetensors")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise KeyError(f"{found}/model.safetensors does not fit the model: missing "
                       f"{missing[:5]}, unexpected {unexpected[:5]}")
    if audio_encoder is not None and (found / "audio_encoder.safetensors").is_file():
        audio_encoder.load_state_dict(read_state_dict(found / "audio_encoder.safetensors"))
    if optimizer is not None or restore_rng:
        opt_file = found / "optimizer.safetensors"
        if not opt_file.is_file():
            raise FileNotFoundError(f"{opt_file} is missing: {found} is a weights-only checkpoint "
                                    "(e.g. best/), resume from last/")
        tensors = read_state_dict(opt_file)
        if optimizer is not None:
            sd = _unflatten_optimizer(state["optimizer"], tensors)
            names = [g.get("name") for g in optimizer.param_groups]
            stored = [g.get("name") for g in sd["param_groups"]]
            if names != stored:
                raise ValueError(f"optimizer groups {stored} in {found} differ from this run's "
                                 f"{names} (different model, fusion or train_audio_encoder?)")
            optimizer.load_state_dict(sd)
        if restore_rng:
            _restore_rng(state["rng"], tensors)
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return state


# =============================================================================================
# data
# =============================================================================================
def _as_dataset(data: Any, what: str) -> Tuple[Dataset, Callable]:
    """(map-style dataset, collate function) of a Dataset or a DataLoader."""
    if isinstance(data, DataLoader):
        dataset, collate = data.dataset, data.collate_fn
    else:
        dataset = data
        collate = getattr(data, "collate", None) or default_collate
    if isinstance(dataset, IterableDataset) or not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise TypeError(f"{what} must be a map-style Dataset (with __len__ and __getitem__) or a "
                        f"DataLoader over one, got {type(dataset).__name__}: seeded, resumable, "
                        "sharded batches need indexable items")
    if len(dataset) == 0:
        raise ValueError(f"{what} is empty")
    return dataset, collate


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
            f.write(json.dumps(_json_ready(record), allow_nan=False) + "\n")
        self.lines += 1


# =============================================================================================
# fit
# =============================================================================================
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
        return _json_ready(dataclasses.asdict(self))


def _selection_key(metrics: dict) -> Tuple[float, float]:
    """Best-epoch criterion: validation T2V R@1, then R@5."""
    return float(metrics["t2v"]["R@1"]), float(metrics["t2v"]["R@5"])


def _check_resumable(stored: dict, tc: TrainConfig, model_cfg: Optional[ModelConfig], where: Path) -> None:
    old = dict(stored.get("train_config", {}))
    new = tc.to_dict()
    changed = sorted(k for k in set(old) | set(new)
                     if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if changed:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ValueError(f"cannot resume from {where}: the training configuration changed "
                         f"({detail}). Resume with the same settings, or start a new run.")
    if model_cfg is not None and stored.get("model_config") is not None:
        diff = model_cfg.fields_differing_from(stored["model_config"])
        if diff:
            raise ValueError(f"cannot resume from {where}: the model configuration differs in "
                             f"{diff}")


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
    dataset, collate = _as_dataset(train_loader, "train_loader")
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
        _check_resumable(stored, tc, cfg, resumed_from)
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


# =============================================================================================
# evaluate
# =============================================================================================
def _gather_strings(values: List[str]) -> List[str]:
    if get_world_size() == 1:
        return list(values)
    import torch.distributed as dist
    parts: List[Any] = [None] * get_world_size()
    dist.all_gather_object(parts, list(values))
    return [v for part in parts for v in part]


@torch.no_grad()
def evaluate(model: nn.Module, loader: Union[Dataset, DataLoader], audio_encoder: Optional[nn.Module] = None,
             device: Union[str, torch.device, None] = None, batch_size: int = 32,
             precision: str = "auto", num_workers: int = 0, return_sim: bool = False,
             strict: bool = True) -> Dict[str, Any]:
    """Text-to-video and video-to-text retrieval over a whole split.

    Embeds every caption and every video in batches (eval mode, no gradient, autocast per
    ``precision``), builds the similarity matrix ``sim [texts, videos]`` of cosine similarities
    (row ``i`` = caption of video ``i``), and scores T2V = ``retrieval_metrics(sim)``, V2T =
    ``retrieval_metrics(sim.T)``. Under ``torchrun`` every process embeds a contiguous shard and
    the embeddings are gathered in dataset order (no padding duplicates); all processes return
    the same result.

    Args:
        loader: a Dataset (batched here, in order) or a DataLoader (used as is in one process;
            re-batched into shards under torchrun). Batches as in :func:`fit`; "video_id" needed.
        device: where to run; None = where the model's parameters are.
        strict: a batch that lost items which failed to decode raises (it would change N and
            the metric); with False the loss is reported as ``"num_skipped"`` and a warning.
    Returns:
        ``{"t2v": {R@1, R@5, R@10, MdR, MnR}, "v2t": {...}, "n": N}``, plus ``"sim"`` (float32
        CPU tensor ``[N, N]``), ``"video_ids"`` and ``"captions"`` (in row order) when
        ``return_sim``.
    Raises:
        ValueError: duplicate video ids (retrieval needs one item per video), an empty split,
            or skipped items with ``strict``.
    """
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = resolve_device(device)
    model.to(device)
    if audio_encoder is not None:
        audio_encoder.to(device)
    cfg = model.config
    dataset, collate = _as_dataset(loader, "evaluation data")
    if not (isinstance(loader, DataLoader) and get_world_size() == 1):
        bs = loader.batch_size if isinstance(loader, DataLoader) and loader.batch_size else batch_size
        loader = DataLoader(dataset, batch_sampler=ShardedEvalSampler(len(dataset), bs),
                            collate_fn=collate, num_workers=num_workers,
                            pin_memory=device.type == "cuda")
    autocast_dtype, _ = resolve_precision(precision, device)
    modes = [(m, m.training) for m in (model, audio_encoder) if m is not None]
    for m, _ in modes:
        m.eval()
    texts, videos, ids, captions = [], [], [], []
    skipped = 0
    try:
        for batch in loader:
            if batch is None:
                raise ValueError("a whole evaluation batch failed to load: run dataset.check() "
                                 "first to drop undecodable videos from the split")
            skipped += int(batch.get("num_skipped", 0) or 0)
            if "video_id" not in batch:
                raise KeyError("evaluation batches need 'video_id' (to check that every video "
                               "appears once)")
            inputs = batch_inputs(batch, cfg, device)
            with _autocast(device, autocast_dtype):
                audio = prepare_audio(cfg, inputs["audio"], inputs["audio_mask"], audio_encoder)
                video = model.encode_video(inputs["frames"], audio, inputs["frame_mask"],
                                           inputs["audio_mask"])
                text = model.encode_text(inputs["input_ids"], inputs["attention_mask"])
            videos.append(video.float())
            texts.append(text.float())
            ids.extend(str(v) for v in batch["video_id"])
            caps = batch.get("caption")
            captions.extend(list(caps) if caps is not None else [""] * len(batch["video_id"]))
    finally:
        for m, was_training in modes:
            m.train(was_training)
    dim = cfg.embed_dim
    text_all = all_gather_variable(torch.cat(texts) if texts else torch.zeros(0, dim, device=device))
    video_all = all_gather_variable(torch.cat(videos) if videos else torch.zeros(0, dim, device=device))
    ids = _gather_strings(ids)
    if return_sim:
        captions = _gather_strings(captions)
    if get_world_size() > 1:
        skipped = int(all_gather_variable(torch.tensor([skipped], device=device)).sum())
    if skipped:
        message = (f"{skipped} evaluation item(s) failed to load and were dropped; the metrics "
                   f"would be over {len(ids)} videos instead of {len(dataset)}. Run "
                   "dataset.check() first to drop undecodable videos from the split")
        if strict:
            raise ValueError(message)
        warnings.warn(message)
    if len(ids) == 0:
        raise ValueError("the evaluation set is empty")
    seen: Dict[str, int] = {}
    duplicates = []
    for i, vid in enumerate(ids):
        if vid in seen:
            duplicates.append(f"{vid!r} (rows {seen[vid]} and {i})")
        seen.setdefault(vid, i)
    if duplicates:
        raise ValueError(f"duplicate video ids in the evaluation set: {', '.join(duplicates[:5])}"
                         f"{' ...' if len(duplicates) > 5 else ''}; retrieval needs one caption "
                         "per video, each video once")
    sim = (text_all @ video_all.T).cpu()                      # [texts, videos], cosine
    result: Dict[str, Any] = {"t2v": retrieval_metrics(sim), "v2t": retrieval_metrics(sim.T),
                              "n": len(ids)}
    if skipped:
        result["num_skipped"] = skipped
    if return_sim:
        result.update(sim=sim, video_ids=ids, captions=captions)
    return result


# =============================================================================================
# results file
# =============================================================================================
def git_commit(path: Union[str, Path, None] = None) -> Tuple[str, Optional[bool]]:
    """``(commit hash, working tree has uncommitted changes)`` of the repository holding ``path``
    (default: this package); ``("unknown", None)`` outside a git checkout or without git."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return "unknown", None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=where, capture_output=True, text=True, timeout=10)
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return head.stdout.strip(), dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def _config_dict(config: Any) -> Any:
    if config is None:
        return None
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    if isinstance(config, dict):
        return dict(config)
    raise TypeError(f"a config must be a dataclass with to_dict() or a dict, got {type(config).__name__}")


def write_results(path: Union[str, Path], metrics: Dict[str, Any], model_config: Any = None,
                  train_config: Any = None, seed: Optional[int] = None,
                  extra: Optional[Dict[str, Any]] = None) -> dict:
    """Write ``metrics`` with what produced them to a JSON file, atomically; returns the payload.

    Keys: "metrics" (as given, without the ``"sim"`` matrix), "model_config", "train_config",
    "seed", "git_commit" (``git rev-parse HEAD`` or "unknown"), "git_dirty", "torch_version",
    "created_utc", plus ``extra``. NaN or inf anywhere is an error (strict JSON).
    """
    metrics = {k: v for k, v in dict(metrics).items() if k != "sim"}
    bad = [k for k, v in metrics.items() if torch.is_tensor(v) and v.numel() > 1]
    if bad:
        raise TypeError(f"metrics {bad} are tensors; pass numbers, dicts or lists")
    commit, dirty = git_commit()
    payload = {"metrics": metrics, "model_config": _config_dict(model_config),
               "train_config": _config_dict(train_config), "seed": seed, "git_commit": commit,
               "git_dirty": dirty, "torch_version": torch.__version__,
               "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if extra:
        clash = sorted(set(extra) & set(payload))
        if clash:
            raise ValueError(f"extra keys {clash} would overwrite the standard ones")
        payload.update(extra)
    try:
        text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False,
                          default=lambda o: o.item() if hasattr(o, "item") else str(o))
    except ValueError as exc:
        raise ValueError(f"results for {path} hold NaN or inf: {exc}") from None
    atomic_write_text(text + "\n", Path(path))
    return payload


# =============================================================================================
# memory: the base preset on one GPU
# =============================================================================================
def _saved_bytes(fn: Callable[[], Any], exclude: set) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn`` runs.

    Storages in ``exclude`` (the parameters, counted separately) are not counted; views of one
    storage count once.
    """
    sizes: Dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in exclude:
            sizes[ptr] = max(sizes.get(ptr, 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(sizes.values())


class _CudaAutocastPolicy(torch.overrides.TorchFunctionMode):
    """Make CPU autocast follow CUDA autocast's policy for layer norm: inputs cast to float32,
    float32 output (CPU autocast keeps bf16), so the residual streams get CUDA's dtype."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.layer_norm and torch.is_autocast_enabled("cpu"):
            args = [a.float() if torch.is_tensor(a) else a for a in args]
            kwargs = {k: (v.float() if torch.is_tensor(v) else v) for k, v in kwargs.items()}
            with torch.autocast("cpu", enabled=False):
                return func(*args, **kwargs)
        return func(*args, **kwargs)


def _linear_fit(xs: Sequence[int], ys: Sequence[int]) -> Tuple[float, float]:
    """(slope, intercept) of a line through two measurements."""
    (x1, x2), (y1, y2) = xs, ys
    slope = (y2 - y1) / (x2 - x1)
    return slope, y1 - slope * x1


def _probe_activations(model: nn.Module, probe: Sequence[int], autocast_dtype):
    """Saved-for-backward bytes of (one visual layer, embedding + head, text tower) for each
    count in ``probe`` (frames or captions), and the bytes per frame of a layer's input streams."""
    cfg = model.config
    device = torch.device("cpu")
    exclude = {p.untyped_storage().data_ptr() for p in model.parameters()}
    fused = cfg.fusion in ("eclipse", "a2v", "joint")
    layer_index = cfg.av_layer_set[0] if cfg.av_layer_set else 0
    size = cfg.image_size
    layer_bytes, embed_bytes, text_bytes = [], [], []
    stream_bytes = 0
    for k in probe:
        frames = torch.randn(k, 3, size, size, requires_grad=True)
        audio = torch.randn(1, k, cfg.audio_dim)
        with _autocast(device, autocast_dtype):
            x = model.visual.embed(frames).detach().requires_grad_()
            a = a_mask = None
            if fused:
                a, a_mask = model._audio_stream(audio, None, 1, k, x.device, x.dtype)
                a = a.detach().requires_grad_()
                layer = lambda: model._layer(layer_index, x, a, a_mask, False)  # noqa: E731
            else:
                layer = lambda: model.visual.blocks[layer_index](x)  # noqa: E731
            layer_bytes.append(_saved_bytes(layer, exclude))

            def embed_and_head():
                extra = model.audio_proj(audio) if hasattr(model, "audio_proj") else None
                return model.visual.head(model.visual.embed(frames)), extra
            embed_bytes.append(_saved_bytes(embed_and_head, exclude))
            ids = torch.randint(1, cfg.vocab_size, (k, cfg.context_length))
            mask = torch.ones_like(ids)
            text_bytes.append(_saved_bytes(lambda: model.encode_text(ids, mask), exclude))
        stream_bytes = x.element_size() * x[0].numel() + (a.element_size() * a[0].numel() if fused else 0)
    return layer_bytes, embed_bytes, text_bytes, stream_bytes


def estimate_peak_memory(cfg: Optional[ModelConfig] = None, batch_size: int = 64,
                         num_frames: Optional[int] = None, precision: str = "bf16",
                         gradient_checkpointing: bool = True) -> Dict[str, Any]:
    """Peak GPU memory of one training step (AdamW, precomputed audio embeddings), computed.

    Not a GPU measurement. The model-dependent activation sizes are *counted* on the CPU: the
    bytes autograd saves for backward (``saved_tensors_hooks``, distinct storages, parameters
    excluded) while one visual layer with its AV block, the patch embedding + head, and the text
    tower run under autocast at the real widths on 2 and 4 frames / captions; a line through the
    two gives bytes per frame (per caption) and a per-layer constant (autocast's low-precision
    weight copies). CPU autocast is made to follow CUDA's policy where they differ in this model
    (layer norm in float32, so the residual streams are float32 as on a GPU). Then, with
    ``N = batch_size * num_frames`` frames:

      static      16 P: fp32 weights 4 + fp32 gradients 4 + AdamW exp_avg 4 + exp_avg_sq 4
      inputs      the batch on the GPU: fp32 frames [B,T,3,H,W], audio [B,T,A], token ids
      vision      checkpointing: each layer keeps only its input streams (frame tokens
                  [N,L,D] + audio tokens [N,S,D], in the residual dtype measured), plus, during
                  backward, one layer's recomputed activations; without: every layer's
                  activations; both plus patch embedding and head
      text        the text tower's activations (it is not checkpointed): per caption x B
      working     backward transients: gradients of one layer's input and output streams
                  (residual dtype) and of its widest intermediate (MLP hidden, compute dtype)
      forward     the forward pass instead holds low-precision copies of the weights (autocast's
                  cache, 2 bytes x P); the peak is the larger of forward and backward.

    Not included: the CUDA context (~0.5 GB), allocator fragmentation (typically 5-15 %), cuDNN /
    cuBLAS workspaces. Returns a dict of byte counts per term, ``peak_bytes`` and ``peak_gib``.
    """
    from eclipse_lite.model import ECLIPSE
    cfg = ModelConfig.preset("base") if cfg is None else cfg
    cfg = cfg.replace(gradient_checkpointing=False)
    frames_per_video = int(num_frames or cfg.num_frames)
    b = int(batch_size)
    n = b * frames_per_video
    if precision == "auto":
        precision = "bf16"   # what "auto" picks on a current GPU
    autocast_dtype, _ = resolve_precision(precision, "cuda")
    compute_bytes = 2 if autocast_dtype is not None else 4
    torch.manual_seed(0)
    model = ECLIPSE(cfg).train()
    params = sum(p.numel() for p in model.parameters())
    probe = (2, 4)
    policy = _CudaAutocastPolicy() if autocast_dtype is not None else contextlib.nullcontext()
    with policy:
        layer_bytes, embed_bytes, text_bytes, stream_bytes = _probe_activations(
            model, probe, autocast_dtype)
    layer_slope, layer_const = _linear_fit(probe, layer_bytes)
    embed_slope, _ = _linear_fit(probe, embed_bytes)
    text_slope, text_const = _linear_fit(probe, text_bytes)

    layers = cfg.vision_layers
    hidden = int(round(cfg.vision_width * cfg.mlp_ratio))
    static = 16 * params
    inputs = (n * 3 * cfg.image_size ** 2 * 4 + n * cfg.audio_dim * 4
              + 2 * b * cfg.context_length * 8)
    embed_head = embed_slope * n
    text = text_slope * b + text_const
    loss = 4 * b * b * 4
    working = 2 * n * stream_bytes + n * (cfg.num_patches + 1) * hidden * compute_bytes
    one_layer = layer_slope * n + layer_const
    if gradient_checkpointing:
        vision_kept = layers * n * stream_bytes
        recompute = one_layer
    else:
        vision_kept = layers * one_layer
        recompute = 0.0
    activations = inputs + embed_head + text + loss + vision_kept
    weight_cache = 2 * params if autocast_dtype is not None else 0
    backward_peak = static + activations + recompute + working
    forward_peak = static + activations + weight_cache + one_layer
    peak = max(backward_peak, forward_peak)
    gib = 1024 ** 3
    return {
        "preset": cfg.name, "batch_size": b, "num_frames": frames_per_video,
        "precision": precision, "gradient_checkpointing": bool(gradient_checkpointing),
        "parameters": params,
        "static_bytes": static, "inputs_bytes": inputs, "vision_kept_bytes": vision_kept,
        "vision_recompute_bytes": recompute, "embed_head_bytes": embed_head,
        "text_bytes": text, "working_bytes": working, "weight_cache_bytes": weight_cache,
        "per_frame_layer_bytes": layer_slope, "per_frame_stream_bytes": stream_bytes,
        "per_caption_text_bytes": text_slope,
        "forward_peak_bytes": forward_peak, "backward_peak_bytes": backward_peak,
        "peak_bytes": peak, "peak_gib": peak / gib,
    }


def estimate_base_memory() -> Dict[str, Any]:
    """:func:`estimate_peak_memory` for the paper's setting: ``base`` (ViT-B/32, all 12 AV
    blocks), 32 frames, batch 64, precomputed audio, bf16 autocast + gradient checkpointing."""
    return estimate_peak_memory(ModelConfig.preset("base", audio_encoder="precomputed"),
                                batch_size=64, num_frames=32, precision="bf16",
                                gradient_checkpointing=True)
