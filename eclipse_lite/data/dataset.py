"""The paragraph-to-video retrieval dataset: :class:`RetrievalDataset`, its batching
(:func:`collate`) and :func:`expand_compact`, which finishes compact batches.

:class:`RetrievalDataset` decodes an :class:`~eclipse_lite.data.readers.common.Item` (from a
reader, :mod:`eclipse_lite.data.readers`) into what the model eats: ``T`` CLIP-normalised frames
and, for each, a window of audio centred on it (paper Sec. 3.1) or that window's cached
embedding (:mod:`eclipse_lite.data.cache`).

Bad input never crashes a run or poisons a metric: a video that does not decode is skipped with
a :class:`~eclipse_lite.data.readers.common.SkippedItemWarning` and recorded in
``dataset.skipped``; :meth:`RetrievalDataset.check` drops such items before evaluation so that
text-to-video and video-to-text see the same candidates; an empty caption is an error at load
time naming the item.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm.auto import tqdm

from eclipse_lite.audio import audio_windows
from eclipse_lite.clip import clip_normalize
from eclipse_lite.config import ModelConfig
from eclipse_lite.data.cache import MissingFeaturesError, StaleCacheError
from eclipse_lite.data.io import BACKENDS, DecodeError, read_audio, read_video
from eclipse_lite.data.readers.common import Item, SkippedItemWarning, join_paragraph
from eclipse_lite.data.sampling import SAMPLINGS

CAPTION_MODES = ("paragraph", "random_sentence")


class RetrievalDataset(Dataset):
    """Text-video pairs for retrieval, one item per video.

    Args:
      items:          list of :class:`Item` (from a reader); video ids must be unique.
      num_frames:     T frames per video.
      image_size:     frames are squashed to ``image_size x image_size``.
      sampling:       "uniform" (segment centres; evaluation), "random" (one random frame per
                      segment; training augmentation, seeded by ``seed``, the epoch and the item)
                      or "released" (the authors' linspace over the frames).
      sample_rate:    audio rate in Hz.
      audio_window_s: length of the audio window centred on each frame (paper: 10 s).
      audio_features: a :class:`~eclipse_lite.data.cache.FeatureCache`; then ``"audio"`` is the
                      cached per-frame embedding [T, A] instead of the waveform windows [T, W].
      caption_mode:   "paragraph" (all captions joined) or "random_sentence" (one caption, drawn
                      per epoch).
      seed:           seeds random sampling and random sentences (with ``set_epoch``).
      backend:        video decoder, see :func:`~eclipse_lite.data.io.read_video`.
      audio_placement: "centred" (paper) or "released" (authors' loader), passed to
                      ``eclipse_lite.audio.audio_windows``.
      compact:        workers return what they decoded (uint8 frames, the whole waveform) and
                      :func:`expand_compact` normalises the frames and cuts the audio windows
                      later, in the main process or on the GPU (``batch_inputs`` does it). A
                      32-frame clip at 224 px with 10 s windows is then ~6 MB instead of ~40 MB
                      through the workers' shared memory, which is what caps a 2-core loader.

    ``dataset[i]`` is a dict, or None when the item cannot be decoded (warned, recorded in
    ``dataset.skipped``; :meth:`collate` drops it):
      "video_id" str, "caption" str, "index" int,
      "frames" float32 [T, 3, H, W] (CLIP mean/std), "frame_mask" float32 [T] (0 on repeats),
      "audio" float32 [T, W] windows or [T, A] cached embeddings, "audio_mask" float32 [T]
      (0 where there is no audio), "frame_times" float32 [T] seconds.
    With ``compact=True`` "frames" / "audio" / "audio_mask" are replaced by "frames_uint8" uint8
    [T, H, W, 3], "waveform" float32 [N] and "compact" (the settings :func:`expand_compact` needs).
    """

    def __init__(self, items: Sequence[Item], num_frames: int, image_size: int,
                 sampling: str = "uniform", sample_rate: int = 16000,
                 audio_window_s: float = 10.0, audio_features: Any = None,
                 caption_mode: str = "paragraph", seed: int = 0, backend: str = "auto",
                 audio_placement: str = "centred", compact: bool = False):
        if compact and audio_features is not None:
            raise ValueError("compact=True defers cutting audio windows, but audio_features "
                             "gives cached embeddings: use one or the other")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling={sampling!r} is not one of {SAMPLINGS}")
        if caption_mode not in CAPTION_MODES:
            raise ValueError(f"caption_mode={caption_mode!r} is not one of {CAPTION_MODES}")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
        for name, value in (("num_frames", num_frames), ("image_size", image_size),
                            ("sample_rate", sample_rate)):
            if int(value) <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if not float(audio_window_s) > 0:
            raise ValueError(f"audio_window_s must be positive, got {audio_window_s}")
        self.items: List[Item] = list(items)
        seen: Dict[str, int] = {}
        for i, item in enumerate(self.items):
            if not isinstance(item, Item):
                raise TypeError(f"items[{i}] is {type(item).__name__}, not an Item")
            item.validate()  # an empty caption fails here, naming the item
            if item.video_id in seen:
                raise ValueError(f"video_id {item.video_id!r} appears twice (items "
                                 f"{seen[item.video_id]} and {i}); retrieval needs one item per "
                                 f"video")
            seen[item.video_id] = i
        self.num_frames = int(num_frames)
        self.image_size = int(image_size)
        self.sampling = sampling
        self.sample_rate = int(sample_rate)
        self.audio_window_s = float(audio_window_s)
        self.audio_features = audio_features
        self.caption_mode = caption_mode
        self.seed = int(seed)
        self.backend = backend
        self.audio_placement = audio_placement
        self.compact = bool(compact)
        self.epoch = 0
        self.skipped: List[Tuple[str, str]] = []
        if audio_features is not None:
            audio_features.check_compatible(num_frames=self.num_frames, sampling=self.sampling,
                                            sample_rate=self.sample_rate,
                                            window_s=self.audio_window_s,
                                            placement=self.audio_placement)

    @classmethod
    def from_config(cls, items: Sequence[Item], cfg: ModelConfig, **kw: Any) -> "RetrievalDataset":
        """Sizes from a :class:`ModelConfig` (num_frames, image_size, sample_rate,
        audio_window_s); keyword arguments override or add the other options."""
        args = dict(num_frames=cfg.num_frames, image_size=cfg.image_size,
                    sample_rate=cfg.sample_rate, audio_window_s=cfg.audio_window_s)
        args.update(kw)
        return cls(items, **args)

    # ---------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Random sampling and random sentences change with the epoch (and stay reproducible)."""
        self.epoch = int(epoch)

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        """The generator of item ``index`` in this epoch; stream 0 draws frames, 1 sentences."""
        return np.random.default_rng([self.seed, self.epoch, int(index), stream])

    def caption(self, index: int) -> str:
        """The text of item ``index`` under ``caption_mode``."""
        item = self.items[index]
        if self.caption_mode == "paragraph":
            return join_paragraph(item.captions)
        pick = int(self._rng(index, 1).integers(len(item.captions)))
        return " ".join(item.captions[pick].split())

    def load(self, index: int) -> Dict[str, Any]:
        """Decode item ``index``; raises :class:`DecodeError` / :class:`MissingFeaturesError`
        (no cached features) instead of skipping, and :class:`StaleCacheError` when the cache
        is out of date. ``__getitem__`` is the forgiving version (skips the first two)."""
        item = self.items[index]
        rng = self._rng(index, 0) if self.sampling == "random" else None
        clip = read_video(item.video_path, self.num_frames, self.image_size,
                          sampling=self.sampling, rng=rng, backend=self.backend)
        if self.compact:
            wave, _ = read_audio(item.video_path, self.sample_rate)
            return {
                "video_id": item.video_id,
                "caption": self.caption(index),
                "frames_uint8": torch.from_numpy(clip.frames),
                "frame_mask": torch.from_numpy(clip.mask.astype(np.float32)),
                "waveform": torch.from_numpy(wave),
                "frame_times": torch.from_numpy(clip.times.astype(np.float32)),
                "compact": (self.sample_rate, self.audio_window_s, self.audio_placement),
                "index": int(index),
            }
        frames = clip_normalize(torch.from_numpy(clip.frames)).contiguous()
        times = torch.from_numpy(clip.times.astype(np.float32))
        if self.audio_features is not None:
            entry = self.audio_features.entry(item.video_id)
            cached_times = entry["frame_times"]
            if cached_times.shape != times.shape or \
                    float((cached_times - times).abs().max()) > 1e-3:
                raise StaleCacheError(f"cached audio features of {item.video_id!r} were "
                                      f"computed for frames at other times; rebuild the cache")
            audio = entry["audio"].float()
            audio_mask = entry["audio_mask"].float()
        else:
            wave, _ = read_audio(item.video_path, self.sample_rate)
            audio, audio_mask = audio_windows(torch.from_numpy(wave), times.double(),
                                              self.sample_rate, self.audio_window_s,
                                              placement=self.audio_placement)
            audio, audio_mask = audio.float(), audio_mask.float()
        return {
            "video_id": item.video_id,
            "caption": self.caption(index),
            "frames": frames,
            "frame_mask": torch.from_numpy(clip.mask.astype(np.float32)),
            "audio": audio.contiguous(),
            "audio_mask": audio_mask,
            "frame_times": times,
            "index": int(index),
        }

    def __getitem__(self, index: int) -> Optional[Dict[str, Any]]:
        try:
            return self.load(index)
        except (DecodeError, MissingFeaturesError) as e:
            item = self.items[index]
            reason = str(e)
            self.skipped.append((item.video_id, reason))
            warnings.warn(f"skipping {item.video_id!r}: {reason}", SkippedItemWarning,
                          stacklevel=2)
            return None

    # ---------------------------------------------------------------- batching
    @staticmethod
    def collate(batch: Sequence[Optional[Dict[str, Any]]]) -> Optional[Dict[str, Any]]:
        """Stack items into a batch, dropping the None (skipped) ones.

        Tensors are stacked ([B, ...]); strings and ints become lists ("index" an int64 [B]
        tensor); a compact batch's "waveform" [N_i] become float32 [B, max N_i], zero-padded,
        with "waveform_length" int64 [B]. ``"num_skipped"`` counts the dropped items (skipped
        items are counted inside DataLoader workers, so the main process learns about them from
        here). Returns None when every item was skipped.
        """
        kept = [b for b in batch if b is not None]
        if not kept:
            return None
        out: Dict[str, Any] = {}
        for key, value in kept[0].items():
            if key == "waveform":  # compact batches: pad to the longest, keep the lengths
                waves = [b[key] for b in kept]
                lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
                out[key] = pad_sequence(waves, batch_first=True)
                out["waveform_length"] = lengths
            elif key == "compact":
                out[key] = value
            elif isinstance(value, torch.Tensor):
                # default_collate stacks straight into shared memory inside a worker process,
                # saving a copy of the (large) frames and audio windows on the way out
                out[key] = default_collate([b[key] for b in kept])
            else:
                out[key] = [b[key] for b in kept]
        out["index"] = torch.tensor(out["index"], dtype=torch.long)
        out["num_skipped"] = len(batch) - len(kept)
        return out

    # ---------------------------------------------------------------- up-front check
    def check(self, progress: bool = True, workers: int = 0) -> List[Tuple[str, str]]:
        """Decode every item once and drop the ones that fail, before a run.

        Use it for evaluation so that text-to-video and video-to-text rank the same candidate
        set. Returns the dropped ``(video_id, reason)`` pairs (also appended to
        ``self.skipped``) and prints how many were dropped.
        """
        probe = _CheckView(self)
        loader = DataLoader(probe, batch_size=1, num_workers=int(workers), collate_fn=_first)
        if progress:
            loader = tqdm(loader, total=len(probe), desc="checking videos", unit="video")
        bad: Dict[int, str] = {}
        for index, reason in loader:
            if reason is not None:
                bad[index] = reason
        dropped = [(self.items[i].video_id, bad[i]) for i in sorted(bad)]
        self.items = [item for i, item in enumerate(self.items) if i not in bad]
        self.skipped.extend(dropped)
        total = len(self.items) + len(dropped)
        if dropped:
            shown = "; ".join(f"{vid}: {why}" for vid, why in dropped[:5])
            more = f" (and {len(dropped) - 5} more)" if len(dropped) > 5 else ""
            warnings.warn(f"check: dropped {len(dropped)} of {total} items that do not decode: "
                          f"{shown}{more}", SkippedItemWarning, stacklevel=2)
        if progress:
            print(f"check: {len(self.items)} of {total} items decode, {len(dropped)} dropped")
        return dropped

    def __repr__(self) -> str:
        return (f"RetrievalDataset({len(self)} items, T={self.num_frames}, "
                f"size={self.image_size}, sampling={self.sampling!r}, "
                f"audio={'cached' if self.audio_features is not None else 'waveform'}, "
                f"caption_mode={self.caption_mode!r})")


def expand_compact(batch: Dict[str, Any], device: Any = None) -> Dict[str, Any]:
    """Turn a ``compact=True`` batch into the usual one, on ``device`` (default: where it is).

    "frames_uint8" [B, T, H, W, 3] becomes "frames" float32 [B, T, 3, H, W] (CLIP mean/std, the
    same arithmetic as the eager path), "waveform" [B, N] + "waveform_length" [B] become "audio"
    [B, T, W] windows and "audio_mask" [B, T] (:func:`eclipse_lite.audio.audio_windows`). A batch
    without "waveform" is returned unchanged. The result equals what ``compact=False`` yields.
    """
    if "waveform" not in batch:
        return batch
    sample_rate, window_s, placement = batch["compact"]
    out = {k: v for k, v in batch.items()
           if k not in ("frames_uint8", "waveform", "waveform_length", "compact")}
    frames = batch["frames_uint8"].to(device) if device is not None else batch["frames_uint8"]
    out["frames"] = clip_normalize(frames)
    wave = batch["waveform"].to(frames.device)
    times = batch["frame_times"].to(frames.device).double()
    audio, mask = audio_windows(wave, times, sample_rate, window_s, placement=placement,
                                lengths=batch["waveform_length"])
    out["audio"], out["audio_mask"] = audio.float().contiguous(), mask.float()
    if device is not None:
        out = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in out.items()}
    return out


def collate(batch: Sequence[Optional[Dict[str, Any]]]) -> Optional[Dict[str, Any]]:
    """Module-level alias of :meth:`RetrievalDataset.collate` (picklable for DataLoader)."""
    return RetrievalDataset.collate(batch)


def _first(batch: list) -> Any:
    """The only element of a batch of one (``collate_fn`` of :meth:`RetrievalDataset.check`)."""
    return batch[0]


class _CheckView(Dataset):
    """``(index, None)`` when item ``index`` decodes, ``(index, reason)`` otherwise."""

    def __init__(self, dataset: RetrievalDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tuple[int, Optional[str]]:
        try:
            self.dataset.load(index)
            return index, None
        except (DecodeError, MissingFeaturesError) as e:
            return index, str(e)


__all__ = ["RetrievalDataset", "collate", "expand_compact", "CAPTION_MODES"]
