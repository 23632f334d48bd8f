"""Audio for ECLIPSE: waveform → one window per frame → spectrogram → one embedding per frame.

Paper, Sec. 3.1 "Audio Embeddings" and Sec. 3.4: for each of the ``T`` sampled video frames, a window
of audio (10 s by default) *centred on that frame* is turned into a spectrogram ``Z_t`` and an audio
encoder maps it to ``A_t^(0) ∈ R^d``; the ``T`` embeddings ``A^(0) ∈ R^{T×d}`` enter the
audiovisual backbone after a ``Linear(d, width)`` (the released code's ``mlp_audio``).

Pipeline and the names it uses (shapes: ``B`` videos, ``T`` frames, ``W`` samples per window,
``M`` spectrogram bins, ``F`` spectrogram frames, ``A`` audio embedding width)::

    windows, mask = audio_windows(waveform [B, N], frame_times [B, T], sr, window_s)  # [B,T,W], [B,T]
    encoder = build_audio_encoder(cfg)                  # AudioEncoder(LogMel, TinyAudioCNN) ...
    audio = encode_windows(encoder, windows, mask)      # [B, T, A], zero where mask == 0
    tokens = audio_projection(cfg.audio_dim, cfg.vision_width)(audio)                  # [B, T, width]

Front ends (``[..., W] → [..., M, F]``):
  * ``LogMel`` — log-mel spectrogram (25 ms / 10 ms), per-clip z-normalised; ``ci``/``tiny``.
  * ``VGGSoundSpectrogram`` — the input the paper's VGGSound ResNet-18 was trained on
    (``scipy.signal.spectrogram(nperseg=512, noverlap=353)``, log, per-clip z-norm), needed to
    reproduce the paper's features from the released VGGSound weights.

Backbones (``[N, M, F] → [N, A]``): ``TinyAudioCNN`` (small presets) and ``ResNet18Audio`` (the
paper's encoder, with a loader for the VGGSound release). ``PrecomputedAudio`` passes stored
per-frame embeddings through (the paper precomputes and freezes them).
"""
from __future__ import annotations

import math
import pickle
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from eclipse_lite.config import ModelConfig

__all__ = [
    "audio_windows",
    "LogMel",
    "VGGSoundSpectrogram",
    "TinyAudioCNN",
    "ResNet18Audio",
    "PrecomputedAudio",
    "AudioEncoder",
    "build_audio_encoder",
    "encode_windows",
    "audio_projection",
    "spectrogram_for_display",
]

ArrayLike = Union[Tensor, np.ndarray, Sequence[float], float]
PLACEMENTS = ("centred", "released")
FRONTENDS = ("logmel", "vggsound")
# The released loader only slides windows over audio longer than the window plus this margin (s).
RELEASED_MARGIN_S = 0.1


