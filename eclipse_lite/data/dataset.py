"""Paragraph-to-video retrieval datasets: one :class:`RetrievalDataset`, one reader per format.

A reader turns a dataset's own annotation file into a list of :class:`Item` (video id, video
file, captions in temporal order, optional segments). :class:`RetrievalDataset` decodes an item
into what the model eats: ``T`` CLIP-normalised frames and, for each, a window of audio centred
on it (paper Sec. 3.1) or that window's cached embedding (:mod:`eclipse_lite.data.cache`).

Paragraph retrieval (paper Sec. 4.1 and 5.2). ActivityNet Captions is evaluated by joining all
sentences of a video into one paragraph, on val_1 (there is no public test split). QVHighlights,
DiDeMo, YouCook2 and Charades are "re-purposed ... following the protocol of ActivityNet
Captions. Specifically, we concatenate the textual descriptions of all short-term segments in a
given long video and treat it as a paragraph-to-video retrieval task" (Sec. 5.2). Every reader
therefore returns one item per video with all its descriptions, in time order where the format
has times; ``caption_mode="paragraph"`` joins them (:func:`join_paragraph`).
MSR-VTT (short clips, 20 independent captions each) is the exception: train with
``caption_mode="random_sentence"``, test on the 1k-A list (one caption per video).

Bad input never crashes a run or poisons a metric: a video that does not decode is skipped with
a :class:`SkippedItemWarning` and recorded in ``dataset.skipped``; :meth:`RetrievalDataset.check`
drops such items before evaluation so that text-to-video and video-to-text see the same
candidates; an empty caption is an error at load time naming the item.
"""
from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate, get_worker_info

from eclipse_lite.config import ModelConfig
from eclipse_lite.data.cache import MissingFeaturesError, StaleCacheError
from eclipse_lite.data.io import BACKENDS, DecodeError, read_audio, read_video, to_clip_input
from eclipse_lite.data.sampling import SAMPLINGS

CAPTION_MODES = ("paragraph", "random_sentence")
MISSING_POLICIES = ("warn", "error", "keep")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".3gp",
                    ".flv", ".wmv")


class SkippedItemWarning(UserWarning):
    """An item was left out because its media could not be decoded."""


# ------------------------------------------------------------------------------------- items
@dataclass
class Item:
    """One video and its text.

    video_id:   unique name of the video within its dataset.
    video_path: the media file.
    captions:   the descriptions, in temporal order where known (non-empty strings).
    segments:   ``[start_s, end_s]`` per caption, or None when the format has no times. A single
                paragraph caption may come with any number of segments (the times of the events
                it describes, as in the bundled benchmark).
    """

    video_id: str
    video_path: str
    captions: List[str]
    segments: Optional[List[Tuple[float, float]]] = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the item if a field cannot be used."""
        if not isinstance(self.video_id, str) or not self.video_id:
            raise ValueError(f"item with video_path={self.video_path!r} has an empty video_id")
        where = f"item {self.video_id!r} ({self.video_path})"
        if isinstance(self.captions, str) or not isinstance(self.captions, (list, tuple)):
            raise ValueError(f"{where}: captions must be a list of strings, got "
                             f"{type(self.captions).__name__}")
        if len(self.captions) == 0:
            raise ValueError(f"{where}: has no caption")
        for i, text in enumerate(self.captions):
            if not isinstance(text, str):
                raise ValueError(f"{where}: caption {i} is {type(text).__name__}, not a string")
            if not text.strip():
                raise ValueError(f"{where}: caption {i} is empty")
        if self.segments is not None:
            if len(self.segments) != len(self.captions) and len(self.captions) != 1:
                raise ValueError(f"{where}: {len(self.segments)} segments for "
                                 f"{len(self.captions)} captions")
            for i, seg in enumerate(self.segments):
                if len(seg) != 2 or not all(math.isfinite(float(v)) for v in seg):
                    raise ValueError(f"{where}: segment {i} = {seg!r} is not [start, end]")

    @property
    def paragraph(self) -> str:
        return join_paragraph(self.captions)


class ItemList(list):
    """A reader's items; ``.missing`` lists the video ids whose file was not found (dropped)."""

    def __init__(self, items: Iterable[Item] = (), missing: Sequence[str] = ()):
        super().__init__(items)
        self.missing = list(missing)


