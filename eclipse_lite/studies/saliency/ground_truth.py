"""Which frames the localisation study scores: those with exactly one sounding source on screen.

The benchmark's ground truth itself (plans, the sounding sources' boxes) is
``eclipse_lite.data.synth.ground_truth``; ``pick_frames`` draws the scored frames from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from eclipse_lite.data.synth.ground_truth import sounding_sources

SCORED_KINDS = ("seen_heard",)   # event kinds whose frames are scored (``brief`` can be added)


@dataclass
class VideoRecord:
    """One benchmark video: id, media file and its plan (``events.json`` entry)."""

    video_id: str
    path: str
    plan: Dict[str, Any]


def pick_frames(plan: Mapping[str, Any], times: np.ndarray, per_event: int, seed: int,
                video_index: int, kinds: Sequence[str] = SCORED_KINDS
                ) -> List[Tuple[int, int, Tuple[float, ...]]]:
    """``[(frame index, event index, box)]``: frames where exactly one object is on screen and
    sounding and its event's kind is in ``kinds``; ``per_event`` frames drawn per event.

    ``times`` [n] are the frame times in seconds; the draw is seeded by ``(seed, video_index,
    event index)``, so the same arguments give the same frames.
    """
    by_event: Dict[int, List[Tuple[int, Tuple[float, ...]]]] = {}
    for k, t in enumerate(times):
        sources = sounding_sources(plan, float(t))
        if len(sources) == 1 and plan["events"][sources[0][0]].get("kind") in kinds:
            e, box = sources[0]
            by_event.setdefault(e, []).append((k, box))
    picked = []
    for e in sorted(by_event):
        cands = by_event[e]
        rng = np.random.default_rng([int(seed), int(video_index), int(e)])
        take = sorted(rng.choice(len(cands), size=min(per_event, len(cands)), replace=False))
        picked += [(cands[j][0], e, cands[j][1]) for j in take]
    return picked
