"""ECLIPSE: CLIP's video tower with an audiovisual block in every layer (paper Sec. 3, Fig. 3).

Per visual layer l, on frame tokens V [B*T, L, D] and audio tokens A [B*T, S, D]:

    layer_order="paper" (default; Eq. 2-4 as written)      layer_order="released" (authors' code)
      S = V + MHA(ln_1 V)                      (Eq. 2)        Vn, An = norm_video(V), norm_audio(A)
      Sn, An = norm_video(S), norm_audio(A)                   V = V + a2v_proj(MHA(Vn, An, An))
      V = S + a2v_proj(MHA(Sn, An, An))        (Eq. 3)        A = A + v2a_proj(MHA(An, Vn, Vn))
      A = A + v2a_proj(MHA(An, Sn, Sn))        (Eq. 4)        V = V + MHA(ln_1 V)      (Eq. 2)
      V = V + MLP(ln_2 V)                                     V = V + MLP(ln_2 V)

The A2V/V2A attentions and their layer norms are cloned from the layer's CLIP attention and
``ln_1``; ``a2v_proj``/``v2a_proj`` are zero-initialised, so at initialisation ECLIPSE computes
exactly CLIP4Clip mean pooling. The audio stream has no MLP and is dropped after the last layer.

Video embedding = L2-normalise(masked mean over frames of L2-normalised projected frame CLS).
Similarity [texts, videos] = ``model.head(text_features, video_features)`` (``heads.py``; the
default "mean" head is the cosine of the pooled embeddings); ``forward`` scales it by the
learnable temperature for the contrastive loss.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from eclipse_lite.attention import (
    MultiHeadAttention,
    a2v_attention,
    a2v_reverse_norm,
    joint_attention,
    v2a_attention,
)
from eclipse_lite.audio import audio_projection
from eclipse_lite.checkpoints import load_clip, load_official, load_pretrained, save_pretrained
from eclipse_lite.clip import TextTransformer, TransformerBlock, VisionTransformer
from eclipse_lite.config import ModelConfig
from eclipse_lite.heads import MeanHead, SimilarityHead
from eclipse_lite.losses import infonce_from_logits
from eclipse_lite.tokenizer import tokenize


class AudioVisualBlock(nn.Module):
    """The audiovisual part of one layer: A2V (Eq. 3) and V2A (Eq. 4), or the joint variant.

    ``kind``: "eclipse" (A2V + V2A), "a2v" (A2V only; audio stream unchanged) or "joint" (one
    attention over each frame's visual + audio tokens). Build it with :meth:`from_layer` to clone
    the layer's CLIP attention and ``ln_1`` as the paper does.
    """

    def __init__(self, kind: str, width: int, heads: int, eps: float = 1e-5,
                 a2v_mode: str = "softmax") -> None:
        super().__init__()
        if kind not in ("eclipse", "a2v", "joint"):
            raise ValueError(f"AudioVisualBlock kind must be eclipse, a2v or joint, got {kind!r}")
        self.kind, self.a2v_mode = kind, a2v_mode
        self.norm_video = nn.LayerNorm(width, eps=eps)   # released: vis_audio_ln_1
        self.norm_audio = nn.LayerNorm(width, eps=eps)   # released: audio_vis_ln_1
        self.a2v_attn = MultiHeadAttention(width, heads)  # released: vis_audio_attn (joint: the joint attention)
        self.a2v_proj = nn.Linear(width, width)           # released: vis_audio_fc
        if kind != "a2v":
            self.v2a_proj = nn.Linear(width, width)       # released: audio_vis_fc
        if kind == "eclipse":
            self.v2a_attn = MultiHeadAttention(width, heads)  # released: audio_vis_attn
        self.zero_projections()

    @classmethod
    def from_layer(cls, layer: TransformerBlock, kind: str, a2v_mode: str = "softmax") -> "AudioVisualBlock":
        """Clone ``layer``'s attention and ``ln_1`` into the A2V/V2A attentions and norms (Sec. 3.4)."""
        block = cls(kind, layer.attn.width, layer.attn.heads, layer.ln_1.eps, a2v_mode)
        block.load_from_layer(layer)
        return block

    def load_from_layer(self, layer: TransformerBlock) -> None:
        for norm in (self.norm_video, self.norm_audio):
            norm.load_state_dict(layer.ln_1.state_dict())
        attns = [self.a2v_attn] + ([self.v2a_attn] if self.kind == "eclipse" else [])
        for attn in attns:
            attn.load_state_dict(copy.deepcopy(layer.attn.state_dict()))
        self.zero_projections()

    def zero_projections(self) -> None:
        """Zero the output projections so the block starts as the identity (Sec. 3.4)."""
        for proj in (self.a2v_proj, getattr(self, "v2a_proj", None)):
            if proj is not None:
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)

    def forward(self, video: Tensor, audio: Tensor, audio_mask: Tensor,
                need_weights: bool = False):
        """video [N, L, D] (residual stream), audio [N, S, D], audio_mask [N, S] (1 = real).

        Returns (video update [N, L, D], audio update [N, S, D], A2V weights or None) — the
        updates are added to the streams by the caller. Frames with no real audio get no update.
        """
        vn, an = self.norm_video(video), self.norm_audio(audio)
        weights = None
        if self.kind == "joint":
            dv, da = joint_attention(self.a2v_attn, vn, an, audio_mask)
            dv, da = self.a2v_proj(dv), self.v2a_proj(da)
        else:
            if self.a2v_mode == "reverse_norm":
                dv = self.a2v_proj(a2v_reverse_norm(self.a2v_attn, vn, an))
            else:  # with one audio token per frame, a2v_attention computes it once per frame
                attn, proj = self.a2v_attn, self.a2v_proj
                out = a2v_attention(attn, vn, an, audio_mask, need_weights, proj=proj)  # Eq. 3
                dv, weights = out if need_weights else (out, None)
            if self.kind == "eclipse":
                da = self.v2a_proj(v2a_attention(self.v2a_attn, an, vn))         # Eq. 4
            else:
                da = torch.zeros_like(audio)
        has_audio = (audio_mask > 0).any(dim=1).to(dv.dtype)[:, None, None]  # [N, 1, 1]
        return dv * has_audio, da * has_audio, weights