def join_paragraph(captions: Sequence[str]) -> str:
    """One paragraph from sentences: each stripped, ended with a full stop when it has no
    closing punctuation (YouCook2 and QVHighlights sentences have none), joined by spaces.
    ActivityNet sentences already end in ".", so this is the usual ``" ".join(sentences)``."""
    parts = []
    for text in captions:
        text = " ".join(text.split())
        if text and text[-1] not in ".!?;:":
            text += "."
        parts.append(text)
    return " ".join(parts)


# ------------------------------------------------------------------------------------ dataset
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
        frames = to_clip_input(torch.from_numpy(clip.frames)).contiguous()
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
            from eclipse_lite.audio import audio_windows

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

        Tensors are stacked ([B, ...]); strings and ints become lists; ``"num_skipped"`` counts
        the dropped items (skipped items are counted inside DataLoader workers, so the main
        process learns about them from here). Returns None when every item was skipped.
        """
        kept = [b for b in batch if b is not None]
        if not kept:
            return None
        out: Dict[str, Any] = {}
        for key, value in kept[0].items():
            if key == "waveform":  # compact batches: pad to the longest, keep the lengths
                waves = [b[key] for b in kept]
                lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
                padded = _batch_buffer((len(waves), int(lengths.max())), torch.float32)
                for row, wave in enumerate(waves):
                    padded[row, :len(wave)] = wave
                    padded[row, len(wave):] = 0.0
                out[key], out["waveform_length"] = padded, lengths
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
            from tqdm.auto import tqdm

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
    from eclipse_lite.audio import audio_windows

    sample_rate, window_s, placement = batch["compact"]
    out = {k: v for k, v in batch.items()
           if k not in ("frames_uint8", "waveform", "waveform_length", "compact")}
    frames = batch["frames_uint8"].to(device) if device is not None else batch["frames_uint8"]
    out["frames"] = to_clip_input(frames)
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


def _batch_buffer(shape: Tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; inside a DataLoader worker, in shared memory already (as
    ``default_collate`` does), which saves copying it there when the batch is sent."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = int(np.prod(shape))
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel, device="cpu")
    return torch.empty(0, dtype=dtype).new(storage).view(shape)


def _first(batch: list) -> Any:
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


# ------------------------------------------------------------------------------ file lookup
class _VideoIndex:
    """Every file under ``video_dir`` (recursive), looked up by file name or by stem."""

    def __init__(self, video_dir: str):
        self.root = os.fspath(video_dir)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"video directory {self.root!r} does not exist")
        self.by_name: Dict[str, str] = {}
        self.by_stem: Dict[str, str] = {}
        rank = {ext: i for i, ext in enumerate(VIDEO_EXTENSIONS)}
        found: List[Tuple[str, str]] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames):
                if not name.startswith("."):
                    found.append((name, os.path.join(dirpath, name)))
        # prefer common video extensions when a stem has several files
        found.sort(key=lambda f: rank.get(os.path.splitext(f[0])[1].lower(), len(rank)))
        for name, path in found:
            self.by_name.setdefault(name, path)
            stem, ext = os.path.splitext(name)
            if ext.lower() in rank:
                self.by_stem.setdefault(stem, path)

    def find(self, *names: str) -> Optional[str]:
        """The first file whose name, or name without video extension, is one of ``names``."""
        for name in names:
            if name in self.by_name:
                return self.by_name[name]
            if name in self.by_stem:
                return self.by_stem[name]
            stem, ext = os.path.splitext(name)
            if ext.lower() in VIDEO_EXTENSIONS and stem in self.by_stem:
                return self.by_stem[stem]
        return None


def _assemble(records: Iterable[Tuple[str, Sequence[str], List[str], Optional[list]]],
              video_dir: str, missing: str, source: str) -> ItemList:
    """Items from ``(video_id, candidate file names, captions, segments)`` records."""
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing={missing!r} is not one of {MISSING_POLICIES}")
    index = _VideoIndex(video_dir)
    items, absent = [], []
    for video_id, names, captions, segments in records:
        found = index.find(*names)
        expected = os.path.join(index.root, names[0] if os.path.splitext(names[0])[1]
                                else names[0] + ".mp4")
        try:  # captions are checked first: an empty one is an error even if the file is absent
            item = Item(video_id, found or expected, list(captions), segments)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None
        if found is None and missing != "keep":
            absent.append(video_id)
            continue
        items.append(item)
    if absent:
        msg = (f"{source}: {len(absent)} of {len(absent) + len(items)} videos have no file in "
               f"{index.root} (e.g. {', '.join(absent[:5])})")
        if missing == "error":
            raise FileNotFoundError(msg)
        warnings.warn(msg + "; they are left out", SkippedItemWarning, stacklevel=3)
    return ItemList(items, absent)


def _time_order(captions: List[str], segments: List[Tuple[float, float]]):
    order = sorted(range(len(captions)), key=lambda i: (segments[i][0], segments[i][1]))
    return [captions[i] for i in order], [tuple(map(float, segments[i])) for i in order]


def _load_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


# ------------------------------------------------------------------------------------ readers
def read_activitynet(json_path: str, video_dir: str, missing: str = "warn") -> ItemList:
    """ActivityNet Captions (Krishna et al., ICCV 2017): ``train.json``, ``val_1.json``,
    ``val_2.json``.

    Format (captions release, https://cs.stanford.edu/people/ranjaykrishna/densevid/): one JSON
    object keyed by video id (``"v_QOlSCBRmfWY"``) → ``{"duration": 82.73, "timestamps":
    [[0.83, 19.86], ...], "sentences": ["...", ...]}``. The paragraph is all sentences of a
    video joined in timestamp order (CLIP4Clip's and ECLIPSE's protocol); val_1 is the test
    split, as in the paper (Sec. 4.1). Video files are found as ``<id>.<ext>`` or, for
    downloads that dropped the ``v_`` prefix, ``<id without v_>.<ext>``, anywhere below
    ``video_dir``. ``missing``: "warn" (drop videos without a file, with one warning),
    "error", or "keep" (keep them; the dataset then skips them when decoding).
    """
    data = _load_json(json_path)
    if not isinstance(data, dict):
        raise ValueError(f"{json_path}: expected an object keyed by video id, got "
                         f"{type(data).__name__}")

    def records():
        for vid, ann in data.items():
            sentences, stamps = ann.get("sentences"), ann.get("timestamps")
            if not isinstance(sentences, list) or not isinstance(stamps, list) or \
                    len(sentences) != len(stamps):
                raise ValueError(f"{json_path}: video {vid!r} needs equally long 'sentences' "
                                 f"and 'timestamps' lists")
            captions, segments = _time_order(sentences, stamps) if sentences else ([], None)
            names = [vid] + ([vid[2:]] if vid.startswith("v_") else [])
            yield vid, names, captions, segments

    return _assemble(records(), video_dir, missing, json_path)


def read_qvhighlights(jsonl_path: str, video_dir: str, missing: str = "warn") -> ItemList:
    """QVHighlights (Lei et al., NeurIPS 2021): ``highlight_{train,val,test}_release.jsonl``.

    Format (https://github.com/jayleicn/moment_detr, ``data/``): one query per line,
    ``{"qid": 8737, "query": "...", "duration": 126, "vid": "bP5KfdFJzC4_660.0_810.0",
    "relevant_windows": [[0, 16]], "relevant_clip_ids": [...], "saliency_scores": [...]}``
    (the test file has no windows). Each ``vid`` is one 150 s clip file ``<vid>.mp4``; the
    queries sharing a ``vid`` are joined into its paragraph (paper Sec. 5.2), ordered by the
    start of their first relevant window when known, else as in the file. The segment of a
    query spans all its relevant windows. (The authors' loader further concatenated the clips
    of one YouTube video into one long video; an item here is one file.)
    """
    groups: "OrderedDict[str, list]" = OrderedDict()
    with open(jsonl_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{jsonl_path}:{lineno}: not valid JSON ({e})") from None
            if "vid" not in rec or "query" not in rec:
                raise ValueError(f"{jsonl_path}:{lineno}: needs 'vid' and 'query'")
            windows = rec.get("relevant_windows") or None
            span = None
            if windows:
                span = (float(min(w[0] for w in windows)), float(max(w[1] for w in windows)))
            groups.setdefault(str(rec["vid"]), []).append((rec["query"], span, lineno))

    def records():
        for vid, queries in groups.items():
            timed = all(span is not None for _, span, _ in queries)
            if timed:
                queries = sorted(queries, key=lambda q: (q[1][0], q[1][1]))
            captions = [q for q, _, _ in queries]
            segments = [span for _, span, _ in queries] if timed else None
            yield vid, [vid], captions, segments

    return _assemble(records(), video_dir, missing, jsonl_path)


def read_didemo(json_path: str, video_dir: str, missing: str = "warn") -> ItemList:
    """DiDeMo (Hendricks et al., ICCV 2017): ``{train,val,test}_data.json``.

    Format (https://github.com/LisaAnne/LocalizingMoments, ``data/``): a list of annotations
    ``{"annotation_id": ..., "description": "...", "video": "<flickr id>.<ext>", "times":
    [[start, end], ...] (one pair per annotator, in 5-second chunk indices 0-5), "dl_link": ...,
    "num_segments": ...}``. All descriptions of a video form its paragraph (paper Sec. 5.2),
    ordered by the annotators' mean start chunk (ties keep file order); the segment of a
    description is ``[mean start * 5, (mean end + 1) * 5]`` seconds, as in CLIP4Clip's loader.
    Video files are named as the ``video`` field, or with its extension replaced.
    """
    data = _load_json(json_path)
    if not isinstance(data, list):
        raise ValueError(f"{json_path}: expected a list of annotations, got "
                         f"{type(data).__name__}")
    groups: "OrderedDict[str, list]" = OrderedDict()
    for n, ann in enumerate(data):
        if not isinstance(ann, dict) or "video" not in ann or "description" not in ann \
                or not ann.get("times"):
            raise ValueError(f"{json_path}: annotation {n} needs 'video', 'description' and "
                             f"'times'")
        times = np.asarray(ann["times"], dtype=np.float64).reshape(-1, 2)
        span = (float(times[:, 0].mean() * 5.0), float((times[:, 1].mean() + 1.0) * 5.0))
        groups.setdefault(str(ann["video"]), []).append((ann["description"], span))

    def records():
        for video, anns in groups.items():
            captions, segments = _time_order([a for a, _ in anns], [s for _, s in anns])
            yield video, [video], captions, segments

    return _assemble(records(), video_dir, missing, json_path)


def read_youcook2(json_path: str, video_dir: str, subset: str = "validation",
                  missing: str = "warn") -> ItemList:
    """YouCook2 (Zhou et al., AAAI 2018): ``youcookii_annotations_trainval.json``.

    Format (http://youcook2.eecs.umich.edu/download): ``{"database": {vid: {"duration": ...,
    "subset": "training"|"validation", "recipe_type": "...", "video_url": ..., "annotations":
    [{"segment": [s, e], "id": 0, "sentence": "..."}, ...]}}}``. ``subset``: "training" or
    "validation" (also "train" / "val"); validation is the test split (the official test
    annotations are withheld), as in ECLIPSE's released scripts. The procedure steps, in segment
    order, form the paragraph (paper Sec. 5.2). Videos are ``raw_videos/<subset>/<recipe>/<vid>
    .<ext>`` in the release; any file named ``<vid>.<ext>`` below ``video_dir`` is found.
    """
    aliases = {"training": "training", "train": "training", "validation": "validation",
               "val": "validation"}
    if subset not in aliases:
        raise ValueError(f"subset={subset!r} is not one of {sorted(aliases)}")
    subset = aliases[subset]
    data = _load_json(json_path)
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise ValueError(f"{json_path}: expected {{'database': {{video id: ...}}}}")

    def records():
        for vid, ann in data["database"].items():
            if ann.get("subset") != subset:
                continue
            steps = ann.get("annotations") or []
            captions = [s.get("sentence", "") for s in steps]
            segments = [s.get("segment") for s in steps]
            if any(seg is None for seg in segments):
                raise ValueError(f"{json_path}: video {vid!r} has an annotation without "
                                 f"'segment'")
            if captions:
                captions, segments = _time_order(captions, segments)
            yield vid, [vid], captions, segments or None

    return _assemble(records(), video_dir, missing, json_path)


def read_charades(csv_path: str, video_dir: str, text: str = "descriptions",
                  sta_path: Optional[str] = None, missing: str = "warn") -> ItemList:
    """Charades (Sigurdsson et al., ECCV 2016): ``Charades_v1_{train,test}.csv``.

    Format (https://prior.allenai.org/projects/charades, README of ``Charades.zip``): columns
    ``id, subject, scene, quality, relevance, verified, script, objects, descriptions, actions,
    length``; ``descriptions`` holds one or more free-form descriptions of the video separated
    by ``;``, ``actions`` is ``"c092 11.90 21.20;c147 0.00 12.60"``. Videos are ``<id>.mp4``.

    The paragraph (paper Sec. 5.2, descriptions concatenated) comes from ``text``:
      "descriptions" (default): the video's descriptions in file order;
      "script": the script the actors performed — what ECLIPSE's released loader uses.
    ``sta_path``: a Charades-STA file (``charades_sta_{train,test}.txt``, Gao et al., ICCV 2017;
    lines ``"<id> <start> <end>##<sentence>"``): the paragraph is then the segment sentences of
    the video in time order (the literal "descriptions of all short-term segments"), with their
    segments; videos of the csv without STA sentences are left out.
    """
    if text not in ("descriptions", "script"):
        raise ValueError(f"text={text!r} is not one of ('descriptions', 'script')")
    with open(csv_path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        need = {"id", "script", "descriptions"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise ValueError(f"{csv_path}: needs columns {sorted(need)}, has "
                             f"{reader.fieldnames}")
        rows = list(reader)
    sta: Optional[Dict[str, list]] = None
    if sta_path is not None:
        sta = OrderedDict()
        with open(sta_path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                head, sep, sentence = line.rstrip("\n").partition("##")
                parts = head.split()
                if not sep or len(parts) != 3:
                    raise ValueError(f"{sta_path}:{lineno}: expected '<id> <start> <end>##"
                                     f"<sentence>'")
                sta.setdefault(parts[0], []).append((sentence, (float(parts[1]),
                                                                float(parts[2]))))

    def records():
        for row in rows:
            vid = row["id"]
            if sta is not None:
                if vid not in sta:
                    continue
                captions, segments = _time_order([s for s, _ in sta[vid]],
                                                 [t for _, t in sta[vid]])
                yield vid, [vid], captions, segments
            elif text == "script":
                yield vid, [vid], [row["script"]], None
            else:
                # trailing separators leave empty pieces; an all-empty cell is an empty caption
                parts = [d for d in row["descriptions"].split(";") if d.strip()]
                yield vid, [vid], parts or [row["descriptions"]], None

    return _assemble(records(), video_dir, missing, csv_path)


def read_msrvtt(json_path: str, video_dir: str, split: Optional[str] = None,
                missing: str = "warn") -> ItemList:
    """MSR-VTT (Xu et al., CVPR 2016) as distributed with CLIP4Clip/JSFusion.

    Format: ``MSRVTT_data.json`` = ``{"videos": [{"video_id": "video0", "category": 9, "url":
    ..., "start time": ..., "end time": ..., "split": "train"|"validate"|"test", "id": 0}, ...],
    "sentences": [{"video_id": "video0", "caption": "...", "sen_id": 0}, ...]}`` (the official
    ``train_val_videodatainfo.json`` + ``test_videodatainfo.json``), videos ``<video_id>.mp4``.
    ``split``:
      None: every video with all its captions (train with ``caption_mode="random_sentence"``);
      "train" / "validate" / "test": the official split field;
      a csv path: with a ``sentence`` column it is the 1k-A test list (``MSRVTT_JSFUSION_test.csv``,
      Yu et al., ECCV 2018; columns ``key, vid_key, video_id, sentence``): one item per row
      with that one sentence; otherwise (e.g. ``MSRVTT_train.9k.csv``) its ``video_id`` column
      selects the videos.
    """
    data = _load_json(json_path)
    if not isinstance(data, dict) or "sentences" not in data:
        raise ValueError(f"{json_path}: expected {{'videos': [...], 'sentences': [...]}}")
    captions: "OrderedDict[str, List[str]]" = OrderedDict()
    for video in data.get("videos", []):
        captions.setdefault(str(video["video_id"]), [])
    for n, sent in enumerate(data["sentences"]):
        if "video_id" not in sent or "caption" not in sent:
            raise ValueError(f"{json_path}: sentence {n} needs 'video_id' and 'caption'")
        captions.setdefault(str(sent["video_id"]), []).append(sent["caption"])
    splits = {str(v["video_id"]): v.get("split") for v in data.get("videos", [])}

    if split is None:
        chosen = [(vid, caps) for vid, caps in captions.items()]
    elif split in ("train", "validate", "test"):
        chosen = [(vid, caps) for vid, caps in captions.items() if splits.get(vid) == split]
    else:
        with open(split, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "video_id" not in reader.fieldnames:
                raise ValueError(f"{split}: needs a 'video_id' column, has {reader.fieldnames}")
            rows = list(reader)
        if "sentence" in reader.fieldnames:
            chosen = [(row["video_id"], [row["sentence"]]) for row in rows]
        else:
            unknown = [row["video_id"] for row in rows if row["video_id"] not in captions]
            if unknown:
                raise ValueError(f"{split}: video ids not in {json_path}: {unknown[:5]}")
            chosen = [(row["video_id"], captions[row["video_id"]]) for row in rows]

    return _assemble(((vid, [vid], caps, None) for vid, caps in chosen), video_dir, missing,
                     json_path if split is None or split in ("train", "validate", "test")
                     else split)


def read_jsonl_manifest(path: str, missing: str = "warn") -> ItemList:
    """The generic manifest: one JSON object per line,
    ``{"video": "<path relative to the manifest's folder>", "captions": ["...", ...],
    "segments": [[s, e], ...] (optional), "id": "..." (optional, default: the file's stem)}``.
    Other keys (e.g. the bundled benchmark's ground truth) are ignored. This is the format of
    the bundled benchmark's splits.
    """
    base = os.path.dirname(os.path.abspath(path))
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from None
            if not isinstance(rec, dict) or "video" not in rec or "captions" not in rec:
                raise ValueError(f"{path}:{lineno}: needs 'video' and 'captions'")
            video = os.path.join(base, rec["video"])
            vid = str(rec.get("id") or os.path.splitext(os.path.basename(rec["video"]))[0])
            segments = rec.get("segments")
            if segments is not None:
                segments = [tuple(map(float, s)) for s in segments]
            records.append((lineno, vid, video, rec["captions"], segments))
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing={missing!r} is not one of {MISSING_POLICIES}")
    items, absent = [], []
    for lineno, vid, video, captions, segments in records:
        try:
            item = Item(vid, video, captions, segments)
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: {e}") from None
        if not os.path.isfile(video) and missing != "keep":
            absent.append(vid)
            continue
        items.append(item)
    if absent:
        msg = f"{path}: {len(absent)} of {len(records)} videos do not exist (e.g. {absent[:5]})"
        if missing == "error":
            raise FileNotFoundError(msg)
        warnings.warn(msg + "; they are left out", SkippedItemWarning, stacklevel=2)
    return ItemList(items, absent)


READERS: Dict[str, Callable[..., ItemList]] = {
    "activitynet": read_activitynet,
    "qvhighlights": read_qvhighlights,
    "didemo": read_didemo,
    "youcook2": read_youcook2,
    "charades": read_charades,
    "msrvtt": read_msrvtt,
    "jsonl": read_jsonl_manifest,
}


def read_dataset(name: str, **kw: Any) -> ItemList:
    """Items of dataset ``name`` (one of :data:`READERS`), with that reader's arguments."""
    key = name.lower().replace("-", "").replace("_", "")
    aliases = {"manifest": "jsonl", "anet": "activitynet", "qvh": "qvhighlights",
               "yc2": "youcook2"}
    key = aliases.get(key, key)
    if key not in READERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(READERS)}")
    return READERS[key](**kw)


__all__ = ["Item", "ItemList", "RetrievalDataset", "SkippedItemWarning", "collate",
           "expand_compact", "join_paragraph", "read_activitynet",
           "read_qvhighlights", "read_didemo", "read_youcook2", "read_charades", "read_msrvtt",
           "read_jsonl_manifest", "read_dataset", "READERS", "CAPTION_MODES"]
