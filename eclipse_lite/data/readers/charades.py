"""Charades reader (Sigurdsson et al., ECCV 2016): ``Charades_v1_{train,test}.csv``, optionally
with Charades-STA sentences → one :class:`~eclipse_lite.data.readers.common.Item` per video."""
from __future__ import annotations

import csv
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

from eclipse_lite.data.readers.common import ItemList, assemble, time_order

TEXT_SOURCES = ("descriptions", "script")


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
    if text not in TEXT_SOURCES:
        raise ValueError(f"text={text!r} is not one of {TEXT_SOURCES}")
    with open(csv_path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        need = {"id", "script", "descriptions"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise ValueError(f"{csv_path}: needs columns {sorted(need)}, has "
                             f"{reader.fieldnames}")
        rows = list(reader)
    sta = read_charades_sta(sta_path) if sta_path is not None else None

    def records():  # (video id, candidate file names, captions, segments) per video
        for row in rows:
            vid = row["id"]
            if sta is not None:
                if vid not in sta:
                    continue
                captions, segments = time_order([s for s, _ in sta[vid]],
                                                [t for _, t in sta[vid]])
                yield vid, [vid], captions, segments
            elif text == "script":
                yield vid, [vid], [row["script"]], None
            else:
                # trailing separators leave empty pieces; an all-empty cell is an empty caption
                parts = [d for d in row["descriptions"].split(";") if d.strip()]
                yield vid, [vid], parts or [row["descriptions"]], None

    return assemble(records(), video_dir, missing, csv_path)


def read_charades_sta(sta_path: str) -> Dict[str, List[Tuple[str, Tuple[float, float]]]]:
    """A Charades-STA file (lines ``"<id> <start> <end>##<sentence>"``) as ``{video id:
    [(sentence, (start_s, end_s)), ...]}`` in file order; ``ValueError`` naming a bad line."""
    sta: "OrderedDict[str, List[Tuple[str, Tuple[float, float]]]]" = OrderedDict()
    with open(sta_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            head, sep, sentence = line.rstrip("\n").partition("##")
            parts = head.split()
            if not sep or len(parts) != 3:
                raise ValueError(f"{sta_path}:{lineno}: expected '<id> <start> <end>##"
                                 f"<sentence>'")
            sta.setdefault(parts[0], []).append((sentence, (float(parts[1]), float(parts[2]))))
    return sta
