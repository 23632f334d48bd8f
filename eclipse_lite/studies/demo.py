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
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from eclipse_lite.checkpoints import atomic_write_text
from eclipse_lite.config import ModelConfig
from eclipse_lite.model import ECLIPSE
from eclipse_lite.train.pretrain import PretrainConfig, init_from_pretrained, pretrained_towers

if TYPE_CHECKING:
    from eclipse_lite.data.memory import ClipTensors
    from eclipse_lite.train.loop import FitResult

log = logging.getLogger(__name__)

DEMO_MODELS = ("audio_only", "none", "eclipse")
MODEL_NAMES = {"eclipse": "ECLIPSE (A2V + V2A)", "a2v": "A2V only", "joint": "joint attention",
               "none": "video only (CLIP4Clip meanP)", "audio_only": "audio only"}
SPLITS = ("train", "val", "test")


def default_data_dir(preset: str) -> Path:
    return Path("data") / "generated" / preset


def ensure_benchmark(preset: str, data_dir: Optional[Path] = None, seed: int = 0,
                     progress: bool = True) -> Path:
    """The bundled benchmark for ``preset`` in ``data_dir``, generated if it is not there."""
    from eclipse_lite.data.synth import generate as synth
    data_dir = Path(data_dir) if data_dir else default_data_dir(preset)
    if not (data_dir / "test.jsonl").exists():
        log.info("making the %s benchmark in %s", preset, data_dir)
        synth.make_benchmark(data_dir, size=preset, seed=seed, progress=progress)
    return data_dir


def check_data_dir(data_dir: Path, preset: str) -> None:
    """A missing benchmark names the command that makes it."""
    missing = [s for s in SPLITS if not (Path(data_dir) / f"{s}.jsonl").exists()]
    if missing:
        raise FileNotFoundError(
            f"{data_dir} has no {', '.join(s + '.jsonl' for s in missing)}: make the bundled benchmark "
            f"with `eclipse-lite make-data --preset {preset} --out {data_dir}` (or `make data "
            f"PRESET={preset}`), or point --data at a folder with train/val/test.jsonl manifests")


def load_clips(data_dir: Path, cfg: ModelConfig, audio_encoder, sampling: str = "uniform",
               progress: bool = True) -> Dict[str, "ClipTensors"]:
    """Every split decoded once (frames + per-frame audio embeddings), cached under data_dir/cache."""
    from eclipse_lite.data.dataset import RetrievalDataset, read_jsonl_manifest
    from eclipse_lite.data.memory import cached_materialize
    check_data_dir(data_dir, cfg.name)
    clips = {}
    for split in SPLITS:
        manifest = Path(data_dir) / f"{split}.jsonl"
        items = read_jsonl_manifest(str(manifest))
        dataset = RetrievalDataset.from_config(items, cfg, sampling=sampling)
        clips[split] = cached_materialize(manifest, dataset, audio_encoder, Path(data_dir) / "cache",
                                          progress=progress)
    return clips


def demo_train_config(preset: str, **overrides):
    """The fine-tuning recipe of the demo for a preset (equal steps for every model)."""
    from eclipse_lite.train.config import TrainConfig
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


def fine_tune(fusion: str, cfg: ModelConfig, clips, clip_state, tc, out_dir: Optional[Path],
              resume: bool = False) -> Tuple[ECLIPSE, "FitResult"]:
    """Fine-tune ``cfg`` with ``fusion`` from the pretrained towers (seeded by ``tc.seed``) on
    ``clips["train"]``, choosing the epoch on ``clips["val"]``; the model comes back holding its
    best epoch's weights when ``out_dir`` kept them."""
    from eclipse_lite.checkpoints import read_state_dict
    from eclipse_lite.train.loop import fit
    torch.manual_seed(tc.seed)
    model = init_from_pretrained(ECLIPSE(cfg.replace(fusion=fusion)), clip_state)
    result = fit(model, clips["train"], clips["val"], tc, out_dir=out_dir, resume=resume)
    if result.best_dir is not None and (Path(result.best_dir) / "model.safetensors").exists():
        model.load_state_dict(read_state_dict(Path(result.best_dir) / "model.safetensors"))
    return model, result


def finetune_and_test(fusion: str, cfg: ModelConfig, clips, clip_state, tc, out_dir: Path,
                      seed: int, progress: bool = True, resume: bool = False) -> dict:
    """Fine-tune one model from the pretrained towers; return its test metrics and costs."""
    from eclipse_lite.studies.bench import count_flops
    from eclipse_lite.train.evaluate import evaluate
    tc = dataclasses.replace(tc, seed=seed, progress=progress)
    t0 = time.time()
    model, result = fine_tune(fusion, cfg, clips, clip_state, tc, out_dir, resume=resume)
    seconds = time.time() - t0
    test = evaluate(model, clips["test"], batch_size=64, return_sim=True)
    flops = count_flops(cfg.replace(fusion=fusion), cfg.num_frames)
    return {"t2v": test["t2v"], "v2t": test["v2t"], "gflops": flops["video"],
            "gflops_audio_encoder": flops.get("audio", 0.0), "train_seconds": seconds,
            "best_epoch": result.best_epoch, "val": result.best_metrics, "loss_curve": result.losses,
            "steps": result.global_step, "sim": test.get("sim")}


