"""The bundled benchmark's ground truth: each video's plan, and where its sounds come from.

A plan (one ``events.json`` entry, see ``eclipse_lite.data.synth.plan``) lists a video's events;
``sounding_sources`` gives the boxes of the objects both on screen and sounding at a time.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Tuple

from eclipse_lite.data.synth.visuals import box_at


def load_plans(path: str) -> Dict[str, Dict[str, Any]]:
    """The bundled benchmark's ground truth, ``{video_id: plan}``.

    Accepts ``events.json`` as a list of plans (each with an ``"id"``), a mapping ``id → plan``, or
    ``{"videos": [plan, ...]}``. A plan has ``"events"`` (see ``eclipse_lite.data.synth.plan``).
    """
    with open(path, encoding="utf-8") as f:
        obj = json.load(f)
    if isinstance(obj, dict) and isinstance(obj.get("videos"), list):
        obj = obj["videos"]
    if isinstance(obj, list):
        plans = {}
        for i, p in enumerate(obj):
            if not isinstance(p, dict) or "id" not in p:
                raise ValueError(f"{path}: entry {i} is not a plan with an 'id'")
            plans[str(p["id"])] = p
    elif isinstance(obj, dict):
        plans = {str(k): v for k, v in obj.items()}
    else:
        raise ValueError(f"{path}: expected a list or mapping of plans, got {type(obj).__name__}")
    for vid, p in plans.items():
        if not isinstance(p, dict) or not isinstance(p.get("events"), list):
            raise ValueError(f"{path}: plan {vid!r} has no 'events' list")
    return plans


def sounding_sources(plan: Mapping[str, Any], t: float) -> List[Tuple[int, Tuple[float, ...]]]:
    """Events whose object is on screen *and* sounding at time ``t``: ``[(event index, box)]``.

    An event counts when ``box_at(event, t)`` is not None (it has a visual on screen) and
    ``sound_start <= t < sound_end`` with a ``sound_class``. In the bundled benchmark these are
    ``seen_heard`` events (and ``brief`` ones during their short visual). Boxes are normalised
    ``(x0, y0, x1, y1)``.
    """
    out = []
    for i, ev in enumerate(plan["events"]):
        if ev.get("sound_class") is None or ev.get("sound_start") is None:
            continue
        if not float(ev["sound_start"]) <= t < float(ev["sound_end"]):
            continue
        box = box_at(ev, t)
        if box is not None and box[2] > box[0] and box[3] > box[1]:
            out.append((i, tuple(float(v) for v in box)))
    return out


def visible_objects(plan: Mapping[str, Any], t: float) -> int:
    """How many of the plan's objects are on screen at time ``t`` (sounding or not)."""
    return sum(box_at(ev, t) is not None for ev in plan["events"])
