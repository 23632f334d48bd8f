"""Where is the sound? Localisation maps from ECLIPSE, and scores for them.

The paper (Sec. 5.1, Fig. 7 and 9; REFERENCE.md "Sound localisation") shows, but never scores,
maps made from "the similarity between audio features and visual patches": for frame ``t``, the
dot product between the final audio token ``a_t`` and each of that frame's final patch tokens,
a ``g x g`` map (``g = image_size / patch_size``), min-max normalised, cubed, normalised again,
upsampled bicubically to the frame and blended over it (0.7 image + 0.3 heat map). Here:

    maps = saliency_maps(model, frames, audio, method="dot")   # [B, T, g, g] raw
    heat = heatmaps(maps, size=frames.shape[-1])                # [B, T, H, W] in [0, 1]
    picture = overlay(frame_uint8, heat[0, 0])                  # uint8 [H, W, 3]
    score_maps(heat.flatten(0, 1), boxes)                       # {"pointing_game", "miou", "n"}

Methods (``METHODS``):
  "dot"            the paper's map: final audio token . final patch tokens, on the residual
                   stream (before ``ln_post``). Default (see "Which space" below).
  "dot_projected"  the same after CLIP's output head on both sides, ``proj(ln_post(.))``, i.e.
                   in the joint embedding space the frame CLS is trained in.
  "v2a"            V2A attention (Eq. 4): the weights with which the audio token queries the
                   frame's patches, averaged over heads, audio tokens and layers. (A2V's weights
                   are useless here: with one audio token per frame its softmax runs over a
                   single key and every weight is 1.) The weights are recomputed in this module
                   from each AV block's inputs, captured with forward hooks; ``fusion="joint"``
                   uses the audio rows of its joint attention.

Which space. Both "dot" variants are computed every time the benchmark is scored
(:func:`evaluate_localisation`), so the better one can be read off ``saliency_scores.json``; the
default stays the paper's literal recipe ("dot") until a trained model shows otherwise — see
``docs/benchmarks.md``. ``layers`` picks other layers than the last (maps "from the wrong layer"
are one of the things to check when a map fails). Note that the last layer's V2A update of the
audio stream never reaches the video embedding (the audio stream is dropped after the last
layer), so its ``v2a_proj`` gets no gradient and stays at its zero initialisation: the "final"
audio token is in effect the one after the second-to-last layer.

Scoring (the paper could not; the bundled benchmark knows each sound source's box):
  * pointing game: the map's maximum lies inside the ground-truth box. Ties (a flat map) are
    broken at random in expectation: the hit is the fraction of maximal pixels inside the box —
    the same rule the project uses for tied retrieval scores.
  * IoU: pixels ``>= min + threshold * (max - min)`` (threshold 0.5 by default, i.e. half the
    normalised map's range) against the box's pixel mask; a flat map switches every pixel on.
  * baselines: a centre prior (a Gaussian at the frame centre, ``sigma = 0.25`` of the side) and
    a random map (uniform noise on the same ``g x g`` grid, post-processed and upsampled exactly
    like the model's maps), plus a control per method: the same map computed with the audio of
    another frame ("<method>_shuffled_audio"). A map that merely finds the most salient object
    scores as well without its own sound; only a map that uses the sound loses here.
  * scored frames: frames where exactly one object is both on screen and sounding and it belongs
    to a ``seen_heard`` event (``kinds`` adds others, e.g. ``brief``), ``frames_per_event``
    drawn per event with the seed, scored at the model's input size; mean ± sample std over
    seeds (frame draws, random maps and, with one checkpoint per seed, training seeds). The
    frames where a second, silent object is also on screen are scored again as a subset
    ("2+ objects on screen"): there, pointing at "the object" is not enough.

Command line: ``python -m eclipse_lite.studies.saliency --data DIR --checkpoint RUN --out OUT`` (see
:func:`main`); writes ``saliency_scores.json``, a PNG per video (methods x frames, boxes drawn)
and a GIF per video over its frames.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from eclipse_lite.audio import audio_windows, build_audio_encoder, encode_windows
from eclipse_lite.config import CLIP_MEAN, CLIP_STD, ModelConfig
from eclipse_lite.model import ECLIPSE

__all__ = ["METHODS", "BASELINES", "saliency_maps", "compute_maps", "trace_layers",
           "normalise_maps", "upsample_maps", "heatmaps", "overlay", "box_masks",
           "pointing_hits", "map_ious", "score_maps", "centre_prior_maps", "random_maps",
           "summarise_seeds", "beats_baselines", "load_plans", "sounding_sources",
           "VideoRecord", "evaluate_localisation", "find_videos", "find_audio_encoder",
           "load_audio_encoder", "format_scores", "main"]

METHODS = ("dot", "dot_projected", "v2a")
BASELINES = ("centre_prior", "random")
CONTROL_SUFFIX = "_shuffled_audio"   # "<method>_shuffled_audio": the map with another frame's audio
CROWDED = "2+ objects on screen"     # the subset where a silent object competes with the source
SCORED_KINDS = ("seen_heard",)   # event kinds whose frames are scored (``brief`` can be added)
ArrayLike = Union[Tensor, np.ndarray]


# =================================================================================== maps
@dataclass
class LayerTrace:
    """What :func:`trace_layers` records for a batch of B videos x T frames.

    tokens    {layer: [B, T, L, D]} visual tokens after the layer (CLS first; before ln_post)
    audio     {layer: [B, T, S, D]} audio stream after the layer's AV block
    av_inputs {layer: (video [N, L, D], audio [N, S, D], audio_mask [N, S])} inputs of the
              layer's AV block (N = B*T), from which attention weights are recomputed
    """

    tokens: Dict[int, Tensor]
    audio: Dict[int, Tensor]
    av_inputs: Dict[int, Tuple[Tensor, Tensor, Tensor]]
    batch: int
    frames: int


@contextmanager
def _eval_no_grad(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _check_fusion(model: ECLIPSE, method: str) -> None:
    fusion = model.config.fusion
    if fusion in ("none", "audio_only"):
        raise ValueError(f"sound localisation needs a model with an audio stream in its video "
                         f"tower; this one has fusion={fusion!r}")
    if method == "v2a" and fusion == "a2v":
        raise ValueError("method='v2a' needs V2A attention, but fusion='a2v' has none (the audio "
                         "stream is never updated); use method='dot'")


def trace_layers(model: ECLIPSE, frames: Tensor, audio: Tensor,
                 audio_mask: Optional[Tensor] = None) -> LayerTrace:
    """Run the video tower once (eval mode, no grad) and record every layer's streams.

    frames [B, T, 3, H, W] CLIP-normalised; audio [B, T, A] or [B, T, S, A] embeddings;
    audio_mask [B, T] (1 = real audio). The model is not modified: forward hooks read the input
    of each layer's ``ln_2`` (the residual before the MLP), the output of its MLP and the
    inputs/outputs of its AV block, and are removed afterwards.
    """
    cfg = model.config
    _check_fusion(model, "dot")
    b, t = frames.shape[:2]
    pre_mlp: Dict[int, Tensor] = {}
    mlp_out: Dict[int, Tensor] = {}
    av_in: Dict[int, Tuple[Tensor, Tensor, Tensor]] = {}
    audio_after: Dict[int, Tensor] = {}
    handles = []

    def keep(store, i):
        return lambda mod, args, out: store.__setitem__(i, out)

    for i, block in enumerate(model.visual.blocks):
        handles.append(block.ln_2.register_forward_pre_hook(
            lambda mod, args, i=i: pre_mlp.__setitem__(i, args[0])))
        handles.append(block.mlp.register_forward_hook(keep(mlp_out, i)))
    for key, block in getattr(model, "av_blocks", {}).items():
        def av_hook(mod, args, out, i=int(key)):
            video, audio_in, mask = args[:3]
            av_in[i] = (video, audio_in, mask)
            audio_after[i] = audio_in + out[1]
        handles.append(block.register_forward_hook(av_hook))
    try:
        with _eval_no_grad(model):
            model.video_features(frames, audio, audio_mask=audio_mask)
    finally:
        for h in handles:
            h.remove()
    tokens = {i: (pre_mlp[i] + mlp_out[i]).reshape(b, t, *pre_mlp[i].shape[1:])
              for i in range(cfg.vision_layers)}
    # the audio stream after layer i: the output of the last AV block at or before i; before the
    # first AV block it is the initial stream audio_proj(audio), the first block's input
    stream: Dict[int, Tensor] = {}
    if av_in:
        current = av_in[min(av_in)][1]
        for i in range(cfg.vision_layers):
            current = audio_after.get(i, current)
            stream[i] = current.reshape(b, t, *current.shape[1:])
    return LayerTrace(tokens=tokens, audio=stream, av_inputs=av_in, batch=b, frames=t)


def _attention_to_patches(model: ECLIPSE, layer: int, video: Tensor, audio: Tensor,
                          audio_mask: Tensor) -> Tensor:
    """Weights [N, heads, S, P] with which layer ``layer``'s audio tokens attend to the patches."""
    block = model.av_blocks[str(layer)]
    vn, an = block.norm_video(video), block.norm_audio(audio)
    if block.kind == "eclipse":                         # Eq. 4: query audio, keys the frame's tokens
        attn, keys, key_mask = block.v2a_attn, vn, None
    elif block.kind == "joint":                          # audio rows of the joint attention
        attn, keys = block.a2v_attn, torch.cat([vn, an], dim=1)
        key_mask = torch.cat([torch.ones_like(audio_mask[:, :1]).expand(-1, vn.shape[1]),
                              audio_mask], dim=1) > 0
    else:
        raise ValueError(f"layer {layer}: AV block of kind {block.kind!r} has no audio-to-video "
                         f"attention")
    q = attn.split_heads(attn.q_proj(an))               # [N, h, S, d]
    k = attn.split_heads(attn.k_proj(keys))             # [N, h, K, d]
    scores = q @ k.transpose(-2, -1) / math.sqrt(attn.head_dim)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights[..., 1:vn.shape[1]]                  # drop CLS (and audio keys): [N, h, S, P]


