"""Per-frame features computed once and kept on disk.

The paper precomputes its audio embeddings: a frozen VGGSound ResNet-18 turns the 10 s window
around each of the 32 frames into a 512-d vector (Sec. 4, "Implementation Details"). For an
ActivityNet-scale run (~15k videos x 32 frames) decoding and encoding that audio every epoch
would dominate the cost, so :class:`FeatureCache` stores, per video, one safetensors file with

  "audio"       float32 [T, A]  audio embedding of each frame's window (zero where no audio),
  "audio_mask"  float32 [T]     1 where the window overlaps real audio,
  "frame_times" float32 [T]     the frames' times (s), to check alignment with decoded frames,
  "frame_mask"  float32 [T]     0 on repeated frames.

Each file carries its key in the safetensors metadata: the video's absolute path, size and
modification time, and the :class:`CacheSettings` (frames, sampling, audio window, sample rate,
encoder name and a hash of its weights). :meth:`FeatureCache.get` recomputes the key and refuses
a stale entry (:class:`StaleCacheError`); :meth:`FeatureCache.build` recomputes exactly the
stale and missing ones. Files are written atomically (temporary file, fsync, ``os.replace``):
a crash mid-write never leaves a partial file where a reader looks.

A folder written in another :data:`CACHE_FORMAT` is refused when opened (:class:`StaleCacheError`
naming the folder): delete it and build it again; entries of two formats are never mixed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from eclipse_lite.audio import audio_windows
from eclipse_lite.config import ModelConfig
from eclipse_lite.data.io import DecodeError, read_audio, read_video
from eclipse_lite.files import atomic_write_bytes, is_stale_temporary

CACHE_FORMAT = 2   # part of every entry's key and of settings.json
_SETTINGS_FILE = "settings.json"
_TMP_PATTERN = ".*.tmp"


class StaleCacheError(RuntimeError):
    """A cache entry was computed for another video file or other settings: rebuild it."""


class MissingFeaturesError(KeyError):
    """A video has no cache entry (it did not decode when the cache was built, or was never
    built). Datasets skip such items; a ``KeyError`` for other callers."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class CacheSettings:
    """Everything that changes the cached numbers (part of every entry's key).

    num_frames, sampling: which frames ("uniform" or "released"; random frames differ every
      epoch and cannot be cached).
    sample_rate, window_s, placement: the audio window around each frame
      (``eclipse_lite.audio.audio_windows``).
    encoder, encoder_hash: the audio encoder's name and :func:`weights_hash` of its weights.
    """

    num_frames: int
    sampling: str = "uniform"
    sample_rate: int = 16000
    window_s: float = 10.0
    placement: str = "centred"
    encoder: str = ""
    encoder_hash: str = ""

    def __post_init__(self) -> None:
        if int(self.num_frames) <= 0:
            raise ValueError(f"CacheSettings.num_frames must be positive, got {self.num_frames}")
        if self.sampling not in ("uniform", "released"):
            raise ValueError(f"CacheSettings.sampling={self.sampling!r}: only deterministic "
                             f"frames ('uniform', 'released') can be cached (random frames "
                             f"change every epoch)")
        if int(self.sample_rate) <= 0 or not float(self.window_s) > 0:
            raise ValueError(f"CacheSettings needs a positive sample_rate and window_s, got "
                             f"{self.sample_rate}, {self.window_s}")
        if not self.encoder:
            raise ValueError("CacheSettings.encoder must name the audio encoder")

    @classmethod
    def from_config(cls, cfg: ModelConfig, audio_encoder: torch.nn.Module,
                    **kw: Any) -> "CacheSettings":
        """Settings for a preset: frames, rate and window from ``cfg``; the encoder is named by
        ``cfg.audio_encoder`` and hashed from ``audio_encoder``'s weights."""
        args = dict(num_frames=cfg.num_frames, sample_rate=cfg.sample_rate,
                    window_s=cfg.audio_window_s, encoder=cfg.audio_encoder,
                    encoder_hash=weights_hash(audio_encoder))
        args.update(kw)
        return cls(**args)

    def to_dict(self) -> Dict[str, Any]:
        """The fields as a JSON-ready dict (stored in settings.json and in every entry)."""
        return dataclasses.asdict(self)