# ---------------------------------------------------------------------------------------------
# windows around frames
# ---------------------------------------------------------------------------------------------
def _positive_number(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _as_waveform(waveform: ArrayLike) -> Tensor:
    wav = waveform if isinstance(waveform, Tensor) else torch.as_tensor(np.asarray(waveform))
    if not wav.is_floating_point():
        raise ValueError(f"waveform must be a floating-point tensor (samples in [-1, 1]), got dtype "
                         f"{wav.dtype}; convert integer PCM first, e.g. x.float() / 32768")
    if wav.dim() not in (1, 2):
        raise ValueError(f"waveform must have shape [N] or [B, N], got {tuple(wav.shape)}")
    if wav.numel() and not _all_finite(wav):
        raise ValueError("waveform contains NaN or infinite samples")
    return wav


def _all_finite(x: Tensor) -> bool:
    """True when no element of the non-empty ``x`` is NaN or ±inf. One min/max pass (NaN
    propagates through both): ~25x cheaper on the CPU than ``isfinite(x).all()``, which writes a
    bool tensor of ``x``'s size."""
    low, high = torch.aminmax(x)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def _as_times(frame_times: ArrayLike, batch: int, single: bool) -> Tensor:
    if isinstance(frame_times, Tensor):
        times = frame_times.detach().to("cpu", torch.float64)
    else:
        times = torch.as_tensor(np.asarray(frame_times, dtype=np.float64))
    if single and times.dim() != 1:
        raise ValueError(f"frame_times must have shape [T] for a waveform of shape [N], got "
                         f"{tuple(times.shape)}")
    if times.dim() == 1:
        times = times.unsqueeze(0).expand(batch, -1)
    elif times.dim() != 2 or times.shape[0] != batch:
        raise ValueError(f"frame_times must have shape [T] or [B={batch}, T], got "
                         f"{tuple(times.shape)}")
    if times.numel() and not bool(torch.isfinite(times).all()):
        bad = (~torch.isfinite(times)).nonzero()[0].tolist()
        raise ValueError(f"frame_times must be finite seconds; found {times[tuple(bad)].item()} "
                         f"at index {bad}")
    return times


def _as_lengths(lengths: Optional[ArrayLike], batch: int, n: int) -> Tensor:
    if lengths is None:
        return torch.full((batch,), n, dtype=torch.long)
    lens = torch.as_tensor(lengths.detach().cpu() if isinstance(lengths, Tensor) else lengths)
    if lens.is_floating_point() or lens.is_complex() or lens.dtype == torch.bool:
        raise ValueError(f"lengths must hold integer sample counts, got dtype {lens.dtype}")
    lens = lens.reshape(-1).long()
    if lens.numel() != batch:
        raise ValueError(f"lengths must have one entry per waveform row ({batch}), got "
                         f"{lens.numel()}")
    if bool(((lens < 0) | (lens > n)).any()):
        raise ValueError(f"lengths must lie in [0, {n}] (the waveform's last dimension), got "
                         f"{lens.tolist()}")
    return lens


def _released_starts(lengths: Tensor, num_windows: int, sample_rate: float,
                     window_s: float) -> Tuple[Tensor, Tensor]:
    """Window starts of the released loader, ``np.linspace(0, n - sr·(L+0.1), T, dtype=int)``.

    Returns ``(starts [B, T] long, slides [B] bool)``; rows too short to slide (``n ≤ sr·(L+0.1)``)
    get start 0 and ``slides = False``. numpy's linspace is reproduced exactly: ``i · step`` with
    ``step = stop / (T - 1)``, the last value set to ``stop``, then truncated toward zero.
    """
    stop = lengths.double() - sample_rate * (window_s + RELEASED_MARGIN_S)
    slides = lengths.double() > sample_rate * (window_s + RELEASED_MARGIN_S)
    stop = torch.where(slides, stop, torch.zeros_like(stop))
    idx = torch.arange(num_windows, dtype=torch.float64)
    if num_windows > 1:
        values = idx[None, :] * (stop[:, None] / (num_windows - 1))
        values[:, -1] = stop
    else:
        values = torch.zeros(len(lengths), num_windows, dtype=torch.float64)
    return values.trunc().long(), slides


def audio_windows(waveform: ArrayLike, frame_times: ArrayLike, sample_rate: float,
                  window_s: float, placement: str = "centred",
                  lengths: Optional[ArrayLike] = None) -> Tuple[Tensor, Tensor]:
    """Cut one window of audio per frame (paper Sec. 3.1: spectrograms "centered around each of
    T video frames").

    Args:
        waveform: mono samples, ``[N]`` or a padded batch ``[B, N]`` (float tensor or array).
        frame_times: the frames' times in seconds, ``[T]`` (shared by every row) or ``[B, T]``.
        sample_rate: samples per second of ``waveform``.
        window_s: window length in seconds; ``W = round(window_s · sample_rate)`` samples.
        placement: ``"centred"`` (default, the paper): window ``t`` covers samples
            ``[c_t - W//2, c_t - W//2 + W)`` with ``c_t = round(t · sample_rate)``, so the frame's
            own sample sits at index ``W // 2``; zeros where it runs past either edge.
            ``"released"``: the authors' loader, which ignores the frame times: starts
            ``np.linspace(0, n - sr·(window_s + 0.1), T, dtype=int)`` when the audio is longer
            than ``window_s + 0.1`` s; otherwise every window is the audio tiled
            ``int(window_s)`` times and cut to ``W`` (zero-padded if still shorter).
        lengths: valid samples per row of a padded batch ``[B]`` (default: all ``N``); samples
            at or past a row's length are treated as absent (zeros, not audio).

    Returns:
        ``(windows, mask)``: ``windows`` ``[T, W]`` / ``[B, T, W]`` in the waveform's dtype and
        device; ``mask`` float ``[T]`` / ``[B, T]``: 1 where the window overlaps real audio at all,
        0 otherwise (empty audio, or a frame time whose window lies wholly outside the audio).
    """
    sample_rate = _positive_number("sample_rate", sample_rate)
    window_s = _positive_number("window_s", window_s)
    if placement not in PLACEMENTS:
        raise ValueError(f"placement={placement!r} is not one of {PLACEMENTS}")
    width = int(round(window_s * sample_rate))
    if width < 1:
        raise ValueError(f"window_s={window_s} at sample_rate={sample_rate} is shorter than one "
                         f"sample")
    wav = _as_waveform(waveform)
    single = wav.dim() == 1
    if single:
        wav = wav.unsqueeze(0)
        if lengths is not None and not isinstance(lengths, (Tensor, np.ndarray, list, tuple)):
            lengths = [lengths]
    batch, n = wav.shape
    times = _as_times(frame_times, batch, single)
    num_windows = times.shape[1]
    lens = _as_lengths(lengths, batch, n)

    # Window starts (in samples of the unpadded signal) and the overlap mask.
    if placement == "centred":
        centres = torch.floor(times * sample_rate + 0.5).long()            # round half up
        starts = centres - width // 2
        overlap = torch.minimum(starts + width, lens[:, None]) - starts.clamp(min=0)
        mask = (overlap > 0).float()
    else:
        starts, slides = _released_starts(lens, num_windows, sample_rate, window_s)
        mask = (lens > 0).float()[:, None].expand(batch, num_windows).contiguous()

    # Copy the part of each window that overlaps its row's audio, zeros around it: B·T
    # contiguous copies. (Gathering the T slices from an unfolded view is one vectorised call but
    # copies element by element: 15 ms per 32-window clip on one CPU core, against 2.5 ms here.)
    device = wav.device
    windows = wav.new_empty((batch, num_windows, width))
    for b, (row_starts, row_len) in enumerate(zip(starts.tolist(), lens.tolist())):
        for t, start in enumerate(row_starts):
            first, end = max(start, 0), min(start + width, row_len)
            window = windows[b, t]
            if end <= first:
                window.zero_()
                continue
            window[:first - start].zero_()                     # before the audio starts
            window[first - start:end - start].copy_(wav[b, first:end])
            window[end - start:].zero_()                       # past the row's length

    if placement == "released" and not bool(slides.all()):
        # Short audio: np.tile(samples, int(L))[:W], the same window for every frame.
        short = (~slides).nonzero().squeeze(1)
        reps = max(int(window_s), 1)
        short_lens = lens[short].to(device)
        pos = torch.arange(width, device=device)
        src = pos[None, :] % short_lens.clamp(min=1)[:, None]             # < the row's length
        tiled = F.pad(wav[short.to(device)], (0, 1)).gather(1, src)       # (pad: N may be 0)
        tiled = tiled.masked_fill((pos[None, :] >= reps * short_lens[:, None])
                                  | (short_lens[:, None] == 0), 0.0)
        windows[short.to(device)] = tiled[:, None, :].expand(-1, num_windows, -1)

    mask = mask.to(device)
    if single:
        return windows[0], mask[0]
    return windows, mask


# ---------------------------------------------------------------------------------------------
# front ends: [..., W] -> [..., M, F]
# ---------------------------------------------------------------------------------------------
def _per_clip_znorm(spec: Tensor, eps: float) -> Tensor:
    """``(x - mean) / std`` over each clip's own ``[M, F]`` (population std, as ``np.std``).

    A clip whose std is ``≤ eps`` (silence: a constant log-floor) maps to zeros instead of the
    rounding noise divided by ~0 that the released code's ``/(std + 1e-9)`` would give.
    """
    std, mean = torch.std_mean(spec, dim=(-2, -1), keepdim=True, correction=0)
    spread = std > eps
    safe_std = torch.where(spread, std, torch.ones_like(std))
    return torch.where(spread, (spec - mean) / safe_std, torch.zeros_like(spec))


def _check_windows(x: Tensor, name: str, min_samples: int) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} expects a floating-point tensor of audio windows [..., W]")
    if x.dim() < 1 or x.shape[-1] < min_samples:
        raise ValueError(f"{name} needs windows of at least {min_samples} samples, got shape "
                         f"{tuple(x.shape)}")