def _grid(values: Tensor, cfg: ModelConfig, b: int, t: int) -> Tensor:
    g = cfg.grid_size
    return values.reshape(b, t, g, g)


def compute_maps(model: ECLIPSE, frames: Tensor, audio: Tensor,
                 audio_mask: Optional[Tensor] = None, methods: Sequence[str] = ("dot",),
                 layers: Optional[Sequence[int]] = None) -> Dict[str, Tensor]:
    """Raw localisation maps of several methods from one pass: ``{method: [B, T, g, g]}``.

    ``layers``: for "dot"/"dot_projected" the layers whose tokens are compared (default: the
    last), for "v2a" the AV layers whose weights are averaged (default: all AV layers);
    negative indices count from the end (-2 = second-to-last layer).
    Several layers are averaged. Maps are float32 on the model's device, not normalised.
    """
    cfg = model.config
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown saliency method(s) {bad}; known: {METHODS}")
    for m in methods:
        _check_fusion(model, m)
    if cfg.a2v_mode == "reverse_norm" and "v2a" in methods:
        raise ValueError("method='v2a' is not defined for a2v_mode='reverse_norm'")
    b, t = frames.shape[:2]
    if layers is not None:   # negative indices count from the last layer, as in Python
        layers = [int(i) + cfg.vision_layers if int(i) < 0 else int(i) for i in layers]
    trace = trace_layers(model, frames, audio, audio_mask)
    out: Dict[str, Tensor] = {}
    for method in methods:
        if method in ("dot", "dot_projected"):
            chosen = [cfg.vision_layers - 1] if layers is None else [int(i) for i in layers]
            maps = []
            for i in chosen:
                if i not in trace.tokens or i not in trace.audio:
                    raise ValueError(f"layer {i} has no audio stream to compare with (AV layers: "
                                     f"{sorted(trace.av_inputs)})")
                patches = trace.tokens[i][:, :, 1:, :]            # [B, T, P, D]
                sound = trace.audio[i].mean(dim=2, keepdim=True)  # [B, T, 1, D] (mean over S)
                if method == "dot_projected":
                    with torch.no_grad():
                        head = lambda x: model.visual.proj(model.visual.ln_post(x))  # noqa: E731
                        patches, sound = head(patches), head(sound)
                maps.append((patches * sound).sum(-1))            # [B, T, P]
            out[method] = _grid(torch.stack(maps).mean(0).float(), cfg, b, t)
        else:
            chosen = sorted(trace.av_inputs) if layers is None else [int(i) for i in layers]
            missing = [i for i in chosen if i not in trace.av_inputs]
            if missing or not chosen:
                raise ValueError(f"layers {missing or chosen} carry no AV block (AV layers: "
                                 f"{sorted(trace.av_inputs)})")
            with torch.no_grad():
                maps = [_attention_to_patches(model, i, *trace.av_inputs[i]).mean(dim=(1, 2))
                        for i in chosen]                          # each [N, P]
            out[method] = _grid(torch.stack(maps).mean(0).float(), cfg, b, t)
    return out


