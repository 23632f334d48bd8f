"""Raw maps to heat maps, and heat maps blended over frames (the paper's display recipe).

``normalise_maps`` (min-max, cube, min-max) and ``upsample_maps`` (bicubic) make ``heatmaps``,
the ``[0, 1]`` maps that are both scored and drawn; ``overlay`` blends one over a uint8 frame.
"""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from eclipse_lite.studies.viz import heat_colours

ArrayLike = Union[Tensor, np.ndarray]


def normalise_maps(maps: Tensor) -> Tensor:
    """The paper's post-processing over the last two dims: min-max, cube, min-max.

    ``[..., h, w] → [..., h, w]`` in ``[0, 1]``. A constant map becomes all zeros (not NaN).
    """
    maps = torch.as_tensor(maps).float()
    if maps.dim() < 2:
        raise ValueError(f"maps must be [..., h, w], got {tuple(maps.shape)}")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError("saliency maps contain NaN or infinite values")

    def minmax(x: Tensor) -> Tensor:
        lo = x.amin(dim=(-2, -1), keepdim=True)
        span = x.amax(dim=(-2, -1), keepdim=True) - lo
        return torch.where(span > 0, (x - lo) / span.clamp(min=1e-30), torch.zeros_like(x))

    return minmax(minmax(maps) ** 3)


def upsample_maps(maps: Tensor, size: Union[int, Tuple[int, int]]) -> Tensor:
    """Bicubic upsampling ``[..., h, w] → [..., H, W]``, clamped to ``[0, 1]`` (bicubic overshoots)."""
    maps = torch.as_tensor(maps).float()
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    up = F.interpolate(flat, size=(int(h), int(w)), mode="bicubic", align_corners=False)
    return up.clamp(0.0, 1.0).reshape(*lead, int(h), int(w))


def heatmaps(maps: Tensor, size: Union[int, Tuple[int, int]]) -> Tensor:
    """Raw maps ``[..., g, g]`` → displayable/scorable heat maps ``[..., H, W]`` in ``[0, 1]``."""
    return upsample_maps(normalise_maps(maps), size)


def overlay(frame: np.ndarray, heat: ArrayLike, alpha: float = 0.3, cmap: str = "jet") -> np.ndarray:
    """Blend a heat map over a frame as the paper does: ``(1 - alpha) * frame + alpha * colour``.

    frame uint8 [H, W, 3]; heat [H, W] in [0, 1] (resized bicubically if its size differs).
    Returns uint8 [H, W, 3].
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be uint8 [H, W, 3], got {frame.dtype} {tuple(frame.shape)}")
    heat_t = torch.as_tensor(np.asarray(heat.detach().cpu() if torch.is_tensor(heat) else heat),
                             dtype=torch.float32)
    if heat_t.dim() != 2:
        raise ValueError(f"heat must be [H, W], got {tuple(heat_t.shape)}")
    if tuple(heat_t.shape) != frame.shape[:2]:
        heat_t = upsample_maps(heat_t, frame.shape[:2])
    colours = heat_colours(heat_t.numpy(), cmap).astype(np.float32)
    blend = (1.0 - alpha) * frame.astype(np.float32) + alpha * colours
    return np.clip(np.round(blend), 0, 255).astype(np.uint8)
