"""The fine-tuning recipe: :class:`TrainConfig`, mixed precision, seeding.

    tc = TrainConfig(epochs=5, batch_size=32, lr_clip=1e-4, lr_new=1e-4)
    tc = TrainConfig.paper(epochs=5)           # the paper's recipe for the base preset

The recipe (ECLIPSE Sec. 4 "Training details" and the released CLIP4Clip-style code): AdamW in
two learning-rate groups — the pretrained CLIP weights at a small rate (paper: 1e-7), the new
audiovisual blocks and audio projection at their own — weight decay 0.2 except on norms, biases,
positional/class embeddings and the temperature; linear warm-up then cosine decay to zero;
gradient-norm clipping at 1.0 (``optim.py``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

import numpy as np
import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# TrainConfig fields that may change between an interrupted run and its resumption: they do not
# change what is computed. Every other field must match (or the "resumed" run is another run).
RESUMABLE_CHANGES = ("log_every", "num_workers", "device", "checkpoint_every", "progress")


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


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
