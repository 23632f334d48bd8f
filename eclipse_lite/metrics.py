"""Retrieval metrics: R@1, R@5, R@10, median rank (MdR) and mean rank (MnR).

The paper reports text-to-video R@1/5/10 and MnR (ECLIPSE Sec. 4.2, Tables 1-8); MdR is the other
standard number of the CLIP4Clip protocol. Input is a similarity matrix ``sim [queries,
candidates]`` whose ground truth is on the diagonal: ``sim[i, i]`` scores query ``i`` against its
own candidate. ``retrieval_metrics(sim)`` is text-to-video when rows are texts;
``retrieval_metrics(sim.T)`` is video-to-text.

Tie rule (the one rule used everywhere in eclipse-lite): the rank of query ``i``'s ground truth is

    rank_i = 1 + #{j : sim[i, j] > sim[i, i]} + #{j != i : sim[i, j] == sim[i, i]} / 2,

the expected rank when ties are broken uniformly at random. Ranks are therefore 1-based and can be
half-integers; ``R@K`` is the percentage of queries with ``rank <= K`` (a rank of 1.5 does not
count for R@1), ``MdR`` the median (``numpy.median``) and ``MnR`` the mean of the ranks. A constant
matrix of ``n`` candidates gives every query rank ``(n + 1) / 2``, never a flattering 1.

NaN or infinite scores raise ``ValueError`` naming how many rows contain them: a broken video
must not silently leave the denominator (a known weakness of the released code, REFERENCE.md).
"""
from __future__ import annotations

from typing import Dict, Mapping, Union

import numpy as np
import torch

__all__ = ["retrieval_metrics", "ground_truth_ranks", "format_metrics", "RECALL_KS", "METRIC_KEYS"]

RECALL_KS = (1, 5, 10)
METRIC_KEYS = ("R@1", "R@5", "R@10", "MdR", "MnR")

ArrayLike = Union[torch.Tensor, np.ndarray]


def _to_numpy(sim: ArrayLike) -> np.ndarray:
    """``sim`` as a real numpy array on the CPU (torch on any device/dtype incl. bf16, or numpy).

    Floating dtypes are widened only as far as numpy needs (bf16/fp16 -> fp32, exactly), so every
    value and every tie survives the conversion; integers become float64.
    """
    if isinstance(sim, torch.Tensor):
        if sim.is_complex():
            raise TypeError(f"sim must hold real numbers, got torch dtype {sim.dtype}")
        needs_float64 = sim.dtype == torch.float64 or not sim.is_floating_point()
        dtype = torch.float64 if needs_float64 else torch.float32
        return sim.detach().to(device="cpu", dtype=dtype).numpy()
    if isinstance(sim, np.ndarray):
        if np.issubdtype(sim.dtype, np.floating):
            return sim
        if np.issubdtype(sim.dtype, np.integer):
            return sim.astype(np.float64)
        raise TypeError(f"sim must hold real numbers, got numpy dtype {sim.dtype}")
    raise TypeError(f"sim must be a torch.Tensor or numpy.ndarray, got {type(sim).__name__}")


def ground_truth_ranks(sim: ArrayLike) -> np.ndarray:
    """1-based rank of each query's ground truth (the diagonal), with ties counted as half.

    Args:
        sim: ``[N, N]`` similarities, rows = queries, columns = candidates, ground truth on the
            diagonal; torch (any device/dtype) or numpy.
    Returns:
        ``float64 [N]``: ``1 + #higher + #other-equal / 2`` per row (see the module docstring).
    Raises:
        ValueError: ``sim`` is not a non-empty square matrix, or has NaN/inf entries.
    """
    scores = _to_numpy(sim)
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] == 0:
        raise ValueError(
            f"sim must be a non-empty square [queries, candidates] matrix with the ground truth on "
            f"the diagonal, got shape {tuple(scores.shape)}"
        )
    bad_rows = np.flatnonzero(~np.isfinite(scores).all(axis=1))
    if bad_rows.size:
        raise ValueError(
            f"sim has NaN or inf scores in {bad_rows.size} of {scores.shape[0]} rows "
            f"(first rows: {bad_rows[:10].tolist()}); refusing to drop or rank them"
        )
    target = np.diag(scores)[:, None]  # [N, 1]
    higher = (scores > target).sum(axis=1)
    equal_others = (scores == target).sum(axis=1) - 1  # the diagonal always equals itself
    return 1.0 + higher + equal_others / 2.0


def retrieval_metrics(sim: ArrayLike) -> Dict[str, float]:
    """``{"R@1", "R@5", "R@10", "MdR", "MnR"}`` of a ``[N, N]`` similarity matrix, as floats.

    Recalls are percentages, ranks are 1-based; ties follow the rule in the module docstring.
    Rows are queries: ``retrieval_metrics(sim)`` is T2V for ``sim[texts, videos]``,
    ``retrieval_metrics(sim.T)`` is V2T.
    """
    ranks = ground_truth_ranks(sim)
    metrics = {f"R@{k}": float(100.0 * np.mean(ranks <= k)) for k in RECALL_KS}
    metrics["MdR"] = float(np.median(ranks))
    metrics["MnR"] = float(np.mean(ranks))
    return metrics


def format_metrics(metrics: Mapping[str, float]) -> str:
    """One line, e.g. ``"R@1 41.2 | R@5 70.0 | R@10 80.5 | MdR 2.0 | MnR 12.3"``.

    The standard keys come first in their usual order, then any other keys as given.
    """
    keys = [k for k in METRIC_KEYS if k in metrics] + [k for k in metrics if k not in METRIC_KEYS]
    return " | ".join(f"{k} {float(metrics[k]):.1f}" for k in keys)
