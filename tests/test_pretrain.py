"""Pretraining the tiny towers: the audio-text half that teaches the text tower the sound words,
and the on-disk cache of the towers (the audio encoder cached on its own, for notebook 03)."""
import dataclasses
import json

import numpy as np
import pytest
import torch

import eclipse_lite.train.pretrain as pretrain_module
from eclipse_lite.audio_encoders import build_audio_encoder
from eclipse_lite.checkpoints import atomic_save_safetensors, read_state_dict
from eclipse_lite.clip import clip_normalize
from eclipse_lite.config import ModelConfig
from eclipse_lite.data.synth import generate as synth
from eclipse_lite.data.synth.captions import sound_caption
from eclipse_lite.data.synth.generate import pretrain_rng, sample_frame_caption
from eclipse_lite.data.synth.sounds import SOUND_PHRASES
from eclipse_lite.model import ECLIPSE
from eclipse_lite.studies.demo import pretrain_config_for
from eclipse_lite.tokenizer import tokenize
from eclipse_lite.train.pretrain import (
    PretrainConfig,
    init_from_pretrained,
    pretrain_clip,
    pretrained_audio_encoder,
    pretrained_towers,
    sound_text_bank,
)

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


def _one_sound_bank(cfg):
    """A bank holding one clip of one class, so the sound a mixed caption names is known."""
    emb = torch.linspace(-1, 1, cfg.audio_dim)[None]
    return pretrain_module.SoundTextBank(emb, torch.tensor([0]), ["cow"], lambda name, rng: "a cow moos")


def test_mixed_captions_name_a_sound_and_match_frame_plus_sound(monkeypatch):
    """p=0 is the plain frame-caption loss; p=1 prefixes or suffixes every caption with the sound's
    caption and scores it against normalise(frame + normalise(sound_head(sound)))."""
    cfg = ModelConfig.preset("ci")
    torch.manual_seed(0)
    model = ECLIPSE(cfg.replace(fusion="none")).eval()
    head = torch.nn.Linear(cfg.audio_dim, cfg.embed_dim, bias=False)
    bank = _one_sound_bank(cfg)
    rng = np.random.default_rng(0)
    pairs = [sample_frame_caption(rng, cfg.image_size) for _ in range(6)]
    frames = clip_normalize(np.stack([p[0] for p in pairs]), divide=True)[:, None]
    captions = [p[1] for p in pairs]
    seen = []
    real_tokenize = pretrain_module.tokenize
    monkeypatch.setattr(pretrain_module, "tokenize", lambda texts, **kw: (seen.append(list(texts)),
                                                                         real_tokenize(texts, **kw))[1])
    with torch.no_grad():
        plain = pretrain_module._mixed_caption_loss(model, head, bank, frames, captions, np.random.default_rng(1),
                                                    PretrainConfig(mixed_caption_p=0.0), cfg)
        ids, mask = pretrain_module.trim_padding(*real_tokenize(captions, context_length=cfg.context_length))
        torch.testing.assert_close(plain, model(frames, None, ids, mask)["loss"])
        assert seen[-1] == captions

        mixed = pretrain_module._mixed_caption_loss(model, head, bank, frames, captions, np.random.default_rng(1),
                                                    PretrainConfig(mixed_caption_p=1.0), cfg)
        texts = seen[-1]
        assert all(t.startswith("A cow moos. ") or t.endswith(". A cow moos.") for t in texts), texts
        assert {t.startswith("A cow") for t in texts} == {True, False}   # both orders occur
        assert all(c.rstrip(".") in t for c, t in zip(captions, texts))
        sound = torch.nn.functional.normalize(head(bank.embeddings), dim=-1)
        target = torch.nn.functional.normalize(model.encode_video(frames) + sound, dim=-1)
        ids, mask = pretrain_module.trim_padding(*real_tokenize(texts, context_length=cfg.context_length))
        expected = pretrain_module.symmetric_infonce(model.encode_text(ids, mask), target, model.scale())
        torch.testing.assert_close(mixed, expected)
        assert not torch.allclose(mixed, plain)