class LogMel(nn.Module):
    """Log-mel spectrogram with per-clip z-normalisation: ``[..., W] → [..., n_mels, F]``.

    ``MelSpectrogram`` (power 2, Hann window of ``win_ms``, hop ``hop_ms``, centred frames, so
    ``F = 1 + W // hop``) → ``log(x + 1e-6)`` → z-norm over each window's own spectrogram, as the
    released code z-normalises each clip. At 16 kHz: ``n_fft=512, win_length=400 (25 ms),
    hop_length=160 (10 ms)``; a 10 s window gives ``[64, 1001]``.
    """

    def __init__(self, sample_rate: int = 16000, n_mels: int = 64, n_fft: Optional[int] = None,
                 win_length: Optional[int] = None, hop_length: Optional[int] = None,
                 log_eps: float = 1e-6, norm_eps: float = 1e-4) -> None:
        super().__init__()
        sample_rate = int(_positive_number("sample_rate", sample_rate))
        if int(n_mels) <= 0:
            raise ValueError(f"n_mels must be positive, got {n_mels}")
        win_length = int(win_length or round(0.025 * sample_rate))
        hop_length = int(hop_length or round(0.010 * sample_rate))
        n_fft = int(n_fft or 2 ** math.ceil(math.log2(win_length)))
        if win_length > n_fft:
            raise ValueError(f"win_length={win_length} exceeds n_fft={n_fft}")
        self.sample_rate, self.n_mels = sample_rate, int(n_mels)
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.log_eps, self.norm_eps = float(log_eps), float(norm_eps)
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length,
            n_mels=self.n_mels, power=2.0)

    def num_frames(self, num_samples: int) -> int:
        """``F`` for a window of ``num_samples`` samples."""
        return 1 + num_samples // self.hop_length

    def forward(self, x: Tensor) -> Tensor:
        _check_windows(x, "LogMel", self.n_fft // 2 + 1)  # reflect padding needs > n_fft / 2
        spec = self.mel(x.to(self.mel.spectrogram.window.dtype))
        return _per_clip_znorm(torch.log(spec + self.log_eps), self.norm_eps)


class VGGSoundSpectrogram(nn.Module):
    """The VGGSound ResNet-18's input: ``[..., W] → [..., 257, S]`` (``S = (W - 512) // 159 + 1``).

    Reproduces the VGGSound release (and ECLIPSE's loader): samples clipped to ``[-1, 1]``,
    ``scipy.signal.spectrogram(x, fs, nperseg=512, noverlap=353)`` (periodic Tukey(0.25) window,
    per-segment mean removed, one-sided PSD density scaling), ``log(x + 1e-7)``, per-clip z-norm.
    A 10 s window at 16 kHz gives ``[257, 1004]``. Silence maps to zeros (see ``_per_clip_znorm``).
    """

    def __init__(self, sample_rate: int = 16000, nperseg: int = 512, noverlap: int = 353,
                 log_eps: float = 1e-7, norm_eps: float = 1e-4, clip: bool = True) -> None:
        super().__init__()
        from scipy.signal import get_window

        self.sample_rate = _positive_number("sample_rate", sample_rate)
        if not 0 <= noverlap < nperseg:
            raise ValueError(f"need 0 <= noverlap < nperseg, got noverlap={noverlap}, "
                             f"nperseg={nperseg}")
        self.nperseg, self.step = int(nperseg), int(nperseg - noverlap)
        self.log_eps, self.norm_eps, self.clip = float(log_eps), float(norm_eps), bool(clip)
        window = torch.as_tensor(get_window(("tukey", 0.25), self.nperseg), dtype=torch.float32)
        self.register_buffer("window", window, persistent=False)
        # PSD density scaling 1 / (fs · Σw²); one-sided: double all bins but DC (and Nyquist).
        onesided = torch.full((self.nperseg // 2 + 1,), 2.0)
        onesided[0] = 1.0
        if self.nperseg % 2 == 0:
            onesided[-1] = 1.0
        scale = onesided / (self.sample_rate * float((window.double() ** 2).sum()))
        self.register_buffer("scale", scale, persistent=False)
        self.n_bins = self.nperseg // 2 + 1

    def num_frames(self, num_samples: int) -> int:
        """``S`` for a window of ``num_samples`` samples."""
        return (num_samples - self.nperseg) // self.step + 1

    def forward(self, x: Tensor) -> Tensor:
        _check_windows(x, "VGGSoundSpectrogram", self.nperseg)
        x = x.to(self.window.dtype)
        if self.clip:
            x = x.clamp(-1.0, 1.0)
        seg = x.unfold(-1, self.nperseg, self.step)                 # [..., S, nperseg]
        seg = seg - seg.mean(dim=-1, keepdim=True)                  # detrend="constant"
        spec = torch.fft.rfft(seg * self.window, dim=-1)
        power = (spec.real.square() + spec.imag.square()) * self.scale   # [..., S, bins]
        logspec = torch.log(power.transpose(-1, -2) + self.log_eps)    # [..., bins, S]
        return _per_clip_znorm(logspec, self.norm_eps)


# ---------------------------------------------------------------------------------------------
# backbones: [N, M, F] -> [N, A]
# ---------------------------------------------------------------------------------------------
def _check_spectrogram(x: Tensor, name: str) -> None:
    if x.dim() != 3:
        raise ValueError(f"{name} expects spectrograms [N, M, F], got shape {tuple(x.shape)}")


class TinyAudioCNN(nn.Module):
    """Small spectrogram CNN for the ``ci``/``tiny`` presets: ``[N, M, F] → [N, out_dim]``.

    Five blocks of 3×3 conv (stride 2) → BatchNorm → ReLU with widths ``channels`` (receptive
    field 63 × 63 spectrogram bins: 0.63 s at a 10 ms hop), global average pooling over frequency
    and time, then ``Linear(channels[-1], out_dim)``. About 206k parameters at ``tiny``
    (out_dim 128); narrow early layers keep 10 s windows cheap on a CPU.
    """

    def __init__(self, out_dim: int = 128, channels: Sequence[int] = (16, 32, 64, 96, 128)) -> None:
        super().__init__()
        if int(out_dim) <= 0 or not channels or any(int(c) <= 0 for c in channels):
            raise ValueError(f"TinyAudioCNN needs positive out_dim and channels, got "
                             f"out_dim={out_dim}, channels={tuple(channels)}")
        layers: List[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += [nn.Conv2d(c_in, int(c), 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(int(c)), nn.ReLU(inplace=True)]
            c_in = int(c)
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in, int(out_dim))
        self.out_dim = int(out_dim)

    def forward(self, spec: Tensor) -> Tensor:
        _check_spectrogram(spec, "TinyAudioCNN")
        x = self.features(spec.unsqueeze(1))                       # [N, C, M', F']
        return self.proj(x.mean(dim=(-2, -1)))                     # [N, out_dim]


class _BasicBlock(nn.Module):
    """ResNet basic block (two 3×3 convs + identity/1×1 shortcut); torchvision's parameter names."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: Optional[nn.Module] = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


# Keys of the VGGSound checkpoints that are not part of the 512-d feature extractor.
_CLASSIFIER_KEYS = ("fc.weight", "fc.bias")
_NETVLAD_PREFIXES = ("avgpool.", "fc_.")


class ResNet18Audio(nn.Module):
    """The paper's audio encoder: VGGSound ResNet-18 on a 1-channel spectrogram → 512-d.

    ``[N, M, F] → [N, 512]``: 7×7/2 conv stem (1 → 64), BatchNorm, ReLU, 3×3/2 max-pool, four
    stages of two ``BasicBlock``s (64, 128, 256, 512; stride 2 from the second), global average
    pooling. The classifier head of the VGGSound model (309 classes) is left out: ECLIPSE uses the
    pooled 512-d feature. Parameter names follow torchvision's ``resnet18`` (and so the VGGSound
    release, whose ``AVENet.audnet`` is that network with a 1-channel stem).
    """

    out_dim = 512

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths, c_in = (64, 128, 256, 512), 64
        for i, c_out in enumerate(widths):
            stride = 1 if i == 0 else 2
            layer = nn.Sequential(_BasicBlock(c_in, c_out, stride), _BasicBlock(c_out, c_out, 1))
            self.add_module(f"layer{i + 1}", layer)
            c_in = c_out
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, spec: Tensor) -> Tensor:
        _check_spectrogram(spec, "ResNet18Audio")
        x = self.maxpool(self.relu(self.bn1(self.conv1(spec.unsqueeze(1)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(-2, -1))                                 # [N, 512]

    def load_vggsound(self, path: str) -> List[str]:
        """Load the VGGSound release's ResNet-18 weights (``H.pth.tar``, average pooling).

        Accepted files (read with ``torch.load(weights_only=True)``):
          * the release: ``{"model_state_dict": {"audnet.conv1.weight": [64, 1, 7, 7],
            "audnet.bn1.*", "audnet.layer{1..4}.{0,1}.{conv1,bn1,conv2,bn2}.*",
            "audnet.layer{2,3,4}.0.downsample.{0,1}.*", "audnet.fc.{weight,bias}": [309, 512] /
            [309]}}`` — a ``module.`` (DataParallel) prefix is also stripped;
          * a plain state dict with torchvision ``resnet18`` names (``conv1.weight``, ``bn1.*``,
            ``layer1.0.conv1.weight``, …, ``fc.*``), also under ``"state_dict"``; an RGB stem
            ``[64, 3, 7, 7]`` is summed over its input channels to take one channel.

        The classifier ``fc.*`` is ignored (ECLIPSE uses the pooled 512-d feature). The NetVLAD
        model ``I.pth.tar`` (8192-d) is refused. To reproduce the paper's features, feed the
        network ``VGGSoundSpectrogram`` inputs (``build_audio_encoder(cfg, frontend="vggsound")``).

        Returns the checkpoint keys that were ignored. Raises ``ValueError`` naming missing,
        unexpected or mis-shaped keys; nothing is modified unless every tensor fits.
        """
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(f"{path}: not loadable with torch.load(weights_only=True) ({err}). "
                             f"Re-save just the state dict: torch.save(ckpt['model_state_dict'], "
                             f"'weights.pth')") from None
        state = _unwrap_state_dict(obj, path)
        state = {_strip_prefixes(k): v for k, v in state.items()}
        vlad = sorted(k for k in state if k.startswith(_NETVLAD_PREFIXES))
        if vlad:
            raise ValueError(f"{path} is a NetVLAD checkpoint (keys {vlad[:3]}…); ResNet18Audio "
                             f"implements the average-pooled model (VGGSound release H.pth.tar)")
        ignored = [k for k in _CLASSIFIER_KEYS if k in state]
        for k in ignored:
            del state[k]
        own = self.state_dict()
        stem = state.get("conv1.weight")
        if isinstance(stem, Tensor) and stem.dim() == 4 and stem.shape[1] == 3:
            state["conv1.weight"] = stem.sum(dim=1, keepdim=True)       # RGB stem → 1 channel
        for k in [k for k in own if k.endswith("num_batches_tracked") and k not in state]:
            state[k] = own[k]                                           # optional in old files
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"{path}: checkpoint does not match ResNet18Audio; missing keys "
                             f"{missing[:8]}{'…' if len(missing) > 8 else ''} ({len(missing)}), "
                             f"unexpected keys {unexpected[:8]}"
                             f"{'…' if len(unexpected) > 8 else ''} ({len(unexpected)})")
        bad = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
               if not isinstance(state[k], Tensor) or state[k].shape != own[k].shape]
        if bad:
            raise ValueError(f"{path}: tensor shapes do not match ResNet18Audio: {bad[:8]}")
        self.load_state_dict(state, strict=True)
        return ignored


def _unwrap_state_dict(obj: object, path: str) -> Dict[str, Tensor]:
    if isinstance(obj, dict):
        for key in ("model_state_dict", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
        raise ValueError(f"{path}: expected a state dict (or a checkpoint holding one under "
                         f"'model_state_dict'/'state_dict'), got {type(obj).__name__}")
    return obj


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in ("module.", "audnet."):
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


class PrecomputedAudio(nn.Module):
    """Pass-through for per-frame embeddings computed offline: ``[..., A] → [..., A]``.

    The paper precomputes and freezes its VGGSound ResNet-18 features; this checks their width and
    that they are finite (a broken clip must not become a NaN row).
    """

    def __init__(self, audio_dim: int) -> None:
        super().__init__()
        if int(audio_dim) <= 0:
            raise ValueError(f"audio_dim must be positive, got {audio_dim}")
        self.audio_dim = self.out_dim = int(audio_dim)

    def forward(self, features: Tensor) -> Tensor:
        if features.dim() < 1 or features.shape[-1] != self.audio_dim:
            raise ValueError(f"precomputed audio features must end in audio_dim={self.audio_dim}, "
                             f"got shape {tuple(features.shape)}")
        if features.numel() and not bool(torch.isfinite(features).all()):
            raise ValueError("precomputed audio features contain NaN or infinite values")
        return features


class AudioEncoder(nn.Module):
    """Front end + backbone: ``[..., W]`` windows → ``[..., out_dim]`` embeddings.

    Flattens the leading dimensions, computes the spectrogram ``Z_t`` (``frontend``) and the
    embedding ``A_t^(0)`` (``backbone``) of every window (paper Sec. 3.1), restores the leading
    dimensions.
    """

    def __init__(self, frontend: nn.Module, backbone: nn.Module) -> None:
        super().__init__()
        self.frontend = frontend
        self.backbone = backbone
        self.out_dim = int(backbone.out_dim)

    def forward(self, windows: Tensor) -> Tensor:
        if windows.dim() < 1:
            raise ValueError("AudioEncoder expects windows [..., W]")
        lead = windows.shape[:-1]
        flat = windows.reshape(-1, windows.shape[-1])
        if flat.shape[0] == 0:
            return windows.new_zeros(*lead, self.out_dim)
        emb = self.backbone(self.frontend(flat))                   # [N, out_dim]
        return emb.reshape(*lead, self.out_dim)

    def load_vggsound(self, path: str, allow_frontend_mismatch: bool = False) -> List[str]:
        """Load VGGSound ResNet-18 weights into the backbone (see ``ResNet18Audio.load_vggsound``).

        Refuses a non-``VGGSoundSpectrogram`` front end, whose inputs the weights were not trained
        on, unless ``allow_frontend_mismatch`` (e.g. to fine-tune from them on log-mels).
        """
        if not isinstance(self.backbone, ResNet18Audio):
            raise ValueError(f"VGGSound weights need a ResNet18Audio backbone, this encoder has "
                             f"{type(self.backbone).__name__}")
        if not isinstance(self.frontend, VGGSoundSpectrogram) and not allow_frontend_mismatch:
            raise ValueError(f"the VGGSound ResNet-18 was trained on VGGSoundSpectrogram inputs, "
                             f"this encoder's front end is {type(self.frontend).__name__}; build it "
                             f"with build_audio_encoder(cfg, frontend='vggsound') or pass "
                             f"allow_frontend_mismatch=True")
        return self.backbone.load_vggsound(path)


def build_audio_encoder(cfg: ModelConfig, frontend: Optional[str] = None) -> nn.Module:
    """The audio encoder named by ``cfg.audio_encoder``.

    * ``"cnn"`` → ``AudioEncoder(LogMel(cfg.sample_rate, cfg.n_mels), TinyAudioCNN(cfg.audio_dim))``
    * ``"resnet18"`` → ``AudioEncoder(LogMel(...), ResNet18Audio())``; needs ``audio_dim == 512``.
      ``frontend="vggsound"`` swaps in ``VGGSoundSpectrogram``, the input of the released VGGSound
      weights (use it to reproduce the paper's features).
    * ``"precomputed"`` → ``PrecomputedAudio(cfg.audio_dim)`` (inputs are embeddings, not audio).

    ``frontend``: ``None``/``"logmel"`` (default) or ``"vggsound"``.
    """
    if frontend is not None and frontend not in FRONTENDS:
        raise ValueError(f"frontend={frontend!r} is not one of {FRONTENDS}")
    kind = cfg.audio_encoder
    if kind == "precomputed":
        if frontend is not None:
            raise ValueError("audio_encoder='precomputed' takes embeddings, it has no front end "
                             f"(got frontend={frontend!r})")
        return PrecomputedAudio(cfg.audio_dim)
    if frontend == "vggsound":
        front: nn.Module = VGGSoundSpectrogram(cfg.sample_rate)
    else:
        front = LogMel(cfg.sample_rate, cfg.n_mels)
    if kind == "cnn":
        return AudioEncoder(front, TinyAudioCNN(out_dim=cfg.audio_dim))
    if kind == "resnet18":
        if cfg.audio_dim != ResNet18Audio.out_dim:
            raise ValueError(f"audio_encoder='resnet18' produces 512-d features but "
                             f"ModelConfig.audio_dim={cfg.audio_dim}; set audio_dim=512")
        return AudioEncoder(front, ResNet18Audio())
    raise ValueError(f"ModelConfig.audio_encoder={kind!r} is not one of "
                     f"('cnn', 'resnet18', 'precomputed')")


# ---------------------------------------------------------------------------------------------
# running the encoder over a batch, and the projection into the visual width
# ---------------------------------------------------------------------------------------------
def encode_windows(encoder: nn.Module, windows: Tensor, mask: Tensor,
                   batch_size: int = 256) -> Tensor:
    """Per-frame audio embeddings ``A^(0)`` (Sec. 3.1): ``[B, T, W]`` + mask ``[B, T]`` → ``[B, T, A]``.

    Only windows with ``mask > 0`` are encoded (so empty windows neither cost time nor enter
    BatchNorm statistics), ``batch_size`` at a time, on the encoder's device; the others get zero
    embeddings. Gradients flow when the caller has them enabled (wrap in ``torch.no_grad()`` to
    precompute). In training mode BatchNorm sees chunks of ``batch_size`` windows.
    ``windows`` may also be precomputed embeddings ``[B, T, A]`` for ``PrecomputedAudio``.
    """
    if not isinstance(windows, Tensor) or windows.dim() != 3:
        raise ValueError(f"windows must be a tensor [B, T, W], got "
                         f"{tuple(windows.shape) if isinstance(windows, Tensor) else type(windows)}")
    mask = torch.as_tensor(mask)
    if tuple(mask.shape) != tuple(windows.shape[:2]):
        raise ValueError(f"mask must have shape [B, T] = {tuple(windows.shape[:2])}, got "
                         f"{tuple(mask.shape)}")
    if mask.is_floating_point() and not bool(torch.isfinite(mask).all()):
        raise ValueError("mask contains NaN or infinite values")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out_dim = getattr(encoder, "out_dim", None)
    if not isinstance(out_dim, int):
        raise ValueError(f"{type(encoder).__name__} has no integer .out_dim")
    param = next(encoder.parameters(), None)
    device = param.device if param is not None else windows.device
    batch, frames = windows.shape[:2]
    flat = windows.reshape(batch * frames, windows.shape[-1])
    keep = (mask.reshape(-1).to(windows.device) > 0).nonzero().squeeze(1)
    chunks = [encoder(flat[keep[i:i + batch_size]].to(device))
              for i in range(0, keep.numel(), int(batch_size))]
    dtype = chunks[0].dtype if chunks else (param.dtype if param is not None else windows.dtype)
    out = torch.zeros(batch * frames, out_dim, dtype=dtype, device=device)
    if chunks:
        out = out.index_copy(0, keep.to(device), torch.cat(chunks))
    return out.reshape(batch, frames, out_dim)


def audio_projection(audio_dim: int, width: int) -> nn.Linear:
    """``Linear(A, width)`` from audio embeddings into the visual stream (released ``mlp_audio``)."""
    if int(audio_dim) <= 0 or int(width) <= 0:
        raise ValueError(f"audio_projection needs positive sizes, got audio_dim={audio_dim}, "
                         f"width={width}")
    return nn.Linear(int(audio_dim), int(width))


def spectrogram_for_display(waveform: ArrayLike, sample_rate: int, n_mels: int = 64,
                            normalize: bool = False) -> np.ndarray:
    """Mel spectrogram of a mono waveform ``[N]`` for plotting: numpy ``[n_mels, F]``.

    Power in dB (``10·log10(x + 1e-10)``) with ``LogMel``'s bands and hop; ``normalize=True``
    returns exactly what the model sees (``LogMel`` output).
    """
    wav = _as_waveform(waveform)
    if wav.dim() != 1:
        raise ValueError(f"spectrogram_for_display expects a mono waveform [N], got "
                         f"{tuple(wav.shape)}")
    front = LogMel(int(sample_rate), n_mels)
    if wav.numel() <= front.n_fft // 2:
        raise ValueError(f"waveform of {wav.numel()} samples is too short for a spectrogram "
                         f"(needs > {front.n_fft // 2})")
    with torch.no_grad():
        if normalize:
            spec = front(wav.detach().cpu())
        else:
            spec = 10.0 * torch.log10(front.mel(wav.detach().cpu().float()) + 1e-10)
    return spec.numpy()
