"""Writers for the tiny media files the data tests make themselves (never shipped, never
downloaded): short videos whose frame ``i`` is a flat grey of level :func:`frame_level` (so a
test can tell which frame it got back), tones as wav (stdlib ``wave``) or compressed audio
(PyAV), and broken files (truncated, garbage)."""
from __future__ import annotations

import os
import wave
from fractions import Fraction
from typing import Optional

import av
import numpy as np

# container -> (video codec, audio codec, audio rate the codec accepts or None for any)
CONTAINERS = {
    ".mp4": ("libx264", "aac", None),
    ".mkv": ("libx264", "libopus", 48000),
    ".webm": ("libvpx", "libopus", 48000),
    ".avi": ("mpeg4", "libmp3lame", None),
}


def frame_level(i: int) -> int:
    """Grey level of frame ``i`` in :func:`write_video` (distinct for 0 <= i < 20)."""
    return 16 + (12 * i) % 228


def tone(duration_s: float, sample_rate: int, freq: float = 440.0, amp: float = 0.5,
         channels: int = 1) -> np.ndarray:
    """A sine, float32 [channels, N]; channel c has amplitude ``amp / (c + 1)``."""
    n = int(round(duration_s * sample_rate))
    t = np.arange(n) / sample_rate
    base = np.sin(2 * np.pi * freq * t)
    return np.stack([amp / (c + 1) * base for c in range(channels)]).astype(np.float32)


def write_video(path: str, n_frames: int = 12, fps: int = 4, size: int = 32,
                audio: bool = True, sample_rate: int = 16000, channels: int = 1,
                faststart: bool = False, pattern: bool = False, gop: Optional[int] = None) -> str:
    """A tiny video: frame i is flat grey :func:`frame_level` (``pattern``: plus a bar moving
    right, for resize tests) and, when ``audio``, a 440 Hz tone as long as the video.
    ``gop``: a keyframe every ``gop`` frames (default: the encoder's, one for short videos)."""
    vcodec, acodec, arate = CONTAINERS[os.path.splitext(path)[1]]
    rate = arate or sample_rate
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(path, "w", options=options) as out:
        vs = out.add_stream(vcodec, rate=fps)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        if gop:
            vs.codec_context.gop_size = gop
        if vcodec == "libx264":
            vs.options = {"preset": "ultrafast", "crf": "10"}
        else:
            vs.bit_rate = 2_000_000
        ast = None
        if audio:
            ast = out.add_stream(acodec, rate=rate)
            ast.layout = "mono" if channels == 1 else "stereo"
        for i in range(n_frames):
            img = np.full((size, size, 3), frame_level(i), np.uint8)
            if pattern:
                x = (i * 3) % max(size - 4, 1)
                img[:, x:x + 4] = (255, 40, 40)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if ast is not None:
            _encode_audio(out, ast, tone(n_frames / fps, rate, channels=channels), rate)
    return path


def _encode_audio(out, stream, samples: np.ndarray, rate: int) -> None:
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    fmt = stream.codec_context.format.name
    resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
    step = stream.codec_context.frame_size or 1024
    for start in range(0, samples.shape[1], step):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + step]),
                                           format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = start
        for f in resampler.resample(frame):
            for packet in stream.encode(f):
                out.mux(packet)
    for f in resampler.resample(None):
        for packet in stream.encode(f):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def write_wav(path: str, samples: np.ndarray, sample_rate: int, sampwidth: int) -> str:
    """PCM wav with the stdlib: ``sampwidth`` 1 (unsigned 8-bit), 2 or 3 (signed 16/24-bit);
    ``samples`` float [channels, N] in [-1, 1]."""
    x = np.clip(samples.T, -1, 1)  # [N, C] interleaved
    if sampwidth == 1:
        data = np.round(x * 127 + 128).astype(np.uint8).tobytes()
    elif sampwidth == 2:
        data = np.round(x * 32767).astype("<i2").tobytes()
    elif sampwidth == 3:
        ints = np.round(x * (2 ** 23 - 1)).astype("<i4")
        data = np.ascontiguousarray(ints).view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        raise ValueError(sampwidth)
    with wave.open(path, "wb") as w:
        w.setnchannels(samples.shape[0])
        w.setsampwidth(sampwidth)
        w.setframerate(sample_rate)
        w.writeframes(data)
    return path


def write_audio(path: str, samples: np.ndarray, sample_rate: int,
                codec: Optional[str] = None) -> str:
    """Compressed audio with PyAV: mp3 (LAME), ogg (Opus, 48 kHz), flac."""
    ext = os.path.splitext(path)[1]
    codec = codec or {".mp3": "libmp3lame", ".ogg": "libopus", ".flac": "flac"}[ext]
    with av.open(path, "w") as out:
        stream = out.add_stream(codec, rate=sample_rate)
        stream.layout = "mono" if samples.shape[0] == 1 else "stereo"
        _encode_audio(out, stream, samples, sample_rate)
    return path


def truncate(src: str, dst: str, fraction: float = 0.5) -> str:
    """Copy the first ``fraction`` of ``src``'s bytes to ``dst`` (a download cut short)."""
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[: int(len(data) * fraction)])
    return dst


def write_garbage(path: str, n_bytes: int = 4096, seed: int = 0) -> str:
    """Random bytes under a media file name."""
    with open(path, "wb") as f:
        f.write(np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes())
    return path
