"""Efficiency of ECLIPSE against video-only CLIP4Clip: FLOPs, peak memory, throughput (Table 2, Fig. 2).

The paper's claim (Table 2, ActivityNet, ViT-B/32): a 32-frame ECLIPSE costs 827 inference GFLOPs,
10,637 MB of GPU memory and runs 50.93 samples/s, against 1251 GFLOPs, 24,802 MB and 17.39
samples/s for a 96-frame CLIP4Clip — 2.34x less memory, 2.92x faster, 1251 / 827 = 1.51x fewer
FLOPs. This module measures the same three things for any preset:

    count_flops(cfg, frames=96, fusion="none")      # {"video", "audio", "text"} GFLOPs
    measure(cfg, mode="train", batch=8)             # peak memory (MB), samples/s
    compare(cfg, video_frames=96, eclipse_frames=32, ...)   # both models, side by side
    frame_sweep(cfg, frames=(8, 16, 32, 64, 96))    # GFLOPs vs frames, like Fig. 2

How things are counted
  * FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` on a model built on the ``meta`` device
    (no memory, no arithmetic), attention in eager mode so ``softmax(QK^T)V`` shows up as two
    batched matmuls. A multiply-add counts 2. Only matmuls and convolutions are counted (layer
    norms, softmax, activations and FFTs are not; they are < 2 % of a ViT). One video and one
    caption: "video" is the visual tower with its AV blocks and the audio projection for ``T``
    frames, "audio" the audio encoder over all ``T`` windows (0 when the model takes precomputed
    embeddings or no audio), "text" the text tower over ``context_length`` tokens.
  * Memory: on CUDA ``torch.cuda.max_memory_allocated`` over model + optimiser + steps (weights
    included); on CPU the process's peak resident set size minus the RSS before the model was
    built, measured in a fresh child process per configuration (a process's peak RSS cannot be
    reset, and freed memory stays resident, so two models in one process would blur).
  * Throughput: samples/s = batch / median wall time of the timed steps (each step timed on its
    own after ``warmup`` untimed steps, ``torch.cuda.synchronize`` before reading the clock on
    CUDA); the median resists other processes stealing the CPU. Also kept: the mean
    (``samples_per_s_mean``) and the fastest step (``samples_per_s_best``, the least disturbed
    estimate on a shared machine). A training sample is one
    video-caption pair through forward, backward and an AdamW step; an inference sample is one
    video embedding and one caption embedding.
  * Ratios are always taken between measurements made in one call, one after the other, on the
    same machine (``compare``).

Command line: ``eclipse-lite bench --preset tiny --out runs/bench`` (``eclipse_lite.cli.bench``), which
calls :func:`run`.
"""
from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from eclipse_lite.audio_encoders import build_audio_encoder
from eclipse_lite.config import ModelConfig
from eclipse_lite.files import atomic_write_text
from eclipse_lite.model import ECLIPSE
from eclipse_lite.overrides import parse_sets
from eclipse_lite.studies.viz import plot_bench, plot_frame_sweep, save_figure
from eclipse_lite.train.distributed import resolve_device

__all__ = ["PAPER_TABLE2", "count_flops", "measure", "compare", "frame_sweep", "machine_info",
           "parse_overrides", "config_from_args", "format_table", "format_sweep", "run",
           "measure_spec"]

# Table 2 of the paper (ActivityNet Captions, ViT-B/32, one GPU of unstated type and batch).
PAPER_TABLE2 = {
    "video_only": {"name": "CLIP4Clip", "frames": 96, "gflops": 1251.0, "memory_mb": 24802.0,
                   "samples_per_s": 17.39},
    "eclipse": {"name": "ECLIPSE", "frames": 32, "gflops": 827.0, "memory_mb": 10637.0,
                "samples_per_s": 50.93},
}
MODES = ("infer", "train")
WHAT = ("flops", "memory", "sweep")
DEFAULT_SWEEP = (8, 16, 32, 64, 96)


