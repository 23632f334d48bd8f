"""QVHighlights reader (Lei et al., NeurIPS 2021): ``highlight_{train,val,test}_release.jsonl``
→ one :class:`~eclipse_lite.data.readers.common.Item` per clip, its queries as the paragraph."""
from __future__ import annotations

from collections import OrderedDict

from eclipse_lite.data.readers.common import ItemList, assemble, jsonl_records


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
    for lineno, rec in jsonl_records(jsonl_path):
        if "vid" not in rec or "query" not in rec:
            raise ValueError(f"{jsonl_path}:{lineno}: needs 'vid' and 'query'")
        windows = rec.get("relevant_windows") or None
        span = None
        if windows:
            span = (float(min(w[0] for w in windows)), float(max(w[1] for w in windows)))
        groups.setdefault(str(rec["vid"]), []).append((rec["query"], span, lineno))

    def records():  # (video id, candidate file names, captions, segments) per video
        for vid, queries in groups.items():
            timed = all(span is not None for _, span, _ in queries)
            if timed:
                queries = sorted(queries, key=lambda q: (q[1][0], q[1][1]))
            captions = [q for q, _, _ in queries]
            segments = [span for _, span, _ in queries] if timed else None
            yield vid, [vid], captions, segments

    return assemble(records(), video_dir, missing, jsonl_path)