# ------------------------------------------------------------------ the cache
TOWERS_INFO_KEYS = ("audio_seconds", "clip_seconds", "train_acc", "heldout_acc", "clip_loss_first",
                    "clip_loss_last", "audio_loss_last", "clip_losses", "audio_losses", "config")


def _small_pc() -> PretrainConfig:
    """The ci pretraining settings, cut to a few steps on small pools."""
    return dataclasses.replace(pretrain_config_for("ci"), clip_steps=2, audio_steps=3, batch_size=8,
                               sound_pool=16, sound_text_pool=16)


def _folder(tmp_path, cfg, pc):
    """Where both towers of these settings are cached (the key as pretrained_towers computes it)."""
    return tmp_path / f"{cfg.name}-{pc.key(cfg, extra=synth.PRETRAIN_DATA_VERSION)}"


def _same_weights(a, b) -> bool:
    a = a if isinstance(a, dict) else a.state_dict()
    b = b if isinstance(b, dict) else b.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _must_not_run(name):
    def fail(*args, **kwargs):
        raise AssertionError(f"{name} ran although its result is cached")
    return fail


def test_audio_encoder_is_cached_on_its_own_and_the_towers_reuse_it(tmp_path, monkeypatch):
    cfg, pc = ModelConfig.preset("ci"), _small_pc()
    folder = _folder(tmp_path, cfg, pc)
    encoder, info = pretrained_audio_encoder(cfg, tmp_path, pc, progress=False)      # trained now
    assert not info["cached"] and not encoder.training
    assert sorted(p.name for p in folder.iterdir()) == ["audio.safetensors", "audio_info.json"]
    assert len(info["audio_losses"]) == pc.audio_steps and 0.0 <= info["heldout_acc"] <= 1.0
    assert _same_weights(read_state_dict(folder / "audio.safetensors"), encoder)
    stored = json.loads((folder / "audio_info.json").read_text())
    assert {"audio_seconds", "train_acc", "heldout_acc", "audio_loss_last", "audio_losses"} <= set(stored)

    # (a) a second call loads it
    monkeypatch.setattr(pretrain_module, "pretrain_audio", _must_not_run("pretrain_audio"))
    again, info2 = pretrained_audio_encoder(cfg, tmp_path, pc, progress=False)
    assert info2["cached"] and not again.training and _same_weights(again, encoder)
    assert info2["heldout_acc"] == info["heldout_acc"] and info2["audio_losses"] == info["audio_losses"]

    # (b) the towers load that encoder and pretrain CLIP only, with the sound-text bank from it
    banked = []
    real_bank = pretrain_module.sound_text_bank

    def spy_bank(enc, *args, **kwargs):
        banked.append({k: v.clone() for k, v in enc.state_dict().items()})
        return real_bank(enc, *args, **kwargs)

    monkeypatch.setattr(pretrain_module, "sound_text_bank", spy_bank)
    clip_state, towers_encoder, towers_info = pretrained_towers(cfg, tmp_path, pc, progress=False)
    assert not towers_info["cached"] and towers_info["audio_cached"]
    assert not towers_encoder.training and _same_weights(towers_encoder, encoder)
    assert len(banked) == 1 and _same_weights(banked[0], encoder)
    written = json.loads((folder / "info.json").read_text())
    assert set(TOWERS_INFO_KEYS) <= set(written)
    assert written["heldout_acc"] == info["heldout_acc"] and written["audio_losses"] == info["audio_losses"]
    assert written["audio_seconds"] == info["audio_seconds"] and len(written["clip_losses"]) == pc.clip_steps
    assert _same_weights(read_state_dict(folder / "clip.safetensors"), clip_state)

    # ... and from then on load both
    monkeypatch.setattr(pretrain_module, "pretrain_clip", _must_not_run("pretrain_clip"))
    clip_again, encoder_again, info3 = pretrained_towers(cfg, tmp_path, pc, progress=False)
    assert info3["cached"] and info3["heldout_acc"] == info["heldout_acc"]
    assert _same_weights(clip_again, clip_state) and _same_weights(encoder_again, encoder)