# ============================================================================ configs
def parse_overrides(pairs: Optional[Sequence[str]]) -> Dict[str, Any]:
    """``["fusion=none", "num_frames=16"]`` → ``{"fusion": "none", "num_frames": 16}``.

    Typed by the :class:`ModelConfig` field (``eclipse_lite.overrides``, shared with the other
    commands); an unknown key raises ``ValueError`` listing the known ones.
    """

    return parse_sets(pairs, ModelConfig)[0]


def config_from_args(preset: str, sets: Optional[Sequence[str]] = None) -> ModelConfig:
    """``ModelConfig.preset(preset, **parse_overrides(sets))``."""
    return ModelConfig.preset(preset, **parse_overrides(sets))


def machine_info(device: Optional[str] = None) -> Dict[str, Any]:
    """What the figures ran on: CPU, cores usable, torch and CUDA versions, GPU name."""
    dev = resolve_device(device)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count()
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_cores": cores, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "device": str(dev)}
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info.update(gpu=props.name, gpu_memory_mb=round(props.total_memory / 2 ** 20),
                    cuda=torch.version.cuda)
    return info


# ============================================================================ FLOPs
def _flops(fn) -> int:

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def count_flops(cfg: ModelConfig, frames: Optional[int] = None, fusion: Optional[str] = None,
                text_tokens: Optional[int] = None,
                audio_frontend: Optional[str] = None) -> Dict[str, float]:
    """Inference GFLOPs of one video and one caption: ``{"video", "audio", "text"}``.

    Args:
      cfg:            the model's config (any preset); ``frames``/``fusion`` override
                      ``cfg.num_frames``/``cfg.fusion``.
      text_tokens:    caption length (default ``cfg.context_length``: the tower runs on the
                      padded length).
      audio_frontend: spectrogram of the audio encoder, ``None``/"logmel" or "vggsound" (the
                      paper's ResNet-18 input: 257 bins instead of ``n_mels``; FFTs not counted).
    "video" covers patch embedding, every layer with its AV block, the audio projection and the
    output head for ``frames`` frames; "audio" the encoder over ``frames`` windows of
    ``cfg.audio_window_s`` s (0 for ``fusion="none"`` and for ``audio_encoder="precomputed"``);
    "text" the text tower. A multiply-add counts 2; attention is counted in eager mode.
    The model is built on the ``meta`` device, so the base preset costs no memory.
    """
    frames = cfg.num_frames if frames is None else int(frames)
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    length = cfg.context_length if text_tokens is None else int(text_tokens)
    if not 0 < length <= cfg.context_length:
        raise ValueError(f"text_tokens={length} must be in 1..context_length={cfg.context_length}")
    cfg = cfg.replace(num_frames=frames, fusion=fusion or cfg.fusion, gradient_checkpointing=False)
    t = cfg.num_frames
    with torch.device("meta"):
        model = ECLIPSE(cfg).eval()
    model.set_attention_impl("eager")
    meta = torch.device("meta")
    video_in = None if cfg.fusion == "audio_only" else \
        torch.empty(1, t, 3, cfg.image_size, cfg.image_size, device=meta)
    audio_in = None if cfg.fusion == "none" else torch.empty(1, t, cfg.audio_dim, device=meta)
    with torch.no_grad():
        video = _flops(lambda: model.video_features(video_in, audio_in))
        ids = torch.zeros(1, length, dtype=torch.long, device=meta)
        text = _flops(lambda: model.text(ids, torch.ones_like(ids)))
        audio = 0
        if cfg.fusion != "none" and cfg.audio_encoder != "precomputed":
            encoder = build_audio_encoder(cfg, frontend=audio_frontend).eval().to(meta)
            samples = int(round(cfg.audio_window_s * cfg.sample_rate))
            windows = torch.empty(t, samples, device=meta)
            audio = _flops(lambda: encoder(windows))
    return {"video": video / 1e9, "audio": audio / 1e9, "text": text / 1e9}


