"""CLIP's two towers, written out: a ViT for frames and a causal text transformer.

Parameter names follow Hugging Face ``transformers.CLIPModel`` closely enough that
:func:`hf_key_map` maps every tensor one-to-one (``tests/test_clip.py`` checks the outputs equal
``CLIPModel.get_image_features`` / ``get_text_features``). Loading checkpoints lives in
``checkpoints.py``; the audiovisual blocks that ECLIPSE adds live in ``model.py``.

The towers' pixel input: :func:`clip_normalize` turns uint8 RGB frames into what the vision tower
reads, :func:`clip_denormalize` turns that back into a picture.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eclipse_lite.attention import MultiHeadAttention, spatial_attention
from eclipse_lite.config import CLIP_MEAN, CLIP_STD, ModelConfig


class QuickGELU(nn.Module):
    """OpenAI CLIP's activation: x * sigmoid(1.702 x)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


def activation(name: str) -> nn.Module:
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown hidden_act {name!r}; known: quick_gelu, gelu")


class MLP(nn.Module):
    """Transformer feed-forward: fc1 -> activation -> fc2. [..., D] -> [..., D]."""

    def __init__(self, width: int, hidden: int, act: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = activation(act)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """CLIP's pre-norm residual block: x += attn(ln_1(x)) (Eq. 2 in the video tower); x += mlp(ln_2(x)).

    x [N, L, D] -> [N, L, D]; ``mask`` bool broadcastable to [N, heads, L, L], True = may attend.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, act: str, eps: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = MultiHeadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, int(round(width * mlp_ratio)), act)

    def attention_residual(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Eq. 2: S = MHA(V, V, V) + V (layer norm applied to the input, as in CLIP)."""
        if mask is None:
            return x + spatial_attention(self.attn, self.ln_1(x))
        return x + self.attn(self.ln_1(x), mask=mask)

    def mlp_residual(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.ln_2(x))

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return self.mlp_residual(self.attention_residual(x, mask))


class VisionTransformer(nn.Module):
    """CLIP's image tower. images [N, 3, H, W] (CLIP-normalised) -> features [N, embed_dim].

    ``embed`` gives the token sequence [N, 1 + P, D] (CLS first, positional embeddings added,
    ``ln_pre`` applied) that the blocks transform; ``head`` maps final tokens to the joint space.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        width = cfg.vision_width
        self.patch_size = cfg.patch_size
        self.patch_embed = nn.Conv2d(3, width, cfg.patch_size, stride=cfg.patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.position_embedding = nn.Parameter(scale * torch.randn(cfg.num_patches + 1, width))
        self.ln_pre = nn.LayerNorm(width, eps=cfg.layer_norm_eps)
        self.blocks = nn.ModuleList(
            TransformerBlock(width, cfg.vision_heads, cfg.mlp_ratio, cfg.hidden_act, cfg.layer_norm_eps)
            for _ in range(cfg.vision_layers))
        self.ln_post = nn.LayerNorm(width, eps=cfg.layer_norm_eps)
        self.proj = nn.Linear(width, cfg.embed_dim, bias=False)

    def embed(self, images: Tensor) -> Tensor:
        """Patch decomposition + patch embedding + CLS + positions (Sec. 3.1). [N,3,H,W] -> [N,1+P,D]."""
        patches = self.patch_embed(images).flatten(2).transpose(1, 2)  # [N, P, D]
        cls = self.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        tokens = torch.cat([cls, patches], dim=1) + self.position_embedding.to(patches.dtype)
        return self.ln_pre(tokens)

    def head(self, tokens: Tensor) -> Tensor:
        """Final tokens [..., L, D] -> projected CLS [..., embed_dim] (not normalised)."""
        return self.proj(self.ln_post(tokens[..., 0, :]))

    def forward(self, images: Tensor) -> Tensor:
        x = self.embed(images)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class TextTransformer(nn.Module):
    """CLIP's text tower. input_ids [B, L], attention_mask [B, L] -> features [B, embed_dim].

    Causal self-attention; the feature is the projected token at the end-of-text position, taken
    as the last attended token (our tokenizer right-pads and always keeps ``<|endoftext|>`` last).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        width = cfg.text_width
        self.context_length = cfg.context_length
        self.token_embedding = nn.Embedding(cfg.vocab_size, width)
        self.position_embedding = nn.Parameter(0.01 * torch.randn(cfg.context_length, width))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(width, cfg.text_heads, cfg.mlp_ratio, cfg.hidden_act, cfg.layer_norm_eps)
            for _ in range(cfg.text_layers))
        self.ln_final = nn.LayerNorm(width, eps=cfg.layer_norm_eps)
        self.proj = nn.Linear(width, cfg.embed_dim, bias=False)

    def features(self, input_ids: Tensor,
                 attention_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """input_ids [B, L], attention_mask [B, L] -> (states [B, L, width], pooled [B, embed_dim]).

        ``states``: every token's final hidden state after ``ln_final``, before the projection
        (``self.proj(states)`` puts them in the joint space); ``pooled``: the projected state at
        the end-of-text position (not normalised) — what :meth:`forward` returns.
        """
        batch, length = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.token_embedding(input_ids) + self.position_embedding[:length]
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        mask = causal[None, None] & (attention_mask > 0)[:, None, None, :]  # [B, 1, L, L]
        for block in self.blocks:
            x = block(x, mask)
        x = self.ln_final(x)
        eot = (attention_mask > 0).long().sum(dim=1).clamp(min=1) - 1
        return x, self.proj(x[torch.arange(batch, device=x.device), eot])

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None) -> Tensor:
        return self.features(input_ids, attention_mask)[1]