def saliency_maps(model: ECLIPSE, frames: Tensor, audio: Tensor,
                  audio_mask: Optional[Tensor] = None, method: str = "dot",
                  layers: Optional[Sequence[int]] = None) -> Tensor:
    """Raw localisation maps ``[B, T, g, g]`` of one ``method`` (see :func:`compute_maps`)."""
    return compute_maps(model, frames, audio, audio_mask, (method,), layers)[method]


# =================================================================================== pictures
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
    """
    from eclipse_lite.studies.viz import heat_colours

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


# =================================================================================== scores
def _as_maps(maps: ArrayLike) -> Tensor:
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


def pointing_hits(maps: ArrayLike, boxes: ArrayLike) -> Tensor:
    """Pointing game per map: 1 when the maximum lies inside the box, 0 when outside — float [N].

    Ties: the fraction of maximal pixels (within 1e-6 of the map's range) inside the box, the
    expected hit under random tie-breaking; a flat map scores the box's share of the frame.
    """
    m = _as_maps(maps)
    masks = box_masks(boxes, m.shape[1], m.shape[2])
    if masks.shape[0] != m.shape[0]:
        raise ValueError(f"{m.shape[0]} maps but {masks.shape[0]} boxes")
    hi = m.amax(dim=(1, 2), keepdim=True)
    lo = m.amin(dim=(1, 2), keepdim=True)
    top = m >= hi - 1e-6 * (hi - lo)
    return ((top & masks).flatten(1).sum(1).double() / top.flatten(1).sum(1).double()).float()


def map_ious(maps: ArrayLike, boxes: ArrayLike, threshold: float = 0.5) -> Tensor:
    """IoU of each thresholded map with its box mask — float [N].

    A pixel is on when ``value >= min + threshold * (max - min)`` (a flat map: every pixel).
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    m = _as_maps(maps)
    masks = box_masks(boxes, m.shape[1], m.shape[2])
    if masks.shape[0] != m.shape[0]:
        raise ValueError(f"{m.shape[0]} maps but {masks.shape[0]} boxes")
    hi = m.amax(dim=(1, 2), keepdim=True)
    lo = m.amin(dim=(1, 2), keepdim=True)
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
    """The issue's bar: ``method`` beats every baseline by more than the spread over seeds.

    For each baseline: ``margin = mean(method) - mean(baseline)`` must exceed
    ``std(method) + std(baseline)``. Returns ``{"passed": bool, "margins": {baseline: margin},
    "spreads": {baseline: spread}}``.
    """
    got = summary[method][metric]
    margins, spreads = {}, {}
    for b in baselines:
        margins[b] = got["mean"] - summary[b][metric]["mean"]
        spreads[b] = got["std"] + summary[b][metric]["std"]
    return {"method": method, "metric": metric, "margins": margins, "spreads": spreads,
            "passed": all(margins[b] > spreads[b] for b in baselines)}


# =================================================================================== benchmark
def load_plans(path: str) -> Dict[str, Dict[str, Any]]:
    """The bundled benchmark's ground truth, ``{video_id: plan}``.

    Accepts ``events.json`` as a list of plans (each with an ``"id"``), a mapping ``id → plan``, or
    ``{"videos": [plan, ...]}``. A plan has ``"events"`` (see ``eclipse_lite.data.synth.plan``).
    """
    with open(path, encoding="utf-8") as f:
        obj = json.load(f)
    if isinstance(obj, dict) and isinstance(obj.get("videos"), list):
        obj = obj["videos"]
    if isinstance(obj, list):
        plans = {}
        for i, p in enumerate(obj):
            if not isinstance(p, dict) or "id" not in p:
                raise ValueError(f"{path}: entry {i} is not a plan with an 'id'")
            plans[str(p["id"])] = p
    elif isinstance(obj, dict):
        plans = {str(k): v for k, v in obj.items()}
    else:
        raise ValueError(f"{path}: expected a list or mapping of plans, got {type(obj).__name__}")
    for vid, p in plans.items():
        if not isinstance(p, dict) or not isinstance(p.get("events"), list):
            raise ValueError(f"{path}: plan {vid!r} has no 'events' list")
    return plans


def sounding_sources(plan: Mapping[str, Any], t: float) -> List[Tuple[int, Tuple[float, ...]]]:
    """Events whose object is on screen *and* sounding at time ``t``: ``[(event index, box)]``.

    An event counts when ``box_at(event, t)`` is not None (it has a visual on screen) and
    ``sound_start <= t < sound_end`` with a ``sound_class``. In the bundled benchmark these are
    ``seen_heard`` events (and ``brief`` ones during their short visual).
    """
    from eclipse_lite.data.synth.visuals import box_at

    out = []
    for i, ev in enumerate(plan["events"]):
        if ev.get("sound_class") is None or ev.get("sound_start") is None:
            continue
        if not float(ev["sound_start"]) <= t < float(ev["sound_end"]):
            continue
        box = box_at(ev, t)
        if box is not None and box[2] > box[0] and box[3] > box[1]:
            out.append((i, tuple(float(v) for v in box)))
    return out


def visible_objects(plan: Mapping[str, Any], t: float) -> int:
    """How many of the plan's objects are on screen at time ``t`` (sounding or not)."""
    from eclipse_lite.data.synth.visuals import box_at

    return sum(box_at(ev, t) is not None for ev in plan["events"])


@dataclass
class VideoRecord:
    """One benchmark video: id, media file and its plan (``events.json`` entry)."""

    video_id: str
    path: str
    plan: Dict[str, Any]


class _Decoded:
    """All frames of a video (uint8 [n, H, W, 3], times [n]) and its mono waveform."""

    def __init__(self, record: VideoRecord, sample_rate: int) -> None:
        from eclipse_lite.data.io import read_audio, read_video

        plan = record.plan
        guess = int(round(float(plan.get("duration", 0)) * float(plan.get("fps", 0)))) or 1
        clip = read_video(record.path, guess, None)
        if clip.n_frames != guess:
            clip = read_video(record.path, clip.n_frames, None)
        self.frames, self.times = clip.frames, clip.times.astype(np.float64)
        wave, _ = read_audio(record.path, sample_rate)
        self.wave = torch.from_numpy(wave)


def _resize_uint8(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 [n, H, W, 3] squashed to [n, size, size, 3] (as the data loader does)."""
    from eclipse_lite.data.io import resize_frames

    return resize_frames(frames, size)


def _normalise_frames(frames: np.ndarray) -> Tensor:
    """uint8 [n, H, W, 3] → CLIP-normalised float [n, 3, H, W]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _encode_audio(encoder: torch.nn.Module, wave: Tensor, times: np.ndarray,
                  cfg: ModelConfig) -> Tuple[Tensor, Tensor]:
    """Embeddings [n, A] of the windows centred on ``times`` and their mask [n]."""
    windows, mask = audio_windows(wave, torch.from_numpy(times), cfg.sample_rate, cfg.audio_window_s)
    with _eval_no_grad(encoder):
        emb = encode_windows(encoder, windows[None].float(), mask[None])[0]
    return emb.float(), mask


def _frame_maps(model: ECLIPSE, frames: np.ndarray, audio: Tensor, methods: Sequence[str],
                layers: Optional[Sequence[int]], chunk: int = 64) -> Dict[str, Tensor]:
    """Maps of independent frames (uint8 [n, S, S, 3] at the model's image size) with their
    audio embeddings [n, A]: ``{method: [n, g, g]}`` on the CPU.

    Frames are run as ``n`` one-frame clips, ``chunk`` at a time (exact for ``a2v_time="own"``:
    frame t then only sees audio token t and its own patches).
    """
    device = next(model.parameters()).device
    parts: Dict[str, List[Tensor]] = {m: [] for m in methods}
    for s in range(0, frames.shape[0], chunk):
        f = _normalise_frames(frames[s:s + chunk])[:, None].to(device)
        a = audio[s:s + chunk, None].to(device)
        maps = compute_maps(model, f, a, None, methods, layers)
        for m in methods:
            parts[m].append(maps[m][:, 0].cpu())
    return {m: torch.cat(v) for m, v in parts.items()}


def _pick_frames(plan: Mapping[str, Any], times: np.ndarray, per_event: int, seed: int,
                 video_index: int, kinds: Sequence[str] = SCORED_KINDS
                 ) -> List[Tuple[int, int, Tuple[float, ...]]]:
    """``[(frame index, event index, box)]``: frames where exactly one object is on screen and
    sounding and its event's kind is in ``kinds``; ``per_event`` frames drawn per event."""
    by_event: Dict[int, List[Tuple[int, Tuple[float, ...]]]] = {}
    for k, t in enumerate(times):
        sources = sounding_sources(plan, float(t))
        if len(sources) == 1 and plan["events"][sources[0][0]].get("kind") in kinds:
            e, box = sources[0]
            by_event.setdefault(e, []).append((k, box))
    picked = []
    for e in sorted(by_event):
        cands = by_event[e]
        rng = np.random.default_rng([int(seed), int(video_index), int(e)])
        take = sorted(rng.choice(len(cands), size=min(per_event, len(cands)), replace=False))
        picked += [(cands[j][0], e, cands[j][1]) for j in take]
    return picked


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
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    encoders = list(audio_encoders) if isinstance(audio_encoders, (list, tuple)) else [audio_encoders]
    if len(encoders) not in (1, len(models)):
        raise ValueError(f"{len(encoders)} audio encoders for {len(models)} models")
    methods = list(methods)
    if not methods:
        raise ValueError("no saliency methods given")
    seeds = [int(s) for s in seeds]
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
            _check_fusion(model, m)
    if not videos:
        raise ValueError("no videos to evaluate")
    if int(frames_per_event) < 1:
        raise ValueError(f"frames_per_event must be >= 1, got {frames_per_event}")
    size = cfg.image_size
    pictures = len(videos) if max_picture_videos is None else max(0, int(max_picture_videos))

    # one pass over the videos: keep the scored frames of every seed, draw the pictures
    kept: List[Dict[str, list]] = [{"frames": [], "audio": [], "boxes": [], "crowded": []}
                                   for _ in seeds]
    iterator: Any = enumerate(videos)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=len(videos), desc="saliency", unit="video",
                        disable=bool(os.environ.get("CI")))
    for vi, rec in iterator:
        dec = _Decoded(rec, cfg.sample_rate)
        for si, seed in enumerate(seeds):
            picked = _pick_frames(rec.plan, dec.times, int(frames_per_event), seed, vi, kinds)
            if not picked:
                continue
            idx = np.array([p[0] for p in picked])
            emb, mask = _encode_audio(encoders[si % len(encoders)], dec.wave, dec.times[idx], cfg)
            keep = (mask > 0).numpy()
            if keep.any():
                kept[si]["frames"].append(_resize_uint8(dec.frames[idx[keep]], size))
                kept[si]["audio"].append(emb[torch.from_numpy(keep)])
                kept[si]["boxes"] += [p[2] for p, k in zip(picked, keep) if k]
                kept[si]["crowded"] += [visible_objects(rec.plan, float(dec.times[p[0]])) >= 2
                                        for p, k in zip(picked, keep) if k]
        if out_dir is not None and vi < pictures:
            _write_pictures(out_dir, rec, vi, dec, seeds[0], int(frames_per_event), methods,
                            models[0], encoders[0], layers, gif_frames, display_size,
                            max_png_frames, kinds)
        del dec

    per_seed: List[Dict[str, Dict[str, float]]] = []
    per_seed_crowded: List[Dict[str, Dict[str, float]]] = []
    for si, seed in enumerate(seeds):
        if not kept[si]["boxes"]:
            raise ValueError(f"no frame of these videos shows exactly one sounding object of an "
                             f"event of kind {tuple(kinds)}: nothing to score")
        model = models[si % len(models)]
        frames = np.concatenate(kept[si]["frames"])
        audio = torch.cat(kept[si]["audio"])
        boxes = torch.tensor(kept[si]["boxes"], dtype=torch.float64)
        n = boxes.shape[0]
        heat = {m: heatmaps(v, size) for m, v in _frame_maps(model, frames, audio, methods, layers).items()}
        if n > 1:   # control: every frame gets the audio of the frame n // 2 places further on
            shifted = torch.roll(audio, shifts=n // 2, dims=0)
            ctrl = _frame_maps(model, frames, shifted, methods, layers)
            heat.update({m + CONTROL_SUFFIX: heatmaps(v, size) for m, v in ctrl.items()})
        heat["centre_prior"] = centre_prior_maps(n, size, size)
        heat["random"] = random_maps(n, cfg.grid_size, size, seed)
        per_seed.append({m: score_maps(h, boxes, threshold) for m, h in heat.items()})
        crowded = torch.tensor(kept[si]["crowded"], dtype=torch.bool)
        if bool(crowded.any()):
            per_seed_crowded.append({m: score_maps(h[crowded], boxes[crowded], threshold)
                                     for m, h in heat.items()})
    summary = summarise_seeds(per_seed)
    bar = {}
    for m in methods:
        bar[m] = beats_baselines(summary, m)
        if m + CONTROL_SUFFIX in summary:
            bar[m]["beats_shuffled_audio"] = beats_baselines(
                summary, m, baselines=(m + CONTROL_SUFFIX,))["passed"]
    result = {
        "per_seed": per_seed, "summary": summary, "seeds": seeds,
        "frames_scored": [len(k["boxes"]) for k in kept], "videos": len(videos), "bar": bar,
        "settings": {"methods": methods, "layers": None if layers is None else list(layers),
                     "threshold": threshold, "frames_per_event": int(frames_per_event),
                     "kinds": list(kinds),
                     "score_size": size, "centre_prior_sigma": 0.25,
                     "preset": cfg.name, "fusion": cfg.fusion},
    }
    if len(per_seed_crowded) == len(seeds):   # every seed has frames with a competing object
        result["subsets"] = {CROWDED: {
            "per_seed": per_seed_crowded, "summary": summarise_seeds(per_seed_crowded),
            "frames_scored": [int(sum(k["crowded"])) for k in kept]}}
    if out_dir is not None:
        from eclipse_lite.checkpoints import atomic_write_text

        atomic_write_text(json.dumps(result, indent=2) + "\n",
                          os.path.join(out_dir, "saliency_scores.json"))
    return result


def _write_pictures(out_dir: str, rec: VideoRecord, video_index: int, dec: _Decoded, seed: int,
                    frames_per_event: int, methods: Sequence[str], model: ECLIPSE,
                    encoder: torch.nn.Module, layers: Optional[Sequence[int]], gif_frames: int,
                    display_size: int, max_png_frames: int, kinds: Sequence[str]) -> None:
    """``{id}.png`` (rows = methods, columns = scored frames of ``seed``) and ``{id}.gif``."""
    from eclipse_lite.studies.viz import draw_box, image_grid, save_gif, save_png

    os.makedirs(out_dir, exist_ok=True)
    cfg = model.config
    picked = _pick_frames(rec.plan, dec.times, frames_per_event, seed, video_index,
                          kinds)[:max_png_frames]
    if picked:
        idx = np.array([p[0] for p in picked])
        emb, _ = _encode_audio(encoder, dec.wave, dec.times[idx], cfg)
        raw = _frame_maps(model, _resize_uint8(dec.frames[idx], cfg.image_size), emb, methods, layers)
        shown = _resize_uint8(dec.frames[idx], display_size)
        tiles, captions = [], []
        for m in methods:
            heat = heatmaps(raw[m], display_size).numpy()
            for c, (k, _, box) in enumerate(picked):
                tiles.append(draw_box(overlay(shown[c], heat[c]), box))
                captions.append(f"{m} t={dec.times[k]:.1f}s")
        save_png(image_grid(tiles, cols=len(picked), captions=captions),
                 os.path.join(out_dir, f"{rec.video_id}.png"))
    # GIF over the whole video, with the first method's map and every sounding source's box
    n = len(dec.times)
    idx = np.unique(np.linspace(0, n - 1, num=min(int(gif_frames), n)).round().astype(int))
    emb, mask = _encode_audio(encoder, dec.wave, dec.times[idx], cfg)
    maps = _frame_maps(model, _resize_uint8(dec.frames[idx], cfg.image_size), emb,
                       [methods[0]], layers)[methods[0]]
    heat = heatmaps(maps, display_size).numpy()
    shown = _resize_uint8(dec.frames[idx], display_size)
    frames_out = []
    for c, k in enumerate(idx):
        pic = overlay(shown[c], heat[c]) if mask[c] > 0 else shown[c].copy()
        for _, box in sounding_sources(rec.plan, float(dec.times[k])):
            pic = draw_box(pic, box)
        frames_out.append(pic)
    fps = float(rec.plan.get("fps") or 4.0)
    save_gif(frames_out, os.path.join(out_dir, f"{rec.video_id}.gif"), fps=min(fps, 4.0))


# =================================================================================== loading
def load_audio_encoder(cfg: ModelConfig, path: Optional[str]) -> torch.nn.Module:
    """``build_audio_encoder(cfg)`` with weights from ``path`` (safetensors or torch state dict)."""
    from eclipse_lite.checkpoints import read_state_dict

    encoder = build_audio_encoder(cfg)
    if path is not None:
        state = read_state_dict(path)
        try:
            encoder.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{path}: does not fit build_audio_encoder(preset {cfg.name!r}, "
                             f"audio_encoder={cfg.audio_encoder!r}): {str(e).splitlines()[0]}") from None
    return encoder.eval()


AUDIO_ENCODER_FILES = ("audio_encoder.safetensors", "audio_encoder.pt", "audio_encoder.pth")


def find_audio_encoder(checkpoint: str, cfg: ModelConfig, data_dir: Optional[str] = None) -> str:
    """The audio encoder weights that go with a fine-tuned ``checkpoint``.

    In order: ``checkpoint/audio_encoder.safetensors`` (written when the encoder was fine-tuned),
    then the frozen pretrained encoder of the benchmark, ``data_dir/pretrained/<preset>-*/
    audio.safetensors`` (``eclipse_lite.train.pretrain``'s cache) when exactly one matches.
    Raises ``FileNotFoundError`` naming what was looked for.
    """
    for name in AUDIO_ENCODER_FILES:
        if os.path.isfile(os.path.join(checkpoint, name)):
            return os.path.join(checkpoint, name)
    looked = [os.path.join(checkpoint, AUDIO_ENCODER_FILES[0])]
    if data_dir is not None:
        import glob

        pattern = os.path.join(data_dir, "pretrained", f"{cfg.name}-*", "audio.safetensors")
        found = sorted(glob.glob(pattern))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise FileNotFoundError(f"several pretrained audio encoders match {pattern}: {found}; "
                                    f"pass the one the checkpoint was trained with as "
                                    f"--audio-encoder")
        looked.append(pattern)
    raise FileNotFoundError(f"no audio encoder weights for {checkpoint} (looked for "
                            f"{' and '.join(looked)}); pass --audio-encoder PATH")


def find_videos(data_dir: str, split: str = "test", events: Optional[str] = None,
                manifest: Optional[str] = None) -> List[VideoRecord]:
    """Benchmark videos of ``split`` with their plans: ``{data_dir}/{split}.jsonl`` (the generic
    manifest) joined with ``{data_dir}/events.json`` on the video id."""
    from eclipse_lite.data.dataset import read_jsonl_manifest

    manifest = manifest or os.path.join(data_dir, f"{split}.jsonl")
    events = events or os.path.join(data_dir, "events.json")
    for what, p in (("manifest", manifest), ("ground truth", events)):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p}: no {what} of the bundled benchmark; make it with "
                                    f"`eclipse-lite make-data --preset PRESET --out {data_dir}` (or pass "
                                    "--manifest/--events)")
    plans = load_plans(events)
    items = read_jsonl_manifest(manifest, missing="error")
    records = [VideoRecord(it.video_id, it.video_path, plans[it.video_id]) for it in items
               if it.video_id in plans]
    if not records:
        raise ValueError(f"none of the {len(items)} videos of {manifest} has a plan in {events}")
    return records


