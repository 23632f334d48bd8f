"""Decoding and sampling: eclipse_lite.data.io and eclipse_lite.data.sampling."""
import os

import numpy as np
import pytest
import torch
from data_fixtures import (
    frame_level,
    tone,
    truncate,
    write_audio,
    write_garbage,
    write_video,
    write_wav,
)

from eclipse_lite.clip import clip_denormalize, clip_normalize
from eclipse_lite.config import CLIP_MEAN, CLIP_STD
from eclipse_lite.data import io as dio
from eclipse_lite.data.io import DecodeError, read_audio, read_video, resize_frames
from eclipse_lite.data.sampling import (
    first_occurrence,
    frame_times,
    random_indices,
    random_times,
    sample_indices,
    uniform_indices,
    uniform_times,
)

needs_decord = pytest.mark.skipif(dio._decord is None, reason="decord not installed")


def levels(frames: np.ndarray) -> np.ndarray:
    """Mean grey level per frame [T] of uint8 frames [T, H, W, 3]."""
    return frames.reshape(frames.shape[0], -1).mean(axis=1)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    return {
        "mp4": write_video(str(d / "v.mp4"), n_frames=20, fps=4, size=32),
        "pattern": write_video(str(d / "p.mp4"), n_frames=20, fps=4, size=64, pattern=True),
        "short": write_video(str(d / "short.mp4"), n_frames=5, fps=4, size=32),
        "silent": write_video(str(d / "silent.mp4"), n_frames=8, fps=4, size=32, audio=False),
        "faststart": write_video(str(d / "fs.mp4"), n_frames=40, fps=4, size=32, faststart=True),
        "dir": d,
    }


# ----------------------------------------------------------------------------- sampling
def test_uniform_indices_are_segment_centres():
    assert uniform_indices(100, 4).tolist() == [12, 37, 62, 87]
    assert uniform_indices(8, 8).tolist() == list(range(8))
    idx = uniform_indices(1000, 32)
    assert (np.diff(idx) > 0).all() and idx[0] == 15 and idx[-1] == 984


def test_uniform_indices_short_video_repeats_every_frame():
    idx = uniform_indices(3, 8)
    assert idx.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert set(idx.tolist()) == {0, 1, 2}
    assert first_occurrence(idx).tolist() == [True, False, False, True, False, True, False, False]


def test_random_indices_one_per_segment_and_seeded():
    a = random_indices(100, 4, np.random.default_rng(1))
    b = random_indices(100, 4, np.random.default_rng(1))
    assert a.tolist() == b.tolist()
    for i, v in enumerate(a):
        assert 25 * i <= v < 25 * (i + 1)
    draws = np.stack([random_indices(100, 4, np.random.default_rng(s)) for s in range(50)])
    assert len(np.unique(draws[:, 0])) > 10  # actually random within the segment
    short = random_indices(3, 8, 0)
    assert short.min() >= 0 and short.max() <= 2 and (np.diff(short) >= 0).all()
    with pytest.raises(ValueError, match="rng"):
        random_indices(100, 4, None)


def test_time_sampling_and_frame_times():
    assert uniform_times(8.0, 4).tolist() == [1.0, 3.0, 5.0, 7.0]
    t = random_times(8.0, 4, 3)
    assert all(2 * i <= v < 2 * (i + 1) for i, v in enumerate(t))
    assert frame_times(np.array([0, 2, 5]), 4.0).tolist() == [0.0, 0.5, 1.25]
    assert sample_indices(10, 2, "uniform").tolist() == [2, 7]
    assert sample_indices(10, 4, "released").tolist() == [0, 3, 6, 9]  # linspace(0, 9, 4)
    assert sample_indices(3, 5, "released").tolist() == [0, 0, 1, 1, 2]
    with pytest.raises(ValueError, match="sampling"):
        sample_indices(10, 2, "middle")
    with pytest.raises(ValueError):
        uniform_indices(0, 4)


# ----------------------------------------------------------------------------- video
@pytest.mark.parametrize("backend", ["pyav", pytest.param("decord", marks=needs_decord)])
def test_read_video_returns_the_sampled_frames(media, backend):
    clip = read_video(media["mp4"], 4, None, backend=backend)
    assert clip.backend == backend
    assert clip.frames.dtype == np.uint8 and clip.frames.shape == (4, 32, 32, 3)
    assert clip.indices.tolist() == [2, 7, 12, 17]
    np.testing.assert_allclose(levels(clip.frames), [frame_level(i) for i in clip.indices],
                               atol=3)
    np.testing.assert_allclose(clip.times, clip.indices / 4.0, atol=1e-6)
    assert clip.mask.all() and clip.n_frames == 20 and clip.fps == 4.0
    assert clip.duration == pytest.approx(5.0)


