"""One optimizer step: batch → model inputs, forward + backward (exact gradient accumulation), update.

Memory (the ``base`` preset on one GPU): autocast mixed precision (bf16 where the GPU has it,
else fp16 with a gradient scaler), per-layer gradient checkpointing
(``ModelConfig.gradient_checkpointing``), and gradient accumulation that is *exact* for the
contrastive loss (every sample still sees all ``batch_size - 1`` negatives; see
:func:`train_step`).
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset
from torch.utils.data.dataloader import default_collate

from eclipse_lite.audio import encode_windows
from eclipse_lite.config import ModelConfig
from eclipse_lite.data.dataset import expand_compact
from eclipse_lite.tokenizer import tokenize
from eclipse_lite.train.config import autocast
from eclipse_lite.train.distributed import global_infonce

log = logging.getLogger(__name__)


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
        with autocast(device, autocast_dtype):
            text, video, scale = module(**inputs)
        loss = global_infonce(text.float(), video.float(), scale.float())
        scale_out(loss).backward()
        return float(loss.detach())
    micro = split_inputs(inputs, accum_steps)
    snapshots, texts, videos = [], [], []
    with torch.no_grad():                                              # (1)
        for mb in micro:
            snapshots.append(_rng_snapshot(device))
            with autocast(device, autocast_dtype):
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
            with autocast(device, autocast_dtype):
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


def as_dataset(data: Any, what: str) -> Tuple[Dataset, Callable]:
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
