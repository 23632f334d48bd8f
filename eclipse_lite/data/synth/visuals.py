"""What the bundled benchmark shows: visual classes, backgrounds, object motion and frame rendering.

Visual classes (44, ``VISUAL_CLASSES``) are 36 drawn shapes (6 shapes x 6 colours, e.g. ``"red
square"``) and 8 cut-outs of scikit-image's bundled sample photos (e.g. ``"cat picture"``). Each
video has one of 8 backgrounds (``BACKGROUNDS``): photos of textures and scenes from scikit-image
(dimmed so objects stand out) or drawn gradients. Only images that ship inside the scikit-image
wheel are used (no ``pooch`` download); their licences are listed in ``data/README.md``.

Geometry is normalised: a box is ``(x0, y0, x1, y1)`` in ``0..1`` with ``y`` growing downwards, so
it is independent of the rendered frame size. An object's box at time ``t`` follows from its event
record (``box``, ``box_end``, ``motion``, ``bounce_height``, ``bounce_period`` and the visual span)
through :func:`box_at`; the renderer uses the same function, so the stored ground truth is exactly
where the pixels are.
"""
from __future__ import annotations

import functools
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import skimage.data
from skimage.draw import polygon
from skimage.transform import resize

__all__ = [
    "COLOURS", "SHAPES", "PHOTOS", "VISUAL_CLASSES", "BACKGROUNDS", "REGIONS", "SLIDES",
    "MOTIONS", "Box", "box_at", "place_box", "slide_boxes", "background_image",
    "render_frame", "sprite",
]

Box = Tuple[float, float, float, float]

COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240),
    "yellow": (245, 225, 40), "purple": (170, 60, 220), "white": (250, 250, 250),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
# class name -> (scikit-image loader, crop (y0, y1, x0, x1) in source pixels or None)
PHOTOS: Dict[str, Tuple[str, Optional[Tuple[int, int, int, int]]]] = {
    "cat picture": ("chelsea", (20, 300, 110, 390)),
    "astronaut picture": ("astronaut", (0, 300, 100, 400)),
    "coffee cup picture": ("coffee", (30, 400, 80, 450)),
    "rocket picture": ("rocket", (60, 427, 130, 497)),
    "retina picture": ("retina", (100, 1311, 100, 1311)),
    "cameraman picture": ("camera", (30, 330, 130, 430)),
    "coins picture": ("coins", (0, 303, 0, 303)),
    "horse silhouette": ("horse", None),
}
VISUAL_CLASSES: List[str] = [f"{c} {s}" for s in SHAPES for c in COLOURS] + list(PHOTOS)

# background name -> scikit-image loader (or "gradient:<top rgb>:<bottom rgb>") and a tint
BACKGROUNDS: Dict[str, Tuple[str, Tuple[float, float, float]]] = {
    "brick wall": ("brick", (1.0, 0.65, 0.5)),
    "grass": ("grass", (0.55, 1.0, 0.45)),
    "gravel": ("gravel", (0.85, 0.85, 0.85)),
    "night sky": ("hubble_deep_field", (1.0, 1.0, 1.0)),
    "text page": ("text", (0.9, 0.9, 0.75)),
    "stained tissue": ("immunohistochemistry", (0.9, 0.9, 0.9)),
    "blue sky": ("gradient:70,130,230:190,220,250", (1.0, 1.0, 1.0)),
    "sunset": ("gradient:250,150,60:90,40,110", (1.0, 1.0, 1.0)),
}

# Where still, bouncing and growing objects sit: box-centre ranges (cx, cy) per region.
REGIONS: Dict[str, Tuple[Tuple[float, float], Tuple[float, float]]] = {
    "left": ((0.17, 0.28), (0.35, 0.65)), "right": ((0.72, 0.83), (0.35, 0.65)),
    "top": ((0.35, 0.65), (0.17, 0.28)), "bottom": ((0.35, 0.65), (0.72, 0.83)),
    "centre": ((0.42, 0.58), (0.42, 0.58)),
}
# Slide directions: (start side, end side).
SLIDES: Dict[str, Tuple[str, str]] = {
    "left to right": ("left", "right"), "right to left": ("right", "left"),
    "top to bottom": ("top", "bottom"), "bottom to top": ("bottom", "top"),
}
MOTIONS = ("still", "slide", "bounce", "grow")
GROW_FROM = 0.35  # a growing object starts at this fraction of its final size