@dataclass
class VideoFeatures:
    """Everything :meth:`ECLIPSE.video_features` computes for a batch of B clips of T frames.

    video_emb [B, E] pooled (CLIP4Clip meanP, L2-normalised); frame_emb [B, T, E] (L2-normalised
    per frame); frame_mask [B, T] (1 = real frame); audio_emb [B, T, S, A] the per-frame audio
    embeddings the model was given (S = 1 for [B, T, A] input) and audio_mask [B, T, S]
    (1 = real audio), both None without audio; with ``return_tokens``: tokens [B, T, L, D] final
    visual tokens (CLS + patches, before ln_post) and audio_tokens [B, T, S, D] the final audio
    stream (None without AV blocks); a2v_weights: per AV layer [B, T, heads, L, S] when requested.
    """

    video_emb: Tensor
    frame_emb: Tensor
    frame_mask: Tensor
    tokens: Optional[Tensor] = None
    audio_tokens: Optional[Tensor] = None
    a2v_weights: Optional[Dict[int, Tensor]] = None
    audio_emb: Optional[Tensor] = None
    audio_mask: Optional[Tensor] = None


@dataclass
class TextFeatures:
    """What :meth:`ECLIPSE.text_features` computes for B texts of L <= context_length tokens.

    text_emb [B, E] the projected end-of-text state, L2-normalised (= ``encode_text``);
    tokens [B, L, width] every token's final state after ``ln_final``, before the text
    projection (``model.text.proj(tokens)`` maps them to the joint space); mask [B, L]
    (1 = real token; padding 0).
    """

    text_emb: Tensor
    tokens: Tensor
    mask: Tensor


