"""Captions of the bundled benchmark: one compact paragraph per video, one phrase per frame.

A paragraph narrates the described events of a plan (``plan``) in time order with varied
connectives and verbs, e.g.::

    First a cow moos off screen, then a red square slides from left to right and a bell rings
    from it. A yellow star flashes at the top as a dog barks. Finally a cat picture grows in the
    middle.

Every fact the oracle scores (``oracle.caption_facts``) is stated with fixed words - the visual
class verbatim ("red square"), the place ("on the left", "in the middle"), the motion ("slides
from left to right", "bounces", "grows") and the sound ("a cow moos") - and nothing else is
claimed, so the caption, the ground truth and the oracle agree. Phrases are short because the text
tower reads 64 tokens: a first prototype's wordy templates truncated 57 % of paragraphs there.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from eclipse_lite.data.synth.sounds import SOUND_PHRASES

__all__ = ["PLACE_WORDS", "MOTION_WORDS", "BACKGROUND_PHRASES", "paragraph_caption",
           "frame_caption", "object_phrase", "sound_caption"]

PLACE_WORDS: Dict[str, Tuple[str, ...]] = {
    "left": ("on the left",), "right": ("on the right",), "top": ("at the top",),
    "bottom": ("at the bottom",), "centre": ("in the centre", "in the middle"),
}
# motion -> verbs; a verb phrase is followed by the place (or, for slides, the direction)
MOTION_WORDS: Dict[str, Tuple[str, ...]] = {
    "still": ("appears", "sits", "shows up", "waits"),
    "slide": ("slides", "glides", "moves"),
    "bounce": ("bounces", "hops"),
    "grow": ("grows", "swells"),
    "brief": ("flashes", "blinks"),
}
# the same as participles, for "a bell rings from a red square sliding from left to right"
MOTION_PARTICIPLES: Dict[str, Tuple[str, ...]] = {
    "still": ("",), "slide": ("sliding", "moving"), "bounce": ("bouncing",), "grow": ("growing",),
}
BACKGROUND_PHRASES: Dict[str, str] = {
    "brick wall": "a brick wall", "grass": "grass", "gravel": "gravel",
    "night sky": "a starry night sky", "text page": "a page of text",
    "stained tissue": "stained tissue", "blue sky": "a blue sky", "sunset": "a sunset sky",
}
_OPENERS = ("First", "")
_THEN = ("then", "next", "later")
_LAST = ("finally", "then")


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def object_phrase(cls: str) -> str:
    """``"a red square"``, ``"an astronaut picture"``."""
    return ("an " if cls[0] in "aeiou" else "a ") + cls


def _place(rng: np.random.Generator, region: str) -> str:
    return _pick(rng, PLACE_WORDS[region])


def _visual_clause(rng: np.random.Generator, ev: Mapping) -> str:
    """``"a red square slides from left to right"``, ``"a cat picture flashes at the top"``."""
    obj = object_phrase(ev["visual_class"])
    if ev["kind"] == "brief":
        return f"{obj} {_pick(rng, MOTION_WORDS['brief'])} {_place(rng, ev['region'])}"
    if ev["motion"] == "slide":
        return f"{obj} {_pick(rng, MOTION_WORDS['slide'])} from {ev['direction']}"
    return f"{obj} {_pick(rng, MOTION_WORDS[ev['motion']])} {_place(rng, ev['region'])}"


def _source_phrase(rng: np.random.Generator, ev: Mapping) -> str:
    """``"a red square on the left"``, ``"a red square sliding from left to right"``."""
    obj = object_phrase(ev["visual_class"])
    verb = _pick(rng, MOTION_PARTICIPLES[ev["motion"]])
    where = f"from {ev['direction']}" if ev["motion"] == "slide" else _place(rng, ev["region"])
    return " ".join(w for w in (obj, verb, where) if w)


def _sound_clause(cls: str, heard_before: set) -> str:
    """``"a cow moos"``, or ``"a cow moos again"`` the second time."""
    clause = SOUND_PHRASES[cls][0]
    if cls in heard_before:
        clause += " again"
    heard_before.add(cls)
    return clause


def _event_clause(rng: np.random.Generator, ev: Mapping, heard: set) -> str:
    kind = ev["kind"]
    if kind == "seen_only":
        return _visual_clause(rng, ev)
    if kind == "heard_only":
        noun = SOUND_PHRASES[ev["sound_class"]][1]
        if rng.random() < 0.25 and ev["sound_class"] not in heard:
            heard.add(ev["sound_class"])
            return f"we hear {noun} off screen"
        return f"{_sound_clause(ev['sound_class'], heard)} {_pick(rng, ('off screen', 'out of view'))}"
    visual = _visual_clause(rng, ev)
    sound = _sound_clause(ev["sound_class"], heard)
    if kind == "seen_heard":  # the visual is the source
        style = int(rng.integers(3))
        if style == 0:
            return f"{visual} and {sound} from it"
        if style == 1:
            return f"{visual}, sounding like {SOUND_PHRASES[ev['sound_class']][1]}"
        return f"{sound} from {_source_phrase(rng, ev)}"
    if kind == "brief":
        style = int(rng.integers(3))
        if style == 0:
            return f"{visual} as {sound}"
        if style == 1:
            return f"{sound} and {visual}"
        return f"{sound} while {visual}"
    raise ValueError(f"event kind {kind!r} is not described in captions")


def _capitalise(s: str) -> str:
    return s[:1].upper() + s[1:]


def paragraph_caption(plan: Mapping, rng: np.random.Generator) -> str:
    """One paragraph describing ``plan``'s captioned events in time order (module docstring)."""
    events = [e for e in plan["events"] if e["in_caption"]]
    if not events:
        raise ValueError(f"plan {plan.get('id')!r} has no captioned events")
    heard: set = set()
    clauses = [_event_clause(rng, e, heard) for e in events]
    parts: List[str] = []
    for i, clause in enumerate(clauses):
        if i == 0:
            opener = _pick(rng, _OPENERS)
            text = f"{opener} {clause}" if opener else clause
            if plan["background_in_caption"]:
                bg = BACKGROUND_PHRASES[plan["background"]]
                text = f"{_pick(rng, ('Over', 'Against'))} {bg}, {text[:1].lower() + text[1:]}"
            parts.append(_capitalise(text))
            continue
        last = i == len(clauses) - 1
        word = _pick(rng, _LAST if last else _THEN)
        if rng.random() < 0.5:  # new sentence
            parts.append(". " + _capitalise(f"{word} {clause}"))
        else:
            parts.append(f", {word} {clause}")
    return "".join(parts) + "."


