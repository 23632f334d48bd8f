"""``eclipse-lite ablate``: the paper's ablations (Tables 3-8, Fig. 4) at small scale.

Groups (each row fine-tunes one model from the same pretrained towers, for the same steps):

    fusion      joint / a2v / eclipse                       (Table 4: attention schemes)
    blocks      AV blocks in all layers / the last 4 of 12 (scaled: the last third) / none
                (Table 5: number of blocks)
    frames      4 / 8 / 16 / 32 frames, ECLIPSE vs video only   (Fig. 4 / Table 3)
    window      audio window short / default / long          (Table 7: audio window length)
    sampling    uniform vs random training frames             (Table 8: frame sampling)
    modalities  audio / video / audio + video                 (Table 6)

Results: ``OUT/ablation.json`` and ``OUT/ablation.md`` (mean ± std over seeds).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from torch.utils.data import Dataset

from eclipse_lite.config import ModelConfig
from eclipse_lite.data import RetrievalDataset, read_jsonl_manifest
from eclipse_lite.data.benchmark import ensure_benchmark, load_benchmark
from eclipse_lite.data.memory import cached_materialize
from eclipse_lite.files import atomic_write_text
from eclipse_lite.studies.demo import demo_train_config, finetune_and_test, pretrain_config_for
from eclipse_lite.train.pretrain import pretrained_towers

GROUPS = ("fusion", "blocks", "frames", "window", "sampling", "modalities")


class EpochDraws(Dataset):
    """Several pre-decoded draws of the same split; epoch e trains on draw e mod n (random sampling)."""

    def __init__(self, draws: Sequence[Dataset]) -> None:
        if not draws:
            raise ValueError("EpochDraws needs at least one draw")
        self.draws, self.current = list(draws), 0

    def set_epoch(self, epoch: int) -> None:
        self.current = epoch % len(self.draws)

    def __len__(self) -> int:
        return len(self.draws[self.current])

    def __getitem__(self, i: int):
        return self.draws[self.current][i]


def grid(cfg: ModelConfig, groups: Optional[Iterable[str]] = None) -> List[Tuple[str, str, dict]]:
    """(group, row label, settings) for every row. Settings: ModelConfig overrides plus the
    data keys ``sampling`` and ``random_draws``."""
    layers = cfg.vision_layers
    # the paper's "last 4" of ViT-B/32's 12 layers, kept as a fraction: a third of the layers
    # (4 of 12 at base; 2 of 4 at tiny, rounded up so that a shallow tower keeps at least one)
    part = tuple(range(layers - max(1, math.ceil(layers / 3)), layers))
    short, long = cfg.audio_window_s / 4, cfg.audio_window_s * 2
    rows = {
        "fusion": [("joint", {"fusion": "joint"}), ("A2V", {"fusion": "a2v"}),
                   ("A2V + V2A (ECLIPSE)", {"fusion": "eclipse"})],
        "blocks": [("none (video only)", {"fusion": "none"}),
                   (f"last {len(part)} layers", {"fusion": "eclipse", "av_layers": part}),
                   (f"all {layers} layers", {"fusion": "eclipse"})],
        "frames": [(f"{f} frames, {name}", {"fusion": fusion, "num_frames": f})
                   for f in (4, 8, 16, 32) for name, fusion in (("video only", "none"), ("ECLIPSE", "eclipse"))],
        "window": [(f"{w:g} s", {"fusion": "eclipse", "audio_window_s": w})
                   for w in (short, cfg.audio_window_s, long)],
        "sampling": [("uniform", {"fusion": "eclipse"}),
                     ("random", {"fusion": "eclipse", "sampling": "random", "random_draws": 3})],
        "modalities": [("audio", {"fusion": "audio_only"}), ("video", {"fusion": "none"}),
                       ("audio + video", {"fusion": "eclipse"})],
    }
    chosen = list(groups) if groups else list(GROUPS)
    unknown = [g for g in chosen if g not in rows]
    if unknown:
        raise ValueError(f"unknown ablation group(s) {unknown}; known: {', '.join(GROUPS)}")
    return [(g, label, dict(settings)) for g in chosen for label, settings in rows[g]]


def run_ablation(out: Path, cfg: ModelConfig, data_dir: Optional[Path] = None, seeds: Iterable[int] = (0,),
                 groups: Optional[Sequence[str]] = None, train_overrides: Optional[dict] = None,
                 progress: bool = True) -> dict:
    """Fine-tune and test every row of :func:`grid`; write ablation.json / ablation.md."""
    out = Path(out)
    seeds = list(seeds)
    data_dir = ensure_benchmark(cfg.name, data_dir, progress=progress)
    clip_state, encoder, _ = pretrained_towers(cfg, Path(data_dir) / "pretrained",
                                               pretrain_config_for(cfg.name), progress=progress)
    tc = demo_train_config(cfg.name, **(train_overrides or {}))
    clip_cache: Dict[Tuple, dict] = {}
    rows = []
    t0 = time.time()
    for group, label, settings in grid(cfg, groups):
        sampling = settings.pop("sampling", "uniform")
        draws = settings.pop("random_draws", 1)
        row_cfg = cfg.replace(**settings)
        key = (row_cfg.num_frames, row_cfg.audio_window_s)
        if key not in clip_cache:
            clip_cache[key] = load_benchmark(data_dir, row_cfg, encoder, progress=progress)
        clips = dict(clip_cache[key])
        if sampling == "random":
            manifest = Path(data_dir) / "train.jsonl"
            items = read_jsonl_manifest(str(manifest))
            clips["train"] = EpochDraws([
                cached_materialize(manifest, RetrievalDataset.from_config(items, row_cfg, sampling="random",
                                                                          seed=d),
                                   encoder, Path(data_dir) / "cache", progress=progress)
                for d in range(draws)])
        results = []
        for seed in seeds:
            res = finetune_and_test(row_cfg.fusion, row_cfg, clips, clip_state, tc,
                                    out / "runs" / f"{group}-{len(rows)}-seed{seed}", seed, progress=progress)
            results.append({"t2v": res["t2v"], "v2t": res["v2t"], "gflops": res["gflops"]})
        r1 = [r["t2v"]["R@1"] for r in results]
        rows.append({"group": group, "row": label, "settings": {**settings, "sampling": sampling},
                     "t2v_R@1_mean": float(np.mean(r1)),
                     "t2v_R@1_std": float(np.std(r1, ddof=1)) if len(r1) > 1 else 0.0,
                     "t2v_R@5_mean": float(np.mean([r["t2v"]["R@5"] for r in results])),
                     "gflops": results[0]["gflops"], "per_seed": results})
        print(f"[{group}] {label}: T2V R@1 {rows[-1]['t2v_R@1_mean']:.1f} ± {rows[-1]['t2v_R@1_std']:.1f}",
              flush=True)
    summary = {"preset": cfg.name, "seeds": seeds, "rows": rows, "seconds": time.time() - t0,
               "train_config": {k: v for k, v in vars(tc).items()}}
    atomic_write_text(json.dumps(summary, indent=2, default=str), out / "ablation.json")
    atomic_write_text(ablation_markdown(summary), out / "ablation.md")
    return summary


def ablation_markdown(summary: dict) -> str:
    """One table per group, shaped like the paper's ablation tables."""
    lines = [f"# Ablations ({summary['preset']} preset, seeds {summary['seeds']})", ""]
    group = None
    for row in summary["rows"]:
        if row["group"] != group:
            group = row["group"]
            lines += ["", f"## {group}", "", "| setting | T2V R@1 | T2V R@5 | GFLOPs / video |",
                      "| --- | --- | --- | --- |"]
        lines.append(f"| {row['row']} | {row['t2v_R@1_mean']:.1f} ± {row['t2v_R@1_std']:.1f} | "
                     f"{row['t2v_R@5_mean']:.1f} | {row['gflops']:.3f} |")
    return "\n".join(lines) + "\n"
