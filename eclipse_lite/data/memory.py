"""Decode a split once, keep it as tensors: what the tiny demo and the ablations train from.

Decoding mp4s and encoding 10 s audio windows every epoch would dominate a CPU run. With uniform
frame sampling every epoch sees the same frames and windows anyway, so :func:`materialize` decodes
each video once, runs the frozen audio encoder over its windows, and returns a :class:`ClipTensors`
dataset (frames, masks, per-frame audio embeddings, captions). :func:`cached_materialize` stores the
result on disk (safetensors + JSON, atomically) under a key of every setting that affects it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from eclipse_lite.audio import encode_windows
from eclipse_lite.checkpoints import atomic_save_safetensors, read_state_dict
from eclipse_lite.data.dataset import collate
from eclipse_lite.files import atomic_write_text


class ClipTensors(Dataset):
    """Pre-decoded clips. ``ds[i]`` is the batch-format dict of ``RetrievalDataset`` with
    "audio" = per-frame embeddings [T, A].

    frames [N, T, 3, H, W] (CLIP-normalised, stored float16), frame_mask [N, T],
    audio [N, T, A], audio_mask [N, T], captions (N strings), video_ids (N strings).
    """

    def __init__(self, frames: Tensor, frame_mask: Tensor, audio: Tensor, audio_mask: Tensor,
                 captions: List[str], video_ids: List[str]) -> None:
        n = frames.shape[0]
        for name, t in (("frame_mask", frame_mask), ("audio", audio), ("audio_mask", audio_mask)):
            if t.shape[0] != n:
                raise ValueError(f"{name} has {t.shape[0]} rows but frames have {n}")
        if len(captions) != n or len(video_ids) != n:
            raise ValueError(f"{len(captions)} captions and {len(video_ids)} ids for {n} clips")
        if not torch.isfinite(audio).all():
            raise ValueError("audio embeddings contain NaN or inf")
        self.frames, self.frame_mask = frames.to(torch.float16), frame_mask.float()
        self.audio, self.audio_mask = audio.float(), audio_mask.float()
        self.captions, self.video_ids = list(captions), list(video_ids)

    def __len__(self) -> int:
        return self.frames.shape[0]

    def __getitem__(self, i: int) -> Dict[str, object]:
        return {"frames": self.frames[i].float(), "frame_mask": self.frame_mask[i],
                "audio": self.audio[i], "audio_mask": self.audio_mask[i],
                "caption": self.captions[i], "video_id": self.video_ids[i], "index": i}

    def subset(self, n: int) -> "ClipTensors":
        """The first ``n`` clips (for quick runs)."""
        return ClipTensors(self.frames[:n], self.frame_mask[:n], self.audio[:n],
                           self.audio_mask[:n], self.captions[:n], self.video_ids[:n])

    def save(self, path: Path) -> None:
        """``path.safetensors`` (the tensors) and ``path.json`` (captions, ids), atomically."""
        path = Path(path)
        atomic_save_safetensors({"frames": self.frames, "frame_mask": self.frame_mask,
                                 "audio": self.audio, "audio_mask": self.audio_mask},
                                path.with_suffix(".safetensors"))
        atomic_write_text(json.dumps({"captions": self.captions, "video_ids": self.video_ids}),
                          path.with_suffix(".json"))

    @classmethod
    def load(cls, path: Path) -> "ClipTensors":
        """What :meth:`save` wrote at ``path``."""
        path = Path(path)
        t = read_state_dict(path.with_suffix(".safetensors"))
        meta = json.loads(path.with_suffix(".json").read_text())
        return cls(t["frames"], t["frame_mask"], t["audio"], t["audio_mask"],
                   meta["captions"], meta["video_ids"])


def materialize(dataset, audio_encoder: Optional[nn.Module], batch_size: int = 16,
                num_workers: int = 0, progress: bool = True) -> ClipTensors:
    """Decode every item of a ``RetrievalDataset`` once and encode its audio windows.

    Each batch's "audio" windows [B, T, W] become embeddings [B, T, A] through
    ``audio_encoder`` (None: the dataset already yields [B, T, A], e.g. from a feature cache).
    Items that fail to decode are skipped by the dataset's collate (warned and counted in
    ``dataset.skipped``), never turned into NaN rows.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate)
    parts: Dict[str, list] = {k: [] for k in ("frames", "frame_mask", "audio", "audio_mask")}
    captions: List[str] = []
    ids: List[str] = []
    if audio_encoder is not None:
        audio_encoder.eval()
    bar = tqdm(loader, desc="decode + encode audio", disable=not progress or bool(os.environ.get("CI")),
               leave=False)
    for batch in bar:
        if batch is None:
            continue
        audio = batch["audio"]
        if audio_encoder is not None:
            with torch.no_grad():
                audio = encode_windows(audio_encoder, audio, batch["audio_mask"])
        parts["frames"].append(batch["frames"].to(torch.float16))
        parts["frame_mask"].append(batch["frame_mask"])
        parts["audio"].append(audio)
        parts["audio_mask"].append(batch["audio_mask"])
        captions += list(batch["caption"])
        ids += list(batch["video_id"])
    if not ids:
        raise ValueError("no clip could be decoded: every item was skipped "
                         f"({len(getattr(dataset, 'skipped', []))} skipped)")
    return ClipTensors(*(torch.cat(parts[k]) for k in ("frames", "frame_mask", "audio", "audio_mask")),
                       captions, ids)


def _fingerprint(manifest: Path, dataset, encoder: Optional[nn.Module]) -> str:
    """16 hex chars of SHA-256 over the manifest's path, size and mtime, the dataset's sampling
    settings and the encoder's weights."""
    h = hashlib.sha256()
    stat = os.stat(manifest)
    h.update(f"{manifest.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    h.update(json.dumps([dataset.num_frames, dataset.image_size, dataset.sampling,
                         dataset.sample_rate, dataset.audio_window_s,
                         getattr(dataset, "audio_placement", "centred"),
                         getattr(dataset, "seed", 0) if dataset.sampling == "random" else None]).encode())
    if encoder is not None:
        for k, v in sorted(encoder.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cached_materialize(manifest: Path, dataset, audio_encoder: Optional[nn.Module], cache_dir: Path,
                       progress: bool = True, **kw) -> ClipTensors:
    """:func:`materialize`, stored in ``cache_dir`` under a key of the manifest (path, size,
    mtime), the sampling settings and the encoder's weights; reused when all match."""
    key = _fingerprint(Path(manifest), dataset, audio_encoder)
    path = Path(cache_dir) / f"{Path(manifest).stem}-{key}"
    if path.with_suffix(".json").exists() and path.with_suffix(".safetensors").exists():
        return ClipTensors.load(path)
    clips = materialize(dataset, audio_encoder, progress=progress, **kw)
    clips.save(path)
    return clips
