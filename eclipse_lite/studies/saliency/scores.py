"""Scoring heat maps against ground-truth boxes: pointing game, IoU, baselines, seed summaries.

Maps are ``[N, H, W]`` and boxes ``[N, 4]`` normalised ``x0, y0, x1, y1``; the rules (ties, the
IoU threshold, the centre-prior and random baselines, the bar a method must clear) are in the
package docstring and in each function's.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from eclipse_lite.studies.saliency.heatmaps import ArrayLike, heatmaps

BASELINES = ("centre_prior", "random")


def _as_maps(maps: ArrayLike) -> Tensor:
    """Maps [N, H, W] (torch or numpy) as float64 on the CPU; refuses N = 0 and non-finite values."""
    m = torch.as_tensor(np.asarray(maps) if not torch.is_tensor(maps) else maps.detach().cpu())
    m = m.double()
    if m.dim() != 3:
        raise ValueError(f"maps must be [N, H, W], got {tuple(m.shape)}")
    if m.shape[0] == 0:
        raise ValueError("no maps to score (N = 0)")
    if not bool(torch.isfinite(m).all()):
        bad = (~torch.isfinite(m)).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"maps {bad[:10]} contain NaN or infinite values")
    return m


def box_masks(boxes: ArrayLike, height: int, width: int) -> Tensor:
    """Pixel masks of normalised boxes ``[N, 4]`` (``x0, y0, x1, y1`` in ``[0, 1]``): bool [N, H, W].

    A pixel belongs to a box when its centre does. A box too small to hold a pixel centre gets
    the pixel under its own centre, so no mask is ever empty.
    """
    b = torch.as_tensor(np.asarray(boxes) if not torch.is_tensor(boxes) else boxes.detach().cpu())
    b = b.double().reshape(-1, 4) if b.numel() else b.double().reshape(0, 4)
    for i, box in enumerate(b.tolist()):
        x0, y0, x1, y1 = box
        if not all(math.isfinite(v) for v in box) or not (
                -1e-6 <= x0 < x1 <= 1 + 1e-6 and -1e-6 <= y0 < y1 <= 1 + 1e-6):
            raise ValueError(f"box {i} = {box} is not a normalised [x0, y0, x1, y1] with "
                             f"0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
    xs = (torch.arange(width, dtype=torch.float64) + 0.5) / width
    ys = (torch.arange(height, dtype=torch.float64) + 0.5) / height
    inside_x = (xs[None] >= b[:, 0:1]) & (xs[None] <= b[:, 2:3])        # [N, W]
    inside_y = (ys[None] >= b[:, 1:2]) & (ys[None] <= b[:, 3:4])        # [N, H]
    masks = inside_y[:, :, None] & inside_x[:, None, :]
    empty = ~masks.flatten(1).any(1)
    for i in empty.nonzero().flatten().tolist():
        cx = min(int((b[i, 0] + b[i, 2]) / 2 * width), width - 1)
        cy = min(int((b[i, 1] + b[i, 3]) / 2 * height), height - 1)
        masks[i, cy, cx] = True
    return masks


def _maps_boxes_range(maps: ArrayLike, boxes: ArrayLike):
    """maps [N, H, W], their boxes as masks [N, H, W], each map's min and max [N, 1, 1]."""
    m = _as_maps(maps)
    masks = box_masks(boxes, m.shape[1], m.shape[2])
    if masks.shape[0] != m.shape[0]:
        raise ValueError(f"{m.shape[0]} maps but {masks.shape[0]} boxes")
    return m, masks, m.amin(dim=(1, 2), keepdim=True), m.amax(dim=(1, 2), keepdim=True)


def pointing_hits(maps: ArrayLike, boxes: ArrayLike) -> Tensor:
    """Pointing game per map: 1 when the maximum lies inside the box, 0 when outside — float [N].

    maps [N, H, W], boxes [N, 4]. Ties: the fraction of maximal pixels (within 1e-6 of the map's
    range) inside the box, the expected hit under random tie-breaking; a flat map scores the
    box's share of the frame.
    """
    m, masks, lo, hi = _maps_boxes_range(maps, boxes)
    top = m >= hi - 1e-6 * (hi - lo)
    return ((top & masks).flatten(1).sum(1).double() / top.flatten(1).sum(1).double()).float()