def frame_sweep(cfg: ModelConfig, frames: Sequence[int] = DEFAULT_SWEEP,
                audio_frontend: Optional[str] = None) -> Dict[str, Any]:
    """GFLOPs per video + caption against the number of frames (the paper's Fig. 2).

    Three curves: video-only (``fusion="none"``, CLIP4Clip meanP), ECLIPSE (``cfg.fusion`` when it
    is an audiovisual one, else "eclipse") with precomputed audio embeddings (as the paper runs
    it) and the same including the audio encoder. At the base shape
    the paper's two Table 2 points are added as reference ``points``.
    Returns ``{"preset", "frames", "curves": {label: [GFLOPs]}, "detail": {label: [counts]},
    "points"}``.
    """
    frames = [int(f) for f in frames]
    if not frames or min(frames) < 1:
        raise ValueError(f"frame_sweep needs positive frame counts, got {frames}")
    fusion = cfg.fusion if cfg.fusion in ("eclipse", "a2v", "joint") else "eclipse"
    video_only = [count_flops(cfg, f, "none") for f in frames]
    eclipse = [count_flops(cfg, f, fusion, audio_frontend=audio_frontend) for f in frames]
    curves = {
        "video only (CLIP4Clip)": [c["video"] + c["text"] for c in video_only],
        "ECLIPSE, precomputed audio": [c["video"] + c["text"] for c in eclipse],
        "ECLIPSE + audio encoder": [c["video"] + c["text"] + c["audio"] for c in eclipse],
    }
    points = []
    if _is_base_shape(cfg):
        points = [{"label": f"paper {v['name']}-{v['frames']}", "frames": v["frames"],
                   "gflops": v["gflops"]} for v in PAPER_TABLE2.values()]
    return {"preset": cfg.name, "frames": frames, "curves": curves,
            "detail": {"video_only": video_only, "eclipse": eclipse}, "points": points,
            "title": f"{cfg.name}: {cfg.image_size}px, patch {cfg.patch_size}, "
                     f"{cfg.vision_layers} layers, width {cfg.vision_width}"}


def _is_base_shape(cfg: ModelConfig) -> bool:
    base = ModelConfig.preset("base")
    keys = ("image_size", "patch_size", "vision_width", "vision_layers", "text_width", "text_layers")
    return all(getattr(cfg, k) == getattr(base, k) for k in keys)


# ============================================================================ memory / speed
def _rss_now_mb() -> Optional[float]:
    """This process's current resident set size in MB (Linux ``/proc``; else ``None``)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_peak_mb() -> Optional[float]:
    """This process's peak resident set size in MB since start or the last reset.

    Linux: ``VmHWM`` of ``/proc/self/status``; elsewhere ``getrusage`` (not resettable);
    ``None`` where neither exists (Windows).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2 ** 10   # kB
    except (OSError, ValueError):
        pass
    try:
        import resource  # POSIX only
    except ImportError:     # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 2 ** 10  # bytes vs KiB