def _fake_pretrain_audio(calls):
    """pretrain_audio's results without the training: a random encoder, fixed scores."""
    def fake(cfg, pc, progress=True):
        calls.append(1)
        encoder = build_audio_encoder(cfg)
        return ({k: v.detach().clone() for k, v in encoder.state_dict().items()},
                {"train_acc": 0.5, "heldout_acc": 0.25}, [2.0, 1.5, 1.0])
    return fake


def test_a_complete_folder_of_the_earlier_layout_still_loads(tmp_path, monkeypatch):
    """(c) clip + audio safetensors and info.json, no audio_info.json: loaded as it is."""
    cfg, pc = ModelConfig.preset("ci"), _small_pc()
    folder = _folder(tmp_path, cfg, pc)
    torch.manual_seed(3)
    clip_state = {k: v for k, v in ECLIPSE(cfg.replace(fusion="none")).state_dict().items()
                  if k.startswith(("visual.", "text.")) or k == "logit_scale"}
    audio_state = build_audio_encoder(cfg).state_dict()
    atomic_save_safetensors(clip_state, folder / "clip.safetensors")
    atomic_save_safetensors(audio_state, folder / "audio.safetensors")
    old_info = {"audio_seconds": 12.0, "clip_seconds": 34.0, "train_acc": 0.9, "heldout_acc": 0.8,
                "clip_loss_first": 2.8, "clip_loss_last": 1.1, "audio_loss_last": 0.3,
                "clip_losses": [2.8, 1.1], "audio_losses": [2.0, 0.3], "config": dataclasses.asdict(pc)}
    (folder / "info.json").write_text(json.dumps(old_info))
    before = sorted(p.name for p in folder.iterdir())
    monkeypatch.setattr(pretrain_module, "pretrain_audio", _must_not_run("pretrain_audio"))
    monkeypatch.setattr(pretrain_module, "pretrain_clip", _must_not_run("pretrain_clip"))

    loaded_clip, encoder, info = pretrained_towers(cfg, tmp_path, pc, progress=False)
    assert info == dict(json.loads(json.dumps(old_info)), cached=True)              # as stored
    assert _same_weights(loaded_clip, clip_state) and _same_weights(encoder, audio_state)
    assert not encoder.training

    alone, alone_info = pretrained_audio_encoder(cfg, tmp_path, pc, progress=False)   # the audio part of it
    assert alone_info["cached"] and alone_info["heldout_acc"] == 0.8 and alone_info["audio_losses"] == [2.0, 0.3]
    assert _same_weights(alone, audio_state)
    assert sorted(p.name for p in folder.iterdir()) == before                          # nothing rewritten


def test_an_interrupted_or_forced_audio_part_is_trained_again(tmp_path, monkeypatch):
    cfg, pc = ModelConfig.preset("ci"), _small_pc()
    folder = _folder(tmp_path, cfg, pc)
    calls = []
    monkeypatch.setattr(pretrain_module, "pretrain_audio", _fake_pretrain_audio(calls))
    atomic_save_safetensors(build_audio_encoder(cfg).state_dict(), folder / "audio.safetensors")  # no audio_info.json
    encoder, info = pretrained_audio_encoder(cfg, tmp_path, pc, progress=False)
    assert calls == [1] and not info["cached"] and info["heldout_acc"] == 0.25
    assert _same_weights(read_state_dict(folder / "audio.safetensors"), encoder)
    assert json.loads((folder / "audio_info.json").read_text())["audio_losses"] == [2.0, 1.5, 1.0]

    (folder / "info.json").write_text("{}")      # towers trained against this encoder ...
    forced, forced_info = pretrained_audio_encoder(cfg, tmp_path, pc, force=True, progress=False)
    assert calls == [1, 1] and not forced_info["cached"] and not _same_weights(forced, encoder)
    assert not (folder / "info.json").exists()  # ... no longer match it: the towers get retrained
    assert _same_weights(read_state_dict(folder / "audio.safetensors"), forced)
