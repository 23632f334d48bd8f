"""Audio encoders for ECLIPSE: one window of audio → spectrogram ``Z_t`` → embedding ``A_t^(0)``.

Paper, Sec. 3.1 "Audio Embeddings": each frame's audio window becomes a spectrogram and an audio
encoder maps it to ``A_t^(0) ∈ R^d``. Cutting the windows and running an encoder over a batch
live in ``eclipse_lite.audio``; this module holds what turns one window into one embedding
(shapes: ``W`` samples per window, ``M`` spectrogram bins, ``F`` spectrogram frames, ``N`` windows,
``A`` audio embedding width)::

    encoder = build_audio_encoder(cfg)                  # AudioEncoder(LogMel, TinyAudioCNN) ...
    emb = encoder(windows)                              # [..., W] -> [..., A]

Front ends (``[..., W] → [..., M, F]``):
  * ``LogMel`` — log-mel spectrogram (25 ms / 10 ms), per-clip z-normalised; ``ci``/``tiny``.
  * ``VGGSoundSpectrogram`` — the input the paper's VGGSound ResNet-18 was trained on
    (``scipy.signal.spectrogram(nperseg=512, noverlap=353)``, log, per-clip z-norm), needed to
    reproduce the paper's features from the released VGGSound weights.

Backbones (``[N, M, F] → [N, A]``): ``TinyAudioCNN`` (small presets) and ``ResNet18Audio`` (the
paper's encoder, with a loader for the VGGSound release). ``PrecomputedAudio`` passes stored
per-frame embeddings through (the paper precomputes and freezes them). ``AudioEncoder`` chains a
front end and a backbone; ``build_audio_encoder`` builds the one a ``ModelConfig`` names.
"""
from __future__ import annotations

import math
import pickle
from typing import Dict, List, Optional, Sequence

import torch
import torchaudio
from scipy.signal import get_window
from torch import Tensor, nn

from eclipse_lite.config import ModelConfig

__all__ = [
    "LogMel",
    "VGGSoundSpectrogram",
    "TinyAudioCNN",
    "ResNet18Audio",
    "PrecomputedAudio",
    "AudioEncoder",
    "build_audio_encoder",
]

FRONTENDS = ("logmel", "vggsound")


def _positive_number(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


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
