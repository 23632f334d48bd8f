"""The saliency study end to end: :func:`run` loads the model(s) and audio encoder(s), scores them
with ``evaluate_localisation`` and writes ``saliency_scores.{json,png}``, a PNG and a GIF per video.

Its command line is ``eclipse-lite saliency`` (``eclipse_lite.cli.saliency``).
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from eclipse_lite.audio_encoders import build_audio_encoder
from eclipse_lite.files import atomic_write_text
from eclipse_lite.model import ECLIPSE
from eclipse_lite.studies.bench import config_from_args
from eclipse_lite.studies.saliency.evaluate import evaluate_localisation, format_scores
from eclipse_lite.studies.saliency.files import find_audio_encoder, find_videos, load_audio_encoder
from eclipse_lite.studies.saliency.ground_truth import SCORED_KINDS
from eclipse_lite.studies.saliency.maps import METHODS
from eclipse_lite.studies.viz import plot_localisation_scores, save_figure
from eclipse_lite.train.distributed import resolve_device


def _load_models(checkpoints: Sequence[str], audio_encoders: Sequence[str], data: Optional[str],
                 preset: str, sets: Optional[Sequence[str]], seeds: Sequence[int]
                 ) -> Tuple[List[ECLIPSE], List[torch.nn.Module], List[str], str]:
    """``(models, audio encoders, encoder paths, data folder)`` from ``checkpoints`` (and
    ``audio_encoders``), or a randomly initialised ``preset`` model seeded with ``seeds[0]``."""
    if checkpoints:
        if audio_encoders and len(audio_encoders) != len(checkpoints):
            raise ValueError(f"{len(audio_encoders)} --audio-encoder for "
                             f"{len(checkpoints)} --checkpoint")
        models = [ECLIPSE.from_pretrained(c) for c in checkpoints]
        data = data or os.path.join("data", "generated", models[0].config.name)
        paths = list(audio_encoders) or [find_audio_encoder(c, m.config, data)
                                         for c, m in zip(checkpoints, models)]
        encoders = [load_audio_encoder(m.config, p) for m, p in zip(models, paths)]
        return models, encoders, paths, data
    warnings.warn("no --checkpoint: scoring a randomly initialised model; its maps are "
                  "meaningless (use this to check the pipeline only)", stacklevel=3)
    torch.manual_seed(seeds[0])
    cfg = config_from_args(preset, sets)
    data = data or os.path.join("data", "generated", cfg.name)
    return [ECLIPSE(cfg)], [build_audio_encoder(cfg).eval()], [], data


def run(checkpoints: Sequence[str] = (), audio_encoders: Sequence[str] = (),
        data: Optional[str] = None, split: str = "test", events: Optional[str] = None,
        manifest: Optional[str] = None, out: str = "runs/saliency", preset: str = "tiny",
        sets: Optional[Sequence[str]] = None, device: Optional[str] = "auto",
        seeds: Sequence[int] = (0, 1, 2), methods: Sequence[str] = METHODS,
        layers: Optional[Sequence[int]] = None, frames_per_event: int = 4,
        kinds: Sequence[str] = SCORED_KINDS, threshold: float = 0.5,
        max_videos: Optional[int] = None, pictures: Optional[int] = None,
        gif_frames: int = 24, display_size: int = 128) -> Dict[str, Any]:
    """Score sound-localisation maps on a benchmark's ``split`` and write them into ``out``.

    ``checkpoints``: models saved with save_pretrained (seed ``i`` uses checkpoint ``i mod
    count``), each with its audio encoder from ``audio_encoders`` or found by
    :func:`find_audio_encoder`; none: a randomly initialised ``preset`` model (``sets``:
    ModelConfig overrides), whose maps are meaningless. ``data`` defaults to
    ``data/generated/<preset>``; ``events``/``manifest`` to ``DATA/events.json`` and
    ``DATA/SPLIT.jsonl``. ``max_videos`` scores only the first N videos, ``pictures`` draws PNG +
    GIF for the first N only (None: all). The rest is :func:`evaluate_localisation`'s.
    Returns its result plus ``checkpoints``, ``audio_encoders`` and ``data``.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("--seeds: give at least one seed")
    dev = resolve_device(device)
    models, encoders, paths, data = _load_models(list(checkpoints), list(audio_encoders), data,
                                                 preset, sets, seeds)
    models = [m.to(dev) for m in models]
    encoders = [e.to(dev) for e in encoders]
    videos = find_videos(data, split, events, manifest)
    if max_videos is not None:
        videos = videos[:max(1, int(max_videos))]
    result = evaluate_localisation(models, encoders, videos, seeds, frames_per_event,
                                   list(methods), None if layers is None else list(layers),
                                   threshold, out_dir=out, gif_frames=gif_frames,
                                   display_size=display_size, max_picture_videos=pictures,
                                   kinds=list(kinds))
    result["checkpoints"] = list(checkpoints)
    result["audio_encoders"] = list(paths)
    result["data"] = data
    atomic_write_text(json.dumps(result, indent=2) + "\n", os.path.join(out, "saliency_scores.json"))
    save_figure(plot_localisation_scores(result["summary"]), os.path.join(out, "saliency_scores.png"))
    print(format_scores(result))
    print(f"wrote {out}")
    return result
