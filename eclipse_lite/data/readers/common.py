"""What every reader shares: :class:`Item`, :class:`ItemList`, :func:`join_paragraph`, and the
helpers that find video files and assemble items.

:func:`assemble` turns ``(video id, candidate file names, captions, segments)`` records into
items, finding each file anywhere below the video folder (:class:`VideoIndex`) and applying the
``missing`` policy: "warn" (drop videos without a file, with one :class:`SkippedItemWarning`),
"error" (``FileNotFoundError``) or "keep" (keep them; the dataset then skips them when decoding).
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

MISSING_POLICIES = ("warn", "error", "keep")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".3gp",
                    ".flv", ".wmv")


class SkippedItemWarning(UserWarning):
    """An item was left out because its media could not be found or decoded."""


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
        """All captions as one paragraph (:func:`join_paragraph`)."""
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


class VideoIndex:
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


def check_missing_policy(missing: str) -> None:
    """Raise ``ValueError`` unless ``missing`` is one of :data:`MISSING_POLICIES`."""
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing={missing!r} is not one of {MISSING_POLICIES}")


def assemble(records: Iterable[Tuple[str, Sequence[str], List[str], Optional[list]]],
             video_dir: str, missing: str, source: str) -> ItemList:
    """Items from ``(video_id, candidate file names, captions, segments)`` records; the file of
    each is the first candidate found below ``video_dir``. ``source`` names the annotation file
    in errors. A reader calls this directly: its warning points at the reader's caller."""
    check_missing_policy(missing)
    index = VideoIndex(video_dir)
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


def time_order(captions: List[str], segments: Sequence[Sequence[float]]
               ) -> Tuple[List[str], List[Tuple[float, float]]]:
    """Captions [N] and their segments [N, 2] sorted by (start, end); ties keep their order."""
    order = sorted(range(len(captions)), key=lambda i: (segments[i][0], segments[i][1]))
    return [captions[i] for i in order], [tuple(map(float, segments[i])) for i in order]


def jsonl_records(path: str) -> Iterator[Tuple[int, Any]]:
    """``(line number, parsed object)`` for each non-blank line of a JSON-lines file; a line that
    is not JSON is an error naming ``path:line``."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from None


def load_json(path: str) -> Any:
    """The JSON document at ``path``; ``ValueError`` naming the file when it is not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


__all__ = ["Item", "ItemList", "SkippedItemWarning", "join_paragraph", "VideoIndex", "assemble",
           "jsonl_records",
           "time_order", "load_json", "check_missing_policy", "MISSING_POLICIES",
           "VIDEO_EXTENSIONS"]