@needs_decord
@pytest.mark.parametrize("sampling", ["uniform", "random"])
def test_decord_and_pyav_give_the_same_frames(media, sampling):
    a = read_video(media["pattern"], 6, 48, sampling, np.random.default_rng(7), backend="decord")
    b = read_video(media["pattern"], 6, 48, sampling, np.random.default_rng(7), backend="pyav")
    assert a.indices.tolist() == b.indices.tolist()
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_allclose(a.times, b.times, atol=1e-6)
    assert (a.fps, a.n_frames, a.duration) == (b.fps, b.n_frames, b.duration)


def test_pyav_seeks_in_long_videos_and_matches_sequential_decoding(tmp_path, monkeypatch):
    path = write_video(str(tmp_path / "long.mp4"), n_frames=240, fps=8, size=32, audio=False,
                       gop=12)
    index = dio._PacketIndex(path)
    assert index.count == 240 and index.keys[:3] == [0, 12, 24]
    wanted = uniform_indices(240, 6).tolist()
    assert index.seek_pays(wanted) and not index.seek_pays(list(range(240)))

    def no_sequential(*a, **k):
        raise AssertionError("decoded sequentially")

    with monkeypatch.context() as m:
        m.setattr(dio, "_decode_frames", no_sequential)
        seeking = read_video(path, 6, None, backend="pyav")
    with monkeypatch.context() as m:
        m.setattr(dio._PacketIndex, "seek_pays", lambda self, wanted: False)
        sequential = read_video(path, 6, None, backend="pyav")
    assert seeking.indices.tolist() == sequential.indices.tolist() == wanted
    np.testing.assert_array_equal(seeking.frames, sequential.frames)
    np.testing.assert_allclose(seeking.times, np.array(wanted) / 8.0, atol=1e-6)
    np.testing.assert_allclose(levels(seeking.frames), [frame_level(i) for i in wanted], atol=3)
    if dio._decord is not None:
        np.testing.assert_array_equal(read_video(path, 6, None, backend="decord").frames,
                                      seeking.frames)


def test_random_sampling_needs_a_seed_and_is_reproducible(media):
    a = read_video(media["mp4"], 4, 16, "random", 3, backend="pyav")
    b = read_video(media["mp4"], 4, 16, "random", np.random.default_rng(3), backend="pyav")
    assert a.indices.tolist() == b.indices.tolist()
    with pytest.raises(ValueError, match="rng"):
        read_video(media["mp4"], 4, 16, "random", None, backend="pyav")


@pytest.mark.parametrize("backend", ["pyav", pytest.param("decord", marks=needs_decord)])
def test_video_shorter_than_request_repeats_frames_with_mask(media, backend):
    clip = read_video(media["short"], 8, 16, backend=backend)
    assert clip.frames.shape == (8, 16, 16, 3)
    assert clip.indices.tolist() == [0, 0, 1, 2, 2, 3, 4, 4]  # floor((2i + 1) * 5 / 16)
    assert clip.mask.tolist() == [True, False, True, True, False, True, True, False]
    np.testing.assert_array_equal(clip.frames[0], clip.frames[1])
    np.testing.assert_allclose(levels(clip.frames), [frame_level(i) for i in clip.indices],
                               atol=3)


def test_resize_matches_clips_pil_bicubic_filter(media):
    from PIL import Image

    clip = read_video(media["pattern"], 3, None, backend="pyav")
    for size in (32, 100):  # shrinking (antialiased) and enlarging
        ours = resize_frames(clip.frames, size).astype(int)
        pil = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BICUBIC))
                        for f in clip.frames]).astype(int)
        assert np.abs(ours - pil).max() <= 2 and (ours != pil).mean() < 0.01, size
    with pytest.raises(ValueError, match="uint8"):
        resize_frames(clip.frames.astype(np.float32), 32)


