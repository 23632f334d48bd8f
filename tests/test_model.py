"""ECLIPSE: initialisation equals CLIP4Clip, the AV blocks learn, every variant runs, bad input is named."""
import itertools

import pytest
import torch

import eclipse_lite as el
from eclipse_lite.attention import a2v_attention, attention_weights, scaled_dot_product_attention
from eclipse_lite.config import ModelConfig

FUSIONS = ["eclipse", "a2v", "joint", "none", "audio_only"]


def make(fusion="eclipse", seed=0, **kw):
    torch.manual_seed(seed)
    return el.ECLIPSE(ModelConfig.preset("ci", fusion=fusion, **kw))


def inputs(cfg, b=3, t=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(b, t, 3, cfg.image_size, cfg.image_size, generator=g)
    audio = torch.randn(b, t, cfg.audio_dim, generator=g)
    ids, mask = el.tokenize([f"caption number {i}" for i in range(b)], context_length=cfg.context_length)
    return frames, audio, ids, mask


def video_only_twin(model):
    """A fusion='none' model with the same CLIP weights."""
    twin = el.ECLIPSE(model.config.replace(fusion="none"))
    twin.load_state_dict(model.state_dict(), strict=False)
    return twin.eval()


@pytest.mark.parametrize("fusion,order,a2v_time", [
    ("eclipse", "paper", "own"), ("eclipse", "released", "own"), ("eclipse", "paper", "all"),
    ("a2v", "paper", "own"), ("joint", "paper", "own"), ("joint", "released", "all")])
def test_init_equals_video_only_for_any_audio(fusion, order, a2v_time):
    model = make(fusion, layer_order=order, a2v_time=a2v_time).eval()
    twin = video_only_twin(model)
    frames, audio, _, _ = inputs(model.config)
    with torch.no_grad():
        reference = twin.encode_video(frames)
        for a in (audio, 100 * torch.randn_like(audio), None):
            torch.testing.assert_close(model.encode_video(frames, a), reference, atol=1e-6, rtol=0)


def audio_carries_the_answer(cfg, b=6, t=4):
    """Every video has the same frames; only the audio tells them apart."""
    g = torch.Generator().manual_seed(3)
    frames = torch.randn(1, t, 3, cfg.image_size, cfg.image_size, generator=g).expand(b, -1, -1, -1, -1)
    audio = torch.randn(b, 1, cfg.audio_dim, generator=g).expand(-1, t, -1).contiguous()
    ids, mask = el.tokenize([f"sound {w}" for w in "abcdefgh"[:b]], context_length=cfg.context_length)
    return frames.contiguous(), audio, ids, mask


@pytest.mark.parametrize("order", ["paper", "released"])
def test_av_blocks_learn_when_audio_carries_the_answer(order):
    model = make("eclipse", layer_order=order)
    twin = video_only_twin(model)
    frames, audio, ids, mask = audio_carries_the_answer(model.config)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, grads = [], {}
    for step in range(25):
        out = model(frames, audio, ids, mask)
        opt.zero_grad()
        out["loss"].backward()
        for name, p in model.named_parameters():
            if name.endswith(("a2v_proj.weight", "v2a_proj.weight")):
                grads[name] = grads.get(name, 0.0) + (0.0 if p.grad is None else float(p.grad.abs().sum()))
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.5 * losses[0], losses
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model.encode_video(frames, audio), twin.encode_video(frames), atol=1e-3)
    last = str(model.config.vision_layers - 1)
    for name, total in grads.items():
        if name == f"av_blocks.{last}.v2a_proj.weight":
            # the last layer's V2A writes the final audio token, which only the saliency map reads:
            # retrieval never sends it a gradient (in the released code too)
            assert total == 0.0, name
        else:
            assert total > 0.0, f"no gradient reached {name}"


@pytest.mark.parametrize("fusion,t,b", list(itertools.product(FUSIONS, [1, 4, 32], [1, 3])))
def test_every_variant_runs_forward_and_backward(fusion, t, b):
    model = make(fusion)
    frames, audio, ids, mask = inputs(model.config, b=b, t=t)
    out = model(frames, audio, ids, mask)
    assert out["logits"].shape == (b, b) and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("fusion", ["eclipse", "a2v", "joint", "none"])