def frame_caption(objects: Sequence[Tuple[str, str]], background: Optional[str],
                  rng: np.random.Generator) -> str:
    """A short caption of one frame: ``objects`` are ``(visual class, region)`` pairs.

    ``"a red square on the left and a cat picture in the middle, over a brick wall"``.
    """
    if not objects and background is None:
        raise ValueError("a frame caption needs at least one object or the background")
    parts = [f"{object_phrase(cls)} {_place(rng, region)}" for cls, region in objects]
    text = " and ".join(parts) if len(parts) <= 2 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if background is not None:
        bg = BACKGROUND_PHRASES[background]
        text = f"{text}, over {bg}" if text else bg
    return text


def sound_caption(cls: str, rng: np.random.Generator) -> str:
    """A short caption of one sound, in the words the paragraphs use for it.

    ``"a cow moos"``, ``"a cow moos off screen"``, ``"we hear a cow"``, ``"sounding like a cow"``:
    the audio-text half of pretraining (``pretrain.pretrain_clip``) pairs these with sound clips,
    so the text tower knows the sound words before fine-tuning, as CLIP's text tower knows
    "a dog barks" before ECLIPSE fine-tunes it.
    """
    if cls not in SOUND_PHRASES:
        raise ValueError(f"unknown sound class {cls!r}; known: {sorted(SOUND_PHRASES)}")
    clause, noun = SOUND_PHRASES[cls]
    style = int(rng.integers(5))
    if style == 0:
        return clause
    if style == 1:
        return f"{clause} {_pick(rng, ('off screen', 'out of view'))}"
    if style == 2:
        return f"we hear {noun}"
    if style == 3:
        return f"sounding like {noun}"
    return f"{clause} again"
