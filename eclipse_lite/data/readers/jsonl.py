"""The generic JSONL manifest reader: one ``{"video", "captions", "segments", "id"}`` object per
line, the format of the bundled benchmark's splits → one
:class:`~eclipse_lite.data.readers.common.Item` per line."""
from __future__ import annotations

import os
import warnings

from eclipse_lite.data.readers.common import (
    Item,
    ItemList,
    SkippedItemWarning,
    check_missing_policy,
    jsonl_records,
)


def read_jsonl_manifest(path: str, missing: str = "warn") -> ItemList:
    """The generic manifest: one JSON object per line,
    ``{"video": "<path relative to the manifest's folder>", "captions": ["...", ...],
    "segments": [[s, e], ...] (optional), "id": "..." (optional, default: the file's stem)}``.
    Other keys (e.g. the bundled benchmark's ground truth) are ignored. This is the format of
    the bundled benchmark's splits.
    """
    base = os.path.dirname(os.path.abspath(path))
    records = []
    for lineno, rec in jsonl_records(path):
        if not isinstance(rec, dict) or "video" not in rec or "captions" not in rec:
            raise ValueError(f"{path}:{lineno}: needs 'video' and 'captions'")
        video = os.path.join(base, rec["video"])
        vid = str(rec.get("id") or os.path.splitext(os.path.basename(rec["video"]))[0])
        segments = rec.get("segments")
        if segments is not None:
            segments = [tuple(map(float, s)) for s in segments]
        records.append((lineno, vid, video, rec["captions"], segments))
    check_missing_policy(missing)
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