# --------------------------------------------------------------------- weight mapping
def hf_key_map(cfg: ModelConfig) -> Dict[str, str]:
    """Our parameter name -> Hugging Face ``CLIPModel`` parameter name, for every tower tensor."""
    m = {
        "visual.patch_embed.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.position_embedding": "vision_model.embeddings.position_embedding.weight",
        "visual.proj.weight": "visual_projection.weight",
        "text.token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "text.position_embedding": "text_model.embeddings.position_embedding.weight",
        "text.proj.weight": "text_projection.weight",
        "logit_scale": "logit_scale",
    }
    for ours, theirs in (("visual.ln_pre", "vision_model.pre_layrnorm"),
                         ("visual.ln_post", "vision_model.post_layernorm"),
                         ("text.ln_final", "text_model.final_layer_norm")):
        for p in ("weight", "bias"):
            m[f"{ours}.{p}"] = f"{theirs}.{p}"
    block = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
             "attn.q_proj": "self_attn.q_proj", "attn.k_proj": "self_attn.k_proj",
             "attn.v_proj": "self_attn.v_proj", "attn.out_proj": "self_attn.out_proj"}
    for tower, hf_tower, layers in (("visual", "vision_model", cfg.vision_layers),
                                    ("text", "text_model", cfg.text_layers)):
        for i in range(layers):
            for ours, theirs in block.items():
                for p in ("weight", "bias"):
                    m[f"{tower}.blocks.{i}.{ours}.{p}"] = f"{hf_tower}.encoder.layers.{i}.{theirs}.{p}"
    return m


def resize_image_positions(pos: Tensor, num_patches: int) -> Tensor:
    """Bicubically resize ViT positional embeddings [1 + P_old, D] -> [1 + num_patches, D] (CLS kept)."""
    if pos.shape[0] == num_patches + 1:
        return pos
    old, new = math.isqrt(pos.shape[0] - 1), math.isqrt(num_patches)
    if old * old != pos.shape[0] - 1 or new * new != num_patches:
        raise ValueError(f"cannot resize positional embeddings of {pos.shape[0]} tokens to "
                         f"{num_patches + 1}: patch grids must be square")
    grid = pos[1:].reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(new * new, -1).to(pos.dtype)
    return torch.cat([pos[:1], grid], dim=0)


