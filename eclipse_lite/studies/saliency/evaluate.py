"""Scoring a model's localisation maps on the benchmark's videos, over several seeds.

``evaluate_localisation`` decodes each video once, keeps the scored frames of every seed (see
``ground_truth.pick_frames``) with their audio embeddings, then scores each method's heat maps
next to the baselines and each method's shuffled-audio control; ``format_scores`` prints the
result as Markdown tables.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from eclipse_lite.config import ModelConfig
from eclipse_lite.data.io import resize_frames
from eclipse_lite.data.synth.ground_truth import visible_objects
from eclipse_lite.files import atomic_write_text
from eclipse_lite.model import ECLIPSE
from eclipse_lite.studies.saliency.ground_truth import SCORED_KINDS, VideoRecord, pick_frames
from eclipse_lite.studies.saliency.heatmaps import heatmaps
from eclipse_lite.studies.saliency.maps import METHODS, check_fusion
from eclipse_lite.studies.saliency.media import DecodedVideo, encode_audio, frame_maps
from eclipse_lite.studies.saliency.pictures import write_pictures
from eclipse_lite.studies.saliency.scores import (
    beats_baselines,
    centre_prior_maps,
    random_maps,
    score_maps,
    summarise_seeds,
)

CONTROL_SUFFIX = "_shuffled_audio"   # "<method>_shuffled_audio": the map with another frame's audio
CROWDED = "2+ objects on screen"     # the subset where a silent object competes with the source
Scores = Dict[str, Dict[str, float]]  # {method: score_maps(...)}


@dataclass
class _SeedFrames:
    """The scored frames of one seed, gathered video by video."""

    frames: List[np.ndarray] = field(default_factory=list)      # uint8 [n_v, S, S, 3] per video
    audio: List[Tensor] = field(default_factory=list)           # embeddings [n_v, A] per video
    boxes: List[Tuple[float, ...]] = field(default_factory=list)  # one box per frame
    crowded: List[bool] = field(default_factory=list)           # a second object on screen


def _as_list(x: Any) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _check_inputs(models: Sequence[ECLIPSE], encoders: Sequence[torch.nn.Module],
                  methods: Sequence[str], seeds: Sequence[int], videos: Sequence[VideoRecord],
                  frames_per_event: int) -> None:
    """Raise ``ValueError`` unless the models can be scored together on ``videos``."""
    if len(encoders) not in (1, len(models)):
        raise ValueError(f"{len(encoders)} audio encoders for {len(models)} models")
    if not methods:
        raise ValueError("no saliency methods given")
    if not seeds:
        raise ValueError("no seeds given")
    cfg = models[0].config
    shape = ("image_size", "patch_size", "sample_rate", "audio_window_s")
    for model in models:
        if model.config.a2v_time != "own":
            raise ValueError("evaluate_localisation scores frames independently, which is exact "
                             "only for a2v_time='own' (every frame sees only its own audio); "
                             f"this model has a2v_time={model.config.a2v_time!r}")
        if any(getattr(model.config, k) != getattr(cfg, k) for k in shape):
            raise ValueError(f"all models must share {shape}; got "
                             f"{[tuple(getattr(m.config, k) for k in shape) for m in models]}")
        for m in methods:
            check_fusion(model, m)
    if not videos:
        raise ValueError("no videos to evaluate")
    if int(frames_per_event) < 1:
        raise ValueError(f"frames_per_event must be >= 1, got {frames_per_event}")


def _keep_frames(store: _SeedFrames, rec: VideoRecord, dec: DecodedVideo, video_index: int,
                 seed: int, encoder: torch.nn.Module, frames_per_event: int,
                 kinds: Sequence[str], cfg: ModelConfig) -> None:
    """Add ``seed``'s scored frames of one video (those with audio) to ``store``, resized to
    ``image_size``, with their audio embeddings, boxes and whether a second object is on screen."""
    picked = pick_frames(rec.plan, dec.times, frames_per_event, seed, video_index, kinds)
    if not picked:
        return
    idx = np.array([p[0] for p in picked])
    emb, mask = encode_audio(encoder, dec.wave, dec.times[idx], cfg)
    keep = (mask > 0).numpy()
    if keep.any():
        store.frames.append(resize_frames(dec.frames[idx[keep]], cfg.image_size))
        store.audio.append(emb[torch.from_numpy(keep)])
        store.boxes += [p[2] for p, k in zip(picked, keep) if k]
        store.crowded += [visible_objects(rec.plan, float(dec.times[p[0]])) >= 2
                          for p, k in zip(picked, keep) if k]


def _seed_heatmaps(model: ECLIPSE, frames: np.ndarray, audio: Tensor, methods: Sequence[str],
                   layers: Optional[Sequence[int]], seed: int, cfg: ModelConfig
                   ) -> Dict[str, Tensor]:
    """Heat maps ``{name: [n, S, S]}`` of n frames: each method, its shuffled-audio control
    (with n > 1; every frame gets the audio of the frame n // 2 places further on) and the
    centre-prior and random baselines."""
    size, n = cfg.image_size, audio.shape[0]
    heat = {m: heatmaps(v, size) for m, v in frame_maps(model, frames, audio, methods, layers).items()}
    if n > 1:
        shifted = torch.roll(audio, shifts=n // 2, dims=0)
        ctrl = frame_maps(model, frames, shifted, methods, layers)
        heat.update({m + CONTROL_SUFFIX: heatmaps(v, size) for m, v in ctrl.items()})
    heat["centre_prior"] = centre_prior_maps(n, size, size)
    heat["random"] = random_maps(n, cfg.grid_size, size, seed)
    return heat


def _score_seed(model: ECLIPSE, store: _SeedFrames, seed: int, methods: Sequence[str],
                layers: Optional[Sequence[int]], threshold: float, kinds: Sequence[str],
                cfg: ModelConfig) -> Tuple[Scores, Optional[Scores]]:
    """Scores of one seed's frames: all of them, and the crowded subset (None when empty)."""
    if not store.boxes:
        raise ValueError(f"no frame of these videos shows exactly one sounding object of an "
                         f"event of kind {tuple(kinds)}: nothing to score")
    frames = np.concatenate(store.frames)
    audio = torch.cat(store.audio)
    boxes = torch.tensor(store.boxes, dtype=torch.float64)
    heat = _seed_heatmaps(model, frames, audio, methods, layers, seed, cfg)
    scores = {m: score_maps(h, boxes, threshold) for m, h in heat.items()}
    crowded = torch.tensor(store.crowded, dtype=torch.bool)
    if not bool(crowded.any()):
        return scores, None
    return scores, {m: score_maps(h[crowded], boxes[crowded], threshold) for m, h in heat.items()}


def _bars(summary: Mapping[str, Any], methods: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """``{method: beats_baselines(...)}``, plus ``"beats_shuffled_audio"`` where it was scored."""
    bar = {}
    for m in methods:
        bar[m] = beats_baselines(summary, m)
        if m + CONTROL_SUFFIX in summary:
            bar[m]["beats_shuffled_audio"] = beats_baselines(
                summary, m, baselines=(m + CONTROL_SUFFIX,))["passed"]
    return bar


def evaluate_localisation(models: Union[ECLIPSE, Sequence[ECLIPSE]],
                          audio_encoders: Union[torch.nn.Module, Sequence[torch.nn.Module]],
                          videos: Sequence[VideoRecord], seeds: Sequence[int] = (0, 1, 2),
                          frames_per_event: int = 4, methods: Sequence[str] = METHODS,
                          layers: Optional[Sequence[int]] = None, threshold: float = 0.5,
                          out_dir: Optional[str] = None, gif_frames: int = 24,
                          display_size: int = 128, max_png_frames: int = 8,
                          max_picture_videos: Optional[int] = None,
                          kinds: Sequence[str] = SCORED_KINDS,
                          progress: bool = True) -> Dict[str, Any]:
    """Score localisation maps on benchmark videos against their sound-source boxes.

    For every seed: draw ``frames_per_event`` frames per event of ``kinds`` (default
    ``seen_heard``) among the frames where exactly one object is on screen and sounding, encode
    the audio window centred on each, compute each method's map, upsample it to ``image_size``
    and score it (pointing game, IoU at ``threshold``) next to the centre-prior and random
    baselines and each method's shuffled-audio control, on all frames and on the subset with a
    second (silent) object on screen.
    ``models``/``audio_encoders``: one, or one per seed (e.g. three training seeds); seed ``i``
    uses entry ``i % len``. With ``out_dir``, writes ``saliency_scores.json`` and, with the first
    seed's model, a PNG per video (one row per method, up to ``max_png_frames`` scored frames,
    ground-truth boxes in white) and a GIF per video over ``gif_frames`` evenly spaced frames
    (first method), both ``display_size`` px, for the first ``max_picture_videos`` videos
    (default all). Videos are decoded one at a time; only the scored frames (at ``image_size``)
    and their audio embeddings are kept.

    Returns ``{"per_seed": [{method: scores}], "summary": {method: {metric: {mean, std,
    values}}}, "frames_scored": [...], "bar": {method: beats_baselines(...) +
    "beats_shuffled_audio"}, "subsets": {"2+ objects on screen": {"per_seed", "summary",
    "frames_scored"}} (when every seed has such frames), "settings"}``.
    """
    models, encoders = _as_list(models), _as_list(audio_encoders)
    methods, seeds = list(methods), [int(s) for s in seeds]
    _check_inputs(models, encoders, methods, seeds, videos, frames_per_event)
    cfg = models[0].config
    pictures = len(videos) if max_picture_videos is None else max(0, int(max_picture_videos))

    # one pass over the videos: keep the scored frames of every seed, draw the pictures
    kept = [_SeedFrames() for _ in seeds]
    iterator: Any = enumerate(videos)
    if progress:
        iterator = tqdm(iterator, total=len(videos), desc="saliency", unit="video",
                        disable=bool(os.environ.get("CI")))
    for vi, rec in iterator:
        dec = DecodedVideo(rec, cfg.sample_rate)
        for si, seed in enumerate(seeds):
            _keep_frames(kept[si], rec, dec, vi, seed, encoders[si % len(encoders)],
                         int(frames_per_event), kinds, cfg)
        if out_dir is not None and vi < pictures:
            write_pictures(out_dir, rec, vi, dec, seeds[0], int(frames_per_event), methods,
                           models[0], encoders[0], layers, gif_frames, display_size,
                           max_png_frames, kinds)
        del dec

    per_seed: List[Scores] = []
    per_seed_crowded: List[Scores] = []
    for si, seed in enumerate(seeds):
        scores, crowded = _score_seed(models[si % len(models)], kept[si], seed, methods, layers,
                                      threshold, kinds, cfg)
        per_seed.append(scores)
        if crowded is not None:
            per_seed_crowded.append(crowded)
    summary = summarise_seeds(per_seed)
    result = {
        "per_seed": per_seed, "summary": summary, "seeds": seeds,
        "frames_scored": [len(k.boxes) for k in kept], "videos": len(videos),
        "bar": _bars(summary, methods),
        "settings": {"methods": methods, "layers": None if layers is None else list(layers),
                     "threshold": threshold, "frames_per_event": int(frames_per_event),
                     "kinds": list(kinds), "score_size": cfg.image_size, "centre_prior_sigma": 0.25,
                     "preset": cfg.name, "fusion": cfg.fusion},
    }
    if len(per_seed_crowded) == len(seeds):   # every seed has frames with a competing object
        result["subsets"] = {CROWDED: {
            "per_seed": per_seed_crowded, "summary": summarise_seeds(per_seed_crowded),
            "frames_scored": [int(sum(k.crowded)) for k in kept]}}
    if out_dir is not None:
        atomic_write_text(json.dumps(result, indent=2) + "\n",
                          os.path.join(out_dir, "saliency_scores.json"))
    return result


def format_scores(result: Mapping[str, Any]) -> str:
    """Markdown tables of mean ± std over seeds per method (all frames, then the subsets) and
    whether each method passes the bar; ``result`` is :func:`evaluate_localisation`'s."""
    def table(title: str, summary: Mapping[str, Any], frames: Sequence[int]) -> List[str]:
        lines = [f"{title} (frames per seed: {list(frames)})", "",
                 "| method | pointing game | mIoU |", "| --- | --- | --- |"]
        for m, s in summary.items():
            pg, iou = s["pointing_game"], s["miou"]
            lines.append(f"| {m} | {pg['mean']:.3f} ± {pg['std']:.3f} | "
                         f"{iou['mean']:.3f} ± {iou['std']:.3f} |")
        return lines + [""]

    lines = table("all scored frames", result["summary"], result["frames_scored"])
    for name, sub in result.get("subsets", {}).items():
        lines += table(name, sub["summary"], sub["frames_scored"])
    for m, bar in result.get("bar", {}).items():
        lines.append(f"{m}: beats centre prior and random on pointing game by more than the "
                     f"spread over seeds: {'yes' if bar['passed'] else 'no'} ("
                     + ", ".join(f"{b} {bar['margins'][b]:+.3f} vs spread {bar['spreads'][b]:.3f}"
                                 for b in bar["margins"]) + ")"
                     + ("" if "beats_shuffled_audio" not in bar else
                        f"; beats its shuffled-audio control: "
                        f"{'yes' if bar['beats_shuffled_audio'] else 'no'}"))
    return "\n".join(lines)
