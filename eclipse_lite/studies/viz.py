"""Pictures for the notebooks and reports: frame strips, heat-map colours, boxes, GIFs, Fig. 2.

Everything works headless: figures are ``matplotlib.figure.Figure`` objects made without
``pyplot`` (Jupyter displays them when they are the cell's value), images are uint8 numpy arrays
``[H, W, 3]``, and every file is written atomically (temp file in the target folder, then
``os.replace``), so a crash never leaves a half-written PNG, GIF or JSON behind.

    strip = image_grid([frame_a, frame_b], cols=2)         # uint8 [H, 2W + pad, 3]
    save_png(draw_box(frame, (0.1, 0.2, 0.5, 0.6)), "out/frame.png")
    save_gif([frame_a, frame_b], "out/clip.gif", fps=4)
    save_figure(plot_frame_sweep(sweep), "out/frame_sweep.png")
"""
from __future__ import annotations

import io
import os
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from eclipse_lite.clip import clip_denormalize
from eclipse_lite.files import atomic_path

__all__ = ["save_png", "save_gif", "save_figure", "to_uint8_frames",
           "heat_colours", "draw_box", "image_grid", "show_frames", "plot_frame_sweep",
           "plot_bench", "plot_localisation_scores"]


# ------------------------------------------------------------------------------ atomic files
def _check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what} must be uint8 [H, W, 3], got {image.dtype} {tuple(image.shape)}")
    return image


def save_png(image: np.ndarray, path: str) -> str:
    """Write a uint8 RGB image ``[H, W, 3]`` as PNG, atomically. Returns ``path``."""
    image = _check_image(image)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


def save_gif(frames: Sequence[np.ndarray], path: str, fps: float = 4.0, loop: int = 0) -> str:
    """Write uint8 RGB frames (all ``[H, W, 3]``, same size) as an animated GIF, atomically."""
    if len(frames) == 0:
        raise ValueError(f"save_gif({path!r}): no frames")
    if not fps > 0:
        raise ValueError(f"save_gif: fps must be positive, got {fps}")
    images = [_check_image(f, f"frame {i}") for i, f in enumerate(frames)]
    if any(f.shape != images[0].shape for f in images):
        raise ValueError(f"save_gif: frames differ in size: {sorted({f.shape for f in images})}")
    pil = [Image.fromarray(f) for f in images]
    with atomic_path(path) as tmp:
        pil[0].save(tmp, format="GIF", save_all=True, append_images=pil[1:],
                    duration=int(round(1000.0 / fps)), loop=int(loop), optimize=False)
    return path


def save_figure(fig: Figure, path: str, dpi: int = 120) -> str:
    """Save a matplotlib figure (format from the extension), atomically."""
    ext = os.path.splitext(os.fspath(path))[1].lstrip(".") or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=ext)
    return path


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes, and the figure closed: the value of an
    ``ipywidgets.Image``. The explorers redraw widgets by value rather than capturing output in
    an ``ipywidgets.Output``: under papermill, nbclient answers every capture on the shell channel
    while it waits there for the cell's reply, which can leave it waiting forever."""

    import matplotlib.pyplot as plt  # pyplot only here: importing it early would fix a backend

    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return buf.getvalue()


# ------------------------------------------------------------------------------ images
def to_uint8_frames(frames) -> np.ndarray:
    """CLIP-normalised frames ``[..., 3, H, W]`` (torch or numpy) → uint8 ``[..., H, W, 3]``.

    Undoes ``(x / 255 - CLIP_MEAN) / CLIP_STD`` (:func:`eclipse_lite.clip.clip_denormalize`, then
    ``round(255 x)``); use it to look at what the model saw.
    """
    return np.round(clip_denormalize(frames).cpu().numpy() * 255.0).astype(np.uint8)