# ----------------------------------------------------------------------------- geometry
def box_at(event: Mapping, t: float) -> Optional[Box]:
    """The normalised box ``(x0, y0, x1, y1)`` of ``event``'s visual at time ``t`` seconds.

    Returns ``None`` when the event has no visual or ``t`` is outside ``[visual_start,
    visual_end)``. Motions: ``still`` keeps ``box``; ``slide`` moves linearly from ``box`` to
    ``box_end``; ``bounce`` lifts ``box`` by ``bounce_height * |sin(pi * dt / bounce_period)|``;
    ``grow`` scales ``box`` about its centre from ``GROW_FROM`` to 1. Every box lies in ``[0, 1]``.
    """
    if event.get("visual_class") is None:
        return None
    start, end = float(event["visual_start"]), float(event["visual_end"])
    if not start <= t < end:
        return None
    x0, y0, x1, y1 = (float(v) for v in event["box"])
    u = (t - start) / max(end - start, 1e-9)
    motion = event["motion"]
    if motion == "still":
        pass
    elif motion == "slide":
        e = [float(v) for v in event["box_end"]]
        x0, y0, x1, y1 = (a + u * (b - a) for a, b in zip((x0, y0, x1, y1), e))
    elif motion == "bounce":
        lift = float(event["bounce_height"]) * abs(np.sin(np.pi * (t - start) / float(event["bounce_period"])))
        y0, y1 = y0 - lift, y1 - lift
    elif motion == "grow":
        s = GROW_FROM + (1.0 - GROW_FROM) * u
        cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 * s, (y1 - y0) / 2 * s
        x0, y0, x1, y1 = cx - hw, cy - hh, cx + hw, cy + hh
    else:
        raise ValueError(f"event has unknown motion {motion!r}; known: {MOTIONS}")
    return (min(max(x0, 0.0), 1.0), min(max(y0, 0.0), 1.0),
            min(max(x1, 0.0), 1.0), min(max(y1, 0.0), 1.0))


def _box(cx: float, cy: float, side: float) -> Box:
    """A square box of ``side`` centred at (cx, cy), shifted to lie inside [0, 1]."""
    cx = min(max(cx, side / 2), 1 - side / 2)
    cy = min(max(cy, side / 2), 1 - side / 2)
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def place_box(rng: np.random.Generator, region: str, side: float) -> Box:
    """A random square box of ``side`` in ``region``."""
    (xa, xb), (ya, yb) = REGIONS[region]
    return _box(rng.uniform(xa, xb), rng.uniform(ya, yb), side)


def slide_boxes(rng: np.random.Generator, direction: str, side: float) -> Tuple[Box, Box]:
    """Start and end boxes of a slide across the frame in ``direction`` (``SLIDES``)."""
    a, b = SLIDES[direction]
    lane = rng.uniform(0.3, 0.7)
    edge = {"left": 0.0, "right": 1.0, "top": 0.0, "bottom": 1.0}
    if a in ("left", "right"):
        return _box(edge[a], lane, side), _box(edge[b], lane, side)
    return _box(lane, edge[a], side), _box(lane, edge[b], side)


# ----------------------------------------------------------------------------- sprites
SPRITE_RES = 96  # sprites are drawn once at this size and sampled nearest-neighbour per frame


def _shape_mask(shape: str, n: int = SPRITE_RES) -> np.ndarray:
    """bool [n, n] mask of ``shape`` filling the square."""

    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    c = n / 2
    mask = np.zeros((n, n), dtype=bool)
    if shape == "circle":
        mask = (yy - c) ** 2 + (xx - c) ** 2 <= (0.48 * n) ** 2
    elif shape == "square":
        mask[int(0.06 * n):int(0.94 * n), int(0.06 * n):int(0.94 * n)] = True
    elif shape == "cross":
        a, b = int(0.34 * n), int(0.66 * n)
        mask[a:b, int(0.04 * n):int(0.96 * n)] = True
        mask[int(0.04 * n):int(0.96 * n), a:b] = True
    else:
        if shape == "triangle":
            pts = [(0.04, 0.5), (0.94, 0.04), (0.94, 0.96)]
        elif shape == "diamond":
            pts = [(0.02, 0.5), (0.5, 0.98), (0.98, 0.5), (0.5, 0.02)]
        elif shape == "star":
            ang = -np.pi / 2 + np.arange(10) * np.pi / 5
            rad = np.where(np.arange(10) % 2 == 0, 0.49, 0.2)
            pts = list(zip(0.53 + rad * np.sin(ang), 0.5 + rad * np.cos(ang)))
        else:
            raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
        rr, cc = polygon([p[0] * n for p in pts], [p[1] * n for p in pts], (n, n))
        mask[rr, cc] = True
    return mask


