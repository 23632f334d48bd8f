"""Time one ci-preset training step (batch 8 x 4 frames, forward + backward) on this machine.

Usage: python scripts/time_ci_step.py [--fusion eclipse] [--repeats 20]
Prints the median over repeats (after warm-up) for ECLIPSE and for video-only side by side.
"""
import argparse
import statistics
import time

import torch

import eclipse_lite as el


def step_seconds(fusion: str, repeats: int) -> float:
    torch.manual_seed(0)
    cfg = el.ModelConfig.preset("ci", fusion=fusion)
    model = el.ECLIPSE(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    frames = torch.randn(8, 4, 3, cfg.image_size, cfg.image_size)
    audio = torch.randn(8, 4, cfg.audio_dim)
    ids, mask = el.tokenize([f"caption {i}" for i in range(8)], context_length=cfg.context_length)
    times = []
    for i in range(repeats + 3):
        t0 = time.perf_counter()
        loss = model(frames, audio, ids, mask)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    for fusion in ("eclipse", "none"):
        print(f"ci step, fusion={fusion:8s}: {1000 * step_seconds(fusion, args.repeats):.1f} ms")