def masked_mean_pool(frame_emb: Tensor, frame_mask: Tensor) -> Tensor:
    """CLIP4Clip meanP: L2-normalise frames, masked mean over T (sum / max(count, 1)), L2-normalise.

    frame_emb [B, T, E], frame_mask [B, T] -> [B, E].
    """
    frame_emb = F.normalize(frame_emb, dim=-1)
    m = frame_mask.to(frame_emb.dtype).unsqueeze(-1)
    pooled = (frame_emb * m).sum(1) / m.sum(1).clamp(min=1.0)
    return F.normalize(pooled, dim=-1)


def audio_inputs(audio: Optional[Tensor], audio_mask: Optional[Tensor]) -> Tuple[Optional[Tensor],
                                                                                 Optional[Tensor]]:
    """audio [B, T, A] | [B, T, S, A], audio_mask None | [B, T] | [B, T, S] (1 = real)
    -> (audio [B, T, S, A], mask [B, T, S] in audio's dtype); (None, None) for audio None."""
    if audio is None:
        return None, None
    audio = audio if audio.dim() == 4 else audio.unsqueeze(2)
    if audio_mask is None:
        return audio, torch.ones(audio.shape[:3], device=audio.device, dtype=audio.dtype)
    mask = audio_mask.to(audio.dtype)
    return audio, (mask.unsqueeze(-1).expand(audio.shape[:3]) if mask.dim() == 2 else mask)


