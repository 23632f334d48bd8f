"""Fine-tune video-only and ECLIPSE from the same pretrained towers with several seeds; print test R@1.

Usage: python scripts/compare_seeds.py --preset tiny --seeds 0 1 2 [--fusions none,eclipse]
       [--audio-steps 300]
Uses the demo's recipe (``pipeline.demo_train_config``) and cached towers/clips under
data/generated/PRESET; evaluates the model after the last epoch on the test split.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from eclipse_lite.config import ModelConfig
from eclipse_lite.model import ECLIPSE
from eclipse_lite.pipeline import demo_train_config, ensure_benchmark, load_clips, pretrain_config_for
from eclipse_lite.pretrain import init_from_pretrained, pretrained_towers
from eclipse_lite.train import evaluate, fit


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--fusions", default="none,eclipse")
    p.add_argument("--audio-steps", type=int, default=None, help="pretraining steps of the audio encoder")
    args = p.parse_args()
    cfg = ModelConfig.preset(args.preset)
    data = ensure_benchmark(args.preset)
    pc = pretrain_config_for(args.preset)
    if args.audio_steps is not None:
        pc.audio_steps = args.audio_steps
    clip_state, encoder, _ = pretrained_towers(cfg, Path(data) / "pretrained", pc, progress=False)
    clips = load_clips(data, cfg, encoder, progress=False)
    r1 = {f: [] for f in args.fusions.split(",")}
    for seed in args.seeds:
        for fusion in r1:
            torch.manual_seed(seed)
            model = init_from_pretrained(ECLIPSE(cfg.replace(fusion=fusion)), clip_state)
            t0 = time.time()
            fit(model, clips["train"], clips["val"], demo_train_config(args.preset, seed=seed, progress=False))
            test = evaluate(model, clips["test"], batch_size=64)
            r1[fusion].append(test["t2v"]["R@1"])
            print(json.dumps({"seed": seed, "fusion": fusion, "seconds": round(time.time() - t0),
                              "t2v": test["t2v"]}), flush=True)
    for fusion, values in r1.items():
        print(f"{fusion}: T2V R@1 {np.mean(values):.1f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.1f} "
              f"over seeds {args.seeds}")


if __name__ == "__main__":
    main()