# =================================================================================== command line
def _comma(text: str) -> List[str]:
    return [v for v in text.replace(",", " ").split() if v]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eclipse-lite saliency",
        description="Sound-localisation maps of ECLIPSE on the bundled benchmark, scored against "
                    "the sound sources' boxes (pointing game, IoU) next to centre-prior and random "
                    "baselines over several seeds; overlay PNGs and a GIF per video.")
    p.add_argument("--preset", default="tiny", help="preset of a random model when no "
                   "--checkpoint is given (default tiny)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="ModelConfig override for that random model (repeatable)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--out", default="runs/saliency", help="output folder (default runs/saliency)")
    p.add_argument("--data", default=None, help="benchmark folder with {split}.jsonl and events.json "
                   "(default data/generated/<preset>)")
    p.add_argument("--split", default="test")
    p.add_argument("--events", default=None, help="ground-truth file (default DATA/events.json)")
    p.add_argument("--manifest", default=None, help="video list (default DATA/SPLIT.jsonl)")
    p.add_argument("--checkpoint", action="append", default=[],
                   help="a model saved with save_pretrained (repeatable: seed i uses checkpoint "
                        "i mod count); without it a randomly initialised model (maps meaningless)")
    p.add_argument("--audio-encoder", action="append", default=[],
                   help="audio encoder weights per checkpoint (default CHECKPOINT/"
                        "audio_encoder.safetensors, else the benchmark's pretrained encoder "
                        "DATA/pretrained/<preset>-*/audio.safetensors)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"maps to compute, first one drawn in the GIFs (default {','.join(METHODS)})")
    p.add_argument("--layers", default=None, help="layer indices for the maps (default: last "
                   "layer for dot, all AV layers for v2a)")
    p.add_argument("--frames-per-event", type=int, default=4)
    p.add_argument("--kinds", default=",".join(SCORED_KINDS),
                   help="event kinds whose frames are scored (default seen_heard; add brief)")
    p.add_argument("--threshold", type=float, default=0.5, help="IoU threshold, fraction of the "
                   "map's range (default 0.5)")
    p.add_argument("--max-videos", type=int, default=None, help="score only the first N videos")
    p.add_argument("--pictures", type=int, default=None, help="write PNG + GIF for the first N "
                   "videos only (default: every video; 0 = none)")
    p.add_argument("--gif-frames", type=int, default=24)
    p.add_argument("--display-size", type=int, default=128)
    return p


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """``python -m eclipse_lite.studies.saliency`` / ``eclipse-lite saliency``. Returns the scores."""
    from eclipse_lite.studies.bench import _resolve_device, config_from_args

    args = build_parser().parse_args(argv)
    device = _resolve_device(args.device)
    seeds = [int(s) for s in _comma(args.seeds)]
    if not seeds:
        raise ValueError("--seeds: give at least one seed")
    methods = _comma(args.methods)
    layers = None if args.layers is None else [int(v) for v in _comma(args.layers)]
    if args.checkpoint:
        if args.audio_encoder and len(args.audio_encoder) != len(args.checkpoint):
            raise ValueError(f"{len(args.audio_encoder)} --audio-encoder for "
                             f"{len(args.checkpoint)} --checkpoint")
        models = [ECLIPSE.from_pretrained(c) for c in args.checkpoint]
        data = args.data or os.path.join("data", "generated", models[0].config.name)
        paths = args.audio_encoder or [find_audio_encoder(c, m.config, data)
                                       for c, m in zip(args.checkpoint, models)]
        encoders = [load_audio_encoder(m.config, p) for m, p in zip(models, paths)]
    else:
        warnings.warn("no --checkpoint: scoring a randomly initialised model; its maps are "
                      "meaningless (use this to check the pipeline only)", stacklevel=2)
        torch.manual_seed(seeds[0])
        cfg = config_from_args(args.preset, args.sets)
        models, encoders, paths = [ECLIPSE(cfg)], [build_audio_encoder(cfg).eval()], []
        data = args.data or os.path.join("data", "generated", cfg.name)
    models = [m.to(device) for m in models]
    encoders = [e.to(device) for e in encoders]
    videos = find_videos(data, args.split, args.events, args.manifest)
    if args.max_videos is not None:
        videos = videos[:max(1, int(args.max_videos))]
    result = evaluate_localisation(models, encoders, videos, seeds, args.frames_per_event,
                                   methods, layers, args.threshold, out_dir=args.out,
                                   gif_frames=args.gif_frames, display_size=args.display_size,
                                   max_picture_videos=args.pictures, kinds=_comma(args.kinds))
    result["checkpoints"] = list(args.checkpoint)
    result["audio_encoders"] = list(paths)
    result["data"] = data
    from eclipse_lite.checkpoints import atomic_write_text
    from eclipse_lite.studies.viz import plot_localisation_scores, save_figure

    atomic_write_text(json.dumps(result, indent=2) + "\n",
                      os.path.join(args.out, "saliency_scores.json"))
    save_figure(plot_localisation_scores(result["summary"]), os.path.join(args.out, "saliency_scores.png"))
    print(format_scores(result))
    print(f"wrote {args.out}")
    return result


def format_scores(result: Mapping[str, Any]) -> str:
    """Markdown tables of mean ± std over seeds per method (all frames, then the subsets) and
    whether each method passes the bar."""
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


if __name__ == "__main__":
    main()
