"""Dataset-format readers: each turns a dataset's own annotation file into an
:class:`~eclipse_lite.data.readers.common.ItemList` of :class:`Item` (video id, video file,
captions in temporal order, optional segments), one file per format.

    from eclipse_lite.data.readers import read_dataset
    items = read_dataset("activitynet", json_path="val_1.json", video_dir="videos/")

Paragraph retrieval (paper Sec. 4.1 and 5.2). ActivityNet Captions is evaluated by joining all
sentences of a video into one paragraph, on val_1 (there is no public test split). QVHighlights,
DiDeMo, YouCook2 and Charades are "re-purposed ... following the protocol of ActivityNet
Captions. Specifically, we concatenate the textual descriptions of all short-term segments in a
given long video and treat it as a paragraph-to-video retrieval task" (Sec. 5.2). Every reader
therefore returns one item per video with all its descriptions, in time order where the format
has times; ``caption_mode="paragraph"`` joins them (:func:`join_paragraph`).
MSR-VTT (short clips, 20 independent captions each) is the exception: train with
``caption_mode="random_sentence"``, test on the 1k-A list (one caption per video).

An empty caption is an error at load time naming the item; a video without a file is dropped
with one :class:`SkippedItemWarning` (``missing="warn"``), or raises / is kept (``"error"`` /
``"keep"``).
"""
from __future__ import annotations

from typing import Any, Callable, Dict

from eclipse_lite.data.readers.activitynet import read_activitynet
from eclipse_lite.data.readers.charades import read_charades
from eclipse_lite.data.readers.common import (
    MISSING_POLICIES,
    VIDEO_EXTENSIONS,
    Item,
    ItemList,
    SkippedItemWarning,
    join_paragraph,
)
from eclipse_lite.data.readers.didemo import read_didemo
from eclipse_lite.data.readers.jsonl import read_jsonl_manifest
from eclipse_lite.data.readers.msrvtt import read_msrvtt
from eclipse_lite.data.readers.qvhighlights import read_qvhighlights
from eclipse_lite.data.readers.youcook2 import read_youcook2

READERS: Dict[str, Callable[..., ItemList]] = {
    "activitynet": read_activitynet,
    "qvhighlights": read_qvhighlights,
    "didemo": read_didemo,
    "youcook2": read_youcook2,
    "charades": read_charades,
    "msrvtt": read_msrvtt,
    "jsonl": read_jsonl_manifest,
}
ALIASES = {"manifest": "jsonl", "anet": "activitynet", "qvh": "qvhighlights", "yc2": "youcook2"}


def read_dataset(name: str, **kw: Any) -> ItemList:
    """Items of dataset ``name`` (one of :data:`READERS`, case, "-" and "_" ignored, or an
    alias in :data:`ALIASES`), with that reader's keyword arguments."""
    key = name.lower().replace("-", "").replace("_", "")
    key = ALIASES.get(key, key)
    if key not in READERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(READERS)}")
    return READERS[key](**kw)


__all__ = ["Item", "ItemList", "SkippedItemWarning", "join_paragraph", "read_activitynet",
           "read_qvhighlights", "read_didemo", "read_youcook2", "read_charades", "read_msrvtt",
           "read_jsonl_manifest", "read_dataset", "READERS", "ALIASES", "MISSING_POLICIES",
           "VIDEO_EXTENSIONS"]