def map_ious(maps: ArrayLike, boxes: ArrayLike, threshold: float = 0.5) -> Tensor:
    """IoU of each thresholded map [N, H, W] with its box [N, 4] mask — float [N].

    A pixel is on when ``value >= min + threshold * (max - min)`` (a flat map: every pixel).
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    m, masks, lo, hi = _maps_boxes_range(maps, boxes)
    on = m >= lo + float(threshold) * (hi - lo)
    inter = (on & masks).flatten(1).sum(1).double()
    union = (on | masks).flatten(1).sum(1).double()
    return (inter / union).float()


def score_maps(maps: ArrayLike, boxes: ArrayLike, threshold: float = 0.5) -> Dict[str, float]:
    """``{"pointing_game", "miou", "n"}`` of maps ``[N, H, W]`` against boxes ``[N, 4]``.

    Both scores are means over the N maps (fractions in [0, 1]); see :func:`pointing_hits` and
    :func:`map_ious` for the rules. Maps and boxes may be torch or numpy.
    """
    hits = pointing_hits(maps, boxes)
    ious = map_ious(maps, boxes, threshold)
    return {"pointing_game": float(hits.double().mean()), "miou": float(ious.double().mean()),
            "n": int(hits.numel())}


def centre_prior_maps(n: int, height: int, width: int, sigma: float = 0.25) -> Tensor:
    """The centre-bias baseline: ``exp(-d^2 / (2 sigma^2))`` from the frame centre — [n, H, W].

    ``d`` in normalised units (the frame is the unit square), ``sigma`` as a fraction of the side.
    """
    ys = (torch.arange(height, dtype=torch.float64) + 0.5) / height - 0.5
    xs = (torch.arange(width, dtype=torch.float64) + 0.5) / width - 0.5
    d2 = ys[:, None] ** 2 + xs[None, :] ** 2
    return torch.exp(-d2 / (2 * sigma ** 2)).float().expand(int(n), height, width).clone()


def random_maps(n: int, grid: int, size: Union[int, Tuple[int, int]], seed: int) -> Tensor:
    """The random baseline: uniform noise on a ``grid x grid`` map, post-processed and upsampled
    like the model's maps (:func:`heatmaps`) — [n, H, W]. Seeded: same seed, same maps."""
    g = torch.Generator().manual_seed(int(seed))
    return heatmaps(torch.rand(int(n), grid, grid, generator=g), size)


def summarise_seeds(per_seed: Sequence[Mapping[str, Mapping[str, float]]],
                    metrics: Sequence[str] = ("pointing_game", "miou"),
                    ) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """``[{method: {metric: value}}] per seed`` → ``{method: {metric: {"mean", "std", "values"}}}``.

    ``std`` is the sample standard deviation over seeds (0 with a single seed). Methods missing
    from some seed (a control needs two frames) are left out.
    """
    if not per_seed:
        raise ValueError("summarise_seeds: no seeds")
    methods = [m for m in per_seed[0] if all(m in s for s in per_seed)]   # scored in every seed
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for m in methods:
        out[m] = {}
        for metric in metrics:
            values = [float(s[m][metric]) for s in per_seed]
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            out[m][metric] = {"mean": float(np.mean(values)), "std": std, "values": values}
    return out


def beats_baselines(summary: Mapping[str, Mapping[str, Mapping[str, float]]], method: str = "dot",
                    metric: str = "pointing_game",
                    baselines: Sequence[str] = BASELINES) -> Dict[str, Any]:
    """The bar: ``method`` beats every baseline by more than the spread over seeds.

    For each baseline: ``margin = mean(method) - mean(baseline)`` must exceed
    ``std(method) + std(baseline)``. Returns ``{"method", "metric", "passed": bool,
    "margins": {baseline: margin}, "spreads": {baseline: spread}}``.
    """
    got = summary[method][metric]
    margins, spreads = {}, {}
    for b in baselines:
        margins[b] = got["mean"] - summary[b][metric]["mean"]
        spreads[b] = got["std"] + summary[b][metric]["std"]
    return {"method": method, "metric": metric, "margins": margins, "spreads": spreads,
            "passed": all(margins[b] > spreads[b] for b in baselines)}
