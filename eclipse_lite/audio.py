"""Audio for ECLIPSE: waveform → one window per frame → spectrogram → one embedding per frame.

Paper, Sec. 3.1 "Audio Embeddings" and Sec. 3.4: for each of the ``T`` sampled video frames, a window
of audio (10 s by default) *centred on that frame* is turned into a spectrogram ``Z_t`` and an audio
encoder maps it to ``A_t^(0) ∈ R^d``; the ``T`` embeddings ``A^(0) ∈ R^{T×d}`` enter the
audiovisual backbone after a ``Linear(d, width)`` (the released code's ``mlp_audio``).

Pipeline and the names it uses (shapes: ``B`` videos, ``T`` frames, ``W`` samples per window,
``A`` audio embedding width)::

    windows, mask = audio_windows(waveform [B, N], frame_times [B, T], sr, window_s)  # [B,T,W], [B,T]
    encoder = build_audio_encoder(cfg)                  # eclipse_lite.audio_encoders
    audio = encode_windows(encoder, windows, mask)      # [B, T, A], zero where mask == 0
    tokens = audio_projection(cfg.audio_dim, cfg.vision_width)(audio)                  # [B, T, width]

This module cuts the windows around the frames, runs an encoder over a batch of them, projects
the embeddings into the visual width and draws a spectrogram for plots. The spectrogram front
ends (``LogMel``, ``VGGSoundSpectrogram``) and the encoders (``TinyAudioCNN``, ``ResNet18Audio``,
``PrecomputedAudio``, ``AudioEncoder``, ``build_audio_encoder``) live in
``eclipse_lite.audio_encoders``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# _positive_number: the argument check the front ends share with audio_windows
from eclipse_lite.audio_encoders import LogMel, _positive_number

__all__ = [
    "audio_windows",
    "encode_windows",
    "audio_projection",
    "spectrogram_for_display",
]

ArrayLike = Union[Tensor, np.ndarray, Sequence[float], float]
PLACEMENTS = ("centred", "released")
# The released loader only slides windows over audio longer than the window plus this margin (s).
RELEASED_MARGIN_S = 0.1


# ---------------------------------------------------------------------------------------------
# windows around frames
# ---------------------------------------------------------------------------------------------
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