def resize_text_positions(pos: Tensor, context_length: int) -> Tensor:
    """Text positional embeddings [L_old, D] -> [context_length, D].

    Shorter: keep the first ``context_length`` rows (exactly CLIP on the positions it has).
    Longer: linear interpolation over positions, as the released ECLIPSE code does for 128 tokens.
    """
    if context_length <= pos.shape[0]:
        return pos[:context_length]
    x = pos.T[None].float()  # [1, D, L_old]
    return F.interpolate(x, size=context_length, mode="linear")[0].T.to(pos.dtype)


def clip_normalize(frames: Union[Tensor, np.ndarray], *, divide: bool = False) -> Tensor:
    """CLIP's input normalisation: uint8 RGB ``[..., H, W, 3]`` → float32 ``[..., 3, H, W]``
    holding ``(x / 255 - CLIP_MEAN) / CLIP_STD`` per channel.

    ``frames``: a tensor (the result is on its device) or a numpy array (the result is on the
    CPU). The result is a channels-first view of channels-last memory (not contiguous).

    ``divide=False`` (the data loaders' form, for training and evaluation data): computed as
    ``x * scale - shift`` (``scale = 1 / (255 std)``, ``shift = mean / std``, each worked out in
    float64 and rounded to float32 once) on the channels-last layout, where the per-channel
    constants repeat along each contiguous row of ``W * 3`` values. Broadcasting the constants over
    a channels-first view instead gives the same values 3-4x slower on the CPU (11-16 against 4 ms
    for a 32-frame 224 px clip).

    ``divide=True``: the formula as written, ``(x / 255 - mean) / std`` in float32. It differs from
    the default in the last bit for 510 of the 768 (value, channel) pairs; the pretraining of the
    CLIP towers (whose cache key does not cover this arithmetic) and the saliency study use it,
    so that their numbers stay what they were.
    """
    x = frames if isinstance(frames, Tensor) else torch.from_numpy(np.ascontiguousarray(frames))
    if x.dtype != torch.uint8 or x.dim() < 3 or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [..., H, W, 3], got {x.dtype} {tuple(x.shape)}")
    if divide:
        x = x.float().div_(255.0).movedim(-1, -3)
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(3, 1, 1)
        return (x - mean) / std
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float64)
    std = torch.tensor(CLIP_STD, dtype=torch.float64)
    width = x.shape[-2]
    scale = (1.0 / (255.0 * std)).float().repeat(width).to(x.device)     # [W * 3]
    shift = (mean / std).float().repeat(width).to(x.device)
    rows = x.contiguous().float().view(-1, width * 3)
    rows.mul_(scale).sub_(shift)
    return rows.view(x.shape).movedim(-1, -3)


def clip_denormalize(frames: Union[Tensor, np.ndarray]) -> Tensor:
    """The inverse of :func:`clip_normalize`, for looking at what the model saw: CLIP-normalised
    frames ``[..., 3, H, W]`` (tensor or numpy array) → float32 ``[..., H, W, 3]`` in ``[0, 1]``.

    ``x * CLIP_STD + CLIP_MEAN`` in float32, clamped to ``[0, 1]``, channels moved last (a view,
    not contiguous); on the tensor's device (numpy: the CPU). Multiply by 255 and round for uint8.
    """
    x = frames.detach().float() if isinstance(frames, Tensor) else np.asarray(frames, np.float32)
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"frames must be [..., 3, H, W], got {tuple(x.shape)}")
    if not isinstance(x, Tensor):                      # keeps the array's layout (unless reversed)
        x = torch.from_numpy(x if min(x.strides, default=0) >= 0 else x.copy())
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=x.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=x.device).view(3, 1, 1)
    return (x * std + mean).clamp_(0.0, 1.0).movedim(-3, -1)
