"""Peak GPU memory of a training step of the base preset, computed on the CPU (no GPU needed)."""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from eclipse_lite.config import ModelConfig
from eclipse_lite.model import ECLIPSE
from eclipse_lite.train.config import autocast, resolve_precision

log = logging.getLogger(__name__)


def _saved_bytes(fn: Callable[[], Any], exclude: set) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn`` runs.

    Storages in ``exclude`` (the parameters, counted separately) are not counted; views of one
    storage count once.
    """
    sizes: Dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in exclude:
            sizes[ptr] = max(sizes.get(ptr, 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(sizes.values())


class _CudaAutocastPolicy(torch.overrides.TorchFunctionMode):
    """Make CPU autocast follow CUDA autocast's policy for layer norm: inputs cast to float32,
    float32 output (CPU autocast keeps bf16), so the residual streams get CUDA's dtype."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.layer_norm and torch.is_autocast_enabled("cpu"):
            args = [a.float() if torch.is_tensor(a) else a for a in args]
            kwargs = {k: (v.float() if torch.is_tensor(v) else v) for k, v in kwargs.items()}
            with torch.autocast("cpu", enabled=False):
                return func(*args, **kwargs)
        return func(*args, **kwargs)


def _linear_fit(xs: Sequence[int], ys: Sequence[int]) -> Tuple[float, float]:
    """(slope, intercept) of a line through two measurements."""
    (x1, x2), (y1, y2) = xs, ys
    slope = (y2 - y1) / (x2 - x1)
    return slope, y1 - slope * x1


def _probe_activations(model: nn.Module, probe: Sequence[int], autocast_dtype):
    """Saved-for-backward bytes of (one visual layer, embedding + head, text tower) for each
    count in ``probe`` (frames or captions), and the bytes per frame of a layer's input streams."""
    cfg = model.config
    device = torch.device("cpu")
    exclude = {p.untyped_storage().data_ptr() for p in model.parameters()}
    fused = cfg.fusion in ("eclipse", "a2v", "joint")
    layer_index = cfg.av_layer_set[0] if cfg.av_layer_set else 0
    size = cfg.image_size
    layer_bytes, embed_bytes, text_bytes = [], [], []
    stream_bytes = 0
    for k in probe:
        frames = torch.randn(k, 3, size, size, requires_grad=True)
        audio = torch.randn(1, k, cfg.audio_dim)
        with autocast(device, autocast_dtype):
            x = model.visual.embed(frames).detach().requires_grad_()
            a = a_mask = None
            if fused:
                a, a_mask = model.audio_stream(audio, None, 1, k, x.device, x.dtype)
                a = a.detach().requires_grad_()
                layer = lambda: model.video_layer(layer_index, x, a, a_mask, False)  # noqa: E731
            else:
                layer = lambda: model.visual.blocks[layer_index](x)  # noqa: E731
            layer_bytes.append(_saved_bytes(layer, exclude))

            def embed_and_head():
                extra = model.audio_proj(audio) if hasattr(model, "audio_proj") else None
                return model.visual.head(model.visual.embed(frames)), extra
            embed_bytes.append(_saved_bytes(embed_and_head, exclude))
            ids = torch.randint(1, cfg.vocab_size, (k, cfg.context_length))
            mask = torch.ones_like(ids)
            text_bytes.append(_saved_bytes(lambda: model.encode_text(ids, mask), exclude))
        stream_bytes = x.element_size() * x[0].numel() + (a.element_size() * a[0].numel() if fused else 0)
    return layer_bytes, embed_bytes, text_bytes, stream_bytes


