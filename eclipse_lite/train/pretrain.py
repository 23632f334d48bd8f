"""Pretraining the towers at tiny scale: the analogue of CLIP's and VGGSound's pretraining.

ECLIPSE fine-tunes a *pretrained* CLIP with a *pretrained*, frozen audio encoder, and that
matters: with zero-initialised AV projections and a random audio encoder the audio branch gets no
useful signal until the projections grow, and a short from-scratch run never learns to use sound.
For the ``ci``/``tiny`` presets this module trains both towers on data rendered on the fly by the
benchmark generator (never its test videos):

- :func:`pretrain_clip` — a tiny CLIP, contrastively, on single frames and their captions
  (``synth.sample_frame_caption``), i.e. the video tower with T = 1 and ``fusion="none"``; and,
  at the same time, its text tower against the frozen audio encoder on sound clips and short
  sound captions ("a cow moos off screen"). OpenAI's CLIP knows what "a dog barks" means from
  web captions; the benchmark's frame captions never name a sound, so without this audio-text
  half the tiny text tower has never read "moos" or "siren" when fine-tuning starts, and
  ECLIPSE has nothing in the caption embedding to match its audio against (issue 5). Half of
  the frame captions are narrated in the benchmark paragraphs' words and length, and 30 % of
  them also name a sound, matched against frame + sound (``_mixed_caption_loss``), so the text
  tower has read paragraph-length text that mixes sight and sound, as CLIP has;
- :func:`pretrain_audio` — the audio encoder, as a classifier of the generator's sound classes
  (``synth.sample_sound_clip``) heard inside a window with ambient noise, like VGGSound's ResNet-18;
- :func:`pretrained_audio_encoder` — the audio encoder alone, cached on disk in
  ``cache_dir/<preset>-<key>/`` (``audio.safetensors`` + ``audio_info.json``), the key a hash
  of every setting that affects the towers (notebook 03 pretrains it there);
- :func:`pretrained_towers` — both, cached in that same folder (the audio part above, then
  ``clip.safetensors`` + ``info.json``), so repeated runs skip the work and a cached audio encoder
  is reused when only CLIP is missing; :func:`init_from_pretrained` copies them into any model.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from eclipse_lite.audio_encoders import build_audio_encoder
from eclipse_lite.checkpoints import atomic_save_safetensors, read_state_dict
from eclipse_lite.clip import clip_normalize
from eclipse_lite.config import ModelConfig
from eclipse_lite.data.synth import generate as synth
from eclipse_lite.data.synth.captions import sound_caption
from eclipse_lite.data.synth.generate import SOUND_CLASSES, sample_frame_caption, sample_sound_clip
from eclipse_lite.files import atomic_write_text
from eclipse_lite.losses import symmetric_infonce
from eclipse_lite.model import ECLIPSE
from eclipse_lite.tokenizer import tokenize
from eclipse_lite.train.optim import adamw, lr_factor

log = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """Settings of both pretraining runs (the prototype's: AdamW 1e-3, betas (0.9, 0.98), wd 0.1,
    batch 64, warm-up then cosine)."""

    clip_steps: int = 800
    audio_steps: int = 200
    audio_crop_s: float = 4.0   # train the (fully convolutional) encoder on short crops: 2.5x cheaper
    batch_size: int = 64
    lr: float = 1e-3
    betas: Tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.1
    warmup_fraction: float = 0.05
    sound_pool: int = 1536      # distinct sound clips rendered once, then mixed/shifted each step
    seed: int = 1234            # a stream of its own: never the benchmark's video seeds
    sound_text_weight: float = 1.0  # weight of the audio-text InfoNCE in pretrain_clip; 0 = frames only
    sound_text_pool: int = 512      # sound clips embedded once by the frozen encoder for it
    mixed_caption_p: float = 0.3    # frames whose caption also names a sound (_mixed_caption_loss)

    def key(self, cfg: ModelConfig, extra: str = "") -> str:
        """Hash of everything that changes the pretrained weights."""
        tower = {k: v for k, v in cfg.to_dict().items()
                 if k not in ("name", "fusion", "av_layers", "layer_order", "a2v_time", "a2v_mode",
                              "gradient_checkpointing", "num_frames")}
        blob = json.dumps({"pretrain": dataclasses.asdict(self), "model": tower, "extra": extra},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _progress(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, disable=not enabled or bool(os.environ.get("CI")),
                leave=False)


def _optimizer(params: List[Tuple[str, nn.Parameter]], pc: PretrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices that are not embeddings."""
    decay = [p for n, p in params if p.dim() >= 2 and "embedding" not in n]
    no_decay = [p for n, p in params if not (p.dim() >= 2 and "embedding" not in n)]
    return adamw([{"params": decay, "weight_decay": pc.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}], betas=pc.betas, lr=pc.lr)


def trim_padding(ids: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """Drop the trailing columns that are padding in every row (saves compute, same result)."""
    length = int(mask.sum(1).max())
    return ids[:, :length], mask[:, :length]


# ------------------------------------------------------------------ CLIP on frames + captions
FrameSampler = Callable[[np.random.Generator, int], Tuple[np.ndarray, str]]
SoundSampler = Callable[[np.random.Generator, float, int], Tuple[np.ndarray, int, str]]


@dataclass
class SoundTextBank:
    """Sound clips embedded once by the frozen audio encoder, for the audio-text loss.

    embeddings [P, A] (encoder outputs), labels [P] (class index), class_names (index -> name),
    caption(name, rng) -> str: a short caption of one sound (``captions.sound_caption``).
    """

    embeddings: Tensor
    labels: Tensor
    class_names: List[str]
    caption: Callable[[str, np.random.Generator], str]

    def sample(self, rng: np.random.Generator, n: int) -> Tuple[Tensor, List[str]]:
        """Clips of ``min(n, classes present)`` distinct classes (so InfoNCE has no false
        negatives), one per class: (embeddings [k, A], k captions)."""
        present = sorted(set(self.labels.tolist()))
        classes = rng.choice(present, size=min(n, len(present)), replace=False)
        rows, texts = [], []
        for c in classes:
            candidates = torch.nonzero(self.labels == int(c)).flatten()
            rows.append(int(candidates[int(rng.integers(len(candidates)))]))
            texts.append(self.caption(self.class_names[int(c)], rng))
        return self.embeddings[rows], texts


def sound_text_bank(encoder: nn.Module, cfg: ModelConfig, pc: PretrainConfig,
                    sound_sampler: Optional[SoundSampler] = None, class_names: Optional[List[str]] = None,
                    caption: Optional[Callable[[str, np.random.Generator], str]] = None) -> SoundTextBank:
    """Render ``pc.sound_text_pool`` clips (a stream of their own) and embed them with ``encoder``."""
    if sound_sampler is None:
        sound_sampler = sample_sound_clip
        class_names = list(SOUND_CLASSES)
    if caption is None:
        caption = sound_caption
    if class_names is None:
        raise ValueError("class_names is required with a custom sound_sampler")
    waves, labels = _sound_pool(cfg, dataclasses.replace(pc, sound_pool=pc.sound_text_pool), sound_sampler,
                                np.random.default_rng(pc.seed + 2))
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        embeddings = torch.cat([encoder(chunk) for chunk in waves.split(64)])
    encoder.train(was_training)
    return SoundTextBank(embeddings, labels, list(class_names), caption)


def pretrain_clip(cfg: ModelConfig, pc: PretrainConfig, frame_sampler: Optional[FrameSampler] = None,
                  progress: bool = True, sound_bank: Optional[SoundTextBank] = None
                  ) -> Tuple[Dict[str, Tensor], List[float]]:
    """Train a CLIP (visual + text towers) contrastively on generated single frames + captions.

    With ``sound_bank`` (and ``pc.sound_text_weight > 0``) every step adds, weighted by
    ``sound_text_weight``, a symmetric InfoNCE between the captions of a batch of sounds of
    distinct classes and their frozen audio embeddings mapped by a Linear(A, E) head that is
    trained here and then discarded: it teaches the text tower the sound words (module docstring).
    With ``pc.mixed_caption_p > 0`` that fraction of the frames' captions also names a sound, and
    their target is the frame's embedding plus that sound's (:func:`_mixed_caption_loss`).

    Returns (state dict of the towers and logit scale, loss per step: the frame-caption loss).
    """
    if frame_sampler is None:
        frame_sampler = sample_frame_caption
    torch.manual_seed(pc.seed)
    rng = np.random.default_rng(pc.seed)
    model = ECLIPSE(cfg.replace(fusion="none", gradient_checkpointing=False))
    model.train()
    params = list(model.named_parameters())
    use_sound = sound_bank is not None and pc.sound_text_weight > 0
    if use_sound:
        sound_head = nn.Linear(sound_bank.embeddings.shape[1], cfg.embed_dim, bias=False)
        params += [("sound_head." + n, p) for n, p in sound_head.named_parameters()]
    opt = _optimizer(params, pc)
    warmup = int(pc.warmup_fraction * pc.clip_steps)
    losses: List[float] = []
    bar = _progress(pc.clip_steps, "pretrain CLIP on frames", progress)
    for step in range(pc.clip_steps):
        pairs = [frame_sampler(rng, cfg.image_size) for _ in range(pc.batch_size)]
        # divide=True: the towers' cache key does not cover the arithmetic (clip_normalize)
        frames = clip_normalize(np.stack([p[0] for p in pairs]), divide=True)[:, None]  # [B, 1, 3, H, W]
        for group in opt.param_groups:
            group["lr"] = pc.lr * lr_factor(step, warmup, pc.clip_steps, zero_after_last=False)
        if use_sound and pc.mixed_caption_p > 0:
            loss = frame_loss = _mixed_caption_loss(model, sound_head, sound_bank, frames,
                                                    [p[1] for p in pairs], rng, pc, cfg)
        else:
            ids, mask = trim_padding(*tokenize([p[1] for p in pairs], context_length=cfg.context_length))
            loss = frame_loss = model(frames, None, ids, mask)["loss"]
        if use_sound:
            sound_emb, sound_texts = sound_bank.sample(rng, pc.batch_size)
            s_ids, s_mask = trim_padding(*tokenize(sound_texts, context_length=cfg.context_length))
            text = model.encode_text(s_ids, s_mask)
            audio = F.normalize(sound_head(sound_emb), dim=-1)
            loss = loss + pc.sound_text_weight * symmetric_infonce(text, audio, model.scale())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        losses.append(float(frame_loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()
             if k.startswith(("visual.", "text.")) or k == "logit_scale"}
    return state, losses


def _mixed_caption_loss(model: ECLIPSE, sound_head: nn.Module, bank: "SoundTextBank", frames: Tensor,
                        captions: List[str], rng: np.random.Generator, pc: PretrainConfig,
                        cfg: ModelConfig) -> Tensor:
    """Frame-caption InfoNCE in which a fraction ``pc.mixed_caption_p`` of the captions also name a
    sound, before or after the frame's caption ("A cow moos off screen. A red square sits on the
    left."), and are matched against normalise(frame embedding [B, E] + normalise(sound_head(
    embedding of a clip of that sound from ``bank``))).

    Why (issue 5): the frame captions never mix what is seen with what is heard, while every
    benchmark paragraph does. Pretrained without this, the text tower composed the two badly: a
    fine-tuned ECLIPSE fitted its training videos little better than video-only (train R@1 58-62
    vs 52-55 on 100 of them) and led it by 0-5 test R@1; with it, ECLIPSE fits them (82-87) and
    its R@5 rose from 44-47 to 57-58 (tiny, seeds 0 and 1, README "The main job"). OpenAI's CLIP
    read such mixed captions on the web ("a dog barking on the beach").
    """
    video = model.encode_video(frames)                                     # [B, E]
    mixed = np.flatnonzero(rng.random(len(captions)) < pc.mixed_caption_p)
    if len(mixed):
        rows = torch.from_numpy(rng.integers(0, len(bank.labels), len(mixed)))
        sound = F.normalize(sound_head(bank.embeddings[rows]), dim=-1)
        video = video.clone()
        video[mixed] = F.normalize(video[mixed] + sound, dim=-1)
        captions = list(captions)
        for i, r in zip(mixed, rows.tolist()):
            clause = bank.caption(bank.class_names[int(bank.labels[r])], rng)
            clause = clause[:1].upper() + clause[1:]
            captions[i] = (f"{clause}. {captions[i]}" if rng.random() < 0.5 else
                           f"{captions[i].rstrip('.')}. {clause}.")
    ids, mask = trim_padding(*tokenize(captions, context_length=cfg.context_length))
    return symmetric_infonce(model.encode_text(ids, mask), video, model.scale())


# ------------------------------------------------------------------ audio encoder on sounds
def _sound_pool(cfg: ModelConfig, pc: PretrainConfig, sampler: SoundSampler, rng) -> Tuple[Tensor, Tensor]:
    """Render ``pc.sound_pool`` labelled clips once: waveforms [P, W] and classes [P].

    W covers ``audio_crop_s`` seconds: the encoder pools globally over time, so it is trained on
    short crops and applied to the full ``audio_window_s`` windows of the videos.
    """
    crop_s = min(pc.audio_crop_s, cfg.audio_window_s)
    n = int(round(crop_s * cfg.sample_rate))
    waves, labels = [], []
    for _ in range(pc.sound_pool):
        seconds = float(rng.uniform(0.4, 1.0)) * crop_s
        wave, label, _ = sampler(rng, seconds, cfg.sample_rate)
        window = np.zeros(n, dtype=np.float32)
        wave = np.asarray(wave, dtype=np.float32)[:n]
        start = int(rng.integers(0, n - len(wave) + 1))
        window[start:start + len(wave)] = wave
        waves.append(window)
        labels.append(label)
    return torch.from_numpy(np.stack(waves)), torch.tensor(labels)


def _augment(waves: Tensor, rng: np.random.Generator) -> Tensor:
    """Random circular shift, gain and background noise, so each step sees new windows."""
    out = torch.empty_like(waves)
    for i in range(waves.shape[0]):
        shift = int(rng.integers(0, waves.shape[1]))
        out[i] = torch.roll(waves[i], shift) * float(rng.uniform(0.5, 1.5))
    noise = torch.from_numpy(rng.standard_normal(waves.shape).astype(np.float32))
    return out + noise * torch.from_numpy(rng.uniform(0.0, 0.03, (waves.shape[0], 1)).astype(np.float32))


def pretrain_audio(cfg: ModelConfig, pc: PretrainConfig, sound_sampler: Optional[SoundSampler] = None,
                   num_classes: Optional[int] = None, progress: bool = True
                   ) -> Tuple[Dict[str, Tensor], Dict[str, float], List[float]]:
    """Train ``build_audio_encoder(cfg)`` to classify the generator's sound classes.

    Returns (encoder state dict, {"train_acc", "heldout_acc"}, loss per step). Held-out accuracy
    is measured on clips rendered from a different random stream.
    """
    if sound_sampler is None:
        sound_sampler = sample_sound_clip
        num_classes = len(SOUND_CLASSES)
    if num_classes is None:
        raise ValueError("num_classes is required with a custom sound_sampler")
    torch.manual_seed(pc.seed + 1)
    rng = np.random.default_rng(pc.seed + 1)
    encoder = build_audio_encoder(cfg)
    head = nn.Linear(encoder.out_dim, num_classes)
    waves, labels = _sound_pool(cfg, pc, sound_sampler, rng)
    params = list(encoder.named_parameters()) + [("head." + n, p) for n, p in head.named_parameters()]
    opt = _optimizer(params, pc)
    warmup = int(pc.warmup_fraction * pc.audio_steps)
    losses: List[float] = []
    encoder.train()
    bar = _progress(pc.audio_steps, "pretrain audio encoder", progress)
    correct = seen = 0
    for step in range(pc.audio_steps):
        idx = torch.from_numpy(rng.integers(0, waves.shape[0], pc.batch_size))
        x, y = _augment(waves[idx], rng), labels[idx]
        for group in opt.param_groups:
            group["lr"] = pc.lr * lr_factor(step, warmup, pc.audio_steps, zero_after_last=False)
        logits = head(encoder(x))
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params and [p for _, p in params], 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if step >= pc.audio_steps * 3 // 4:
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    encoder.eval()
    held_waves, held_labels = _sound_pool(cfg, dataclasses.replace(pc, sound_pool=256), sound_sampler,
                                          np.random.default_rng(pc.seed + 99))
    with torch.no_grad():
        held = float((head(encoder(held_waves)).argmax(1) == held_labels).float().mean())
    scores = {"train_acc": correct / max(1, seen), "heldout_acc": held}
    return {k: v.detach().clone() for k, v in encoder.state_dict().items()}, scores, losses


# ------------------------------------------------------------------ cache
def _cache_folder(cfg: ModelConfig, cache_dir, pc: PretrainConfig) -> Path:
    """``cache_dir/<preset>-<key>``: the one folder that holds both towers of these settings."""
    return Path(cache_dir) / f"{cfg.name}-{pc.key(cfg, extra=synth.PRETRAIN_DATA_VERSION)}"


_AUDIO_INFO_KEYS = ("audio_seconds", "train_acc", "heldout_acc", "audio_loss_last", "audio_losses", "config")


def pretrained_audio_encoder(cfg: ModelConfig, cache_dir, pc: Optional[PretrainConfig] = None,
                             force: bool = False, progress: bool = True) -> Tuple[nn.Module, dict]:
    """The pretrained audio encoder for ``cfg`` alone, from the cache or trained now (``pretrain_audio``).

    It lives in the same folder as :func:`pretrained_towers`' (``cache_dir/<preset>-<key>/``, the
    key of every pretraining setting), so that whoever runs first — notebook 03, which only needs
    the encoder, or the towers — leaves it for the other:

    - ``audio.safetensors``: the encoder's state dict;
    - ``audio_info.json``: ``audio_seconds``, ``train_acc``, ``heldout_acc``, ``audio_loss_last``
      (mean of the last 20 steps), ``audio_losses`` (loss per step) and ``config``. Written last:
      it marks the audio part complete (a folder with ``audio.safetensors`` but no
      ``audio_info.json`` is an interrupted run, and is trained again).

    A folder completed by an older :func:`pretrained_towers` (``info.json``, no
    ``audio_info.json``) is read as well: its ``info.json`` holds the same fields. ``force``
    retrains the encoder and drops the folder's ``info.json`` first: the cached CLIP's audio-text
    half was trained against the old encoder, so the towers are then trained again too.

    Returns (encoder in eval mode, info with ``"cached"``: whether it was loaded).
    """
    pc = pc or PretrainConfig()
    folder = _cache_folder(cfg, cache_dir, pc)
    audio_info_path, towers_info_path = folder / "audio_info.json", folder / "info.json"
    encoder = build_audio_encoder(cfg)
    if not force:
        for path in (audio_info_path, towers_info_path):
            if path.exists():
                encoder.load_state_dict(read_state_dict(folder / "audio.safetensors"))
                stored = json.loads(path.read_text())
                info = {k: stored[k] for k in _AUDIO_INFO_KEYS if k in stored}
                info["cached"] = True
                log.info("pretrained audio encoder loaded from %s", folder)
                return encoder.eval(), info
    else:
        towers_info_path.unlink(missing_ok=True)     # these towers no longer match the encoder
        audio_info_path.unlink(missing_ok=True)
    t0 = time.time()
    audio_state, scores, losses = pretrain_audio(cfg, pc, progress=progress)
    info = {"audio_seconds": time.time() - t0, **scores,
            "audio_loss_last": float(np.mean(losses[-20:])), "audio_losses": losses,
            "config": dataclasses.asdict(pc)}
    atomic_save_safetensors(audio_state, folder / "audio.safetensors")
    atomic_write_text(json.dumps(info), audio_info_path)   # written last: the audio part is complete
    encoder.load_state_dict(audio_state)
    info["cached"] = False
    return encoder.eval(), info


def pretrained_towers(cfg: ModelConfig, cache_dir, pc: Optional[PretrainConfig] = None,
                      force: bool = False, progress: bool = True) -> Tuple[Dict[str, Tensor], nn.Module, dict]:
    """The pretrained CLIP state and audio encoder for ``cfg``, from the cache or trained now.

    Cached in ``cache_dir/<preset>-<key>/``: ``audio.safetensors`` + ``audio_info.json`` (the audio
    part, :func:`pretrained_audio_encoder`), then ``clip.safetensors`` and, written last,
    ``info.json``: ``audio_seconds``, ``clip_seconds``, ``train_acc``, ``heldout_acc``,
    ``clip_loss_first``, ``clip_loss_last``, ``audio_loss_last``, ``clip_losses``,
    ``audio_losses``, ``config`` and ``audio_cached`` (whether the encoder came from the cache;
    ``audio_seconds`` is then the time it took when it was trained). A folder with ``info.json``
    is loaded as it is; one with only a complete audio part (left by notebook 03) has its encoder
    loaded and only CLIP pretrained. ``force`` retrains both.

    Returns (clip state dict, audio encoder in eval mode, info with ``"cached"``: whether the
    towers were loaded).
    """
    pc = pc or PretrainConfig()
    folder = _cache_folder(cfg, cache_dir, pc)
    info_path = folder / "info.json"
    if info_path.exists() and not force:
        encoder = build_audio_encoder(cfg)
        clip_state = read_state_dict(folder / "clip.safetensors")
        encoder.load_state_dict(read_state_dict(folder / "audio.safetensors"))
        info = json.loads(info_path.read_text())
        info["cached"] = True
        log.info("pretrained towers loaded from %s", folder)
        return clip_state, encoder.eval(), info
    encoder, audio_info = pretrained_audio_encoder(cfg, cache_dir, pc, force=force, progress=progress)
    t1 = time.time()
    bank = sound_text_bank(encoder, cfg, pc) if pc.sound_text_weight > 0 else None
    clip_state, clip_losses = pretrain_clip(cfg, pc, progress=progress, sound_bank=bank)
    t2 = time.time()
    atomic_save_safetensors(clip_state, folder / "clip.safetensors")
    info = {"audio_seconds": audio_info["audio_seconds"], "clip_seconds": t2 - t1,
            "train_acc": audio_info["train_acc"], "heldout_acc": audio_info["heldout_acc"],
            "clip_loss_first": clip_losses[0], "clip_loss_last": float(np.mean(clip_losses[-20:])),
            "audio_loss_last": audio_info["audio_loss_last"], "clip_losses": clip_losses,
            "audio_losses": audio_info["audio_losses"], "config": dataclasses.asdict(pc),
            "audio_cached": audio_info["cached"]}
    atomic_write_text(json.dumps(info), info_path)  # written last: marks the folder complete
    info["cached"] = False
    return clip_state, encoder.eval(), info


def init_from_pretrained(model: ECLIPSE, clip_state: Dict[str, Tensor]) -> ECLIPSE:
    """Copy pretrained towers into ``model`` and re-clone its AV blocks from them (zero projections)."""
    missing, unexpected = model.load_state_dict(clip_state, strict=False)
    if unexpected:
        raise KeyError(f"pretrained state has tensors the model lacks: {unexpected[:5]}")
    towers_missing = [k for k in missing if not model.is_new_parameter(k)]
    if towers_missing:
        raise KeyError(f"pretrained state lacks tower tensors: {towers_missing[:5]}")
    model.reset_av_blocks()
    return model
