"""Similarity heads: how a model scores every text against every video, s(t, v) -> [T, V].

A head reads what the two towers computed — :class:`~eclipse_lite.model.TextFeatures` and
:class:`~eclipse_lite.model.VideoFeatures` — and returns the [T, V] matrix of cosine
similarities (not yet multiplied by the temperature; ``ECLIPSE.forward`` does that). ::

    head = MeanHead()
    sim = head(model.text_features(ids, mask), model.video_features(frames, audio))   # [T, V]

"mean" (:class:`MeanHead`, ECLIPSE's and CLIP4Clip meanP's) is the cosine of the pooled
embeddings and ignores the text when pooling. A text-conditioned head (X-Pool, TEFAL) pools the
per-frame embeddings ``video.frame_emb`` [V, F, E] (and audio tokens) once per text, from
``text.text_emb`` [T, E] or the token states ``text.tokens`` [T, L, width]; it subclasses
:class:`SimilarityHead`, sets ``name`` and registers itself in :data:`HEADS`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Tuple, Type

from torch import Tensor, nn

if TYPE_CHECKING:  # annotations only: model.py imports this module
    from eclipse_lite.model import TextFeatures, VideoFeatures


class SimilarityHead(nn.Module):
    """Base class. forward(text: TextFeatures with T texts, video: VideoFeatures with V videos)
    -> cosine similarities [T, V] (in [-1, 1], before the temperature)."""

    name: str = ""
    # the feature fields forward reads: evaluation keeps (and gathers over processes) only these
    text_fields: Tuple[str, ...] = ("text_emb",)
    video_fields: Tuple[str, ...] = ("video_emb",)

    def forward(self, text: "TextFeatures", video: "VideoFeatures") -> Tensor:
        raise NotImplementedError


class MeanHead(SimilarityHead):
    """Cosine of the pooled embeddings: ``text.text_emb [T, E] @ video.video_emb [V, E]^T``.

    Both are already L2-normalised (the video one is CLIP4Clip meanP over frames, see
    :func:`~eclipse_lite.model.masked_mean_pool`), so the product is the cosine. No parameters:
    adding it to a model changes neither its state dict nor its numbers.
    """

    name = "mean"

    def forward(self, text: "TextFeatures", video: "VideoFeatures") -> Tensor:
        return text.text_emb @ video.video_emb.T


HEADS: Dict[str, Type[SimilarityHead]] = {MeanHead.name: MeanHead}


def build_head(name: str = "mean", **kwargs) -> SimilarityHead:
    """The head registered as ``name`` (see :data:`HEADS`), built with ``kwargs``."""
    if name not in HEADS:
        raise ValueError(f"unknown similarity head {name!r}; known: {', '.join(HEADS)}")
    return HEADS[name](**kwargs)