def test_missing_and_partially_masked_audio(fusion):
    model = make(fusion)
    with torch.no_grad():  # non-zero projections, so audio actually changes the frames
        for name, p in model.named_parameters():
            if "proj" in name and name.startswith("av_blocks"):
                p.normal_(0, 0.2)
    model.eval()
    twin = video_only_twin(model)
    frames, audio, _, _ = inputs(model.config, b=2, t=4)
    audio_mask = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.float32)
    with torch.no_grad():
        feats = model.video_features(frames, audio, audio_mask=audio_mask)
        plain = twin.video_features(frames)
        silent = model.video_features(frames, None)
    assert torch.isfinite(feats.video_emb).all()
    # frames without audio are exactly the video-only frames; audio None is video-only
    keep = audio_mask == 0
    torch.testing.assert_close(feats.frame_emb[keep], plain.frame_emb[keep], atol=1e-6, rtol=0)
    torch.testing.assert_close(silent.video_emb, plain.video_emb, atol=1e-6, rtol=0)
    if fusion != "none":
        assert not torch.allclose(feats.frame_emb[~keep], plain.frame_emb[~keep], atol=1e-4)


def test_frame_mask_pools_only_real_frames():
    model = make("none").eval()
    frames, _, _, _ = inputs(model.config, b=1, t=4)
    with torch.no_grad():
        masked = model.encode_video(frames, None, frame_mask=torch.tensor([[1., 1., 0., 0.]]))
        short = model.encode_video(frames[:, :2], None)
    torch.testing.assert_close(masked, short, atol=1e-6, rtol=0)


def test_audio_only_ignores_frames():
    model = make("audio_only").eval()
    frames, audio, _, _ = inputs(model.config)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_video(frames, audio), model.encode_video(None, audio))


def test_several_audio_tokens_per_frame():
    model = make("eclipse")
    frames, _, ids, mask = inputs(model.config, b=2, t=4)
    audio = torch.randn(2, 4, 3, model.config.audio_dim)
    out = model(frames, audio, ids[:2], mask[:2])
    assert torch.isfinite(out["loss"])


def test_gradient_checkpointing_gives_the_same_gradients():
    frames, audio, ids, mask = inputs(ModelConfig.preset("ci"))
    grads = []
    for ckpt in (False, True):
        model = make("eclipse", gradient_checkpointing=ckpt)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.startswith("av_blocks") and "proj" in name:
                    p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
        model(frames, audio, ids, mask)["loss"].backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_temperature_is_clamped_to_100():
    model = make()
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert float(model.scale().detach()) == 100.0


