"""Tests for eclipse_lite.audio: windows around frames, front ends, encoders, weight loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio
from scipy import signal

from eclipse_lite.audio import (
    audio_projection,
    audio_windows,
    encode_windows,
    spectrogram_for_display,
)
from eclipse_lite.audio_encoders import (
    AudioEncoder,
    LogMel,
    PrecomputedAudio,
    ResNet18Audio,
    TinyAudioCNN,
    VGGSoundSpectrogram,
    build_audio_encoder,
)
from eclipse_lite.config import ModelConfig

SR = 1000  # a low rate keeps the window tests tiny; the code is rate-agnostic


# ------------------------------------------------------------------------------ windows
@pytest.mark.parametrize("window_s", [1.0, 0.501])
def test_impulse_lands_in_window_centre(window_s):
    times = np.array([0.75, 1.5, 2.25, 3.9])
    wav = torch.zeros(5 * SR)
    for k, t in enumerate(times):
        wav[int(round(t * SR))] = k + 1.0
    windows, mask = audio_windows(wav, times, SR, window_s)
    width = round(window_s * SR)
    assert windows.shape == (4, width) and mask.shape == (4,)
    assert torch.equal(mask, torch.ones(4))
    for k in range(4):
        assert windows[k, width // 2] == k + 1.0
        # the window holds its own impulse plus any neighbour within half a window, nothing else
        others = [j for j in range(4) if j != k and abs(times[j] - times[k]) < window_s / 2]
        assert windows[k].abs().sum() == pytest.approx(k + 1.0 + sum(j + 1.0 for j in others))


def test_edges_are_zero_padded_and_masked():
    n = 3 * SR
    wav = torch.arange(1, n + 1, dtype=torch.float32)      # sample i holds i + 1, never 0
    times = torch.tensor([0.1, 2.95, -5.0, 10.0, -0.5, 3.5])
    windows, mask = audio_windows(wav, times, SR, 1.0)
    # frame at 0.1 s: start = 100 - 500 = -400 → 400 zeros, then samples 0..599
    assert torch.equal(windows[0, :400], torch.zeros(400))
    assert torch.equal(windows[0, 400:], wav[:600])
    # frame at 2.95 s: start 2450 → samples 2450..2999, then 450 zeros
    assert torch.equal(windows[1, :550], wav[2450:])
    assert torch.equal(windows[1, 550:], torch.zeros(450))
    # -5 s and 10 s: wholly outside; -0.5 s and 3.5 s: the window ends / starts exactly at the edge
    assert torch.equal(windows[2:], torch.zeros(4, 1000))
    assert mask.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    # one sample of overlap is enough
    w, m = audio_windows(wav, [3.499], SR, 1.0)
    assert m.item() == 1.0 and w[0, 0] == wav[-1] and w[0, 1:].abs().sum() == 0


def test_empty_waveform_gives_zero_windows_and_mask():
    windows, mask = audio_windows(torch.zeros(0), [0.0, 1.0], SR, 0.5)
    assert windows.shape == (2, 500) and not windows.any()
    assert mask.tolist() == [0.0, 0.0]


def test_batch_and_lengths_match_single_rows():
    torch.manual_seed(0)
    n = 4 * SR
    wav = torch.randn(3, n)
    lengths = torch.tensor([n, n // 2, 0])
    wav_padded = wav.clone()
    wav_padded[1, n // 2:] = 123.0                            # padding content must not leak in
    times = torch.tensor([[0.2, 1.0, 2.2, 3.9],
                          [0.2, 1.0, 2.2, 3.9],
                          [0.5, 1.5, 2.5, 3.5]])
    windows, mask = audio_windows(wav_padded, times, SR, 0.8, lengths=lengths)
    assert windows.shape == (3, 4, 800) and mask.shape == (3, 4)
    for b in range(3):
        w_b, m_b = audio_windows(wav[b, :int(lengths[b])], times[b], SR, 0.8)
        assert torch.equal(windows[b], w_b) and torch.equal(mask[b], m_b)
    assert mask[1].tolist() == [1.0, 1.0, 1.0, 0.0]           # 2.2 s reaches back into 1.8–2.0 s
    assert mask[2].tolist() == [0.0] * 4 and not windows[2].any()
    assert (windows[1] != 123.0).all()
    # times [T] are shared by every row
    shared, _ = audio_windows(wav, times[0], SR, 0.8)
    assert torch.equal(shared[2], audio_windows(wav[2], times[0], SR, 0.8)[0])


def test_released_placement_matches_authors_linspace():
    torch.manual_seed(0)
    n, window_s, frames = 30 * SR + 7, 10.0, 7
    wav = torch.randn(n, dtype=torch.float64)
    windows, mask = audio_windows(wav, np.linspace(0, 30, frames), SR, window_s,
                                  placement="released")
    starts = np.linspace(0, n - SR * (window_s + 0.1), num=frames, dtype=int)
    width = int(SR * window_s)
    expected = torch.stack([wav[s:s + width] for s in starts])
    assert torch.equal(windows, expected) and torch.equal(mask, torch.ones(frames))
    assert windows.dtype == torch.float64


@pytest.mark.parametrize("n", [5 * SR, 10 * SR + 50, 400])
def test_released_placement_tiles_short_audio(n):
    torch.manual_seed(1)
    wav = torch.randn(n)
    windows, mask = audio_windows(wav, [1.0, 2.0, 3.0], SR, 10.0, placement="released")
    tiled = np.tile(wav.numpy(), 10)[:10 * SR]               # the released loader's fallback
    expected = np.zeros(10 * SR, dtype=np.float32)
    expected[:len(tiled)] = tiled
    for t in range(3):
        assert np.array_equal(windows[t].numpy(), expected)
    assert mask.tolist() == [1.0, 1.0, 1.0]


def test_released_placement_batch_with_lengths():
    torch.manual_seed(2)
    wav = torch.randn(2, 25 * SR)
    lengths = [25 * SR, 4 * SR]
    windows, mask = audio_windows(wav, torch.zeros(2, 5), SR, 10.0, placement="released",
                                  lengths=lengths)
    for b in range(2):
        single, _ = audio_windows(wav[b, :lengths[b]], torch.zeros(5), SR, 10.0,
                                  placement="released")
        assert torch.equal(windows[b], single)
    empty_w, empty_m = audio_windows(torch.zeros(0), [0.0, 1.0], SR, 2.0, placement="released")
    assert not empty_w.any() and empty_m.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("kwargs, message", [
    (dict(window_s=0.0), "window_s"),
    (dict(window_s=-1.0), "window_s"),
    (dict(window_s=float("nan")), "window_s"),
    (dict(sample_rate=0), "sample_rate"),
    (dict(sample_rate=float("inf")), "sample_rate"),
    (dict(frame_times=[0.0, float("nan")]), "frame_times"),
    (dict(frame_times=[float("inf")]), "frame_times"),
    (dict(frame_times=[[0.0, 1.0]]), "frame_times"),
    (dict(waveform=torch.zeros(1, 2, 3)), "waveform"),
    (dict(waveform=torch.zeros(100, dtype=torch.int16)), "floating"),
    (dict(waveform=torch.tensor([0.0, float("nan")])), "NaN"),
    (dict(waveform=torch.tensor([[0.0, 1.0], [float("-inf"), 0.0]])), "infinite"),
    (dict(lengths=[5000]), "lengths"),
    (dict(lengths=[-1]), "lengths"),
    (dict(lengths=[1.5]), "integer"),
    (dict(placement="start"), "placement"),
    (dict(window_s=1e-5), "shorter than one sample"),
])
def test_bad_window_arguments_raise(kwargs, message):
    args = dict(waveform=torch.zeros(2000), frame_times=[0.5, 1.0], sample_rate=SR, window_s=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        audio_windows(**args)


def test_batch_shape_mismatches_raise():
    with pytest.raises(ValueError, match="frame_times"):
        audio_windows(torch.zeros(2, 100), torch.zeros(3, 4), SR, 0.05)
    with pytest.raises(ValueError, match="lengths"):
        audio_windows(torch.zeros(2, 100), torch.zeros(4), SR, 0.05, lengths=[100])


# ------------------------------------------------------------------------------ front ends
def test_logmel_shapes_and_normalisation():
    cfg = ModelConfig.preset("ci")
    front = LogMel(cfg.sample_rate, cfg.n_mels)
    assert (front.n_fft, front.win_length, front.hop_length) == (512, 400, 160)
    width = int(cfg.audio_window_s * cfg.sample_rate)
    torch.manual_seed(0)
    x = torch.randn(2, 3, width) * torch.linspace(0.01, 1.0, width)
    spec = front(x)
    assert spec.shape == (2, 3, cfg.n_mels, front.num_frames(width)) == (2, 3, 32, 201)
    flat = spec.reshape(6, -1)
    assert torch.allclose(flat.mean(1), torch.zeros(6), atol=1e-4)
    assert torch.allclose(flat.std(1, correction=0), torch.ones(6), atol=1e-4)
    # each clip is normalised on its own: scaling one clip changes nothing
    assert torch.allclose(front(x[0, 0] * 7.0), spec[0, 0], atol=1e-3)


def test_logmel_silence_gives_finite_zeros():
    front = LogMel(16000, 64)
    spec = front(torch.zeros(2, 16000))
    assert spec.shape == (2, 64, 101)
    assert torch.isfinite(spec).all() and not spec.any()
    with pytest.raises(ValueError, match="at least"):
        front(torch.zeros(100))


def test_vggsound_spectrogram_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.2, 1.2, size=16000 + 333)               # also exercises the clipping
    clipped = np.clip(x, -1.0, 1.0)
    _, _, ref = signal.spectrogram(clipped, 16000, nperseg=512, noverlap=353)
    ref = np.log(ref + 1e-7)
    ref = (ref - ref.mean()) / (ref.std() + 1e-9)
    front = VGGSoundSpectrogram(16000)
    out = front(torch.tensor(x, dtype=torch.float32)).numpy()
    assert out.shape == ref.shape == (257, front.num_frames(len(x)))
    np.testing.assert_allclose(out, ref, atol=2e-3)
    assert VGGSoundSpectrogram().num_frames(160000) == 1004       # the paper's 10 s input
    silent = front(torch.zeros(3, 4000))
    assert torch.isfinite(silent).all() and not silent.any()


# ------------------------------------------------------------------------------ encoders
@pytest.mark.parametrize("preset", ["ci", "tiny", "base"])
def test_every_encoder_output_shape(preset):
    torch.manual_seed(0)
    cfg = ModelConfig.preset(preset)
    width = int(round(cfg.audio_window_s * cfg.sample_rate))
    windows = torch.randn(1, 2, width) * 0.1
    for kind in ("cnn", "resnet18", "precomputed"):
        dim = 512 if kind == "resnet18" else cfg.audio_dim
        kcfg = cfg.replace(audio_encoder=kind, audio_dim=dim)
        enc = build_audio_encoder(kcfg).eval()
        assert enc.out_dim == dim
        with torch.no_grad():
            if kind == "precomputed":
                feats = torch.randn(1, 2, dim)
                assert torch.equal(enc(feats), feats)
            else:
                out = enc(windows)
                assert out.shape == (1, 2, dim) and torch.isfinite(out).all()


def test_vggsound_frontend_with_resnet18():
    cfg = ModelConfig.preset("ci", audio_encoder="resnet18", audio_dim=512)
    enc = build_audio_encoder(cfg, frontend="vggsound").eval()
    assert isinstance(enc.frontend, VGGSoundSpectrogram)
    with torch.no_grad():
        assert enc(torch.randn(3, 32000) * 0.1).shape == (3, 512)


def test_tiny_cnn_is_small_and_passes_gradients():
    cfg = ModelConfig.preset("tiny")
    enc = build_audio_encoder(cfg)
    n_params = sum(p.numel() for p in enc.parameters())
    assert 100_000 <= n_params <= 300_000
    ci = ModelConfig.preset("ci")
    enc = build_audio_encoder(ci).train()
    torch.manual_seed(0)
    out = enc(torch.randn(2, 2, int(ci.audio_window_s * ci.sample_rate)))
    out.square().mean().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_encoder_is_deterministic_under_seed():
    cfg = ModelConfig.preset("ci")
    x = torch.randn(2, 3, int(cfg.audio_window_s * cfg.sample_rate), generator=torch.Generator()
                    .manual_seed(5))
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        enc = build_audio_encoder(cfg).eval()
        with torch.no_grad():
            outs.append(enc(x))
    assert torch.equal(outs[0], outs[1])
    torch.manual_seed(124)
    with torch.no_grad():
        assert not torch.allclose(build_audio_encoder(cfg).eval()(x), outs[0])


def test_encoder_config_errors():
    with pytest.raises(ValueError, match="audio_dim=128"):
        build_audio_encoder(ModelConfig.preset("tiny", audio_encoder="resnet18"))
    with pytest.raises(ValueError, match="frontend"):
        build_audio_encoder(ModelConfig.preset("ci"), frontend="mfcc")
    with pytest.raises(ValueError, match="no front end"):
        build_audio_encoder(ModelConfig.preset("ci", audio_encoder="precomputed"),
                            frontend="logmel")
    pre = PrecomputedAudio(64)
    with pytest.raises(ValueError, match="audio_dim=64"):
        pre(torch.zeros(2, 3, 32))
    with pytest.raises(ValueError, match="NaN"):
        pre(torch.full((2, 64), float("nan")))
    with pytest.raises(ValueError, match=r"\[N, M, F\]"):
        TinyAudioCNN(16)(torch.zeros(2, 1, 32, 10))


def test_encode_windows_masks_and_chunks():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("ci")
    enc = build_audio_encoder(cfg).eval()
    wav = torch.randn(2, 6 * cfg.sample_rate) * 0.1
    times = torch.tensor([[0.5, 2.0, 4.0, 9.0], [-3.0, 1.0, 3.0, 5.5]])
    windows, mask = audio_windows(wav, times, cfg.sample_rate, cfg.audio_window_s)
    with torch.no_grad():
        emb = encode_windows(enc, windows, mask)
        emb_small = encode_windows(enc, windows, mask, batch_size=1)
        direct = enc(windows)
    assert emb.shape == (2, 4, cfg.audio_dim)
    assert mask.tolist() == [[1, 1, 1, 0], [0, 1, 1, 1]]
    assert not emb[0, 3].any() and not emb[1, 0].any()
    keep = mask.bool()
    assert torch.allclose(emb[keep], direct[keep], atol=1e-5)
    assert torch.allclose(emb_small, emb, atol=1e-5)
    # gradients flow when the caller allows them
    enc.train()
    encode_windows(enc, windows, mask, batch_size=3).sum().backward()
    assert enc.backbone.proj.weight.grad is not None
    # nothing valid → zeros of the right width
    none = encode_windows(enc, windows, torch.zeros(2, 4))
    assert none.shape == (2, 4, cfg.audio_dim) and not none.any()
    with pytest.raises(ValueError, match="mask"):
        encode_windows(enc, windows, torch.ones(2, 3))
    with pytest.raises(ValueError, match="batch_size"):
        encode_windows(enc, windows, mask, batch_size=0)


def test_encode_windows_precomputed():
    feats = torch.randn(2, 3, 16)
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    out = encode_windows(PrecomputedAudio(16), feats, mask)
    assert torch.equal(out, feats * mask[..., None])


def test_audio_projection():
    proj = audio_projection(64, 96)
    assert isinstance(proj, torch.nn.Linear) and proj.weight.shape == (96, 64)
    assert audio_projection(64, 96)(torch.zeros(2, 4, 64)).shape == (2, 4, 96)
    with pytest.raises(ValueError, match="positive"):
        audio_projection(0, 96)


def test_spectrogram_for_display():
    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    spec = spectrogram_for_display(tone, 16000, n_mels=40)
    assert isinstance(spec, np.ndarray) and spec.shape == (40, 101) and np.isfinite(spec).all()
    fbanks = torchaudio.functional.melscale_fbanks(257, 0.0, 8000.0, 40, 16000)   # [bins, mels]
    loudest = int(spec.mean(1).argmax())
    assert abs(int(fbanks[:, loudest].argmax()) * 16000 / 512 - 1000) < 100   # the 1 kHz band
    norm = spectrogram_for_display(tone, 16000, n_mels=40, normalize=True)
    assert abs(norm.mean()) < 1e-4
    with pytest.raises(ValueError, match="mono"):
        spectrogram_for_display(np.zeros((2, 16000), np.float32), 16000)


# ------------------------------------------------------------------------------ VGGSound weights
def _vggsound_checkpoint(model: ResNet18Audio, prefix: str = "audnet.") -> dict:
    state = {prefix + k: v.clone() for k, v in model.state_dict().items()}
    state[prefix + "fc.weight"] = torch.randn(309, 512)
    state[prefix + "fc.bias"] = torch.randn(309)
    return {"model_state_dict": state, "epoch": 10}


def _randomise_bn(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)


@pytest.mark.parametrize("prefix", ["audnet.", "module.audnet."])
def test_load_vggsound_release_naming(tmp_path, prefix):
    torch.manual_seed(0)
    source = ResNet18Audio()
    _randomise_bn(source)
    path = tmp_path / "H.pth.tar"
    torch.save(_vggsound_checkpoint(source, prefix), path)
    torch.manual_seed(1)
    target = ResNet18Audio()
    ignored = target.load_vggsound(str(path))
    assert ignored == ["fc.weight", "fc.bias"]
    x = torch.randn(2, 32, 40)
    with torch.no_grad():
        assert torch.equal(source.eval()(x), target.eval()(x))


def test_load_torchvision_naming_with_rgb_stem(tmp_path):
    torch.manual_seed(0)
    source = ResNet18Audio()
    state = {k: v.clone() for k, v in source.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    rgb = torch.randn(64, 3, 7, 7)
    state["conv1.weight"] = rgb
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    target = ResNet18Audio()
    target.load_vggsound(str(path))
    assert torch.allclose(target.conv1.weight, rgb.sum(1, keepdim=True))
    assert torch.equal(target.layer3[0].downsample[0].weight, source.layer3[0].downsample[0].weight)


def test_load_vggsound_errors(tmp_path):
    model = ResNet18Audio()
    good = _vggsound_checkpoint(model)["model_state_dict"]

    def save(obj, name):
        path = tmp_path / name
        torch.save(obj, path)
        return str(path)

    missing = {k: v for k, v in good.items() if "layer4.1.bn2" not in k}
    with pytest.raises(ValueError, match="missing keys.*layer4.1.bn2"):
        model.load_vggsound(save(missing, "missing.pth"))
    extra = dict(good, **{"audnet.layer5.0.conv1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected keys.*layer5"):
        model.load_vggsound(save(extra, "extra.pth"))
    vlad = dict(good, **{"audnet.avgpool.centroids": torch.zeros(16, 512)})
    with pytest.raises(ValueError, match="NetVLAD"):
        model.load_vggsound(save(vlad, "I.pth.tar"))
    shaped = dict(good, **{"audnet.layer1.0.conv1.weight": torch.zeros(64, 64, 5, 5)})
    before = model.layer4[1].conv2.weight.clone()
    with pytest.raises(ValueError, match="shapes.*layer1.0.conv1.weight"):
        model.load_vggsound(save(shaped, "shape.pth"))
    assert torch.equal(model.layer4[1].conv2.weight, before)     # nothing half-loaded
    with pytest.raises(ValueError, match="weights_only"):
        model.load_vggsound(save({"model_state_dict": good, "args": _Opaque()}, "pickled.pth"))
    with pytest.raises(ValueError, match="state dict"):
        model.load_vggsound(save([1, 2, 3], "list.pth"))


class _Opaque:
    """An arbitrary object that weights_only loading must refuse."""


def test_audio_encoder_load_vggsound_checks_frontend(tmp_path):
    path = tmp_path / "H.pth.tar"
    torch.save(_vggsound_checkpoint(ResNet18Audio()), path)
    cfg = ModelConfig.preset("ci", audio_encoder="resnet18", audio_dim=512)
    with pytest.raises(ValueError, match="frontend='vggsound'"):
        build_audio_encoder(cfg).load_vggsound(str(path))
    assert build_audio_encoder(cfg).load_vggsound(str(path), allow_frontend_mismatch=True)
    assert build_audio_encoder(cfg, frontend="vggsound").load_vggsound(str(path))
    with pytest.raises(ValueError, match="ResNet18Audio backbone"):
        build_audio_encoder(ModelConfig.preset("ci")).load_vggsound(str(path))
    assert isinstance(build_audio_encoder(cfg), AudioEncoder)
