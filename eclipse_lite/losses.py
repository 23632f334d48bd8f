"""Symmetric InfoNCE: the contrastive video-text matching loss of CLIP4Clip, used by ECLIPSE.

ECLIPSE Sec. 3.3: "we compute the similarity between text and video using a normalized dot
product ... matching text-video pairs in a given batch [are] positive samples and all the other
pairs in that same batch [are] negative samples ... we minimize the sum of the video-to-text and
text-to-video matching losses [CLIP4Clip]". With ``t_i``, ``v_i`` the L2-normalised embeddings of
pair ``i`` in a batch of ``B`` and ``s`` the logit scale (CLIP's learned inverse temperature):

    logits[i, j] = s * <t_i, v_j>
    L_t2v = -1/B sum_i log softmax_j(logits[i, :])[i]        (each text picks its video)
    L_v2t = -1/B sum_j log softmax_i(logits[:, j])[j]        (each video picks its text)
    L     = (L_t2v + L_v2t) / 2

The halving follows the released CLIP4Clip/ECLIPSE code (``(sim_loss1 + sim_loss2) / 2``); the
paper's "sum" differs by this constant factor only.
"""
from __future__ import annotations

import math
from typing import Union

import torch
import torch.nn.functional as F

__all__ = ["symmetric_infonce", "infonce_from_logits"]


def infonce_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of already-scaled similarity logits.

    Args:
        logits: ``[B, B]``, rows = texts, columns = videos, matching pairs on the diagonal
            (``logits[i, j] = scale * <text_i, video_j>``).
    Returns:
        scalar float32 tensor ``(CE(logits, arange(B)) + CE(logits.T, arange(B))) / 2``; exactly
        0 for ``B = 1``. The cross-entropies are computed in float32 whatever the input dtype.
    Raises:
        ValueError: ``logits`` is not a non-empty square matrix, or holds NaN/inf (the rows that
            do are counted in the message).
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[0] != logits.shape[1] or logits.shape[0] == 0:
        raise ValueError(
            f"logits must be a non-empty square [texts, videos] matrix, got shape {tuple(logits.shape)}"
        )
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    if not bool(torch.isfinite(logits).all()):
        bad_rows = int((~torch.isfinite(logits)).any(dim=1).sum())
        raise ValueError(f"logits have NaN or inf values in {bad_rows} of {logits.shape[0]} rows")
    logits = logits.float()
    targets = torch.arange(logits.shape[0], device=logits.device)
    text_to_video = F.cross_entropy(logits, targets)
    video_to_text = F.cross_entropy(logits.t(), targets)
    return (text_to_video + video_to_text) / 2


def symmetric_infonce(
    text_emb: torch.Tensor,
    video_emb: torch.Tensor,
    logit_scale: Union[float, torch.Tensor],
) -> torch.Tensor:
    """CLIP4Clip's symmetric contrastive loss between a batch of texts and their videos.

    Args:
        text_emb: ``[B, D]`` text embeddings, **assumed L2-normalised** (not checked, not
            re-normalised: the dot product is then the cosine similarity of ECLIPSE Sec. 3.3).
        video_emb: ``[B, D]`` video embeddings, assumed L2-normalised; row ``i`` matches
            ``text_emb[i]``.
        logit_scale: the multiplicative scale ``s`` (already exponentiated, e.g.
            ``model.logit_scale.exp()``, about 100 for CLIP), a positive float or a one-element
            tensor (gradients flow into it).
    Returns:
        scalar float32 tensor ``(CE(s t v^T, arange) + CE(s v t^T, arange)) / 2``.
    """
    for name, emb in (("text_emb", text_emb), ("video_emb", video_emb)):
        if not isinstance(emb, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(emb).__name__}")
        if emb.dim() != 2:
            raise ValueError(f"{name} must be [B, D], got shape {tuple(emb.shape)}")
    if text_emb.shape != video_emb.shape:
        raise ValueError(
            f"text_emb {tuple(text_emb.shape)} and video_emb {tuple(video_emb.shape)} must have the "
            f"same [B, D] shape (one video per text)"
        )
    if isinstance(logit_scale, torch.Tensor):
        if logit_scale.numel() != 1:
            raise ValueError(f"logit_scale must hold one value, got shape {tuple(logit_scale.shape)}")
        scale = logit_scale.reshape(())
    elif isinstance(logit_scale, (int, float)) and not isinstance(logit_scale, bool):
        if not math.isfinite(logit_scale) or logit_scale <= 0:
            raise ValueError(f"logit_scale must be a positive finite number, got {logit_scale}")
        scale = float(logit_scale)
    else:
        raise TypeError(f"logit_scale must be a float or a tensor, got {type(logit_scale).__name__}")
    logits = scale * (text_emb @ video_emb.t())  # [B texts, B videos]
    return infonce_from_logits(logits)
