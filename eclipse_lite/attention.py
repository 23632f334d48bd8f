"""Multi-head attention written out, and ECLIPSE's three attention schemes (paper Eq. 1-4).

Shapes use batch-first token layouts. In the video tower a "row" is one frame of one video, so
``N = B * T`` rows of ``L = 1 + P`` tokens (CLS + P patches); each frame carries ``S`` audio tokens
(``S = 1`` by default: the embedding of the audio window centred on that frame).

    spatial self-attention  (Eq. 2)  frame tokens attend to the same frame's tokens
    audio-to-video, A2V     (Eq. 3)  frame tokens query that frame's audio token(s)
    video-to-audio, V2A     (Eq. 4)  audio token t queries frame t's tokens

All three reuse :class:`MultiHeadAttention` (Eq. 1), whose parameters are named like Hugging Face
CLIP's (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``) so CLIP checkpoints map one-to-one.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# "sdpa" uses torch's fused kernel; "eager" runs the explicit softmax(QK^T / sqrt(d)) V below
# (used for teaching, for attention maps and for counting FLOPs).
ATTENTION_IMPLS = ("sdpa", "eager")


def attention_weights(q: Tensor, k: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Eq. 1's weights, ``softmax(Q K^T / sqrt(d))`` over the keys, written out.

    q [..., Lq, d], k [..., Lk, d]; ``mask`` bool, broadcastable to [..., Lq, Lk], True = may
    attend. Returns weights [..., Lq, Lk]; a query row whose keys are all masked gets zero
    weights (not NaN). The one place in the package that computes these weights.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is None:
        return scores.softmax(dim=-1)
    scores = scores.masked_fill(~mask, float("-inf"))
    any_key = mask.any(dim=-1, keepdim=True)
    scores = scores.masked_fill(~any_key, 0.0)
    return scores.softmax(dim=-1) * any_key


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor,
                                 mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Eq. 1: ``softmax(Q K^T / sqrt(d)) V``, written out.

    q [..., Lq, d], k [..., Lk, d], v [..., Lk, dv]; ``mask`` as in :func:`attention_weights`.
    Returns (output [..., Lq, dv], weights [..., Lq, Lk]).
    """
    weights = attention_weights(q, k, mask)
    return weights @ v, weights


