"""The main job: benchmark → pretrained towers → fine-tune ECLIPSE, video-only, audio-only → report.

``eclipse-lite demo`` (and ``make demo``) runs :func:`run_demo`; ``eclipse-lite ablate`` runs
:func:`run_ablation`. Both fine-tune every model from the same pretrained towers, for the same
number of steps (models are compared at equal steps, not equal wall time), and evaluate on the
test split with the tie-aware metrics; the best epoch is chosen on the validation split.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from matplotlib.figure import Figure

from eclipse_lite.clip import clip_denormalize
from eclipse_lite.config import ModelConfig
from eclipse_lite.data.benchmark import ensure_benchmark, load_benchmark
from eclipse_lite.files import atomic_write_text
from eclipse_lite.model import ECLIPSE
from eclipse_lite.studies.bench import count_flops
from eclipse_lite.studies.viz import save_figure
from eclipse_lite.train.config import TrainConfig
from eclipse_lite.train.finetune import fit_best, train_and_test
from eclipse_lite.train.pretrain import PretrainConfig, init_from_pretrained, pretrained_towers
from eclipse_lite.train.results import git_commit

if TYPE_CHECKING:
    from eclipse_lite.train.loop import FitResult

log = logging.getLogger(__name__)

DEMO_MODELS = ("audio_only", "none", "eclipse")
MODEL_NAMES = {"eclipse": "ECLIPSE (A2V + V2A)", "a2v": "A2V only", "joint": "joint attention",
               "none": "video only (CLIP4Clip meanP)", "audio_only": "audio only"}


def demo_train_config(preset: str, **overrides):
    """The fine-tuning recipe of the demo for a preset (equal steps for every model)."""
    recipe = {
        "ci": dict(epochs=2, batch_size=4, lr_clip=1e-4, lr_new=1e-3, weight_decay=0.2),
        "tiny": dict(epochs=8, batch_size=32, lr_clip=3e-4, lr_new=3e-3, weight_decay=0.2),
        "base": dict(epochs=5, batch_size=64, lr_clip=1e-7, lr_new=1e-4, weight_decay=0.2),
    }[preset]
    recipe.update(overrides)
    return TrainConfig(**recipe)


def pretrain_config_for(preset: str) -> PretrainConfig:
    """Pretraining settings per preset (``ci``: a few steps, enough for tests)."""
    if preset == "ci":
        return PretrainConfig(clip_steps=60, audio_steps=40, batch_size=16, sound_pool=64)
    return PretrainConfig()


def init_model(fusion: str, cfg: ModelConfig, clip_state, seed: int) -> ECLIPSE:
    """``cfg`` with ``fusion``, its towers from the pretrained ``clip_state`` (seeded by ``seed``)."""
    torch.manual_seed(seed)
    return init_from_pretrained(ECLIPSE(cfg.replace(fusion=fusion)), clip_state)


def fine_tune(fusion: str, cfg: ModelConfig, clips, clip_state, tc, out_dir: Optional[Path],
              resume: bool = False) -> Tuple[ECLIPSE, "FitResult"]:
    """Fine-tune ``cfg`` with ``fusion`` from the pretrained towers (seeded by ``tc.seed``) on
    ``clips["train"]``, choosing the epoch on ``clips["val"]``; the model comes back holding its
    best epoch's weights when ``out_dir`` kept them."""
    model = init_model(fusion, cfg, clip_state, tc.seed)
    return model, fit_best(model, clips["train"], clips["val"], tc, out_dir, resume=resume)


def finetune_and_test(fusion: str, cfg: ModelConfig, clips, clip_state, tc, out_dir: Path,
                      seed: int, progress: bool = True, resume: bool = False) -> dict:
    """Fine-tune one model from the pretrained towers; return its test metrics and costs."""
    tc = dataclasses.replace(tc, seed=seed, progress=progress)
    model = init_model(fusion, cfg, clip_state, tc.seed)
    res = train_and_test(model, clips, tc, out_dir, resume=resume, return_sim=True)
    flops = count_flops(cfg.replace(fusion=fusion), cfg.num_frames)
    return {"t2v": res["t2v"], "v2t": res["v2t"], "gflops": flops["video"],
            "gflops_audio_encoder": flops.get("audio", 0.0), "train_seconds": res["fit_seconds"],
            "best_epoch": res["best_epoch"], "val": res["val"], "loss_curve": res["losses"],
            "steps": res["steps"], "sim": res["sim"]}