def _inputs(cfg: ModelConfig, batch: int, device: torch.device, audio_encoder: bool,
            seed: int) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t, s = cfg.num_frames, cfg.image_size
    out = {"frames": torch.randn(batch, t, 3, s, s, generator=g)}
    if cfg.fusion != "none":
        if audio_encoder:
            samples = int(round(cfg.audio_window_s * cfg.sample_rate))
            out["windows"] = 0.1 * torch.randn(batch, t, samples, generator=g)
        else:
            out["audio"] = torch.randn(batch, t, cfg.audio_dim, generator=g)
    length = cfg.context_length
    ids = torch.randint(1, min(cfg.vocab_size, 49406), (batch, length), generator=g)
    ids[:, 0] = min(cfg.vocab_size - 2, 49406)   # start-of-text
    ids[:, -1] = cfg.vocab_size - 1              # end-of-text is the largest id in CLIP's vocab
    out["input_ids"] = ids
    out["attention_mask"] = torch.ones(batch, length, dtype=torch.long)
    return {k: v.to(device) for k, v in out.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure_here(cfg: ModelConfig, mode: str, batch: int, steps: int, warmup: int,
                  device: torch.device, amp: bool, audio_encoder: bool, seed: int,
                  threads: Optional[int] = None) -> Dict[str, Any]:
    """One configuration in this process (see :func:`measure`)."""
    if threads is not None:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    peak_reset = _reset_rss_peak()
    rss_before = _rss_now_mb() if peak_reset else _rss_peak_mb()
    model = ECLIPSE(cfg).to(device)
    encoder = None
    if audio_encoder and cfg.fusion != "none" and cfg.audio_encoder != "precomputed":
        encoder = build_audio_encoder(cfg).to(device).eval()   # frozen, as in the paper
    inputs = _inputs(cfg, batch, device, encoder is not None, seed)
    optimizer = None
    if mode == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.2)
    else:
        model.eval()
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16

    def audio_of() -> Optional[torch.Tensor]:
        if "windows" in inputs:
            with torch.no_grad():
                flat = inputs["windows"].reshape(-1, inputs["windows"].shape[-1])
                return encoder(flat).reshape(batch, cfg.num_frames, -1)
        return inputs.get("audio")

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            if mode == "train":
                optimizer.zero_grad(set_to_none=True)
                loss = model(inputs["frames"], audio_of(), inputs["input_ids"],
                             inputs["attention_mask"])["loss"]
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
            else:
                with torch.inference_mode():
                    model.encode_video(inputs["frames"], audio_of())
                    model.encode_text(inputs["input_ids"], inputs["attention_mask"])

    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    median = float(statistics.median(times))
    result: Dict[str, Any] = {"mode": mode, "fusion": cfg.fusion, "frames": cfg.num_frames,
                              "batch": batch, "steps": steps, "warmup": warmup,
                              "device": str(device), "amp": bool(amp),
                              "audio_encoder": encoder is not None,
                              "step_seconds": times, "seconds_per_step": median,
                              "samples_per_s": batch / median,
                              "samples_per_s_best": batch / min(times),
                              "samples_per_s_mean": batch * steps / sum(times),
                              "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        result["memory_kind"] = "torch.cuda.max_memory_allocated"
    else:
        peak = _rss_peak_mb()
        result["peak_rss_mb"] = peak
        result["peak_memory_mb"] = None if peak is None or rss_before is None else peak - rss_before
        result["memory_kind"] = ("peak RSS minus RSS before building the model" if peak_reset else
                                 "lifetime peak RSS minus peak RSS before building the model "
                                 "(peak not resettable here: may under-count small models)")
    del model, optimizer, inputs, encoder
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
    return result


def measure(cfg: ModelConfig, mode: str = "infer", batch: int = 1, steps: int = 3,
            warmup: int = 1, device: Optional[str] = None, amp: Optional[bool] = None,
            audio_encoder: bool = False, isolate: Optional[bool] = None,
            seed: int = 0, threads: Optional[int] = None,
            timeout_s: float = 3600.0) -> Dict[str, Any]:
    """Peak memory and throughput of one configuration.

    Args:
      mode:          "infer" (video + caption embeddings under ``inference_mode``) or "train"
                     (forward, symmetric InfoNCE, backward, grad clip 1.0, AdamW step).
      batch:         videos (with one caption each) per step.
      steps, warmup: timed steps, untimed steps before them.
      device:        "cpu", "cuda", "cuda:1" or "auto"/None (CUDA when available).
      amp:           autocast (bf16 where supported, else fp16); default on for CUDA, off on CPU.
      audio_encoder: run the (frozen) audio encoder on raw windows inside each step; default off:
                     precomputed per-frame embeddings, as the paper trains.
      isolate:       run in a fresh child process (default: on CPU, where the peak RSS needs it).
      threads:       CPU threads for torch (default: torch's default; in-process runs keep it set).
    Returns a dict with "samples_per_s" (from the median step), "seconds_per_step",
    "step_seconds", "peak_memory_mb" (see the module
    docstring for what is measured on each device) and the settings.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}")
    for name, value, low in (("batch", batch, 1), ("steps", steps, 1), ("warmup", warmup, 0)):
        if int(value) < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    dev = resolve_device(device)
    amp = (dev.type == "cuda") if amp is None else bool(amp)
    isolate = (dev.type == "cpu") if isolate is None else bool(isolate)
    if not isolate:
        result = _measure_here(cfg, mode, int(batch), int(steps), int(warmup), dev, amp,
                               audio_encoder, seed, threads)
        if dev.type == "cpu":  # peak RSS of a shared process says nothing about this model
            result["peak_memory_mb"] = None
            result["memory_kind"] = "not measured (CPU memory needs isolate=True)"
        return result
    spec = {"config": cfg.to_dict(), "mode": mode, "batch": int(batch), "steps": int(steps),
            "warmup": int(warmup), "device": str(dev), "amp": amp,
            "audio_encoder": bool(audio_encoder), "seed": int(seed), "threads": threads}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", "eclipse_lite.studies.bench_worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env, timeout=timeout_s)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise RuntimeError(f"benchmark worker ({cfg.name}, fusion={cfg.fusion}, "
                           f"frames={cfg.num_frames}, {mode}) failed with exit code "
                           f"{proc.returncode}:\n" + "\n".join(tail))
    return json.loads(lines[-1][len("BENCH_RESULT "):])


def measure_spec(spec_json: str) -> None:
    """One configuration of :func:`measure` (``isolate=True``) in this process, run by
    ``python -m eclipse_lite.studies.bench_worker SPEC_JSON`` in a fresh child: prints the result
    as one ``BENCH_RESULT {json}`` line for the parent to read."""
    spec = json.loads(spec_json)
    cfg = ModelConfig.from_dict(spec["config"])
    result = _measure_here(cfg, spec["mode"], spec["batch"], spec["steps"], spec["warmup"],
                           torch.device(spec["device"]), spec["amp"], spec["audio_encoder"],
                           spec["seed"], spec.get("threads"))
    print("BENCH_RESULT " + json.dumps(result), flush=True)


# ============================================================================ side by side
def _ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
    if num is None or den is None or den == 0:
        return None
    return num / den


def compare(cfg: ModelConfig, video_frames: Optional[int] = None,
            eclipse_frames: Optional[int] = None, batch: int = 1,
            modes: Sequence[str] = MODES, steps: int = 3, warmup: int = 1,
            device: Optional[str] = None, amp: Optional[bool] = None,
            audio_encoder: bool = False, isolate: Optional[bool] = None,
            measure_speed: bool = True, audio_frontend: Optional[str] = None,
            repeats: int = 1, threads: Optional[int] = None) -> Dict[str, Any]:
    """Video-only with ``video_frames`` against ECLIPSE with ``eclipse_frames``, in one run.

    The ECLIPSE row uses ``cfg.fusion`` when it is audiovisual ("eclipse", "a2v", "joint"), else
    "eclipse"; the video-only row is ``fusion="none"`` (CLIP4Clip meanP).

    Defaults follow Table 2's 3:1 frame ratio: ``eclipse_frames = cfg.num_frames`` and
    ``video_frames = 3 * eclipse_frames`` (96 vs 32 at the base preset). Memory and speed are
    measured alternately (video-only infer, ECLIPSE infer, video-only train, ECLIPSE train) so
    both see the same machine state; with ``repeats > 1`` that alternation is repeated and each
    model keeps the median samples/s and the largest peak memory of its repeats (on a shared
    machine, load that comes and goes then hits both models alike). Ratios:
    ``memory = video-only / ECLIPSE`` (paper 2.34), ``speed = ECLIPSE / video-only samples/s``
    (paper 2.92), ``gflops = video-only / ECLIPSE``
    (paper 1.51), without and with the audio encoder's FLOPs.
    """
    eclipse_frames = int(eclipse_frames or cfg.num_frames)
    video_frames = int(video_frames or 3 * eclipse_frames)
    rows = {
        "video_only": cfg.replace(fusion="none", num_frames=video_frames),
        "eclipse": cfg.replace(fusion=cfg.fusion if cfg.fusion in ("eclipse", "a2v", "joint")
                               else "eclipse", num_frames=eclipse_frames),
    }
    out: Dict[str, Any] = {"preset": cfg.name, "machine": machine_info(device), "rows": {},
                           "paper": PAPER_TABLE2}
    for key, c in rows.items():
        flops = count_flops(c, audio_frontend=audio_frontend)
        out["rows"][key] = {"fusion": c.fusion, "frames": c.num_frames, "gflops": flops,
                            "gflops_total": flops["video"] + flops["text"],
                            "gflops_total_with_audio": flops["video"] + flops["text"] + flops["audio"]}
    if int(repeats) < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if measure_speed:
        for mode in modes:
            runs: Dict[str, List[Dict[str, Any]]] = {key: [] for key in rows}
            for _ in range(int(repeats)):
                for key, c in rows.items():
                    runs[key].append(measure(c, mode, batch=batch, steps=steps, warmup=warmup,
                                             device=device, amp=amp, audio_encoder=audio_encoder,
                                             isolate=isolate, threads=threads))
            for key in rows:
                out["rows"][key][mode] = _combine(runs[key])
    v, e = out["rows"]["video_only"], out["rows"]["eclipse"]
    ratios = {"gflops": _ratio(v["gflops_total"], e["gflops_total"]),
              "gflops_with_audio_encoder": _ratio(v["gflops_total_with_audio"],
                                                  e["gflops_total_with_audio"])}
    for mode in modes if measure_speed else ():
        ratios[f"memory_{mode}"] = _ratio(v[mode]["peak_memory_mb"], e[mode]["peak_memory_mb"])
        ratios[f"speed_{mode}"] = _ratio(e[mode]["samples_per_s"], v[mode]["samples_per_s"])
    out["ratios"] = ratios
    out["paper_ratios"] = {
        "gflops": PAPER_TABLE2["video_only"]["gflops"] / PAPER_TABLE2["eclipse"]["gflops"],
        "memory": PAPER_TABLE2["video_only"]["memory_mb"] / PAPER_TABLE2["eclipse"]["memory_mb"],
        "speed": PAPER_TABLE2["eclipse"]["samples_per_s"] / PAPER_TABLE2["video_only"]["samples_per_s"]}
    out["settings"] = {"batch": batch, "steps": steps, "warmup": warmup, "modes": list(modes),
                       "repeats": int(repeats), "threads": threads,
                       "audio_encoder_in_step": audio_encoder, "audio_frontend": audio_frontend or "logmel"}
    return out


def _combine(runs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Repeats of one measurement: median samples/s, largest peak memory, every run kept."""
    if len(runs) == 1:
        return dict(runs[0])
    out = dict(runs[0])
    speed = float(statistics.median(r["samples_per_s"] for r in runs))
    out.update(samples_per_s=speed, seconds_per_step=out["batch"] / speed,
               samples_per_s_best=max(r["samples_per_s_best"] for r in runs),
               samples_per_s_runs=[r["samples_per_s"] for r in runs], repeats=len(runs))
    mems = [r["peak_memory_mb"] for r in runs if r["peak_memory_mb"] is not None]
    out["peak_memory_mb"] = max(mems) if mems else None
    out["peak_memory_mb_runs"] = [r["peak_memory_mb"] for r in runs]
    return out


def _fmt(x: Optional[float], spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)


def _times(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def format_table(result: Mapping[str, Any]) -> str:
    """A Markdown table of :func:`compare`'s result (one row per model, then the ratios)."""
    modes = [m for m in MODES if m in result["rows"]["eclipse"]]
    head = ["model", "frames", "GFLOPs (video+text)", "+ audio enc."]
    for m in modes:
        head += [f"{m} peak MB", f"{m} samples/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for key, label in (("video_only", "video only (CLIP4Clip meanP)"), ("eclipse", "ECLIPSE")):
        r = result["rows"][key]
        cells = [label, str(r["frames"]), _fmt(r["gflops_total"], ".2f"),
                 _fmt(r["gflops_total_with_audio"], ".2f")]
        for m in modes:
            cells += [_fmt(r[m]["peak_memory_mb"]), _fmt(r[m]["samples_per_s"], ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    rt = result["ratios"]
    cells = ["ratio (video only / ECLIPSE; speed ECLIPSE / video only)", "",
             _times(rt["gflops"]), _times(rt["gflops_with_audio_encoder"])]
    for m in modes:
        cells += [_times(rt.get(f"memory_{m}")), _times(rt.get(f"speed_{m}"))]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ============================================================================ the whole study
def run(preset: str = "tiny", sets: Optional[Sequence[str]] = None, device: Optional[str] = "auto",
        out: str = "runs/bench", what: Sequence[str] = WHAT, modes: Sequence[str] = MODES,
        batch: int = 4, steps: int = 3, warmup: int = 1, threads: Optional[int] = None,
        repeats: int = 1, video_frames: Optional[int] = None, eclipse_frames: Optional[int] = None,
        sweep: Sequence[int] = DEFAULT_SWEEP, audio_encoder: bool = False,
        audio_frontend: Optional[str] = None, amp: Optional[bool] = None,
        isolate: Optional[bool] = None, command: Optional[str] = None) -> Dict[str, Any]:
    """Table 2 and Fig. 2 for ``preset``: writes ``out/bench.{json,md,png}`` (``what`` has "flops"
    or "memory"; memory includes speed) and ``out/frame_sweep.{json,png}`` ("sweep"), prints the
    tables, and returns ``{"bench": compare's result, "sweep": frame_sweep's}`` (those computed).

    ``sets`` are ``KEY=VALUE`` ModelConfig overrides; the other arguments are :func:`compare`'s
    and :func:`frame_sweep`'s; ``command`` is recorded in bench.json. The command line is
    ``eclipse-lite bench`` (``eclipse_lite.cli.bench``).
    """
    bad = [w for w in what if w not in WHAT]
    if bad or not what:
        raise ValueError(f"what={list(what)!r}: choose from {', '.join(WHAT)}")
    cfg = config_from_args(preset, sets)
    frontend = None if audio_frontend in (None, "logmel") else audio_frontend
    os.makedirs(out, exist_ok=True)
    written: Dict[str, Any] = {}
    if "flops" in what or "memory" in what:
        result = compare(cfg, video_frames, eclipse_frames, batch=batch, modes=modes, steps=steps,
                         warmup=warmup, device=device, amp=amp, audio_encoder=audio_encoder,
                         isolate=isolate, measure_speed="memory" in what,
                         audio_frontend=frontend, repeats=repeats, threads=threads)
        if command is not None:
            result["command"] = command
        atomic_write_text(json.dumps(result, indent=2) + "\n", os.path.join(out, "bench.json"))
        table = format_table(result) if "memory" in what else _flops_table(result)
        atomic_write_text(table + "\n", os.path.join(out, "bench.md"))
        if "memory" in what:
            save_figure(plot_bench(result), os.path.join(out, "bench.png"))
        print(table)
        written["bench"] = result
    if "sweep" in what:
        curves = frame_sweep(cfg, sweep, audio_frontend=frontend)
        atomic_write_text(json.dumps(curves, indent=2) + "\n", os.path.join(out, "frame_sweep.json"))
        save_figure(plot_frame_sweep(curves), os.path.join(out, "frame_sweep.png"))
        print(format_sweep(curves))
        written["sweep"] = curves
    print(f"wrote {out}")
    return written


def format_sweep(sweep: Mapping[str, Any]) -> str:
    """:func:`frame_sweep`'s curves as text: a line of frame counts, then GFLOPs per curve."""
    lines = ["frames " + " ".join(f"{f:>8d}" for f in sweep["frames"])]
    lines += [f"{label}: " + " ".join(f"{v:8.2f}" for v in values)
              for label, values in sweep["curves"].items()]
    return "\n".join(lines)


def _flops_table(result: Mapping[str, Any]) -> str:
    lines = ["| model | frames | video | audio enc. | text | total (video+text) | + audio enc. |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for key in ("video_only", "eclipse"):
        r = result["rows"][key]
        g = r["gflops"]
        lines.append(f"| {key} | {r['frames']} | {g['video']:.2f} | {g['audio']:.2f} | "
                     f"{g['text']:.2f} | {r['gflops_total']:.2f} | {r['gflops_total_with_audio']:.2f} |")
    rt = result["ratios"]
    lines.append(f"| ratio | | | | | {rt['gflops']:.2f}x | {rt['gflops_with_audio_encoder']:.2f}x |")
    return "\n".join(lines)
