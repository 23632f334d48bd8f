"""Which frames of a video the model sees, and when they happen.

ECLIPSE watches ``T`` frames spread over the *whole* video (paper Sec. 4: "uniformly sampled
32-frame inputs spanning the whole input video"), and listens to an audio window centred on each
of them. The video is cut into ``T`` equal segments; the appendix ablation (Table 4) compares

* **uniform** sampling: the centre frame of every segment (used at test time, and the default),
* **random** sampling: one random frame inside every segment (a training-time augmentation).

Both come as frame indices (for decoders) and as times in seconds (for streams that are not
frame based). The authors' released loader (CLIP4Clip's ``slice_framepos=2``) instead takes
``np.linspace(0, n - 1, T)`` rounded down, which includes the first and last frames; it is
available as ``"released"`` for index sampling.

A video with fewer frames than requested repeats frames; :func:`first_occurrence` gives the
mask that marks the repeats so that pooling does not count a frame twice.
"""
from __future__ import annotations

from typing import Union

import numpy as np

SAMPLINGS = ("uniform", "random", "released")

RngLike = Union[np.random.Generator, int, None]


def _check(n: int, num: int, what: str) -> None:
    """``ValueError`` unless ``num`` > 0 and, for frames, the video has ``n`` > 0 frames."""
    if int(num) <= 0:
        raise ValueError(f"number of samples must be positive, got {num}")
    if what == "frames" and int(n) <= 0:
        raise ValueError(f"cannot sample from a video with {n} frames")


def _segment_bounds(n_frames: int, num: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer segment bounds ``[lo_i, hi_i)`` of ``num`` equal segments of ``n_frames`` frames.

    ``lo_i = floor(i * n / T)``; a segment shorter than one frame (``n < T``) keeps one frame.
    """
    i = np.arange(num, dtype=np.int64)
    lo = (i * n_frames) // num
    hi = ((i + 1) * n_frames) // num
    hi = np.maximum(hi, lo + 1)
    return lo, np.minimum(hi, n_frames)


def uniform_indices(n_frames: int, num: int) -> np.ndarray:
    """Centre frame of each of ``num`` equal segments: ``floor((i + 1/2) * n_frames / num)``.

    Returns int64 [num], non-decreasing, in ``[0, n_frames)``. When ``n_frames < num`` every
    frame appears at least once and some repeat (see :func:`first_occurrence`).
    """
    _check(n_frames, num, "frames")
    i = np.arange(num, dtype=np.int64)
    return ((2 * i + 1) * int(n_frames)) // (2 * int(num))


def random_indices(n_frames: int, num: int, rng: RngLike) -> np.ndarray:
    """One frame drawn uniformly at random inside each of ``num`` equal segments.

    ``rng``: a ``numpy.random.Generator`` or an int seed (required: sampling is reproducible).
    Returns int64 [num], non-decreasing, in ``[0, n_frames)``. A segment shorter than a frame
    (``n_frames < num``) yields its first frame, so the result repeats frames like
    :func:`uniform_indices` does.
    """
    _check(n_frames, num, "frames")
    gen = as_rng(rng)
    lo, hi = _segment_bounds(int(n_frames), int(num))
    return gen.integers(lo, hi).astype(np.int64)


def released_indices(n_frames: int, num: int) -> np.ndarray:
    """The released code's frames: ``np.linspace(0, n_frames - 1, num, dtype=int)`` (int64 [num],
    first and last frame included; repeats when ``n_frames < num``)."""
    _check(n_frames, num, "frames")
    return np.linspace(0, int(n_frames) - 1, int(num)).astype(np.int64)


def uniform_times(duration: float, num: int) -> np.ndarray:
    """Centre time (s) of each of ``num`` equal segments of ``[0, duration)``: float64 [num]."""
    _check(1, num, "times")
    if not duration > 0:
        raise ValueError(f"duration must be positive, got {duration}")
    return (np.arange(num, dtype=np.float64) + 0.5) * float(duration) / num


def random_times(duration: float, num: int, rng: RngLike) -> np.ndarray:
    """One time drawn uniformly inside each of ``num`` equal segments of ``[0, duration)``."""
    _check(1, num, "times")
    if not duration > 0:
        raise ValueError(f"duration must be positive, got {duration}")
    gen = as_rng(rng)
    seg = float(duration) / num
    return (np.arange(num, dtype=np.float64) + gen.random(num)) * seg


def sample_indices(n_frames: int, num: int, sampling: str = "uniform",
                   rng: RngLike = None) -> np.ndarray:
    """Frame indices [num] by name: ``"uniform"`` (segment centres), ``"random"`` (one per
    segment, needs ``rng``) or ``"released"`` (the authors' linspace)."""
    if sampling == "uniform":
        return uniform_indices(n_frames, num)
    if sampling == "random":
        return random_indices(n_frames, num, rng)
    if sampling == "released":
        return released_indices(n_frames, num)
    raise ValueError(f"sampling={sampling!r} is not one of {SAMPLINGS}")


def first_occurrence(indices: np.ndarray) -> np.ndarray:
    """bool [T]: True where an index appears for the first time, False on repeats."""
    indices = np.asarray(indices)
    mask = np.zeros(indices.shape[0], dtype=bool)
    _, first = np.unique(indices, return_index=True)
    mask[first] = True
    return mask


def frame_times(indices: np.ndarray, fps: float, start: float = 0.0) -> np.ndarray:
    """Presentation time (seconds) of frames of a constant-frame-rate video: ``start + i / fps``.

    These are the centres of the per-frame audio windows (``eclipse_lite.audio.audio_windows``)
    when a decoder does not report timestamps itself. float64 [T].
    """
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return float(start) + np.asarray(indices, dtype=np.float64) / float(fps)


def as_rng(rng: RngLike) -> np.random.Generator:
    """A ``numpy.random.Generator`` from a Generator or an int seed; ``None`` is an error."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng))
    raise ValueError("random sampling needs rng= (a numpy Generator or an int seed) so that it "
                     "is reproducible")


__all__ = ["SAMPLINGS", "uniform_indices", "random_indices", "released_indices",
           "uniform_times", "random_times",
           "sample_indices", "first_occurrence", "frame_times", "as_rng"]