def finished_run(run_dir: Path, cfg: ModelConfig, recipe=None,
                 data_dir: Optional[Path] = None) -> Optional[Tuple[Path, dict]]:
    """``(checkpoint dir, trainer state)`` of a finished fine-tuning run in ``run_dir`` (as
    :func:`eclipse_lite.train.loop.fit` writes it: ``best/`` when kept, else ``last/``), or None when
    there is none, it is unfinished, it trained another model than ``cfg``, another recipe than
    ``recipe`` (a TrainConfig; None accepts any), or it is older than the benchmark in
    ``data_dir`` (its ``meta.json`` is written when the benchmark is made)."""
    run_dir = Path(run_dir)
    state_file = run_dir / "last" / "trainer_state.json"
    best = run_dir / "best" if (run_dir / "best" / "model.safetensors").exists() else run_dir / "last"
    if not (state_file.exists() and (best / "model.safetensors").exists()):
        return None
    state = json.loads(state_file.read_text())
    stored = state.get("model_config")
    if (not state.get("finished") or stored is None
            or cfg.fields_differing_from(stored, ignore=("name", "gradient_checkpointing"))):
        return None                                    # unfinished, or another model / preset
    meta = Path(data_dir) / "meta.json" if data_dir is not None else None
    if meta is not None and meta.exists() and state_file.stat().st_mtime < meta.stat().st_mtime:
        return None                                    # trained before the benchmark was remade
    if recipe is not None and state.get("train_config") != recipe.to_dict():
        return None                                    # other settings (e.g. max_steps)
    return best, state


def earlier_runs(fusion: str, seed: int, recipe) -> List[Tuple[Path, object]]:
    """Where ``make demo`` (``runs/demo/models/<fusion>-seed<seed>``, its own recipe: any is
    accepted) and ``make notebooks`` (notebook 04's ``models/<fusion>``, only with ``recipe``)
    leave fine-tuned models, relative to the repository root: :func:`finetuned`'s ``reuse``."""
    return [(Path("runs/demo/models") / f"{fusion}-seed{seed}", None),
            (Path("runs/notebooks/04_contrastive_training/models") / fusion, recipe)]


def finetuned(fusion: str, cfg: ModelConfig, clips, clip_state, tc, out_dir: Path,
              data_dir: Optional[Path] = None,
              reuse: Sequence[Tuple[Path, object]] = ()) -> Tuple[ECLIPSE, List[float], str]:
    """A fine-tuned ``fusion`` model of ``cfg``: ``(model, loss per step, where it came from)``.

    Loads the checkpoint of the first finished run that :func:`finished_run` accepts among
    ``reuse`` (``(run dir, recipe or None)`` pairs, e.g. the demo's and notebook 04's runs) and
    ``out_dir`` with recipe ``tc``; otherwise fine-tunes now into ``out_dir`` (:func:`fine_tune`).
    The notebooks use this so that a model is trained once and then shared between them.
    """
    model_cfg = cfg.replace(fusion=fusion)
    for run_dir, recipe in [*reuse, (Path(out_dir), tc)]:
        found = finished_run(run_dir, model_cfg, recipe, data_dir)
        if found is not None:
            best, state = found
            return ECLIPSE.from_pretrained(best), [r["loss"] for r in state.get("history", [])], str(best)
    model, result = fine_tune(fusion, cfg, clips, clip_state, tc, Path(out_dir))
    return model, result.losses, "fine-tuned now"


def run_demo(out: Path = Path("runs/demo"), preset: str = "tiny", seeds: Sequence[int] = (0,),
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
    clips = load_clips(data_dir, cfg, encoder, progress=progress)
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
    from eclipse_lite.train.results import git_commit
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
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
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
    _save_figure(fig, path)


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def save_gallery(sim: torch.Tensor, clips, path: Path, queries: Sequence[int] = (0, 1, 2), k: int = 5) -> None:
    """A caption and its top-k videos (middle frame of each), ground truth framed in green."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from eclipse_lite.config import CLIP_MEAN, CLIP_STD
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    queries = [q for q in queries if q < sim.shape[0]]
    fig, axes = plt.subplots(len(queries), k, figsize=(2.0 * k, 2.5 * len(queries)), squeeze=False)
    for row, q in enumerate(queries):
        top = torch.argsort(sim[q], descending=True)[:k].tolist()
        for col, v in enumerate(top):
            frames = clips.frames[v].float()
            img = (frames[frames.shape[0] // 2] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
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
    _save_figure(fig, path)


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