class MultiHeadAttention(nn.Module):
    """Multi-head attention (Eq. 1) with separate Q/K/V/output projections.

    forward(query [N, Lq, D], key_value [N, Lk, D] or None for self-attention, mask bool
    broadcastable to [N, heads, Lq, Lk] with True = may attend) -> [N, Lq, D].
    With ``need_weights=True`` also returns the attention weights [N, heads, Lq, Lk].
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.width, self.heads, self.head_dim = width, heads, width // heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)
        self.impl = "sdpa"

    def split_heads(self, x: Tensor) -> Tensor:
        """[N, L, D] -> [N, heads, L, D / heads]."""
        n, length, _ = x.shape
        return x.view(n, length, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, query: Tensor, key_value: Optional[Tensor] = None,
                mask: Optional[Tensor] = None, need_weights: bool = False):
        key_value = query if key_value is None else key_value
        q = self.split_heads(self.q_proj(query))
        k = self.split_heads(self.k_proj(key_value))
        v = self.split_heads(self.v_proj(key_value))
        if need_weights or self.impl == "eager":
            out, weights = scaled_dot_product_attention(q, k, v, mask)
        else:
            weights = None
            if mask is not None:
                # fused kernels give NaN for fully masked rows: let them attend, zero them after
                any_key = mask.any(dim=-1, keepdim=True)
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | ~any_key)
                out = out * any_key
            else:
                out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(query.shape[0], query.shape[1], self.width)
        out = self.out_proj(out)
        return (out, weights) if need_weights else out


def spatial_attention(attn: MultiHeadAttention, frame_tokens: Tensor) -> Tensor:
    """Eq. 2 (without the residual): ``MHA(V_t, V_t, V_t)``, independently for every frame.

    frame_tokens [N = B*T, L, D] -> [N, L, D]. This is CLIP's own attention, unchanged.
    """
    return attn(frame_tokens)


def _key_mask(audio_mask: Optional[Tensor], n_queries: int) -> Optional[Tensor]:
    """audio_mask [N, S] (1 = real audio) -> bool [N, 1, Lq, S] for :class:`MultiHeadAttention`."""
    if audio_mask is None:
        return None
    return (audio_mask > 0)[:, None, None, :].expand(-1, 1, n_queries, -1)


def single_key_attention(attn: MultiHeadAttention, key_value: Tensor,
                         key_mask: Optional[Tensor] = None) -> Tensor:
    """Attention over exactly one key: the softmax of a single score is 1, so every query
    receives ``out_proj(v_proj(key))`` — no Q, no K, no scores.

    key_value [N, 1, D]; key_mask [N, 1] (1 = real). Returns [N, 1, D], which broadcasts over
    the queries. A masked key gives ``out_proj(0)``, as the general path does (zero weights).
    """
    v = attn.v_proj(key_value)
    if key_mask is not None:
        v = v * (key_mask > 0).to(v.dtype)[..., None]
    return attn.out_proj(v)


def a2v_attention(attn: MultiHeadAttention, frame_tokens: Tensor, audio_tokens: Tensor,
                  audio_mask: Optional[Tensor] = None, need_weights: bool = False,
                  proj: Optional[nn.Module] = None):
    """Eq. 3 (without the residual): ``MHA(S_t, A, A)`` — frame t's tokens query audio tokens.

    frame_tokens [N, L, D]; audio_tokens [N, S, D] (the S audio tokens frame t may see: its own
    by default, all T of its video with ``a2v_time="all"``); audio_mask [N, S], 1 = real audio;
    ``proj``: an optional token-wise map applied to the output (the AV block's ``a2v_proj``).
    Returns [N, L, D] (and weights [N, heads, L, S] with ``need_weights``).

    With one audio token (S = 1, the default) and no weights requested, the softmax is over a
    single key, so every frame token receives the same ``out_proj(v_proj(a_t))``: it (and
    ``proj``) is computed once per frame and broadcast over the L tokens — the same numbers as
    the general path without Q, K and L - 1 copies of the rest (:func:`single_key_attention`).
    """
    proj = nn.Identity() if proj is None else proj
    if audio_tokens.shape[1] == 1 and not need_weights:
        one = proj(single_key_attention(attn, audio_tokens, audio_mask))        # [N, 1, D]
        return one.expand(-1, frame_tokens.shape[1], -1)
    mask = _key_mask(audio_mask, frame_tokens.shape[1])
    out = attn(frame_tokens, audio_tokens, mask=mask, need_weights=need_weights)
    return (proj(out[0]), out[1]) if need_weights else proj(out)


def v2a_attention(attn: MultiHeadAttention, audio_tokens: Tensor, frame_tokens: Tensor,
                  need_weights: bool = False):
    """Eq. 4 (without the residual): ``MHA(A_t, S_t, S_t)`` — audio token t queries frame t.

    audio_tokens [N, S, D]; frame_tokens [N, L, D] (CLS + patches of the same frame) -> [N, S, D]
    (and weights [N, heads, S, L]).
    """
    return attn(audio_tokens, frame_tokens, need_weights=need_weights)


def a2v_reverse_norm(attn: MultiHeadAttention, frame_tokens: Tensor, audio_tokens: Tensor) -> Tensor:
    """The released code's ``yb_reverse_norm=1`` variant of A2V (not in the paper).

    The audio token queries the frame's tokens; the softmax runs over the *visual* tokens and is
    averaged over heads, and every visual token receives the (normalised) audio token scaled by
    its weight — no value or output projection. Only defined for one audio token per frame.
    frame_tokens [N, L, D], audio_tokens [N, 1, D] -> [N, L, D].
    """
    if audio_tokens.shape[1] != 1:
        raise ValueError("a2v_mode='reverse_norm' needs exactly one audio token per frame, got "
                         f"{audio_tokens.shape[1]}")
    q = attn.split_heads(attn.q_proj(audio_tokens))
    k = attn.split_heads(attn.k_proj(frame_tokens))
    weights = attention_weights(q, k)                 # [N, h, 1, L]
    weights = weights.mean(dim=1).transpose(1, 2)  # [N, L, 1]
    return weights * audio_tokens


def joint_attention(attn: MultiHeadAttention, frame_tokens: Tensor, audio_tokens: Tensor,
                    audio_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """The ablation's "joint" scheme: one attention over a frame's visual and audio tokens.

    Concatenates [N, L, D] and [N, S, D] into [N, L + S, D], self-attends (masked audio keys are
    ignored) and splits the result back into (visual [N, L, D], audio [N, S, D]).
    """
    length = frame_tokens.shape[1]
    tokens = torch.cat([frame_tokens, audio_tokens], dim=1)
    mask = None
    if audio_mask is not None:
        keys = torch.cat([torch.ones_like(audio_mask[:, :1]).expand(-1, length), audio_mask], 1)
        mask = (keys > 0)[:, None, None, :]
    out = attn(tokens, mask=mask)
    return out[:, :length], out[:, length:]
