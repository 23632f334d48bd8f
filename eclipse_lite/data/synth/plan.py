"""The timeline of one benchmark video: which events happen when, where, and what they sound like.

A plan is the ground truth of a video, a JSON-serialisable dict (one entry of ``events.json``)::

    {"id": "test_0007", "duration": 93.5, "fps": 4, "background": "brick wall",
     "background_in_caption": true, "palette": ["cow"], "events": [event, ...]}

and an event (times in seconds, boxes normalised ``[x0, y0, x1, y1]``, ``None`` where a field does
not apply)::

    {"kind": "seen_heard" | "heard_only" | "seen_only" | "brief" | "distractor" | "echo",
     "in_caption": bool, "start": s, "end": e,
     "visual_class": "red square", "visual_start": s, "visual_end": e,
     "motion": "still" | "slide" | "bounce" | "grow", "region": "left", "direction": None,
     "box": [...], "box_end": [...], "bounce_height": h, "bounce_period": p,
     "sound_class": "cow", "sound_start": s, "sound_end": e, "sound_gain_db": g}

``box_at(event, t)`` (``visuals``) turns that into the box at any time; for ``seen_heard``
and ``brief`` events the visual *is* the sound source, so that box is the sound-source box while the
visual is on screen. ``heard_only`` sounds come from off screen (no box).

Calibration (see ``oracle.py`` and ``data/README.md``). The paper's finding is that audio alone is
weak (2.7 R@1), video alone strong (40.7) and both best (42.3). Here that comes from:
  * most caption facts are visual: 3-4 described events, most with a visual (object + place or
    motion), and the background named in 40 % of captions;
  * each caption names one sound class (its ``palette``, repeated when several events sound),
    drawn from 22 classes shared by every video; every video also plays ``UNCAPTIONED_ECHOES``
    other classes exactly as often, as long and as loud as the named one (``echo`` events), under
    an ambient bed and a few distractors (small silent objects, quieter sounds) - so neither the
    sound classes heard nor their prominence single out the video (a first version named 1-2
    classes and had only quiet distractors: a trained audio-only model reached 28 T2V R@1 against
    video-only's 12);
  * a video holds 3-8 events, echoes included (``MAX_EVENTS``): distractors fill what the
    described events and their echoes leave, quieter sounds dropped before silent objects;
  * a minority of facts escape 8 uniform frames: sounds from off screen, and ``brief`` visuals
    placed strictly between two of the 8 uniformly sampled frames (margin ``brief_margin``) whose
    sound lasts longer, so the audio windows around the frames still hear them.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from eclipse_lite.data.synth.sounds import SOUND_CLASSES
from eclipse_lite.data.synth.visuals import (
    BACKGROUNDS,
    REGIONS,
    SLIDES,
    VISUAL_CLASSES,
    place_box,
    slide_boxes,
)

__all__ = ["EVENT_KINDS", "CAPTIONED_KINDS", "FRAME_GRID", "KIND_WEIGHTS", "MOTION_WEIGHTS",
           "plan_video", "uniform_frame_times", "brief_margin", "visual_event"]

EVENT_KINDS = ("seen_heard", "heard_only", "seen_only", "brief", "distractor", "echo")
CAPTIONED_KINDS = ("seen_heard", "heard_only", "seen_only", "brief")
FRAME_GRID = 8  # brief visuals hide between the frames of an 8-frame uniform sampler (tiny preset)

# ---- calibration knobs (measured effect: data/README.md, "Calibration")
KIND_WEIGHTS = {"seen_only": 0.25, "seen_heard": 0.25, "heard_only": 0.20, "brief": 0.30}
MOTION_WEIGHTS = {"still": 0.40, "slide": 0.25, "bounce": 0.15, "grow": 0.20}
MAX_EVENTS = 8             # events per video, echoes included (at least 3)
MAX_CAPTIONED = 4          # events a caption describes (the rest are echoes and distractors)
PALETTE_SIZES = (1,)       # distinct sound classes a caption names ...
PALETTE_P = (1.0,)         # ... and how often (version 1.0: 1 or 2, half and half)
MAX_DISTRACTORS = 3        # distractors drawn before the cap above turns surplus events into more
BACKGROUND_IN_CAPTION_P = 0.4   # version 1.0: 0.3
OBJECT_SIDE = (0.28, 0.38)      # side of a described object's box (fraction of the frame)
DISTRACTOR_SIDE = (0.18, 0.26)
DISTRACTOR_GAIN_DB = (-10.0, -4.0)
# Extra uncaptioned sounds per video, on top of the distractors above, at DISTRACTOR_GAIN_DB; (0, 0)
# draws nothing. (Tried in version 1.0 with DISTRACTOR_GAIN_DB = (-2, 2): data/README.md.)
SOUND_DISTRACTORS = (0, 0)
UNCAPTIONED_ECHOES = 1     # classes that echo the captioned sound's events (``_echoes``); 1.0: 0


def uniform_frame_times(duration: float, num_frames: int) -> np.ndarray:
    """Times (s) of ``num_frames`` uniformly sampled frames: the centres of equal segments,
    ``(i + 0.5) * duration / num_frames`` - the ``uniform`` sampler of ``eclipse_lite.data``."""
    return (np.arange(num_frames) + 0.5) * duration / num_frames


def brief_margin(fps: float) -> float:
    """Seconds a brief visual keeps from the nearest of the 8 uniform frame times, so that no
    rounding of a time to a frame index (floor or nearest, at ``fps``) lands inside it."""
    return max(0.5, 2.0 / fps)


def _r(x: float) -> float:
    return round(float(x), 3)


def visual_event(rng: np.random.Generator, cls: str, start: float, end: float, motion: str,
                 side: float) -> Dict:
    """Visual fields of an event: class, span, motion and the boxes ``box_at`` needs."""
    v = {"visual_class": cls, "visual_start": _r(start), "visual_end": _r(end), "motion": motion,
         "region": None, "direction": None, "box_end": None, "bounce_height": None,
         "bounce_period": None}
    if motion == "slide":
        v["direction"] = str(rng.choice(list(SLIDES)))
        a, b = slide_boxes(rng, v["direction"], side)
        v["box"], v["box_end"] = [_r(x) for x in a], [_r(x) for x in b]
    else:
        v["region"] = str(rng.choice(list(REGIONS)))
        box = place_box(rng, v["region"], side)
        v["box"] = [_r(x) for x in box]
        if motion == "bounce":
            v["bounce_height"] = _r(min(rng.uniform(0.08, 0.18), box[1]))
            v["bounce_period"] = _r(rng.uniform(0.8, 1.6))
    return v


def _no_visual() -> Dict:
    return {k: None for k in ("visual_class", "visual_start", "visual_end", "motion", "region",
                              "direction", "box", "box_end", "bounce_height", "bounce_period")}


def _sound(cls: Optional[str], start: float, end: float, gain_db: float) -> Dict:
    if cls is None:
        return {"sound_class": None, "sound_start": None, "sound_end": None, "sound_gain_db": None}
    return {"sound_class": cls, "sound_start": _r(start), "sound_end": _r(end),
            "sound_gain_db": _r(gain_db)}


def _event(kind: str, in_caption: bool, visual: Dict, sound: Dict) -> Dict:
    spans = [(visual["visual_start"], visual["visual_end"])] if visual["visual_class"] else []
    if sound["sound_class"]:
        spans.append((sound["sound_start"], sound["sound_end"]))
    ev = {"kind": kind, "in_caption": in_caption, "start": min(s for s, _ in spans),
          "end": max(e for _, e in spans)}
    ev.update(visual)
    ev.update(sound)
    return ev


def _kinds(rng: np.random.Generator, n: int) -> List[str]:
    """``n`` captioned kinds with at least one sound and at least one long visual."""
    names, p = list(KIND_WEIGHTS), np.array(list(KIND_WEIGHTS.values()))
    while True:
        kinds = [str(k) for k in rng.choice(names, size=n, p=p / p.sum())]
        if any(k != "seen_only" for k in kinds) and any(k in ("seen_only", "seen_heard") for k in kinds):
            return kinds


def plan_video(rng: np.random.Generator, video_id: str, duration: float, fps: int) -> Dict:
    """A random plan (see the module docstring) for a video of ``duration`` seconds.

    ``duration`` should be a whole number of frames (``duration * fps`` integral). All floats are
    rounded to milliseconds so that the stored plan is exactly what gets rendered.
    """
    gap = duration / FRAME_GRID
    frames = uniform_frame_times(duration, FRAME_GRID)
    margin = brief_margin(fps)
    n_total = int(rng.integers(3, 9))  # 3..8 described + distractors, before the echoes' share
    n_distr = int(rng.integers(0, min(MAX_DISTRACTORS, n_total - 3) + 1))
    n_capt = n_total - n_distr
    if n_capt > MAX_CAPTIONED:
        n_distr, n_capt = n_distr + n_capt - MAX_CAPTIONED, MAX_CAPTIONED
    kinds = _kinds(rng, n_capt)

    n_sounding = sum(k != "seen_only" for k in kinds)
    k = min(int(rng.choice(PALETTE_SIZES, p=PALETTE_P)), n_sounding)
    palette = [str(c) for c in rng.choice(SOUND_CLASSES, size=k, replace=False)]
    sound_classes = palette + [str(c) for c in rng.choice(palette, size=n_sounding - k)]
    sound_classes = [sound_classes[i] for i in rng.permutation(n_sounding)]
    visual_pool = [str(c) for c in rng.permutation(VISUAL_CLASSES)]

    # Slots: the captioned events follow one another; slot j spans [edges[j], edges[j+1]].
    edges = np.concatenate([[0.0], np.cumsum(rng.dirichlet(np.full(n_capt, 4.0)))]) * duration
    free_gaps = list(range(FRAME_GRID - 1))  # brief visuals go between frames i and i+1
    events = []
    for j, kind in enumerate(kinds):
        a, b = edges[j], edges[j + 1]
        sound_cls = sound_classes.pop() if kind != "seen_only" else None
        gain = rng.uniform(-2.0, 2.0)
        if kind == "brief":
            centre = (a + b) / 2
            i = min(free_gaps, key=lambda g: abs((frames[g] + frames[g + 1]) / 2 - centre))
            free_gaps.remove(i)
            lo, hi = frames[i] + margin, frames[i + 1] - margin
            length = rng.uniform(0.5, 1.0) * min(3.0, hi - lo)
            vs = rng.uniform(lo, hi - length)
            visual = visual_event(rng, visual_pool.pop(), vs, vs + length, "still", rng.uniform(*OBJECT_SIDE))
            ss, se = max(0.0, vs - rng.uniform(1.0, 3.0)), min(duration, vs + length + rng.uniform(1.0, 3.0))
            events.append(_event(kind, True, visual, _sound(sound_cls, ss, se, gain)))
        elif kind == "heard_only":
            length = min(b - a, rng.uniform(4.0, 10.0))
            ss = rng.uniform(a, b - length)
            events.append(_event(kind, True, _no_visual(), _sound(sound_cls, ss, ss + length, gain)))
        else:
            length = (b - a) * rng.uniform(0.6, 0.95)
            vs = rng.uniform(a, b - length)
            m = list(MOTION_WEIGHTS)
            motion = str(rng.choice(m, p=np.array([MOTION_WEIGHTS[x] for x in m])))
            visual = visual_event(rng, visual_pool.pop(), vs, vs + length, motion, rng.uniform(*OBJECT_SIDE))
            if kind == "seen_heard":  # the object sounds while it is on screen
                ss = vs + rng.uniform(0.0, 0.1) * length
                se = vs + length - rng.uniform(0.0, 0.1) * length
                sound = _sound(sound_cls, ss, se, gain)
            else:
                sound = _sound(None, 0, 0, 0)
            events.append(_event(kind, True, visual, sound))

    for _ in range(n_distr):  # uncaptioned: a small still object, or a quieter sound
        if rng.random() < 0.5:
            length = min(duration, rng.uniform(0.5, 1.5) * gap)
            vs = rng.uniform(0.0, duration - length)
            visual = visual_event(rng, visual_pool.pop(), vs, vs + length, "still", rng.uniform(*DISTRACTOR_SIDE))
            events.append(_event("distractor", False, visual, _sound(None, 0, 0, 0)))
        else:
            cls = str(rng.choice([c for c in SOUND_CLASSES if c not in palette]))
            length = min(duration, rng.uniform(3.0, 8.0))
            ss = rng.uniform(0.0, duration - length)
            events.append(_event("distractor", False, _no_visual(),
                                 _sound(cls, ss, ss + length, rng.uniform(*DISTRACTOR_GAIN_DB))))

    n_extra = int(rng.integers(SOUND_DISTRACTORS[0], SOUND_DISTRACTORS[1] + 1)) if SOUND_DISTRACTORS[1] else 0
    for _ in range(n_extra):
        cls = str(rng.choice([c for c in SOUND_CLASSES if c not in palette]))
        length = min(duration, rng.uniform(3.0, 8.0))
        ss = rng.uniform(0.0, duration - length)
        events.append(_event("distractor", False, _no_visual(),
                             _sound(cls, ss, ss + length, rng.uniform(*DISTRACTOR_GAIN_DB))))

    # Echoes count towards the video's events: distractors may only fill what they leave of
    # MAX_EVENTS. The surplus is dropped after drawing (so every later draw is unchanged), quieter
    # sounds first, then small silent objects (version 2.0 kept them all: up to 12 events).
    room = MAX_EVENTS - n_capt - UNCAPTIONED_ECHOES * n_sounding
    surplus = len(events) - n_capt - room
    if surplus > 0:
        order = sorted(range(n_capt, len(events)),   # distractors: sounds first, last drawn first
                       key=lambda i: (events[i]["sound_class"] is None, -i))
        dropped = set(order[:surplus])
        events = [e for i, e in enumerate(events) if i not in dropped]

    events.sort(key=lambda e: (e["start"], e["end"]))
    background = str(rng.choice(list(BACKGROUNDS)))
    background_in_caption = bool(rng.random() < BACKGROUND_IN_CAPTION_P)
    if UNCAPTIONED_ECHOES:  # drawn last: the rest of the plan is the same without them
        events = sorted(events + _echoes(rng, events, palette, duration),
                        key=lambda e: (e["start"], e["end"]))
    return {"id": video_id, "duration": _r(duration), "fps": int(fps), "background": background,
            "background_in_caption": background_in_caption, "palette": palette, "events": events}


def _echoes(rng: np.random.Generator, events: List[Dict], palette: List[str], duration: float) -> List[Dict]:
    """Uncaptioned sounds exactly as prominent as the captioned ones (``UNCAPTIONED_ECHOES``).

    ``UNCAPTIONED_ECHOES`` classes outside the palette; each captioned sound event gets, per class,
    an uncaptioned event of the same length at a uniformly random time, at a described event's
    loudness (-2..2 dB). A listener cannot tell from prominence which classes the caption names.
    """
    echo_classes = [str(c) for c in rng.choice([c for c in SOUND_CLASSES if c not in palette],
                                               size=UNCAPTIONED_ECHOES, replace=False)]
    echoes = []
    for ev in events:
        if not (ev["in_caption"] and ev["sound_class"]):
            continue
        for cls in echo_classes:
            length = min(duration, ev["sound_end"] - ev["sound_start"])
            start = float(rng.uniform(0.0, duration - length))
            echoes.append(_event("echo", False, _no_visual(),
                                 _sound(cls, start, start + length, float(rng.uniform(-2.0, 2.0)))))
    return echoes