def heat_colours(heat: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """A map with values in ``[0, 1]``, ``[H, W]`` → uint8 colours ``[H, W, 3]`` (``cmap``)."""
    heat = np.asarray(heat, dtype=np.float64)
    if heat.ndim != 2:
        raise ValueError(f"heat must be [H, W], got {tuple(heat.shape)}")
    if not np.isfinite(heat).all():
        raise ValueError("heat contains NaN or infinite values")
    rgba = colormaps[cmap](np.clip(heat, 0.0, 1.0))
    return np.round(rgba[..., :3] * 255.0).astype(np.uint8)


def draw_box(image: np.ndarray, box: Optional[Sequence[float]], colour=(255, 255, 255),
             width: int = 2) -> np.ndarray:
    """A copy of ``image`` with the normalised box ``[x0, y0, x1, y1]`` outlined (None: no box)."""
    image = _check_image(image)
    if box is None:
        return image.copy()
    x0, y0, x1, y1 = (float(v) for v in box)
    h, w = image.shape[:2]
    pil = Image.fromarray(image.copy())
    ImageDraw.Draw(pil).rectangle([x0 * w, y0 * h, max(x1 * w - 1, x0 * w), max(y1 * h - 1, y0 * h)],
                                  outline=tuple(colour), width=int(width))
    return np.asarray(pil)


def image_grid(images: Sequence[np.ndarray], cols: Optional[int] = None, pad: int = 2,
               captions: Optional[Sequence[str]] = None, background: int = 255) -> np.ndarray:
    """Tile equal-sized uint8 images ``[H, W, 3]`` into one image (``cols`` per row).

    ``captions`` (one per image) are written in a band under each tile with PIL's default font.
    """
    if len(images) == 0:
        raise ValueError("image_grid: no images")
    images = [_check_image(im, f"images[{i}]") for i, im in enumerate(images)]
    h, w = images[0].shape[:2]
    if any(im.shape[:2] != (h, w) for im in images):
        raise ValueError(f"image_grid: images differ in size: {sorted({im.shape for im in images})}")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"image_grid: {len(captions)} captions for {len(images)} images")
    cols = len(images) if cols is None else max(1, min(int(cols), len(images)))
    rows = -(-len(images) // cols)
    band = 12 if captions is not None else 0
    out = np.full((rows * (h + band + pad) - pad, cols * (w + pad) - pad, 3), background, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        y, x = r * (h + band + pad), c * (w + pad)
        out[y:y + h, x:x + w] = im
    if captions is not None:
        pil = Image.fromarray(out)
        draw = ImageDraw.Draw(pil)
        for i, text in enumerate(captions):
            r, c = divmod(i, cols)
            draw.text((c * (w + pad) + 1, r * (h + band + pad) + h), str(text), fill=(0, 0, 0))
        out = np.asarray(pil)
    return out


# ------------------------------------------------------------------------------ figures
def show_frames(frames, titles: Optional[Sequence[str]] = None, cols: Optional[int] = None,
                size: float = 1.6) -> Figure:
    """A strip of frames: uint8 ``[T, H, W, 3]`` or CLIP-normalised ``[T, 3, H, W]``."""
    arr = frames.detach().cpu().numpy() if torch.is_tensor(frames) else np.asarray(frames)
    if arr.ndim == 4 and arr.shape[1] == 3 and arr.dtype != np.uint8:
        arr = to_uint8_frames(arr)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3] uint8 or [T, 3, H, W] normalised, got "
                         f"{tuple(arr.shape)}")
    n = arr.shape[0]
    cols = n if cols is None else max(1, int(cols))
    rows = -(-n // cols)
    fig = Figure(figsize=(size * cols, size * rows + (0.3 if titles else 0)))
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(arr[i])
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    fig.tight_layout()
    return fig


def plot_frame_sweep(sweep: Mapping, title: Optional[str] = None) -> Figure:
    """Inference GFLOPs against frames, video-only vs ECLIPSE — the shape of the paper's Fig. 2.

    ``sweep`` is :func:`eclipse_lite.studies.bench.frame_sweep`'s result: ``{"frames": [...], "curves":
    {label: [GFLOPs per frame count]}, "points": [{"label", "frames", "gflops"}] (optional
    reference points, e.g. the paper's Table 2)}``.
    """
    frames = list(sweep["frames"])
    fig = Figure(figsize=(5.2, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    styles = ["o-", "s-", "^--", "d:"]
    for i, (label, values) in enumerate(sweep["curves"].items()):
        ax.plot(frames, values, styles[i % len(styles)], label=label, markersize=4)
    for p in sweep.get("points", []):
        ax.plot([p["frames"]], [p["gflops"]], "k*", markersize=10)
        ax.annotate(p["label"], (p["frames"], p["gflops"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    ax.set_xlabel("frames per video")
    ax.set_ylabel("inference GFLOPs per video + caption")
    ax.set_xticks(frames)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title or sweep.get("title", "cost of watching more frames"), fontsize=9)
    fig.tight_layout()
    return fig


def plot_bench(result: Mapping) -> Figure:
    """Peak memory and samples/s of video-only vs ECLIPSE per mode (Table 2 as bars).

    ``result`` is :func:`eclipse_lite.studies.bench.compare`'s result (with memory/speed measured).
    """
    rows = result["rows"]
    modes = [m for m in ("infer", "train") if m in rows["eclipse"]]
    if not modes:
        raise ValueError("plot_bench: this result has no memory/speed measurements")
    labels = [f"video only\n{rows['video_only']['frames']} frames",
              f"ECLIPSE\n{rows['eclipse']['frames']} frames"]
    fig = Figure(figsize=(2.6 * 2 * len(modes), 3.0))
    panels = [("peak_memory_mb", "peak memory (MB)"), ("samples_per_s", "samples / s")]
    for j, mode in enumerate(modes):
        for k, (key, title) in enumerate(panels):
            ax = fig.add_subplot(1, 2 * len(modes), 2 * j + k + 1)
            values = [rows[r][mode][key] for r in ("video_only", "eclipse")]
            ax.bar([0, 1], [0.0 if v is None else v for v in values], color=["#999999", "#4C72B0"])
            ax.set_xticks([0, 1])
            ax.set_xticklabels(labels, fontsize=7)
            ax.set_title(f"{mode}: {title}", fontsize=8)
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{result.get('preset', '')} on {result.get('machine', {}).get('device', '?')}",
                 fontsize=9)
    fig.tight_layout()
    return fig


def plot_localisation_scores(summary: Mapping[str, Mapping[str, Mapping[str, float]]],
                             metrics: Sequence[str] = ("pointing_game", "miou")) -> Figure:
    """Bars of mean ± std over seeds per method, one panel per metric.

    ``summary`` is ``{method: {metric: {"mean", "std"}}}`` (``saliency.evaluate_localisation``'s
    ``"summary"``).
    """
    methods = list(summary)
    fig = Figure(figsize=(2.2 + 1.1 * len(methods) * len(metrics) / 2, 3.2))
    for j, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), j + 1)
        means = [summary[m][metric]["mean"] for m in methods]
        stds = [summary[m][metric]["std"] for m in methods]
        ax.bar(range(len(methods)), means, yerr=stds, capsize=3, color="#4C72B0")
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=35, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(metric, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig

