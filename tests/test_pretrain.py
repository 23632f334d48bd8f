"""Pretraining the tiny towers: the audio-text half that teaches the text tower the sound words."""
import numpy as np
import pytest
import torch

from eclipse_lite.audio import build_audio_encoder
from eclipse_lite.config import ModelConfig
from eclipse_lite.data.synth import pretrain_rng, sample_frame_caption
from eclipse_lite.data.synth_captions import sound_caption
from eclipse_lite.data.synth_sounds import SOUND_PHRASES
from eclipse_lite.model import ECLIPSE
from eclipse_lite.pretrain import (PretrainConfig, init_from_pretrained, pretrain_clip,
                                   sound_text_bank)
from eclipse_lite.tokenizer import tokenize

CLASSES = ["bell", "cow", "siren", "dog"]


def tone_sampler(rng, seconds, sample_rate):
    """A stand-in sound bank: class k is a tone at 300·(k+1) Hz with a little noise."""
    k = int(rng.integers(len(CLASSES)))
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    wave = 0.3 * np.sin(2 * np.pi * 300 * (k + 1) * t) + 0.01 * rng.standard_normal(t.shape)
    return wave.astype(np.float32), k, CLASSES[k]


class BandEnergy(torch.nn.Module):
    """A transparent audio 'encoder': waveforms [N, W] -> log energy in ``dim`` frequency bands."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, waves):
        spec = torch.fft.rfft(waves).abs()[:, :waves.shape[1] // 2]
        bands = spec[:, :spec.shape[1] // self.dim * self.dim].reshape(len(waves), self.dim, -1)
        return torch.log1p(bands.mean(-1))


def test_sound_caption_uses_the_words_of_the_paragraphs():
    a = [sound_caption("cow", pretrain_rng(0)) for _ in range(2)]
    assert a[0] == a[1]                                              # seeded
    rng = pretrain_rng(1)
    for cls, (clause, noun) in SOUND_PHRASES.items():
        styles = {sound_caption(cls, rng) for _ in range(40)}
        assert all(clause in c or noun in c for c in styles), styles
        assert len(styles) >= 4                                      # varied wording
    with pytest.raises(ValueError, match="'trumpet'"):
        sound_caption("trumpet", rng)


def test_sound_text_bank_samples_distinct_classes_with_their_captions():
    cfg = ModelConfig.preset("ci")
    torch.manual_seed(0)
    encoder = build_audio_encoder(cfg)
    pc = PretrainConfig(sound_text_pool=24, audio_crop_s=1.0)
    bank = sound_text_bank(encoder, cfg, pc, tone_sampler, CLASSES)
    assert bank.embeddings.shape == (24, cfg.audio_dim) and torch.isfinite(bank.embeddings).all()
    assert encoder.training                                          # left as it was found
    rng = np.random.default_rng(0)
    emb, texts = bank.sample(rng, 16)
    assert emb.shape == (4, cfg.audio_dim) and len(texts) == 4       # one clip per class, at most
    named = [next(c for c in CLASSES if SOUND_PHRASES[c][1] in t or SOUND_PHRASES[c][0] in t) for t in texts]
    assert sorted(named) == sorted(CLASSES)
    for e, name in zip(emb, named):                                  # each row is a clip of its class
        rows = torch.nonzero(bank.labels == CLASSES.index(name)).flatten()
        assert any(torch.equal(e, bank.embeddings[r]) for r in rows)


def _sound_caption_similarity(state, cfg) -> float:
    """Mean cosine between the text embeddings of different sounds' captions."""
    model = init_from_pretrained(ECLIPSE(cfg.replace(fusion="none")), state).eval()
    ids, mask = tokenize([SOUND_PHRASES[c][0] + " off screen" for c in CLASSES],
                         context_length=cfg.context_length)
    with torch.no_grad():
        e = model.encode_text(ids, mask)
    sim = e @ e.T
    n = len(CLASSES)
    return float((sim.sum() - sim.diag().sum()) / (n * n - n))


def test_audio_text_pretraining_teaches_the_text_tower_the_sound_words():
    """Frame captions never name a sound: a tower pretrained on them alone gives every sound
    caption nearly the same embedding; with the audio-text loss they come apart."""
    cfg = ModelConfig.preset("ci")
    encoder = BandEnergy(cfg.audio_dim)
    base = dict(clip_steps=40, batch_size=12, sound_text_pool=32, audio_crop_s=1.0, lr=2e-3)
    pc = PretrainConfig(**base)
    bank = sound_text_bank(encoder, cfg, pc, tone_sampler, CLASSES)
    with_sound, losses = pretrain_clip(cfg, pc, sample_frame_caption, progress=False, sound_bank=bank)
    frames_only, losses0 = pretrain_clip(cfg, PretrainConfig(**base, sound_text_weight=0.0),
                                         sample_frame_caption, progress=False, sound_bank=bank)
    assert len(losses) == len(losses0) == 40 and np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < losses[0]                          # the frame loss still falls
    assert not any(k.startswith("sound_head") for k in with_sound)   # the head is discarded
    apart, together = _sound_caption_similarity(with_sound, cfg), _sound_caption_similarity(frames_only, cfg)
    assert apart < together - 0.2, (apart, together)