def _load_skimage(name: str) -> np.ndarray:
    """A scikit-image sample image bundled in the wheel, as uint8 [H, W, 3] or [H, W]."""

    img = getattr(skimage.data, name)()
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    return img


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Area-style resize with scikit-image (anti-aliased), returning float32 in 0..1."""

    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    return resize(img, (h, w) + img.shape[2:], order=1, anti_aliasing=True, mode="edge").astype(np.float32)


@functools.lru_cache(maxsize=None)
def sprite(name: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(rgb float32 [S, S, 3] in 0..1, alpha float32 [S, S])`` of a visual class, S = 96."""
    if name in PHOTOS:
        loader, crop = PHOTOS[name]
        img = _load_skimage(loader)
        if name == "horse silhouette":  # white horse on black -> dark brown horse, transparent
            mask = _resize(255 - img, SPRITE_RES, SPRITE_RES) > 0.5
            rgb = np.empty((SPRITE_RES, SPRITE_RES, 3), np.float32)
            rgb[:] = np.array([110, 70, 40], np.float32) / 255
            return rgb, mask.astype(np.float32)
        y0, y1, x0, x1 = crop
        img = img[y0:y1, x0:x1]
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        rgb = _resize(img[..., :3], SPRITE_RES, SPRITE_RES)
        b = max(2, SPRITE_RES // 24)  # a white frame around the picture
        rgb[:b], rgb[-b:], rgb[:, :b], rgb[:, -b:] = 1.0, 1.0, 1.0, 1.0
        return rgb, np.ones((SPRITE_RES, SPRITE_RES), np.float32)
    colour, shape = name.split(" ", 1)
    if colour not in COLOURS or shape not in SHAPES:
        raise ValueError(f"unknown visual class {name!r}; known: {VISUAL_CLASSES}")
    mask = _shape_mask(shape).astype(np.float32)
    rgb = np.empty((SPRITE_RES, SPRITE_RES, 3), np.float32)
    rgb[:] = np.array(COLOURS[colour], np.float32) / 255
    return rgb, mask


@functools.lru_cache(maxsize=None)
def _background_source(name: str) -> np.ndarray:
    """float32 [256, 256, 3] source image of a background (dimmed and tinted)."""
    if name not in BACKGROUNDS:
        raise ValueError(f"unknown background {name!r}; known: {list(BACKGROUNDS)}")
    src, tint = BACKGROUNDS[name]
    n = 256
    if src.startswith("gradient:"):
        _, top, bottom = src.split(":")
        top_c = np.array([float(v) for v in top.split(",")], np.float32) / 255
        bot_c = np.array([float(v) for v in bottom.split(",")], np.float32) / 255
        u = np.linspace(0, 1, n, dtype=np.float32)[:, None, None]
        img = np.broadcast_to(top_c * (1 - u) + bot_c * u, (n, n, 3)).copy()
    else:
        raw = _load_skimage(src)
        side = min(raw.shape[:2])
        raw = raw[:side, :side]
        if raw.ndim == 2:
            raw = np.repeat(raw[..., None], 3, axis=2)
        img = _resize(raw[..., :3], n, n)
    img = img * np.array(tint, np.float32)
    return (0.12 + 0.55 * img).astype(np.float32)  # dimmed: objects stay the brightest thing


def background_image(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [size, size, 3] in 0..1: a random crop (70-100 % of the source) of a background."""
    src = _background_source(name)
    n = src.shape[0]
    side = int(rng.integers(int(0.7 * n), n + 1))
    y, x = int(rng.integers(0, n - side + 1)), int(rng.integers(0, n - side + 1))
    idx = (np.arange(size) * side // size)
    return src[y + idx[:, None], x + idx[None, :]]


def render_frame(background: np.ndarray, objects: Iterable[Tuple[str, Box]]) -> np.ndarray:
    """Composite objects over a background.

    Args:
        background: float32 [H, W, 3] in 0..1 (not modified).
        objects: ``(visual class, normalised box)`` pairs, drawn in order (later on top).
    Returns:
        uint8 [H, W, 3] frame.
    """
    frame = background.copy()
    h, w = frame.shape[:2]
    for name, (x0, y0, x1, y1) in objects:
        px0, py0 = int(round(x0 * w)), int(round(y0 * h))
        px1, py1 = int(round(x1 * w)), int(round(y1 * h))
        if px1 - px0 < 1 or py1 - py0 < 1:
            continue
        rgb, alpha = sprite(name)
        iy = (np.arange(py1 - py0) * SPRITE_RES) // (py1 - py0)
        ix = (np.arange(px1 - px0) * SPRITE_RES) // (px1 - px0)
        a = alpha[iy[:, None], ix[None, :]][..., None]
        region = frame[py0:py1, px0:px1]
        region *= 1.0 - a
        region += a * rgb[iy[:, None], ix[None, :]]
    return (frame * 255.0 + 0.5).astype(np.uint8)