def test_clip_normalize_is_clips_mean_and_std_channels_first():
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 5, 7, 9, 3), np.uint8))
    out = clip_normalize(x)
    assert out.shape == (2, 5, 3, 7, 9) and out.dtype == torch.float32
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float64).view(3, 1, 1)
    exact = (x.movedim(-1, -3).double() / 255 - mean) / std
    assert torch.allclose(out.double(), exact, atol=1e-6, rtol=0)
    # bit for bit the channels-first multiply-subtract the loaders used before (so cached
    # features and trained models see the same inputs)
    scale, shift = (1 / (255 * std)).float(), (mean / std).float()
    assert torch.equal(out, x.movedim(-1, -3).float().mul_(scale).sub_(shift))
    assert torch.equal(clip_normalize(x[0, 0]), out[0, 0])        # a single frame [H, W, 3]
    with pytest.raises(ValueError, match="uint8"):
        clip_normalize(x.float())
    with pytest.raises(ValueError, match=r"\[\.\.\., H, W, 3\]"):
        clip_normalize(x[..., :2])
    # the formula as written (the pretraining's and the saliency study's arithmetic)
    written = (x.float() / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.equal(clip_normalize(x, divide=True), written.movedim(-1, -3))
    assert torch.equal(clip_normalize(x.numpy()), out)                  # numpy in, same numbers
    back = clip_denormalize(out)                                        # [..., H, W, 3] in [0, 1]
    assert back.shape == x.shape and torch.allclose(back * 255, x.float(), atol=1e-3)


def test_resize_squashes_to_the_requested_size(media):
    clip = read_video(media["pattern"], 3, None, backend="pyav")
    assert clip.frames.shape == (3, 64, 64, 3)
    small = resize_frames(clip.frames, 32)
    assert small.shape == (3, 32, 32, 3) and small.dtype == np.uint8
    assert resize_frames(clip.frames, (16, 40)).shape == (3, 16, 40, 3)
    assert resize_frames(small, 32) is small
    # content survives: the red bar is still where it was, relative to the width
    def red_column(frame):
        redness = frame[..., 0].astype(int) - frame[..., 1].astype(int)
        return np.argmax(redness.max(axis=0))

    assert abs(red_column(small[1]) * 2 - red_column(clip.frames[1])) <= 3


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".webm", ".avi"])
def test_containers_decode_frames_and_audio(tmp_path, ext):
    path = write_video(str(tmp_path / f"c{ext}"), n_frames=8, fps=4, size=32)
    backends = ["pyav"] + (["decord"] if dio._decord is not None else [])
    for backend in backends:
        clip = read_video(path, 4, 32, backend=backend)
        np.testing.assert_allclose(levels(clip.frames), [frame_level(i) for i in clip.indices],
                                   atol=4)
    wave, sr = read_audio(path)
    assert sr == 16000 and wave.dtype == np.float32
    assert abs(len(wave) - 2.0 * sr) < 0.1 * sr
    assert 0.4 < np.abs(wave).max() < 0.6


# ----------------------------------------------------------------------------- broken video
@pytest.mark.parametrize("backend", ["auto", "pyav", pytest.param("decord", marks=needs_decord)])
def test_truncated_mp4_raises_decode_error_naming_the_file(media, backend):
    # moov atom at the end (the default): half a file has no index at all
    cut = truncate(media["mp4"], str(media["dir"] / f"cut_{backend}.mp4"), 0.5)
    with pytest.raises(DecodeError, match="cut_") as err:
        read_video(cut, 4, 32, backend=backend)
    assert err.value.path == cut and str(err.value).startswith(cut)
    # moov first (faststart): the index promises 40 frames, only some are there
    cut = truncate(media["faststart"], str(media["dir"] / f"cutfs_{backend}.mp4"), 0.5)
    with pytest.raises(DecodeError, match="cutfs_"):
        read_video(cut, 4, 32, backend=backend)


@pytest.mark.parametrize("backend", ["auto", "pyav", pytest.param("decord", marks=needs_decord)])
def test_garbage_empty_and_missing_files_raise_decode_error(tmp_path, backend):
    garbage = write_garbage(str(tmp_path / "garbage.mp4"))
    empty = str(tmp_path / "empty.mp4")
    open(empty, "wb").close()
    for path in (garbage, empty, str(tmp_path / "absent.mp4")):
        with pytest.raises(DecodeError) as err:
            read_video(path, 4, 32, backend=backend)
        assert str(err.value).startswith(path)
        with pytest.raises(DecodeError, match=os.path.basename(path)):
            read_audio(path)


