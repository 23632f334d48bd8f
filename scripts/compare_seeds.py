"""Fine-tune video-only and ECLIPSE from the same pretrained towers with several seeds; print test
(and validation) R@1.

Usage: python scripts/compare_seeds.py --preset tiny --seeds 0 1 2 [--fusions audio_only,none,eclipse]
       [--audio-steps 300] [--epochs 24] [--out runs/compare_seeds.json] [--save-models DIR]
Uses the demo's recipe (``pipeline.demo_train_config``) and cached towers/clips under
data/generated/PRESET; evaluates the model after the last epoch on the test split. Also prints
the pretrained towers' zero-shot score (video only, no fine-tuning) and, for each fusion, the
mean and sample std over seeds and its lead over video-only ("none") seed by seed.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from eclipse_lite.config import ModelConfig
from eclipse_lite.data.benchmark import ensure_benchmark, load_benchmark
from eclipse_lite.model import ECLIPSE
from eclipse_lite.studies.demo import demo_train_config, pretrain_config_for
from eclipse_lite.train.evaluate import evaluate
from eclipse_lite.train.loop import fit
from eclipse_lite.train.pretrain import init_from_pretrained, pretrained_towers


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--fusions", default="none,eclipse")
    p.add_argument("--audio-steps", type=int, default=None, help="pretraining steps of the audio encoder")
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: the demo's)")
    p.add_argument("--out", type=Path, default=None, help="also write the figures to this JSON file")
    p.add_argument("--save-models", type=Path, default=None,
                   help="save each fine-tuned model here as FUSION-seedN (save_pretrained), e.g. for "
                        "eclipse-lite saliency --checkpoint ...")
    args = p.parse_args()
    cfg = ModelConfig.preset(args.preset)
    data = ensure_benchmark(args.preset)
    pc = pretrain_config_for(args.preset)
    if args.audio_steps is not None:
        pc.audio_steps = args.audio_steps
    clip_state, encoder, _ = pretrained_towers(cfg, Path(data) / "pretrained", pc, progress=False)
    clips = load_benchmark(data, cfg, encoder, progress=False)
    zero_shot = evaluate(init_from_pretrained(ECLIPSE(cfg.replace(fusion="none")), clip_state),
                         clips["test"], batch_size=64)
    print(json.dumps({"zero_shot": zero_shot["t2v"]}), flush=True)
    r1 = {f: [] for f in args.fusions.split(",")}
    val_r1 = {f: [] for f in r1}
    runs = []
    for seed in args.seeds:
        for fusion in r1:
            torch.manual_seed(seed)
            model = init_from_pretrained(ECLIPSE(cfg.replace(fusion=fusion)), clip_state)
            t0 = time.time()
            recipe = {} if args.epochs is None else {"epochs": args.epochs}
            tc = demo_train_config(args.preset, seed=seed, progress=False, **recipe)
            fit(model, clips["train"], clips["val"], tc)
            test = evaluate(model, clips["test"], batch_size=64)
            val = evaluate(model, clips["val"], batch_size=64)
            if args.save_models is not None:
                model.save_pretrained(args.save_models / f"{fusion}-seed{seed}")
            r1[fusion].append(test["t2v"]["R@1"])
            val_r1[fusion].append(val["t2v"]["R@1"])
            runs.append({"seed": seed, "fusion": fusion, "seconds": round(time.time() - t0),
                         "t2v": test["t2v"], "v2t": test["v2t"], "val_t2v": val["t2v"]})
            print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for fusion, values in r1.items():
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        summary[fusion] = {"t2v_r1": values, "mean": float(np.mean(values)), "std": std,
                           "val_t2v_r1": val_r1[fusion], "val_mean": float(np.mean(val_r1[fusion]))}
        line = (f"{fusion}: T2V R@1 {np.mean(values):.1f} ± {std:.1f} over seeds {args.seeds} "
                f"(val {np.mean(val_r1[fusion]):.1f}, seeds {val_r1[fusion]})")
        if "none" in r1 and fusion != "none":
            lead = [a - b for a, b in zip(values, r1["none"])]
            summary[fusion]["lead_over_none"] = lead
            line += f"; lead over video-only per seed {lead}, mean {np.mean(lead):.1f}"
        print(line)
    if args.out is not None:
        from eclipse_lite.files import atomic_write_text
        from eclipse_lite.train.results import git_commit
        commit, dirty = git_commit()
        record = {"preset": args.preset, "seeds": args.seeds, "commit": commit + ("+dirty" if dirty else ""),
                  "zero_shot": zero_shot["t2v"], "runs": runs, "summary": summary}
        atomic_write_text(json.dumps(record, indent=2), args.out)


if __name__ == "__main__":
    main()