class ECLIPSE(nn.Module):
    """ECLIPSE and its fusion variants; ``fusion="none"`` is CLIP4Clip meanP.

    encode_video(frames [B,T,3,H,W], audio [B,T,A] | [B,T,S,A] | None) -> [B, E] normalised
    encode_text(input_ids [B,L], attention_mask [B,L]) -> [B, E] normalised
    similarity(text_features(ids, mask), video_features(frames, audio)) -> [T texts, V videos]
    forward(frames, audio, input_ids, attention_mask) -> {"loss", "logits" [texts, videos], ...}
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.visual = VisionTransformer(config)
        self.text = TextTransformer(config)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))
        # The similarity head: "mean" (no parameters, so state dicts are unchanged). Hook for
        # text-conditioned heads (X-Pool, TEFAL): build another one here, e.g. from a config
        # field via heads.build_head(name); parameters under "head." count as new (is_new_parameter).
        self.head: SimilarityHead = MeanHead()
        if config.fusion in ("eclipse", "a2v", "joint"):
            self.audio_proj = audio_projection(config.audio_dim, config.vision_width)
            self.av_blocks = nn.ModuleDict({
                str(i): AudioVisualBlock.from_layer(self.visual.blocks[i], config.fusion, config.a2v_mode)
                for i in config.av_layer_set})
        elif config.fusion == "audio_only":
            width = config.vision_width
            self.audio_proj = audio_projection(config.audio_dim, width)
            self.audio_head = nn.Sequential(nn.GELU(), nn.LayerNorm(width, eps=config.layer_norm_eps),
                                            nn.Linear(width, config.embed_dim, bias=False))

    # ------------------------------------------------------------------ set-up
    def reset_av_blocks(self) -> None:
        """Re-clone every AV block from its (now loaded) CLIP layer and zero its projections."""
        for i, block in getattr(self, "av_blocks", {}).items():
            block.load_from_layer(self.visual.blocks[int(i)])

    def set_attention_impl(self, impl: str) -> "ECLIPSE":
        """"sdpa" (fused, default) or "eager" (explicit softmax; for FLOP counts and maps)."""
        if impl not in ("sdpa", "eager"):
            raise ValueError(f"attention impl must be 'sdpa' or 'eager', got {impl!r}")
        for module in self.modules():
            if isinstance(module, MultiHeadAttention):
                module.impl = impl
        return self

    def av_parameters(self) -> List[nn.Parameter]:
        """Parameters that CLIP does not have: AV blocks, audio projection, audio-only head."""
        return [p for n, p in self.named_parameters() if self.is_new_parameter(n)]

    @staticmethod
    def is_new_parameter(name: str) -> bool:
        return name.startswith(("av_blocks.", "audio_proj.", "audio_head.", "head."))

    # ------------------------------------------------------------------ checks
    def _check_video_inputs(self, frames: Optional[Tensor], audio: Optional[Tensor],
                            frame_mask: Optional[Tensor], audio_mask: Optional[Tensor]):
        cfg = self.config
        if frames is None:
            if cfg.fusion != "audio_only":
                raise ValueError(f"frames are required for fusion={cfg.fusion!r}")
            if audio is None:
                raise ValueError("fusion='audio_only' needs audio embeddings, got audio=None")
        else:
            if not torch.is_tensor(frames) or frames.dim() != 5:
                shape = tuple(frames.shape) if torch.is_tensor(frames) else type(frames).__name__
                raise ValueError(f"frames must be a tensor [B, T, 3, H, W], got {shape}")
            b, t, c, h, w = frames.shape
            if c != 3 or h != cfg.image_size or w != cfg.image_size:
                raise ValueError(f"frames must be [B, T, 3, {cfg.image_size}, {cfg.image_size}] for "
                                 f"this config (image_size={cfg.image_size}), got {tuple(frames.shape)}")
            if not frames.is_floating_point():
                raise ValueError(f"frames must be float and CLIP-normalised (eclipse_lite.clip."
                                 f"clip_normalize turns uint8 frames into that), got dtype {frames.dtype}")
        if audio is not None:
            if audio.dim() not in (3, 4):
                raise ValueError(f"audio must be per-frame embeddings [B, T, A] or [B, T, S, A], "
                                 f"got shape {tuple(audio.shape)}")
            if frames is not None and tuple(audio.shape[:2]) != tuple(frames.shape[:2]):
                raise ValueError(f"audio has [B, T] = {tuple(audio.shape[:2])} but frames have "
                                 f"{tuple(frames.shape[:2])}: one audio embedding per frame is needed")
            if audio.shape[-1] != cfg.audio_dim:
                raise ValueError(f"audio embeddings have size {audio.shape[-1]} but the model expects "
                                 f"audio_dim={cfg.audio_dim}")
        ref = frames if frames is not None else audio
        if ref.shape[0] == 0 or ref.shape[1] == 0:
            raise ValueError(f"an empty batch: {'frames' if frames is not None else 'audio'} has shape "
                             f"{tuple(ref.shape)} (B videos x T frames must both be at least 1)")
        for name, x in (("frames", frames), ("audio", audio)):
            if x is not None and not x.is_meta and not bool(torch.isfinite(x).all()):   # meta: FLOP counts
                raise ValueError(f"{name} hold NaN or inf values; a clip that decoded to non-finite "
                                 "numbers would give a NaN embedding")
        for name, mask in (("frame_mask", frame_mask), ("audio_mask", audio_mask)):
            if mask is not None and tuple(mask.shape[:2]) != tuple(ref.shape[:2]):
                raise ValueError(f"{name} must be [B, T] = {tuple(ref.shape[:2])}, got {tuple(mask.shape)}")

    # ------------------------------------------------------------------ video
    def audio_stream(self, audio: Optional[Tensor], audio_mask: Optional[Tensor], b: int, t: int,
                     device, dtype):
        """The audio stream entering the first AV block: per-frame audio tokens [B*T, S, D] (the
        projected embeddings) and mask [B*T, S] (1 = real audio).

        a2v_time="own": frame t holds its own S audio tokens; "all": every frame holds a copy of
        all T*S audio tokens of its video (released ``yb_time_cross_audio=1``).
        """
        width = self.config.vision_width
        if audio is None:  # no sound: a masked zero token; the AV blocks then change nothing
            tokens = torch.zeros(b, t, 1, width, device=device, dtype=dtype)
            mask = torch.zeros(b, t, 1, device=device, dtype=dtype)
        else:
            audio = audio.to(dtype) if audio.dim() == 4 else audio.to(dtype).unsqueeze(2)
            tokens = self.audio_proj(audio)  # [B, T, S, D]; released: mlp_audio
            if audio_mask is None:
                mask = torch.ones(tokens.shape[:3], device=device, dtype=dtype)
            else:
                mask = audio_mask.to(dtype)
                mask = mask.unsqueeze(-1).expand(tokens.shape[:3]) if mask.dim() == 2 else mask
        s = tokens.shape[2]
        if self.config.a2v_time == "all":
            tokens = tokens.reshape(b, 1, t * s, width).expand(b, t, t * s, width)
            mask = mask.reshape(b, 1, t * s).expand(b, t, t * s)
            s = t * s
        return tokens.reshape(b * t, s, width), mask.reshape(b * t, s)

    def video_layer(self, i: int, x: Tensor, a: Tensor, a_mask: Tensor, need_weights: bool = False):
        """One visual layer with its AV block (if any). x [N,L,D], a [N,S,D] -> (x, a, weights)."""
        layer = self.visual.blocks[i]
        av = self.av_blocks[str(i)] if str(i) in getattr(self, "av_blocks", {}) else None
        weights = None
        if av is None:
            return layer(x), a, None
        if self.config.layer_order == "released":
            dv, da, weights = av(x, a, a_mask, need_weights)
            x, a = x + dv, a + da
            x = layer.attention_residual(x)             # Eq. 2
        else:
            x = layer.attention_residual(x)             # Eq. 2: S = MHA(V, V, V) + V
            dv, da, weights = av(x, a, a_mask, need_weights)
            x, a = x + dv, a + da                       # Eq. 3 and Eq. 4 residuals
        return layer.mlp_residual(x), a, weights

    def video_features(self, frames: Optional[Tensor], audio: Optional[Tensor] = None,
                       frame_mask: Optional[Tensor] = None, audio_mask: Optional[Tensor] = None,
                       return_tokens: bool = False, return_attention: bool = False) -> VideoFeatures:
        """Run the video tower. See :class:`VideoFeatures` for what comes back."""
        self._check_video_inputs(frames, audio, frame_mask, audio_mask)
        cfg = self.config
        if cfg.fusion == "audio_only":
            return self._audio_only_features(audio, frame_mask, audio_mask)
        b, t = frames.shape[:2]
        frames = frames.to(self.logit_scale.dtype)      # float64 / fp16 input: the weights' dtype
        x = self.visual.embed(frames.reshape(b * t, *frames.shape[2:]))  # [B*T, L, D]
        if frame_mask is None:
            frame_mask = torch.ones(b, t, device=frames.device, dtype=x.dtype)
        a = a_mask = None
        if cfg.fusion != "none":
            a, a_mask = self.audio_stream(audio, audio_mask, b, t, x.device, x.dtype)
        attn_maps: Dict[int, Tensor] = {}
        for i in range(cfg.vision_layers):
            if cfg.fusion == "none":
                run = (lambda x_, i=i: self.visual.blocks[i](x_))
                x = checkpoint(run, x, use_reentrant=False) if self._checkpointing() else run(x)
                continue
            if self._checkpointing() and not return_attention:
                x, a, _ = checkpoint(self.video_layer, i, x, a, a_mask, False, use_reentrant=False)
            else:
                x, a, w = self.video_layer(i, x, a, a_mask, return_attention)
                if w is not None:
                    attn_maps[i] = w.reshape(b, t, *w.shape[1:])
        frame_emb = self.visual.head(x).reshape(b, t, -1)
        video_emb = masked_mean_pool(frame_emb, frame_mask)
        audio_emb, audio_emb_mask = audio_inputs(audio, audio_mask)
        return VideoFeatures(
            video_emb=video_emb, frame_emb=F.normalize(frame_emb, dim=-1), frame_mask=frame_mask,
            tokens=x.reshape(b, t, *x.shape[1:]) if return_tokens else None,
            audio_tokens=(a.reshape(b, t, *a.shape[1:]) if (return_tokens and a is not None) else None),
            a2v_weights=attn_maps if return_attention else None,
            audio_emb=audio_emb, audio_mask=audio_emb_mask)

    def _audio_only_features(self, audio: Tensor, frame_mask: Optional[Tensor],
                             audio_mask: Optional[Tensor]) -> VideoFeatures:
        """Audio-only model: per-frame audio embedding -> projection -> head, pooled like frames."""
        if audio.dim() == 4:
            audio = audio.mean(2)
        frame_emb = self.audio_head(self.audio_proj(audio))  # [B, T, E]
        mask = torch.ones(audio.shape[:2], device=audio.device, dtype=frame_emb.dtype)
        for m in (frame_mask, audio_mask):
            if m is not None:
                mask = mask * (m if m.dim() == 2 else m.amax(-1)).to(mask.dtype)
        audio_emb, audio_emb_mask = audio_inputs(audio, audio_mask)
        return VideoFeatures(video_emb=masked_mean_pool(frame_emb, mask),
                             frame_emb=F.normalize(frame_emb, dim=-1), frame_mask=mask,
                             audio_emb=audio_emb, audio_mask=audio_emb_mask)

    def _checkpointing(self) -> bool:
        return self.config.gradient_checkpointing and self.training and torch.is_grad_enabled()

    def encode_video(self, frames: Optional[Tensor], audio: Optional[Tensor] = None,
                     frame_mask: Optional[Tensor] = None, audio_mask: Optional[Tensor] = None) -> Tensor:
        """frames [B,T,3,H,W] CLIP-normalised; audio [B,T,A] per-frame embeddings or None -> [B,E]."""
        return self.video_features(frames, audio, frame_mask, audio_mask).video_emb

    # ------------------------------------------------------------------ text
    def tokenize(self, texts: Union[str, Sequence[str]]) -> Tuple[Tensor, Tensor]:
        """CLIP BPE at this model's ``context_length`` -> (input_ids, attention_mask) [B, L]."""
        return tokenize(texts, context_length=self.config.context_length)

    def _fit_context(self, input_ids: Tensor, attention_mask: Optional[Tensor]):
        """Cut rows longer than ``context_length`` when only padding (mask 0) is cut; else raise."""
        n, length = self.config.context_length, input_ids.shape[1]
        if length <= n:
            return input_ids, attention_mask
        if attention_mask is None:
            raise ValueError(f"text has {length} tokens (no attention_mask, so all are real) but "
                             f"context_length is {n}; tokenize with model.tokenize(texts) or "
                             f"context_length={n} (it truncates)")
        real = attention_mask > 0
        if bool(real[:, n:].any()):
            longest = int((real.long().cumsum(1) * real).argmax(1).max()) + 1
            raise ValueError(f"text has {longest} real tokens (attention_mask 1) but context_length "
                             f"is {n}; tokenize with model.tokenize(texts) or context_length={n} "
                             f"(it truncates)")
        return input_ids[:, :n], attention_mask[:, :n]

    def text_features(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None) -> TextFeatures:
        """Run the text tower. input_ids [B, L], attention_mask [B, L] (1 = real) -> TextFeatures.

        Rows longer than ``context_length`` are cut to it when the cut positions are padding.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
        if input_ids.shape[0] == 0:
            raise ValueError("an empty batch: input_ids has no rows (at least one text is needed)")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} does not match "
                             f"input_ids {tuple(input_ids.shape)}")
        input_ids, attention_mask = self._fit_context(input_ids, attention_mask)
        if int(input_ids.max()) >= self.config.vocab_size or int(input_ids.min()) < 0:
            raise ValueError(f"input_ids must be in [0, {self.config.vocab_size})")
        tokens, pooled = self.text.features(input_ids, attention_mask)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        return TextFeatures(text_emb=F.normalize(pooled, dim=-1), tokens=tokens, mask=mask)

    def encode_text(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None) -> Tensor:
        """input_ids [B, L], attention_mask [B, L] -> [B, E], L2-normalised.

        L may exceed ``context_length`` where the extra positions are padding (they are cut).
        """
        return self.text_features(input_ids, attention_mask).text_emb

    # ------------------------------------------------------------------ similarity and training
    def similarity(self, text_features: TextFeatures, video_features: VideoFeatures) -> Tensor:
        """[T texts, V videos] cosine similarities through ``self.head`` (before the temperature).

        With the "mean" head this is ``encode_text(...) @ encode_video(...).T``.
        """
        return self.head(text_features, video_features)

    def scale(self) -> Tensor:
        """CLIP's learnable temperature exp(logit_scale), clamped to at most ``logit_scale_max``."""
        return self.logit_scale.exp().clamp(max=self.config.logit_scale_max)

    def forward(self, frames: Optional[Tensor], audio: Optional[Tensor], input_ids: Tensor,
                attention_mask: Optional[Tensor] = None, frame_mask: Optional[Tensor] = None,
                audio_mask: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Symmetric InfoNCE over the batch (Sec. 3.3) on the head's similarities.

        Returns {"loss", "logits" [B texts, B videos] (scale * similarity), "text_emb" [B, E],
        "video_emb" [B, E], "logit_scale"}.
        """
        video = self.video_features(frames, audio, frame_mask, audio_mask)
        text = self.text_features(input_ids, attention_mask)
        if text.text_emb.shape[0] != video.video_emb.shape[0]:
            raise ValueError(f"{text.text_emb.shape[0]} captions for {video.video_emb.shape[0]} "
                             "videos: the contrastive loss needs one caption per video")
        scale = self.scale()
        logits = scale * self.similarity(text, video)
        return {"loss": infonce_from_logits(logits), "logits": logits,
                "text_emb": text.text_emb, "video_emb": video.video_emb, "logit_scale": scale}

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_clip(cls, name_or_path: Union[str, "os.PathLike"], **overrides) -> "ECLIPSE":
        """Backbone from a Hugging Face CLIP checkpoint (hub id or local ``save_pretrained`` dir).

        A2V/V2A are cloned from each loaded layer, their projections zero. ``overrides`` set any
        :class:`ModelConfig` field (e.g. ``fusion="none"``, ``context_length=128``); positional
        embeddings are resized when ``image_size`` or ``context_length`` differ.
        """
        return load_clip(cls, name_or_path, **overrides)

    @classmethod
    def from_official(cls, path_or_state_dict, **overrides) -> "ECLIPSE":
        """A checkpoint trained with the authors' released code (CLIP4Clip-style names).

        Defaults to the released behaviour: layer_order="released", A2V + V2A (their
        ``yb_dual=1``), softmax over the audio keys (``yb_reverse_norm=0``), own audio token per
        frame (``yb_time_cross_audio=0``). Their flag names are accepted as overrides.
        """
        return load_official(cls, path_or_state_dict, **overrides)

    @classmethod
    def from_pretrained(cls, path) -> "ECLIPSE":
        """Load a model saved with :meth:`save_pretrained` (config.json + model.safetensors)."""
        return load_pretrained(cls, path)

    def save_pretrained(self, path) -> None:
        """Write config.json + model.safetensors into ``path`` atomically."""
        save_pretrained(self, path)
