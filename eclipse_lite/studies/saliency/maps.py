"""Raw localisation maps from a model: its final audio token against the frame's patch tokens.

``trace_layers`` runs the video tower once with forward hooks and keeps every layer's visual
tokens, audio stream and AV-block inputs; ``compute_maps`` turns that trace into ``[B, T, g, g]``
maps for each method of ``METHODS`` ("dot", "dot_projected", "v2a"; see the package docstring).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from eclipse_lite.attention import attention_weights
from eclipse_lite.model import ECLIPSE

METHODS = ("dot", "dot_projected", "v2a")


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
def eval_no_grad(model: torch.nn.Module) -> Iterator[None]:
    """Run the block with ``model`` in eval mode and without grad; restore its mode after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def check_fusion(model: ECLIPSE, method: str) -> None:
    """Raise ``ValueError`` when ``model``'s fusion cannot give maps of ``method``."""
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
    check_fusion(model, "dot")
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
        with eval_no_grad(model):
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
    """Weights [N, heads, S, P] with which layer ``layer``'s audio tokens attend to the patches.

    video [N, L, D], audio [N, S, D], audio_mask [N, S]: the AV block's inputs (``LayerTrace``).
    """
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
    weights = attention_weights(q, k, None if key_mask is None else key_mask[:, None, None, :])
    return weights[..., 1:vn.shape[1]]                  # drop CLS (and audio keys): [N, h, S, P]


def _dot_maps(model: ECLIPSE, trace: LayerTrace, method: str, layers: List[int]) -> Tensor:
    """Mean over ``layers`` of audio token . patch tokens: [B, T, P] float32.

    The audio token is the mean of the layer's S audio tokens; "dot_projected" first maps both
    sides through CLIP's output head ``proj(ln_post(.))``.
    """
    maps = []
    for i in layers:
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
    return torch.stack(maps).mean(0).float()


def _v2a_maps(model: ECLIPSE, trace: LayerTrace, layers: List[int]) -> Tensor:
    """Mean over ``layers``, heads and audio tokens of the audio-to-patch weights: [N, P] float32."""
    missing = [i for i in layers if i not in trace.av_inputs]
    if missing or not layers:
        raise ValueError(f"layers {missing or layers} carry no AV block (AV layers: "
                         f"{sorted(trace.av_inputs)})")
    with torch.no_grad():
        maps = [_attention_to_patches(model, i, *trace.av_inputs[i]).mean(dim=(1, 2))
                for i in layers]                          # each [N, P]
    return torch.stack(maps).mean(0).float()


def compute_maps(model: ECLIPSE, frames: Tensor, audio: Tensor,
                 audio_mask: Optional[Tensor] = None, methods: Sequence[str] = ("dot",),
                 layers: Optional[Sequence[int]] = None) -> Dict[str, Tensor]:
    """Raw localisation maps of several methods from one pass: ``{method: [B, T, g, g]}``.

    frames [B, T, 3, H, W] CLIP-normalised; audio [B, T, A] or [B, T, S, A]; audio_mask [B, T].
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
        check_fusion(model, m)
    if cfg.a2v_mode == "reverse_norm" and "v2a" in methods:
        raise ValueError("method='v2a' is not defined for a2v_mode='reverse_norm'")
    b, t = frames.shape[:2]
    g = cfg.grid_size
    if layers is not None:   # negative indices count from the last layer, as in Python
        layers = [int(i) + cfg.vision_layers if int(i) < 0 else int(i) for i in layers]
    trace = trace_layers(model, frames, audio, audio_mask)
    out: Dict[str, Tensor] = {}
    for method in methods:
        if method in ("dot", "dot_projected"):
            chosen = [cfg.vision_layers - 1] if layers is None else [int(i) for i in layers]
            out[method] = _dot_maps(model, trace, method, chosen).reshape(b, t, g, g)
        else:
            chosen = sorted(trace.av_inputs) if layers is None else [int(i) for i in layers]
            out[method] = _v2a_maps(model, trace, chosen).reshape(b, t, g, g)
    return out


def saliency_maps(model: ECLIPSE, frames: Tensor, audio: Tensor,
                  audio_mask: Optional[Tensor] = None, method: str = "dot",
                  layers: Optional[Sequence[int]] = None) -> Tensor:
    """Raw localisation maps ``[B, T, g, g]`` of one ``method`` (see :func:`compute_maps`)."""
    return compute_maps(model, frames, audio, audio_mask, (method,), layers)[method]