def estimate_peak_memory(cfg: Optional[ModelConfig] = None, batch_size: int = 64,
                         num_frames: Optional[int] = None, precision: str = "bf16",
                         gradient_checkpointing: bool = True) -> Dict[str, Any]:
    """Peak GPU memory of one training step (AdamW, precomputed audio embeddings), computed.

    Not a GPU measurement. The model-dependent activation sizes are *counted* on the CPU: the
    bytes autograd saves for backward (``saved_tensors_hooks``, distinct storages, parameters
    excluded) while one visual layer with its AV block, the patch embedding + head, and the text
    tower run under autocast at the real widths on 2 and 4 frames / captions; a line through the
    two gives bytes per frame (per caption) and a per-layer constant (autocast's low-precision
    weight copies). CPU autocast is made to follow CUDA's policy where they differ in this model
    (layer norm in float32, so the residual streams are float32 as on a GPU). Then, with
    ``N = batch_size * num_frames`` frames:

      static      16 P: fp32 weights 4 + fp32 gradients 4 + AdamW exp_avg 4 + exp_avg_sq 4
      inputs      the batch on the GPU: fp32 frames [B,T,3,H,W], audio [B,T,A], token ids
      vision      checkpointing: each layer keeps only its input streams (frame tokens
                  [N,L,D] + audio tokens [N,S,D], in the residual dtype measured), plus, during
                  backward, one layer's recomputed activations; without: every layer's
                  activations; both plus patch embedding and head
      text        the text tower's activations (it is not checkpointed): per caption x B
      working     backward transients: gradients of one layer's input and output streams
                  (residual dtype) and of its widest intermediate (MLP hidden, compute dtype)
      forward     the forward pass instead holds low-precision copies of the weights (autocast's
                  cache, 2 bytes x P); the peak is the larger of forward and backward.

    Not included: the CUDA context (~0.5 GB), allocator fragmentation (typically 5-15 %), cuDNN /
    cuBLAS workspaces. Returns a dict of byte counts per term, ``peak_bytes`` and ``peak_gib``.
    """
    cfg = ModelConfig.preset("base") if cfg is None else cfg
    cfg = cfg.replace(gradient_checkpointing=False)
    frames_per_video = int(num_frames or cfg.num_frames)
    b = int(batch_size)
    n = b * frames_per_video
    if precision == "auto":
        precision = "bf16"   # what "auto" picks on a current GPU
    autocast_dtype, _ = resolve_precision(precision, "cuda")
    compute_bytes = 2 if autocast_dtype is not None else 4
    torch.manual_seed(0)
    model = ECLIPSE(cfg).train()
    params = sum(p.numel() for p in model.parameters())
    probe = (2, 4)
    policy = _CudaAutocastPolicy() if autocast_dtype is not None else contextlib.nullcontext()
    with policy:
        layer_bytes, embed_bytes, text_bytes, stream_bytes = _probe_activations(
            model, probe, autocast_dtype)
    layer_slope, layer_const = _linear_fit(probe, layer_bytes)
    embed_slope, _ = _linear_fit(probe, embed_bytes)
    text_slope, text_const = _linear_fit(probe, text_bytes)

    layers = cfg.vision_layers
    hidden = int(round(cfg.vision_width * cfg.mlp_ratio))
    static = 16 * params
    inputs = (n * 3 * cfg.image_size ** 2 * 4 + n * cfg.audio_dim * 4
              + 2 * b * cfg.context_length * 8)
    embed_head = embed_slope * n
    text = text_slope * b + text_const
    loss = 4 * b * b * 4
    working = 2 * n * stream_bytes + n * (cfg.num_patches + 1) * hidden * compute_bytes
    one_layer = layer_slope * n + layer_const
    if gradient_checkpointing:
        vision_kept = layers * n * stream_bytes
        recompute = one_layer
    else:
        vision_kept = layers * one_layer
        recompute = 0.0
    activations = inputs + embed_head + text + loss + vision_kept
    weight_cache = 2 * params if autocast_dtype is not None else 0
    backward_peak = static + activations + recompute + working
    forward_peak = static + activations + weight_cache + one_layer
    peak = max(backward_peak, forward_peak)
    gib = 1024 ** 3
    return {
        "preset": cfg.name, "batch_size": b, "num_frames": frames_per_video,
        "precision": precision, "gradient_checkpointing": bool(gradient_checkpointing),
        "parameters": params,
        "static_bytes": static, "inputs_bytes": inputs, "vision_kept_bytes": vision_kept,
        "vision_recompute_bytes": recompute, "embed_head_bytes": embed_head,
        "text_bytes": text, "working_bytes": working, "weight_cache_bytes": weight_cache,
        "per_frame_layer_bytes": layer_slope, "per_frame_stream_bytes": stream_bytes,
        "per_caption_text_bytes": text_slope,
        "forward_peak_bytes": forward_peak, "backward_peak_bytes": backward_peak,
        "peak_bytes": peak, "peak_gib": peak / gib,
    }


def estimate_base_memory() -> Dict[str, Any]:
    """:func:`estimate_peak_memory` for the paper's setting: ``base`` (ViT-B/32, all 12 AV
    blocks), 32 frames, batch 64, precomputed audio, bf16 autocast + gradient checkpointing."""
    return estimate_peak_memory(ModelConfig.preset("base", audio_encoder="precomputed"),
                                batch_size=64, num_frames=32, precision="bf16",
                                gradient_checkpointing=True)