def test_auto_falls_back_to_pyav(media, monkeypatch):
    def broken(path, *a, **k):
        raise DecodeError(path, "decord says no")

    monkeypatch.setattr(dio, "_read_decord", broken)
    clip = read_video(media["mp4"], 4, 32, "random", np.random.default_rng(0), backend="auto")
    assert clip.backend == "pyav"
    monkeypatch.setattr(dio, "_decord", None)
    assert read_video(media["mp4"], 4, 32).backend == "pyav"
    assert dio.available_backends() == ["pyav"]
    with pytest.raises(ImportError):
        read_video(media["mp4"], 4, 32, backend="decord")


def test_bad_arguments(media):
    with pytest.raises(ValueError, match="backend"):
        read_video(media["mp4"], 4, 32, backend="opencv")
    with pytest.raises(ValueError, match="num_frames"):
        read_video(media["mp4"], 0, 32)


# ----------------------------------------------------------------------------- audio
def test_video_without_audio_gives_empty_waveform(media):
    wave, sr = read_audio(media["silent"], 16000)
    assert wave.shape == (0,) and wave.dtype == np.float32 and sr == 16000


def _check_tone(wave: np.ndarray, sr: int, duration: float, amp: float) -> None:
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - duration * sr) <= 0.02 * sr + 1200  # codec padding
    spectrum = np.abs(np.fft.rfft(wave))
    peak_hz = np.argmax(spectrum) * sr / len(wave)
    assert abs(peak_hz - 440) < 10
    assert abs(np.abs(wave).max() - amp) < 0.06


@pytest.mark.parametrize("sampwidth", [1, 2, 3])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_wav_bit_depths_channels_and_rates_load(tmp_path, sampwidth, channels, rate):
    path = write_wav(str(tmp_path / "a.wav"), tone(0.5, rate, channels=channels), rate, sampwidth)
    wave, sr = read_audio(path, 16000)
    assert sr == 16000
    assert len(wave) == int(np.ceil(0.5 * rate * 16000 / rate))
    # stereo is down-mixed by the mean: (0.5 + 0.25) / 2
    _check_tone(wave, 16000, 0.5, 0.5 if channels == 1 else 0.375)


@pytest.mark.parametrize("ext,rate", [(".mp3", 44100), (".ogg", 48000), (".flac", 22050)])
def test_compressed_audio_files_load(tmp_path, ext, rate):
    path = write_audio(str(tmp_path / f"a{ext}"), tone(0.6, rate, channels=2), rate)
    wave, sr = read_audio(path, 16000)
    _check_tone(wave, sr, 0.6, 0.375)
    wave8, sr8 = read_audio(path, 8000)
    assert sr8 == 8000 and abs(len(wave8) - len(wave) / 2) <= 2


def test_truncated_wav_raises(tmp_path):
    path = write_wav(str(tmp_path / "a.wav"), tone(1.0, 16000), 16000, 2)
    cut = truncate(path, str(tmp_path / "cut.wav"), 0.5)
    with pytest.raises(DecodeError, match="cut.wav"):
        read_audio(cut)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_float_wav_with_nan_or_infinite_samples_raises(tmp_path, bad):
    samples = tone(0.25, 16000)[0].astype("<f4")
    samples[100] = bad
    data = samples.tobytes()
    fmt = (3).to_bytes(2, "little") + (1).to_bytes(2, "little") \
        + (16000).to_bytes(4, "little") + (16000 * 4).to_bytes(4, "little") \
        + (4).to_bytes(2, "little") + (32).to_bytes(2, "little")   # IEEE float, mono, 32-bit
    path = tmp_path / "nan.wav"
    path.write_bytes(b"RIFF" + (4 + 8 + len(fmt) + 8 + len(data)).to_bytes(4, "little") + b"WAVE"
                     + b"fmt " + len(fmt).to_bytes(4, "little") + fmt
                     + b"data" + len(data).to_bytes(4, "little") + data)
    with pytest.raises(DecodeError, match="nan.wav.*NaN or infinite"):
        read_audio(str(path))
    samples[100] = 0.0                                   # the same file without it loads
    path.write_bytes(path.read_bytes()[:-len(data)] + samples.tobytes())
    wave, _ = read_audio(str(path))
    assert np.array_equal(wave, samples)