DEMO_OUT = Path("runs/demo")        # where `make demo` writes (course.runs reuses its models)


def run_demo(out: Path = DEMO_OUT, preset: str = "tiny", seeds: Sequence[int] = (0,),
             data_dir: Optional[Path] = None, models: Sequence[str] = DEMO_MODELS,
             pretrain_config: Optional[PretrainConfig] = None, train_overrides: Optional[dict] = None,
             progress: bool = True, model_overrides: Optional[dict] = None) -> dict:
    """Make the data, pretrain (or load cached towers), fine-tune each model, write the report.

    ``model_overrides`` change ModelConfig fields of every model (e.g. ``num_frames``; the
    towers are pretrained for the changed shape); ``train_overrides`` the recipe.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = ModelConfig.preset(preset, **(model_overrides or {}))
    t_start = time.time()
    data_dir = ensure_benchmark(preset, data_dir, progress=progress)
    t_data = time.time()
    pc = pretrain_config or pretrain_config_for(preset)
    clip_state, encoder, pre_info = pretrained_towers(cfg, Path(data_dir) / "pretrained", pc,
                                                       progress=progress)
    t_pre = time.time()
    clips = load_benchmark(data_dir, cfg, encoder, progress=progress)
    t_clips = time.time()
    tc = demo_train_config(preset, **(train_overrides or {}))
    runs: Dict[str, List[dict]] = {m: [] for m in models}
    for seed in seeds:
        for fusion in models:
            print(f"fine-tuning {MODEL_NAMES[fusion]} (seed {seed}) ...", flush=True)
            res = finetune_and_test(fusion, cfg, clips, clip_state, tc, out / "models" / f"{fusion}-seed{seed}",
                                    seed, progress=progress)
            print(f"  test T2V R@1 {res['t2v']['R@1']:.1f}  R@5 {res['t2v']['R@5']:.1f}  "
                  f"({res['train_seconds']:.0f} s)", flush=True)
            runs[fusion].append(res)
    results = summarise(runs, cfg, tc, seeds)
    results["timings"] = {"data_seconds": t_data - t_start, "pretrain_seconds": t_pre - t_data,
                          "pretrain_cached": pre_info.get("cached", False),
                          "decode_seconds": t_clips - t_pre, "total_seconds": time.time() - t_start}
    results["pretrain"] = {k: v for k, v in pre_info.items() if not k.endswith("_losses")}
    results["data_dir"] = str(data_dir)
    write_report(out, results, runs, clips)
    return results


def _mean_std(values: List[float]) -> Dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def summarise(runs: Dict[str, List[dict]], cfg: ModelConfig, tc, seeds: Sequence[int]) -> dict:
    """results.json: per model the metric dicts (first seed; exactly retrieval_metrics' keys),
    plus mean/std over seeds when there are several."""
    models = {}
    for fusion, res in runs.items():
        first = res[0]
        entry = {"t2v": first["t2v"], "v2t": first["v2t"], "gflops": first["gflops"],
                 "train_seconds": first["train_seconds"], "best_epoch": first["best_epoch"]}
        if len(res) > 1:
            entry["seeds"] = {f"t2v_{k}": _mean_std([r["t2v"][k] for r in res]) for k in res[0]["t2v"]}
            entry["seeds"].update({f"v2t_{k}": _mean_std([r["v2t"][k] for r in res]) for k in res[0]["v2t"]})
            entry["per_seed"] = [{"t2v": r["t2v"], "v2t": r["v2t"]} for r in res]
        models[fusion] = entry
    commit, dirty = git_commit()
    return {"models": models, "config": cfg.to_dict(), "train_config": dataclasses.asdict(tc),
            "seeds": list(seeds), "commit": commit + ("+dirty" if dirty else "")}


def save_loss_curves(curves: Dict[str, List[float]], path: Path) -> None:
    """One line per model: training loss against step (smoothed over 10 steps)."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    for name, losses in curves.items():
        if len(losses):
            k = min(10, len(losses))
            smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
            ax.plot(np.arange(len(smooth)) + k, smooth, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("InfoNCE loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def save_gallery(sim: torch.Tensor, clips, path: Path, queries: Sequence[int] = (0, 1, 2), k: int = 5) -> None:
    """A caption and its top-k videos (middle frame of each), ground truth framed in green."""
    queries = [q for q in queries if q < sim.shape[0]]
    fig = Figure(figsize=(2.0 * k, 2.5 * len(queries)))
    axes = fig.subplots(len(queries), k, squeeze=False)
    for row, q in enumerate(queries):
        top = torch.argsort(sim[q], descending=True)[:k].tolist()
        for col, v in enumerate(top):
            frames = clips.frames[v]
            img = clip_denormalize(frames[frames.shape[0] // 2]).numpy()        # [H, W, 3] in [0, 1]
            ax = axes[row][col]
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"#{col + 1}: {clips.video_ids[v]}", fontsize=7)
            if v == q:
                for side in ax.spines.values():
                    side.set_edgecolor("limegreen")
                    side.set_linewidth(4)
        caption = clips.captions[q]
        axes[row][0].set_ylabel("\n".join(caption[i:i + 28] for i in range(0, min(len(caption), 112), 28)),
                                fontsize=6, rotation=0, ha="right", va="center")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def write_report(out: Path, results: dict, runs: Dict[str, List[dict]], clips) -> None:
    """runs/demo/{results.json, report.md, loss_curves.png, gallery.png}."""
    out = Path(out)
    atomic_write_text(json.dumps(results, indent=2), out / "results.json")
    save_loss_curves({MODEL_NAMES[m]: r[0]["loss_curve"] for m, r in runs.items()}, out / "loss_curves.png")
    best = "eclipse" if "eclipse" in runs else next(iter(runs))
    if runs[best][0].get("sim") is not None:
        save_gallery(runs[best][0]["sim"], clips["test"], out / "gallery.png")
    atomic_write_text(report_markdown(results), out / "report.md")


def report_markdown(results: dict) -> str:
    """The results table and timings of a run, as markdown."""
    lines = [f"# eclipse-lite demo ({results['config']['name']} preset)", "",
             f"Commit `{results['commit']}`, seeds {results['seeds']}, "
             f"{results['config']['num_frames']} frames, test split of {results['data_dir']}.", "",
             "| model | T2V R@1 | R@5 | R@10 | MdR | MnR | V2T R@1 | GFLOPs / video | train s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for fusion, m in results["models"].items():
        t, v = m["t2v"], m["v2t"]
        r1 = f"{t['R@1']:.1f}"
        if "seeds" in m:
            s = m["seeds"]["t2v_R@1"]
            r1 = f"{s['mean']:.1f} ± {s['std']:.1f}"
        lines.append(f"| {MODEL_NAMES[fusion]} | {r1} | {t['R@5']:.1f} | {t['R@10']:.1f} | {t['MdR']:.1f} "
                     f"| {t['MnR']:.1f} | {v['R@1']:.1f} | {m['gflops']:.3f} | {m['train_seconds']:.0f} |")
    tm = results.get("timings", {})
    lines += ["", f"Timings: data {tm.get('data_seconds', 0):.0f} s, pretraining "
              f"{tm.get('pretrain_seconds', 0):.0f} s (cached: {tm.get('pretrain_cached')}), decoding "
              f"{tm.get('decode_seconds', 0):.0f} s, total {tm.get('total_seconds', 0):.0f} s.", "",
              "![loss curves](loss_curves.png)", "", "![retrieval gallery](gallery.png)", ""]
    return "\n".join(lines)


def rewrite_report(run: Path) -> None:
    """Re-write ``report.md`` of a finished run from its ``results.json`` (no retraining)."""
    path = Path(run) / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `eclipse-lite demo --out {run}` first")
    results = json.loads(path.read_text())
    atomic_write_text(report_markdown(results), Path(run) / "report.md")
