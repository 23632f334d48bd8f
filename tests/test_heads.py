"""Similarity heads: "mean" is exactly today's cosine of pooled embeddings; the features they read."""
import pytest
import torch
from test_model import inputs

import eclipse_lite as el
from eclipse_lite.config import ModelConfig
from eclipse_lite.heads import HEADS, MeanHead, SimilarityHead, build_head
from eclipse_lite.model import TextFeatures, VideoFeatures


def make(fusion="eclipse", seed=0, **kw):
    torch.manual_seed(seed)
    model = el.ECLIPSE(ModelConfig.preset("ci", fusion=fusion, **kw))
    with torch.no_grad():  # non-zero AV projections, so audio changes the video embedding
        for name, p in model.named_parameters():
            if name.startswith("av_blocks") and "proj" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    return model.eval()


@pytest.mark.parametrize("fusion", ["eclipse", "a2v", "joint", "none", "audio_only"])
def test_mean_head_similarity_is_exactly_the_product_of_the_embeddings(fusion):
    model = make(fusion)
    frames, audio, ids, mask = inputs(model.config)
    with torch.no_grad():
        sim = model.similarity(model.text_features(ids[:2], mask[:2]), model.video_features(frames, audio))
        want = model.encode_text(ids[:2], mask[:2]) @ model.encode_video(frames, audio).T
    assert isinstance(model.head, MeanHead) and model.head.name == "mean"
    assert sim.shape == (2, 3)
    assert torch.equal(sim, want)


def test_forward_logits_go_through_the_head_and_the_loss_is_unchanged():
    model = make("eclipse").train()
    frames, audio, ids, mask = inputs(model.config)
    out = model(frames, audio, ids, mask)
    scale = model.scale()
    sim = model.similarity(model.text_features(ids, mask), model.video_features(frames, audio))
    assert torch.equal(out["logits"], scale * sim)
    assert torch.equal(out["loss"], el.symmetric_infonce(out["text_emb"], out["video_emb"], scale))


def test_forward_uses_whatever_head_the_model_has():
    class Constant(SimilarityHead):
        name = "constant"

        def forward(self, text, video):
            return torch.eye(text.text_emb.shape[0], video.video_emb.shape[0])

    model = make("none")
    model.head = Constant()
    frames, audio, ids, mask = inputs(model.config)
    out = model(frames, audio, ids, mask)
    torch.testing.assert_close(out["logits"], model.scale().detach() * torch.eye(3))


def test_mean_head_adds_no_parameters():
    model = make("eclipse")
    assert list(model.head.parameters()) == []
    assert not any(k.startswith("head.") for k in model.state_dict())
    assert model.is_new_parameter("head.q_proj.weight")   # a future head's parameters count as new


def test_text_features_shapes_and_token_states():
    model = make("none")
    cfg = model.config
    _, _, ids, mask = inputs(cfg)
    with torch.no_grad():
        feats = model.text_features(ids, mask)
        assert isinstance(feats, TextFeatures)
        assert feats.text_emb.shape == (3, cfg.embed_dim)
        assert feats.tokens.shape == (3, cfg.context_length, cfg.text_width)
        assert torch.equal(feats.mask, mask)
        torch.testing.assert_close(feats.text_emb.norm(dim=-1), torch.ones(3))
        # the pooled embedding is the projected token state at the end-of-text position
        eot = mask.sum(1) - 1
        pooled = model.text.proj(feats.tokens[torch.arange(3), eot])
        torch.testing.assert_close(feats.text_emb, torch.nn.functional.normalize(pooled, dim=-1))
        assert torch.equal(model.text_features(ids).mask, torch.ones_like(ids))


def test_video_features_carry_frames_masks_and_audio():
    model = make("eclipse")
    cfg = model.config
    frames, audio, _, _ = inputs(cfg, b=2, t=4)
    audio_mask = torch.tensor([[1, 0, 1, 0], [1, 1, 1, 1.]])
    with torch.no_grad():
        v = model.video_features(frames, audio, audio_mask=audio_mask)
        several = model.video_features(frames, torch.randn(2, 4, 3, cfg.audio_dim))
        silent = model.video_features(frames, None)
    assert isinstance(v, VideoFeatures)
    assert v.video_emb.shape == (2, cfg.embed_dim) and v.frame_emb.shape == (2, 4, cfg.embed_dim)
    assert torch.equal(v.frame_mask, torch.ones(2, 4))
    assert torch.equal(v.audio_emb, audio.unsqueeze(2))
    assert torch.equal(v.audio_mask, audio_mask.unsqueeze(-1))
    assert several.audio_emb.shape == (2, 4, 3, cfg.audio_dim) and several.audio_mask.shape == (2, 4, 3)
    assert silent.audio_emb is None and silent.audio_mask is None
    assert v.tokens is None and v.audio_tokens is None        # only with return_tokens=True
    only = make("audio_only").video_features(None, audio)
    assert torch.equal(only.audio_emb, audio.unsqueeze(2)) and only.audio_mask.shape == (2, 4, 1)


def test_head_registry():
    assert HEADS == {"mean": MeanHead}
    assert isinstance(build_head("mean"), MeanHead)
    with pytest.raises(ValueError, match="unknown similarity head 'xpool'; known: mean"):
        build_head("xpool")
