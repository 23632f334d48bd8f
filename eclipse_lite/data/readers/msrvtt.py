"""MSR-VTT reader (Xu et al., CVPR 2016) for ``MSRVTT_data.json`` as distributed with
CLIP4Clip/JSFusion → one :class:`~eclipse_lite.data.readers.common.Item` per video (all its
captions) or per row of a 1k-A test list (one caption)."""
from __future__ import annotations

import csv
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

from eclipse_lite.data.readers.common import ItemList, assemble, load_json

OFFICIAL_SPLITS = ("train", "validate", "test")


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
    data = load_json(json_path)
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
    elif split in OFFICIAL_SPLITS:
        chosen = [(vid, caps) for vid, caps in captions.items() if splits.get(vid) == split]
    else:
        chosen = _videos_of_list(split, captions, json_path)

    return assemble(((vid, [vid], caps, None) for vid, caps in chosen), video_dir, missing,
                    json_path if split is None or split in OFFICIAL_SPLITS else split)


def _videos_of_list(csv_path: str, captions: Dict[str, List[str]], json_path: str
                    ) -> List[Tuple[str, List[str]]]:
    """``(video id, captions)`` per row of a split list: the row's ``sentence`` when the list
    has that column (1k-A), else all the video's captions from ``captions``."""
    with open(csv_path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "video_id" not in reader.fieldnames:
            raise ValueError(f"{csv_path}: needs a 'video_id' column, has {reader.fieldnames}")
        rows = list(reader)
    if "sentence" in reader.fieldnames:
        return [(row["video_id"], [row["sentence"]]) for row in rows]
    unknown = [row["video_id"] for row in rows if row["video_id"] not in captions]
    if unknown:
        raise ValueError(f"{csv_path}: video ids not in {json_path}: {unknown[:5]}")
    return [(row["video_id"], captions[row["video_id"]]) for row in rows]
