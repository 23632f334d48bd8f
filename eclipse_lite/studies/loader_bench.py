"""Data-loading throughput: clips per second for decode + T frames + per-frame audio windows.

    eclipse-lite loader-bench --videos DIR --frames 32 --workers 2
    eclipse-lite loader-bench --manifest data/generated/tiny/test.jsonl --frames 32
    eclipse-lite loader-bench --make 20 --duration 90 --frames 32 --workers 2

``--make N`` first writes N test videos (``--duration`` s, ``--size`` px, ``--fps``, H.264 +
AAC, moving shapes and tones; seeded, written once into ``--out``) and measures on them. The
measurement runs :class:`~eclipse_lite.data.dataset.RetrievalDataset` (uniform frames squashed
to ``--image-size``, CLIP normalisation, audio decoded, resampled and cut into ``--window`` s
windows) through a ``DataLoader`` with ``--workers`` processes, for ``--epochs`` passes, and
prints clips/s overall and steady (once every worker has delivered its first batch), and
the CPU time per clip (workers included), which bounds the throughput on idle cores even when
the machine is shared. Not a test: the figures depend on the machine.
"""
from __future__ import annotations

import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from typing import List, Optional

import av
import numpy as np
import torch
from torch.utils.data import DataLoader

from eclipse_lite.data.dataset import RetrievalDataset, collate, expand_compact
from eclipse_lite.data.readers import VIDEO_EXTENSIONS, Item
from eclipse_lite.files import atomic_path


def write_bench_video(path: str, duration_s: float = 90.0, fps: int = 4, size: int = 128,
                      sample_rate: int = 16000, seed: int = 0) -> str:
    """One benchmark video: coloured squares drifting over a gradient, and a tone that changes
    pitch every few seconds over faint noise; H.264 (veryfast) + AAC mono in mp4: ``duration_s *
    fps`` frames of ``size x size`` px, ``duration_s * sample_rate`` samples. Returns ``path``."""
    rng = np.random.default_rng(seed)
    n_frames = int(round(duration_s * fps))
    yy, xx = np.mgrid[0:size, 0:size]
    background = np.stack([xx * 255 // size, yy * 255 // size,
                           np.full_like(xx, int(rng.integers(0, 256)))], -1).astype(np.uint8)
    shapes = [(rng.integers(0, 256, 3), rng.uniform(0, size, 2), rng.uniform(-3, 3, 2),
               int(rng.integers(size // 10, size // 4))) for _ in range(3)]
    with atomic_path(path) as tmp, av.open(tmp, "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        vs.options = {"preset": "veryfast"}
        vs.codec_context.gop_size = 10 * fps  # a keyframe every 10 s, as the bundled benchmark
        ast = out.add_stream("aac", rate=sample_rate)
        ast.layout = "mono"
        for i in range(n_frames):
            img = background.copy()
            for colour, pos, vel, side in shapes:
                x, y = ((pos + vel * i) % (size - side)).astype(int)
                img[y:y + side, x:x + side] = colour
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        n = int(round(duration_s * sample_rate))
        t = np.arange(n) / sample_rate
        pitch = rng.uniform(200, 1200, int(duration_s // 3) + 1)[(t // 3).astype(int)]
        wave = (0.3 * np.sin(2 * np.pi * pitch * t) + 0.02 * rng.standard_normal(n))
        wave = wave.astype(np.float32)[None]
        step = ast.codec_context.frame_size or 1024
        resampler = av.AudioResampler(format=ast.codec_context.format.name, layout="mono",
                                      rate=sample_rate)
        for start in range(0, n, step):
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, start:start + step]),
                                               format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = sample_rate, start
            for f in resampler.resample(chunk):
                for packet in ast.encode(f):
                    out.mux(packet)
        for packet in ast.encode():
            out.mux(packet)
    return path


def make_bench_videos(out_dir: str, n: int = 20, duration_s: float = 90.0, fps: int = 4,
                      size: int = 128, sample_rate: int = 16000, workers: int = 2,
                      seed: int = 0) -> List[str]:
    """Write ``n`` benchmark videos into ``out_dir`` (kept when already there)."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f"bench_{i:03d}_{int(duration_s)}s_{size}px_{fps}fps.mp4")
             for i in range(n)]
    todo = [(p, i) for i, p in enumerate(paths) if not os.path.exists(p)]
    with ProcessPoolExecutor(max(1, int(workers))) as pool:
        list(pool.map(_write_one, [(p, duration_s, fps, size, sample_rate, seed * 1000 + i)
                                   for p, i in todo]))
    return paths


def _write_one(args) -> str:
    """:func:`write_bench_video` on one argument tuple (for ``ProcessPoolExecutor.map``)."""
    path, duration_s, fps, size, sample_rate, seed = args
    return write_bench_video(path, duration_s, fps, size, sample_rate, seed)


def _cpu_seconds() -> float:
    """CPU time of this process plus its finished children (the DataLoader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def items_from_dir(video_dir: str) -> List[Item]:
    """One item per video file in ``video_dir`` (captions are the file names)."""
    names = sorted(f for f in os.listdir(video_dir)
                   if os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS)
    if not names:
        raise FileNotFoundError(f"no video files in {video_dir}")
    return [Item(os.path.splitext(f)[0], os.path.join(video_dir, f), [f"video {f}"])
            for f in names]


def run(items: List[Item], frames: int = 32, workers: int = 2, batch_size: int = 4,
        image_size: int = 224, window_s: float = 10.0, sample_rate: int = 16000,
        backend: str = "auto", epochs: int = 2, max_clips: Optional[int] = None,
        compact: bool = True) -> dict:
    """Load ``items`` through a DataLoader and time it. Returns the measured figures.

    ``compact``: workers send uint8 frames and the waveform, and the main process normalises
    the frames and cuts the audio windows (:func:`~eclipse_lite.data.dataset.expand_compact`,
    inside the timed loop, on the CPU), as training does; False: workers send it all finished."""
    if max_clips:
        items = items[:max_clips]
    ds = RetrievalDataset(items, num_frames=frames, image_size=image_size,
                          sample_rate=sample_rate, audio_window_s=window_s, backend=backend,
                          compact=compact)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0)
    torch.set_num_threads(1)
    cpu_start = _cpu_seconds()
    # "steady" excludes the start: until every worker has delivered its first batch, the
    # clock also counts process start-up and the time to fill one batch per worker.
    warm_batches = max(1, workers)
    clips = skipped = batches = 0
    warm_at, warm_clips = None, 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            batches += 1
            if batch is not None:
                batch = expand_compact(batch)
                clips += batch["frames"].shape[0]
                skipped += batch["num_skipped"]
            if batches == warm_batches:
                warm_at, warm_clips = time.perf_counter(), clips
    end = time.perf_counter()
    del loader  # joins the workers, so that their CPU time is counted
    cpu = _cpu_seconds() - cpu_start
    elapsed = end - start
    steady = None
    if warm_at is not None and clips > warm_clips and end > warm_at:
        steady = round((clips - warm_clips) / (end - warm_at), 2)
    return {"clips": clips, "skipped": skipped, "seconds": round(elapsed, 2),
            "clips_per_s": round(clips / elapsed, 2), "clips_per_s_steady": steady,
            "cpu_s_per_clip": round(cpu / clips, 4) if clips else None,
            "frames": frames, "workers": workers, "batch_size": batch_size,
            "image_size": image_size, "window_s": window_s, "backend": backend,
            "compact": compact, "cpus": os.cpu_count()}
