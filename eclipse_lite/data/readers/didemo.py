"""DiDeMo reader (Hendricks et al., ICCV 2017): ``{train,val,test}_data.json`` → one
:class:`~eclipse_lite.data.readers.common.Item` per video, its descriptions as the paragraph."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from eclipse_lite.data.readers.common import ItemList, assemble, load_json, time_order


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
    data = load_json(json_path)
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

    def records():  # (video id, candidate file names, captions, segments) per video
        for video, anns in groups.items():
            captions, segments = time_order([a for a, _ in anns], [s for _, s in anns])
            yield video, [video], captions, segments

    return assemble(records(), video_dir, missing, json_path)
