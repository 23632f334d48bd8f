"""Pictures of one benchmark video's maps: a PNG grid of scored frames and a GIF over the video.

Both show heat maps blended over the frames (``overlay``) with the sounding sources' boxes drawn.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch

from eclipse_lite.data.io import resize_frames
from eclipse_lite.data.synth.ground_truth import sounding_sources
from eclipse_lite.model import ECLIPSE
from eclipse_lite.studies.saliency.ground_truth import VideoRecord, pick_frames
from eclipse_lite.studies.saliency.heatmaps import heatmaps, overlay
from eclipse_lite.studies.saliency.media import DecodedVideo, encode_audio, frame_maps
from eclipse_lite.studies.viz import draw_box, image_grid, save_gif, save_png


def write_pictures(out_dir: str, rec: VideoRecord, video_index: int, dec: DecodedVideo, seed: int,
                   frames_per_event: int, methods: Sequence[str], model: ECLIPSE,
                   encoder: torch.nn.Module, layers: Optional[Sequence[int]], gif_frames: int,
                   display_size: int, max_png_frames: int, kinds: Sequence[str]) -> None:
    """``{id}.png`` (rows = methods, columns = scored frames of ``seed``) and ``{id}.gif``.

    The PNG holds up to ``max_png_frames`` frames drawn by :func:`pick_frames`; the GIF
    ``gif_frames`` evenly spaced frames with the first method's map. Both ``display_size`` px.
    """
    os.makedirs(out_dir, exist_ok=True)
    picked = pick_frames(rec.plan, dec.times, frames_per_event, seed, video_index,
                         kinds)[:max_png_frames]
    if picked:
        _write_png(os.path.join(out_dir, f"{rec.video_id}.png"), dec, picked, methods, model,
                   encoder, layers, display_size)
    _write_gif(os.path.join(out_dir, f"{rec.video_id}.gif"), rec, dec, methods[0], model, encoder,
               layers, gif_frames, display_size)


def _write_png(path: str, dec: DecodedVideo, picked: Sequence[tuple], methods: Sequence[str],
               model: ECLIPSE, encoder: torch.nn.Module, layers: Optional[Sequence[int]],
               display_size: int) -> None:
    """A grid of overlays: one row per method, one column per ``(frame, event, box)`` of ``picked``."""
    cfg = model.config
    idx = np.array([p[0] for p in picked])
    emb, _ = encode_audio(encoder, dec.wave, dec.times[idx], cfg)
    raw = frame_maps(model, resize_frames(dec.frames[idx], cfg.image_size), emb, methods, layers)
    shown = resize_frames(dec.frames[idx], display_size)
    tiles, captions = [], []
    for m in methods:
        heat = heatmaps(raw[m], display_size).numpy()
        for c, (k, _, box) in enumerate(picked):
            tiles.append(draw_box(overlay(shown[c], heat[c]), box))
            captions.append(f"{m} t={dec.times[k]:.1f}s")
    save_png(image_grid(tiles, cols=len(picked), captions=captions), path)


def _write_gif(path: str, rec: VideoRecord, dec: DecodedVideo, method: str, model: ECLIPSE,
               encoder: torch.nn.Module, layers: Optional[Sequence[int]], gif_frames: int,
               display_size: int) -> None:
    """``gif_frames`` evenly spaced frames with ``method``'s map (none where the audio window is
    empty) and every sounding source's box, at most 4 frames per second."""
    cfg = model.config
    n = len(dec.times)
    idx = np.unique(np.linspace(0, n - 1, num=min(int(gif_frames), n)).round().astype(int))
    emb, mask = encode_audio(encoder, dec.wave, dec.times[idx], cfg)
    maps = frame_maps(model, resize_frames(dec.frames[idx], cfg.image_size), emb,
                      [method], layers)[method]
    heat = heatmaps(maps, display_size).numpy()
    shown = resize_frames(dec.frames[idx], display_size)
    frames_out = []
    for c, k in enumerate(idx):
        pic = overlay(shown[c], heat[c]) if mask[c] > 0 else shown[c].copy()
        for _, box in sounding_sources(rec.plan, float(dec.times[k])):
            pic = draw_box(pic, box)
        frames_out.append(pic)
    fps = float(rec.plan.get("fps") or 4.0)
    save_gif(frames_out, path, fps=min(fps, 4.0))
