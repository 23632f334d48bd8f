"""Benchmark videos as model inputs: decoded frames and waveform, audio embeddings, frame maps.

``DecodedVideo`` holds every frame of one video and its waveform; ``encode_audio`` embeds the
audio windows centred on chosen frames; ``frame_maps`` runs the model on frames as independent
one-frame clips and returns their raw maps.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from eclipse_lite.audio import audio_windows, encode_windows
from eclipse_lite.clip import clip_normalize
from eclipse_lite.config import ModelConfig
from eclipse_lite.data.io import read_audio, read_video
from eclipse_lite.model import ECLIPSE
from eclipse_lite.studies.saliency.ground_truth import VideoRecord
from eclipse_lite.studies.saliency.maps import compute_maps, eval_no_grad


class DecodedVideo:
    """All frames of a video (``frames`` uint8 [n, H, W, 3], ``times`` float64 [n] seconds) and
    its mono waveform (``wave`` float32 [samples] at ``sample_rate``)."""

    def __init__(self, record: VideoRecord, sample_rate: int) -> None:
        plan = record.plan
        guess = int(round(float(plan.get("duration", 0)) * float(plan.get("fps", 0)))) or 1
        clip = read_video(record.path, guess, None)
        if clip.n_frames != guess:
            clip = read_video(record.path, clip.n_frames, None)
        self.frames, self.times = clip.frames, clip.times.astype(np.float64)
        wave, _ = read_audio(record.path, sample_rate)
        self.wave = torch.from_numpy(wave)


def encode_audio(encoder: torch.nn.Module, wave: Tensor, times: np.ndarray,
                 cfg: ModelConfig) -> Tuple[Tensor, Tensor]:
    """Embeddings [n, A] of the audio windows centred on ``times`` [n] and their mask [n]
    (1 = the window holds audio); ``wave`` [samples] at ``cfg.sample_rate``."""
    windows, mask = audio_windows(wave, torch.from_numpy(times), cfg.sample_rate, cfg.audio_window_s)
    with eval_no_grad(encoder):
        emb = encode_windows(encoder, windows[None].float(), mask[None])[0]
    return emb.float(), mask


def frame_maps(model: ECLIPSE, frames: np.ndarray, audio: Tensor, methods: Sequence[str],
               layers: Optional[Sequence[int]], chunk: int = 64) -> Dict[str, Tensor]:
    """Maps of independent frames (uint8 [n, S, S, 3] at the model's image size) with their
    audio embeddings [n, A]: ``{method: [n, g, g]}`` on the CPU.

    Frames are run as ``n`` one-frame clips, ``chunk`` at a time (exact for ``a2v_time="own"``:
    frame t then only sees audio token t and its own patches).
    """
    device = next(model.parameters()).device
    parts: Dict[str, List[Tensor]] = {m: [] for m in methods}
    for s in range(0, frames.shape[0], chunk):
        # divide=True: the arithmetic this study has always used (see clip_normalize)
        f = clip_normalize(frames[s:s + chunk], divide=True)[:, None].to(device)
        a = audio[s:s + chunk, None].to(device)
        maps = compute_maps(model, f, a, None, methods, layers)
        for m in methods:
            parts[m].append(maps[m][:, 0].cpu())
    return {m: torch.cat(v) for m, v in parts.items()}