def weights_hash(module: Union[torch.nn.Module, Mapping[str, torch.Tensor]]) -> str:
    """SHA-256 (hex, 16 chars) of a module's state dict: names, dtypes, shapes and values."""
    state = module.state_dict() if isinstance(module, torch.nn.Module) else module
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _as_settings(settings: Union[CacheSettings, Mapping[str, Any]]) -> CacheSettings:
    """``settings`` as :class:`CacheSettings`; ``ValueError`` naming unknown fields of a dict."""
    if isinstance(settings, CacheSettings):
        return settings
    known = {f.name for f in dataclasses.fields(CacheSettings)}
    unknown = set(settings) - known
    if unknown:
        raise ValueError(f"unknown cache setting(s) {sorted(unknown)}; known: {sorted(known)}")
    return CacheSettings(**settings)


def _video_stat(path: str) -> Dict[str, Any]:
    """The video's part of an entry key: absolute path, size (bytes), mtime (ns)."""
    st = os.stat(path)
    return {"video_path": os.path.abspath(path), "size": int(st.st_size),
            "mtime_ns": int(st.st_mtime_ns)}


def _entry_key(stat: Mapping[str, Any], settings: CacheSettings) -> str:
    """SHA-256 (hex) of :data:`CACHE_FORMAT`, the video's stat and the settings."""
    blob = json.dumps({"format": CACHE_FORMAT, "video": dict(stat),
                       "settings": settings.to_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _metadata(data: bytes) -> Dict[str, str]:
    """The ``__metadata__`` of a safetensors file held in memory (8-byte little-endian header
    length, then the JSON header)."""
    try:
        n = int.from_bytes(data[:8], "little")
        return json.loads(data[8:8 + n]).get("__metadata__") or {}
    except (ValueError, UnicodeDecodeError):
        return {}


class FeatureCache:
    """Per-video, per-frame features in ``root`` (one ``<video_id>-<hash>.safetensors`` each).

    ``settings``: the :class:`CacheSettings` (or dict) this cache must hold; by default those of
    the last :meth:`build` in ``root``. ::

        cache = FeatureCache("runs/cache/anet")
        settings = CacheSettings.from_config(cfg, encoder)
        cache.build(items, lambda w, m: encode_windows(encoder, w[None], m[None])[0], settings)
        ds = RetrievalDataset.from_config(items, cfg, audio_features=cache)
    """

    def __init__(self, root: str, settings: Union[CacheSettings, Mapping[str, Any], None] = None):
        self.root = os.path.abspath(os.fspath(root))
        os.makedirs(self.root, exist_ok=True)
        self.settings: Optional[CacheSettings] = None
        stored = self._read_settings_file()
        if settings is not None:
            self.settings = _as_settings(settings)
        elif stored is not None:
            self.settings = _as_settings(stored["settings"])
        self.failed: List[Tuple[str, str]] = []

    def _read_settings_file(self) -> Optional[Dict[str, Any]]:
        """``settings.json`` of ``root`` (None when there is none); :class:`StaleCacheError`
        when it was written in another :data:`CACHE_FORMAT`."""
        path = os.path.join(self.root, _SETTINGS_FILE)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
        if stored.get("format") != CACHE_FORMAT:
            raise StaleCacheError(
                f"feature cache {self.root} is in cache format {stored.get('format')} and this "
                f"code reads format {CACHE_FORMAT} only: delete the folder {self.root} and build "
                f"the cache again (FeatureCache.build, or `eclipse-lite cache-audio`)")
        return stored

    # ---------------------------------------------------------------- paths and keys
    def path_for(self, video_id: str) -> str:
        """The file of ``video_id``: a readable, filesystem-safe name plus a hash of the id."""
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", video_id)[:80].lstrip(".") or "video"
        digest = hashlib.sha1(video_id.encode("utf-8")).hexdigest()[:10]
        return os.path.join(self.root, f"{safe}-{digest}.safetensors")

    def _stored_key(self, path: str) -> Optional[Dict[str, str]]:
        """The safetensors metadata of the entry file at ``path``; None if it cannot be read."""
        try:
            with safe_open(path, framework="pt") as f:
                return f.metadata() or {}
        except Exception:  # unreadable file: treat as absent, build() rewrites it
            return None

    def is_fresh(self, video_id: str, video_path: str) -> bool:
        """True when ``video_id`` has an entry for this very file and these settings."""
        path = self.path_for(video_id)
        if self.settings is None or not os.path.exists(path) or not os.path.exists(video_path):
            return False
        meta = self._stored_key(path)
        return bool(meta) and meta.get("key") == _entry_key(_video_stat(video_path),
                                                             self.settings)

    # ---------------------------------------------------------------- reading
    def entry(self, video_id: str) -> Dict[str, torch.Tensor]:
        """All tensors cached for ``video_id`` (see the module docstring).

        Raises :class:`MissingFeaturesError` (a ``KeyError``) when the video has no entry (it
        failed to decode at build time, or was never built) and :class:`StaleCacheError` when
        the entry is out of date.
        """
        if self.settings is None:
            raise StaleCacheError(f"feature cache {self.root} has no settings; run build() first")
        path = self.path_for(video_id)
        if not os.path.exists(path):
            raise MissingFeaturesError(f"no cached features for {video_id!r} in {self.root}")
        with open(path, "rb") as f:
            data = f.read()
        why = self._staleness(_metadata(data))
        if why:
            raise StaleCacheError(f"cached features of {video_id!r} ({path}) are stale: {why}; "
                                  f"rebuild with FeatureCache.build")
        return dict(load_bytes(data))

    def get(self, video_id: str) -> torch.Tensor:
        """Cached per-frame audio embeddings of ``video_id``: float32 [T, A]."""
        return self.entry(video_id)["audio"]

    def _staleness(self, meta: Mapping[str, str]) -> str:
        """Why an entry with metadata ``meta`` cannot be used ("" when it can)."""
        if meta.get("format") != str(CACHE_FORMAT):
            return f"cache format {meta.get('format')} != {CACHE_FORMAT}"
        stored = json.loads(meta.get("settings", "{}"))
        now = self.settings.to_dict()
        changed = [f"{k}: {stored.get(k)!r} -> {now[k]!r}" for k in now if stored.get(k) != now[k]]
        if changed:
            return "settings changed (" + ", ".join(changed) + ")"
        video_path = meta.get("video_path", "")
        if not os.path.exists(video_path):
            return f"its video {video_path} no longer exists"
        stat = _video_stat(video_path)
        if meta.get("key") != _entry_key(stat, self.settings):
            return f"its video {video_path} changed (size or modification time)"
        return ""

    def check_compatible(self, num_frames: int, sampling: str, sample_rate: int,
                         window_s: float, placement: str = "centred") -> None:
        """Raise ``ValueError`` when a dataset with these options cannot use this cache."""
        if self.settings is None:
            raise ValueError(f"feature cache {self.root} is empty (no settings); build it first")
        s = self.settings
        wanted = {"num_frames": int(num_frames), "sampling": sampling,
                  "sample_rate": int(sample_rate), "window_s": float(window_s),
                  "placement": placement}
        have = {"num_frames": s.num_frames, "sampling": s.sampling, "sample_rate": s.sample_rate,
                "window_s": float(s.window_s), "placement": s.placement}
        bad = [f"{k}={wanted[k]!r} (cache: {have[k]!r})" for k in wanted if wanted[k] != have[k]]
        if bad:
            raise ValueError(f"feature cache {self.root} was built with other settings: "
                             + ", ".join(bad))

    # ---------------------------------------------------------------- building
    def build(self, items: Sequence[Any], encoder_fn: Callable[[torch.Tensor, torch.Tensor], Any],
              settings: Union[CacheSettings, Mapping[str, Any]], progress: bool = True,
              backend: str = "auto", workers: int = 0) -> Dict[str, Any]:
        """Compute and store the features of every item that has no fresh entry.

        Args:
          items:      objects with ``video_id`` and ``video_path`` (``datasets.Item``).
          encoder_fn: ``(windows float32 [T, W], mask float32 [T]) -> [T, A]`` audio embeddings;
                      called under ``torch.no_grad()``; rows with mask 0 are stored as zeros.
          settings:   :class:`CacheSettings` or a dict of its fields.
          backend:    video decoder, see :func:`~eclipse_lite.data.io.read_video`.
          workers:    DataLoader workers that decode while the main process encodes.
        Returns ``{"computed": n, "cached": n, "failed": [(video_id, reason), ...]}``; failed
        items (undecodable videos) are warned about and get no entry, so a dataset skips them.
        """
        settings = _as_settings(settings)
        ids = [it.video_id for it in items]
        if len(set(ids)) != len(ids):
            dup = sorted({v for v in ids if ids.count(v) > 1})[:5]
            raise ValueError(f"items have duplicate video_ids: {dup}")
        self.settings = settings
        for tmp in glob.glob(os.path.join(self.root, _TMP_PATTERN)):
            if is_stale_temporary(tmp):   # left by a crashed build; a live writer's file stays
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)
        atomic_write_bytes(json.dumps({"format": CACHE_FORMAT, "settings": settings.to_dict()},
                                      indent=2, sort_keys=True).encode(),
                           os.path.join(self.root, _SETTINGS_FILE))
        todo = [it for it in items if not self.is_fresh(it.video_id, it.video_path)]
        report: Dict[str, Any] = {"computed": 0, "cached": len(items) - len(todo), "failed": []}
        loader = DataLoader(_DecodeView(todo, settings, backend), batch_size=None,
                            num_workers=int(workers))
        if progress:
            loader = tqdm(loader, total=len(todo), desc="caching features", unit="video")
        with torch.no_grad():
            for item, decoded in zip(todo, loader):
                if isinstance(decoded, str):
                    report["failed"].append((item.video_id, decoded))
                    if os.path.exists(self.path_for(item.video_id)):
                        os.remove(self.path_for(item.video_id))  # never serve a stale entry
                    continue
                self._store(item, decoded, encoder_fn, settings)
                report["computed"] += 1
        self.failed = list(report["failed"])
        if report["failed"]:
            shown = "; ".join(f"{v}: {r}" for v, r in report["failed"][:5])
            warnings.warn(f"feature cache: {len(report['failed'])} of {len(items)} videos did not "
                          f"decode and have no entry: {shown}", RuntimeWarning, stacklevel=2)
        return report

    def _store(self, item: Any, decoded: Dict[str, Any], encoder_fn: Callable[..., Any],
               settings: CacheSettings) -> None:
        """Encode one decoded item's windows and write its entry (tensors + key metadata)."""
        windows, mask = decoded["windows"], decoded["audio_mask"]
        audio = torch.as_tensor(encoder_fn(windows, mask)).float().cpu()
        t = settings.num_frames
        if audio.dim() != 2 or audio.shape[0] != t:
            raise ValueError(f"encoder_fn returned shape {tuple(audio.shape)} for "
                             f"{item.video_id!r}; expected [T={t}, A]")
        if not bool(torch.isfinite(audio).all()):
            raise ValueError(f"encoder_fn returned NaN/inf features for {item.video_id!r}")
        audio = audio * (mask[:, None] > 0)
        tensors = {"audio": audio.contiguous(), "audio_mask": mask.float().contiguous(),
                   "frame_times": decoded["frame_times"].float().contiguous(),
                   "frame_mask": decoded["frame_mask"].float().contiguous()}
        stat = decoded["stat"]
        meta = {"format": str(CACHE_FORMAT), "key": _entry_key(stat, settings),
                "video_id": item.video_id, "video_path": stat["video_path"],
                "size": str(stat["size"]), "mtime_ns": str(stat["mtime_ns"]),
                "settings": json.dumps(settings.to_dict(), sort_keys=True)}
        atomic_write_bytes(save_bytes(tensors, metadata=meta), self.path_for(item.video_id))

    def __repr__(self) -> str:
        n = len(glob.glob(os.path.join(self.root, "*.safetensors")))
        return f"FeatureCache({self.root!r}, {n} entries, settings={self.settings})"


class _DecodeView(Dataset):
    """Decodes one item for :meth:`FeatureCache.build`: a dict of tensors, or the error text.

    The dict: "windows" float32 [T, W], "audio_mask" float32 [T], "frame_times" float32 [T],
    "frame_mask" float32 [T], "stat" (the video's key fields, taken before decoding).
    """

    def __init__(self, items: Sequence[Any], settings: CacheSettings, backend: str):
        self.items, self.settings, self.backend = list(items), settings, backend

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Union[Dict[str, Any], str]:
        item, s = self.items[index], self.settings
        try:
            stat = _video_stat(item.video_path)  # before decoding: a later change is stale
            clip = read_video(item.video_path, s.num_frames, None, sampling=s.sampling,
                              backend=self.backend)
            wave, _ = read_audio(item.video_path, s.sample_rate)
        except (DecodeError, OSError) as e:
            return str(e)
        times = torch.from_numpy(clip.times.astype(np.float32))
        windows, mask = audio_windows(torch.from_numpy(wave), times.double(), s.sample_rate,
                                      s.window_s, placement=s.placement)
        return {"windows": windows.float(), "audio_mask": mask.float(), "frame_times": times,
                "frame_mask": torch.from_numpy(clip.mask.astype(np.float32)), "stat": stat}


__all__ = ["FeatureCache", "CacheSettings", "StaleCacheError", "MissingFeaturesError",
           "weights_hash", "CACHE_FORMAT"]
