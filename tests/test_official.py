"""Checkpoints in the authors' naming load, and our forward equals a plain-torch transcription of
their per-layer steps (GenjiB/ECLIPSE ``modules/module_clip.py``, ``ResidualAttentionBlock``) with
random, non-zero AV projections — so the AV block is checked beyond initialisation."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import eclipse_lite as el

W, LAYERS, TW, TLAYERS, PATCH, IMAGE, CTX, EMBED, ADIM = 128, 2, 128, 2, 8, 32, 77, 32, 16


def official_state_dict(seed=0, av=True):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, std=0.05):
        return torch.randn(*shape, generator=g) * std

    def ln(prefix, width):
        return {f"{prefix}.weight": 1 + r(width, std=0.1), f"{prefix}.bias": r(width, std=0.1)}

    def mha(prefix, width):
        return {f"{prefix}.in_proj_weight": r(3 * width, width, std=width ** -0.5),
                f"{prefix}.in_proj_bias": r(3 * width), f"{prefix}.out_proj.weight": r(width, width),
                f"{prefix}.out_proj.bias": r(width)}

    def block(prefix, width, with_av):
        sd = {**mha(f"{prefix}.attn", width), **ln(f"{prefix}.ln_1", width), **ln(f"{prefix}.ln_2", width),
              f"{prefix}.mlp.c_fc.weight": r(4 * width, width), f"{prefix}.mlp.c_fc.bias": r(4 * width),
              f"{prefix}.mlp.c_proj.weight": r(width, 4 * width), f"{prefix}.mlp.c_proj.bias": r(width)}
        if with_av:
            for name in ("vis_audio_attn", "audio_vis_attn", "audio_a_attn"):
                sd.update(mha(f"{prefix}.{name}", width))
            for name in ("vis_audio_ln_1", "audio_vis_ln_1", "audio_a_ln_1"):
                sd.update(ln(f"{prefix}.{name}", width))
            for name in ("vis_audio_fc", "audio_vis_fc", "audio_a_fc"):  # non-zero: trained
                sd[f"{prefix}.{name}.weight"] = r(width, width, std=0.2)
                sd[f"{prefix}.{name}.bias"] = r(width, std=0.2)
        return sd

    grid = IMAGE // PATCH
    sd = {"clip.visual.conv1.weight": r(W, 3, PATCH, PATCH), "clip.visual.class_embedding": r(W),
          "clip.visual.positional_embedding": r(grid * grid + 1, W), **ln("clip.visual.ln_pre", W),
          **ln("clip.visual.ln_post", W), "clip.visual.proj": r(W, EMBED, std=W ** -0.5),
          "clip.visual.positional_audio": r(441, W),  # unused extras of the released model
          "clip.token_embedding.weight": r(49408, TW, std=0.02), "clip.positional_embedding": r(CTX, TW),
          **ln("clip.ln_final", TW), "clip.text_projection": r(TW, EMBED, std=TW ** -0.5),
          "clip.logit_scale": torch.tensor(4.6)}
    if av:
        sd["clip.visual.mlp_audio.weight"] = r(W, ADIM, std=0.3)
        sd["clip.visual.mlp_audio.bias"] = r(W)
    for i in range(LAYERS):
        sd.update(block(f"clip.visual.transformer.resblocks.{i}", W, av))
    for i in range(TLAYERS):
        sd.update(block(f"clip.transformer.resblocks.{i}", TW, False))
    return sd


# ------------------------------------------------------------ their forward, transcribed
def _mha(sd, prefix, width):
    m = nn.MultiheadAttention(width, width // 64)
    m.load_state_dict({k.split(prefix + ".")[1]: v for k, v in sd.items() if k.startswith(prefix + ".")})
    return m.eval()


def _ln(sd, prefix):
    return lambda x: F.layer_norm(x, x.shape[-1:], sd[f"{prefix}.weight"], sd[f"{prefix}.bias"])


def _lin(sd, prefix):
    return lambda x: F.linear(x, sd[f"{prefix}.weight"], sd[f"{prefix}.bias"])


def _mlp(sd, prefix):
    def f(x):
        h = _lin(sd, f"{prefix}.c_fc")(x)
        return _lin(sd, f"{prefix}.c_proj")(h * torch.sigmoid(1.702 * h))
    return f


def their_frame_features(sd, frames, audio, dual=1, reverse_norm=0, time_cross=0):
    """VisualTransformer.forward + encode_image of the released code, seq-first ([L, N, D])."""
    b, t = frames.shape[:2]
    x = F.conv2d(frames.flatten(0, 1), sd["clip.visual.conv1.weight"], stride=PATCH)
    x = x.flatten(2).permute(0, 2, 1)
    cls = sd["clip.visual.class_embedding"] + torch.zeros(x.shape[0], 1, W)
    x = torch.cat([cls, x], 1) + sd["clip.visual.positional_embedding"]
    x = _ln(sd, "clip.visual.ln_pre")(x).permute(1, 0, 2)
    audio = audio.unsqueeze(2)  # b t p d, p = 1
    if time_cross:
        audio = audio.unsqueeze(1).expand(b, t, t, 1, ADIM).squeeze(3)  # b c t d
    x_a = _lin(sd, "clip.visual.mlp_audio")(audio.reshape(b * t, -1, ADIM).permute(1, 0, 2))
    for i in range(LAYERS):
        p = f"clip.visual.transformer.resblocks.{i}"
        xv, xa = _ln(sd, f"{p}.vis_audio_ln_1")(x), _ln(sd, f"{p}.audio_vis_ln_1")(x_a)
        va, av = _mha(sd, f"{p}.vis_audio_attn", W), _mha(sd, f"{p}.audio_vis_attn", W)
        if dual:
            if reverse_norm:
                weight = va(xa, xv, xa.repeat(x.shape[0], 1, 1), need_weights=True)[1]
                res_x = torch.bmm(weight.permute(0, 2, 1), xa.permute(1, 0, 2)).permute(1, 0, 2)
                x_res = _lin(sd, f"{p}.vis_audio_fc")(res_x)
            else:
                x_res = _lin(sd, f"{p}.vis_audio_fc")(va(xv, xa, xa)[0])
            x_a = x_a + _lin(sd, f"{p}.audio_vis_fc")(av(xa, xv, xv)[0])
            x = x + x_res
        else:
            x = x + _lin(sd, f"{p}.vis_audio_fc")(va(xv, xa, xa)[0])
        x = x + _mha(sd, f"{p}.attn", W)(*([_ln(sd, f"{p}.ln_1")(x)] * 3), need_weights=False)[0]
        x = x + _mlp(sd, f"{p}.mlp")(_ln(sd, f"{p}.ln_2")(x))
    x = x.permute(1, 0, 2)
    feats = _ln(sd, "clip.visual.ln_post")(x) @ sd["clip.visual.proj"]
    return F.normalize(feats[:, 0], dim=-1).view(b, t, -1)


def their_text_features(sd, ids):
    x = sd["clip.token_embedding.weight"][ids]
    pos = sd["clip.positional_embedding"][: ids.shape[1]]
    if pos.shape[0] != ids.shape[1]:
        pos = F.interpolate(pos.unsqueeze(0).permute(0, 2, 1), ids.shape[1], mode="linear").squeeze(0).permute(1, 0)
    x = (x + pos).permute(1, 0, 2)
    n = ids.shape[1]
    causal = torch.full((n, n), float("-inf")).triu_(1)
    for i in range(TLAYERS):
        p = f"clip.transformer.resblocks.{i}"
        h = _ln(sd, f"{p}.ln_1")(x)
        x = x + _mha(sd, f"{p}.attn", TW)(h, h, h, need_weights=False, attn_mask=causal)[0]
        x = x + _mlp(sd, f"{p}.mlp")(_ln(sd, f"{p}.ln_2")(x))
    x = _ln(sd, "clip.ln_final")(x.permute(1, 0, 2)) @ sd["clip.text_projection"]
    return F.normalize(x[torch.arange(ids.shape[0]), ids.argmax(-1)], dim=-1)


@pytest.mark.parametrize("flags", [{}, {"yb_dual": 0}, {"yb_reverse_norm": 1},
                                   {"yb_time_cross_audio": 1}])
def test_forward_equals_the_released_code(flags, tmp_path):
    sd = official_state_dict()
    path = tmp_path / "pytorch_model.bin.1"
    torch.save(sd, path)
    model = el.ECLIPSE.from_official(path, **flags).eval()
    cfg = model.config
    assert (cfg.vision_width, cfg.vision_heads, cfg.vision_layers, cfg.image_size, cfg.audio_dim,
            cfg.layer_order) == (W, 2, LAYERS, IMAGE, ADIM, "released")
    g = torch.Generator().manual_seed(5)
    frames, audio = torch.randn(2, 3, 3, IMAGE, IMAGE, generator=g), torch.randn(2, 3, ADIM, generator=g)
    with torch.no_grad():
        ours = model.video_features(frames, audio).frame_emb
        theirs = their_frame_features(sd, frames, audio, dual=flags.get("yb_dual", 1),
                                      reverse_norm=flags.get("yb_reverse_norm", 0),
                                      time_cross=flags.get("yb_time_cross_audio", 0))
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)
        # the AV blocks really matter here: the video-only path differs
        assert not torch.allclose(ours, model.video_features(frames, None).frame_emb, atol=1e-3)


@pytest.mark.parametrize("context_length", [64, 77, 128])
def test_text_equals_the_released_code(context_length):
    sd = official_state_dict()
    model = el.ECLIPSE.from_official(sd, context_length=context_length).eval()
    ids, mask = el.tokenize(["a dog barking loudly", "then a red square slides in while a bell rings"],
                            context_length=context_length)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(ids, mask), their_text_features(sd, ids),
                                   atol=2e-5, rtol=1e-4)


def test_video_only_checkpoint_and_clear_errors():
    sd = official_state_dict(av=False)
    model = el.ECLIPSE.from_official(sd)
    assert model.config.fusion == "none"
    with pytest.raises(ValueError, match="no audiovisual blocks"):
        el.ECLIPSE.from_official(sd, fusion="eclipse")
    with pytest.raises(KeyError, match="not an ECLIPSE/CLIP4Clip checkpoint"):
        el.ECLIPSE.from_official({"foo": torch.zeros(1)})
    with pytest.raises(FileNotFoundError):
        el.ECLIPSE.from_official("/nonexistent/ckpt.bin")


def test_ddp_prefixes_are_stripped():
    sd = {"module." + k: v for k, v in official_state_dict().items()}
    assert el.ECLIPSE.from_official(sd).config.fusion == "eclipse"