def test_eager_and_sdpa_attention_agree():
    model = make("eclipse")
    frames, audio, _, _ = inputs(model.config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("av_blocks") and "proj" in name:
                p.normal_(0, 0.1)
        a = model.encode_video(frames, audio)
        b = model.set_attention_impl("eager").encode_video(frames, audio)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ bad input
def test_bad_inputs_name_the_problem():
    model = make("eclipse")
    cfg = model.config
    frames, audio, ids, mask = inputs(cfg)
    with pytest.raises(ValueError, match=r"frames must be a tensor \[B, T, 3, H, W\]"):
        model.encode_video(frames[0], audio)
    with pytest.raises(ValueError, match="image_size=32"):
        model.encode_video(torch.randn(3, 4, 3, 48, 48), audio)
    with pytest.raises(ValueError, match="one audio embedding per frame"):
        model.encode_video(frames, audio[:, :2])
    with pytest.raises(ValueError, match="audio_dim=64"):
        model.encode_video(frames, torch.randn(3, 4, 7))
    with pytest.raises(ValueError, match="context_length is 32"):
        model.encode_text(torch.ones(3, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="frame_mask"):
        model.encode_video(frames, audio, frame_mask=torch.ones(3, 5))
    with pytest.raises(ValueError, match="one caption per video"):
        model(frames, audio, ids[:2], mask[:2])
    with pytest.raises(ValueError, match="float"):
        model.encode_video(frames.to(torch.uint8), audio)


def test_config_errors_list_choices():
    with pytest.raises(ValueError, match="known presets: ci, tiny, base"):
        ModelConfig.preset("huge")
    with pytest.raises(ValueError, match="fusion"):
        ModelConfig.preset("ci", fusion="late")
    with pytest.raises(ValueError, match="av_layers"):
        ModelConfig.preset("ci", av_layers=(5,))
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        ModelConfig.preset("ci", n_layers=3)


def test_base_preset_has_the_papers_shape():
    cfg = ModelConfig.preset("base")
    assert (cfg.vision_layers, cfg.vision_width, cfg.text_width, cfg.num_frames, cfg.context_length,
            cfg.patch_size, cfg.image_size) == (12, 768, 512, 32, 64, 32, 224)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_av_layers_subset_and_save_load_roundtrip(tmp_path):
    model = make("eclipse", av_layers=(1,))
    assert list(model.av_blocks.keys()) == ["1"]
    model.save_pretrained(tmp_path / "m")
    again = el.ECLIPSE.from_pretrained(tmp_path / "m")
    assert again.config == model.config
    for (n, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(a, b, msg=n)


# ------------------------------------------------------------------ attention pieces
def test_attention_weights_is_eq1_softmax_used_by_both_written_out_attentions():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
    mask = torch.rand(2, 1, 5, 5, generator=g) > 0.4
    mask[0, 0, 1] = False                                   # a query row with no key at all
    scores = q @ k.transpose(-2, -1) / 8 ** 0.5
    assert torch.equal(attention_weights(q, k), scores.softmax(-1))
    w = attention_weights(q, k, mask)
    assert torch.equal(w[0, :, 1], torch.zeros(3, 5))
    some_key = mask.any(-1).expand(2, 3, 5)
    torch.testing.assert_close(w.sum(-1)[some_key], torch.ones(int(some_key.sum())))
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    assert torch.equal(weights, w) and torch.equal(out, w @ v)


def test_single_audio_key_shortcut_equals_the_general_path_and_the_old_outputs():
    model = make("eclipse")
    block = model.av_blocks["0"]
    with torch.no_grad():
        for p in (block.a2v_proj.weight, block.a2v_proj.bias):
            p.normal_(0, 0.2, generator=torch.Generator().manual_seed(2))
        g = torch.Generator().manual_seed(4)
        video, audio = torch.randn(6, 17, 64, generator=g), torch.randn(6, 1, 64, generator=g)
        vn, an = block.norm_video(video), block.norm_audio(audio)
        mask = torch.tensor([[1.], [0.], [1.], [1.], [0.], [1.]])
        attn = block.a2v_attn
        for m in (None, mask):
            fast = a2v_attention(attn, vn, an, m, proj=block.a2v_proj)
            general, _ = a2v_attention(attn, vn, an, m, need_weights=True, proj=block.a2v_proj)
            assert fast.shape == general.shape == (6, 17, 64)
            torch.testing.assert_close(fast, general, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(a2v_attention(attn, vn, an, m), attn(vn, an, mask=None if m is None
                                       else (m > 0)[:, None, None, :]), atol=1e-6, rtol=1e-5)
        # bit-identical to the shortcut AudioVisualBlock took before it moved into a2v_attention
        old = block.a2v_proj(attn.out_proj(attn.v_proj(an))).expand(-1, 17, -1)
        assert torch.equal(a2v_attention(attn, vn, an, torch.ones(6, 1), proj=block.a2v_proj), old)
        dv, _, _ = block(video, audio, mask)
        assert torch.equal(dv, old * mask[:, :, None])


# ------------------------------------------------------------------ text length
def test_padding_beyond_context_length_is_cut_and_real_tokens_are_not():
    model = make("none", context_length=64).eval()
    texts = ["a dog barks", "First a cow moos off screen, then a red square slides in."]
    ids77, mask77 = el.tokenize(texts)                    # CLIP's default 77
    ids64, mask64 = model.tokenize(texts)
    assert ids64.shape == (2, 64)
    assert torch.equal(ids64, el.tokenize(texts, context_length=64)[0])
    assert torch.equal(mask64, el.tokenize(texts, context_length=64)[1])
    with torch.no_grad():
        assert torch.equal(model.encode_text(ids77, mask77), model.encode_text(ids64, mask64))
        assert torch.equal(model.text_features(ids77, mask77).mask, mask64)
    long_ids, long_mask = el.tokenize(["a" + " very" * 70 + " long caption"])
    assert int(long_mask.sum()) == 75
    with pytest.raises(ValueError, match=r"text has 75 real tokens \(attention_mask 1\) but context_length is 64"):
        model.encode_text(long_ids, long_mask)
    with pytest.raises(ValueError, match="text has 77 tokens .*context_length is 64"):
        model.encode_text(ids77)                           # no mask: every position counts


def test_bad_video_inputs_are_named_errors_and_other_float_dtypes_work():
    cfg = ModelConfig.preset("ci")
    model = el.ECLIPSE(cfg).eval()
    frames, audio, ids, mask = inputs(cfg)
    with torch.no_grad():
        ref = model.encode_video(frames, audio)
        # float64 or fp16 frames are cast to the weights' dtype instead of a dtype clash
        torch.testing.assert_close(model.encode_video(frames.double(), audio), ref)
        assert model.encode_video(frames.half(), audio).dtype == ref.dtype
        with pytest.raises(ValueError, match="empty batch"):
            model.encode_video(frames[:0], audio[:0])
        with pytest.raises(ValueError, match="empty batch"):
            model.encode_text(ids[:0], mask[:0])
        nan_frames = frames.clone()
        nan_frames[1, 2, 0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match="frames hold NaN or inf"):
            model.encode_video(nan_frames, audio)
        inf_audio = audio.clone()
        inf_audio[0, 0, 0] = float("inf")
        with pytest.raises(ValueError, match="audio hold NaN or inf"):
            model.encode_video(frames, inf_audio)
        with pytest.raises(ValueError, match="clip_normalize"):
            model.encode_video((frames * 0).to(torch.uint8), audio)
