"""YouCook2 reader (Zhou et al., AAAI 2018): ``youcookii_annotations_trainval.json`` → one
:class:`~eclipse_lite.data.readers.common.Item` per video of a subset, its steps as the paragraph."""
from __future__ import annotations

from eclipse_lite.data.readers.common import ItemList, assemble, load_json, time_order

SUBSET_ALIASES = {"training": "training", "train": "training", "validation": "validation",
                  "val": "validation"}


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
    if subset not in SUBSET_ALIASES:
        raise ValueError(f"subset={subset!r} is not one of {sorted(SUBSET_ALIASES)}")
    subset = SUBSET_ALIASES[subset]
    data = load_json(json_path)
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise ValueError(f"{json_path}: expected {{'database': {{video id: ...}}}}")

    def records():  # (video id, candidate file names, captions, segments) per video
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
                captions, segments = time_order(captions, segments)
            yield vid, [vid], captions, segments or None

    return assemble(records(), video_dir, missing, json_path)
