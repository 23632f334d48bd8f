"""ActivityNet Captions reader (Krishna et al., ICCV 2017): ``train.json``, ``val_1.json``,
``val_2.json`` → one :class:`~eclipse_lite.data.readers.common.Item` per video."""
from __future__ import annotations

from eclipse_lite.data.readers.common import ItemList, assemble, load_json, time_order


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
    data = load_json(json_path)
    if not isinstance(data, dict):
        raise ValueError(f"{json_path}: expected an object keyed by video id, got "
                         f"{type(data).__name__}")

    def records():  # (video id, candidate file names, captions, segments) per video
        for vid, ann in data.items():
            sentences, stamps = ann.get("sentences"), ann.get("timestamps")
            if not isinstance(sentences, list) or not isinstance(stamps, list) or \
                    len(sentences) != len(stamps):
                raise ValueError(f"{json_path}: video {vid!r} needs equally long 'sentences' "
                                 f"and 'timestamps' lists")
            captions, segments = time_order(sentences, stamps) if sentences else ([], None)
            names = [vid] + ([vid[2:]] if vid.startswith("v_") else [])
            yield vid, names, captions, segments

    return assemble(records(), video_dir, missing, json_path)
