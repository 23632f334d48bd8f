"""Peak GPU memory and speed of one training step of the paper's recipe at the base shape.

    python scripts/gpu_paper_step.py --out runs/paper_step.json [--batches 64] [--largest]

ViT-B/32 with an AV block in every layer, 32 frames, precomputed audio embeddings, the paper's
recipe (``TrainConfig.paper()``: batch 64, bf16 autocast, gradient checkpointing, AdamW) on
random inputs, through the same ``TrainingModule`` / ``train_step`` / ``optimizer_step`` that
``fit`` uses. Peak memory is ``torch.cuda.max_memory_allocated`` over model + optimiser + one
warm-up and two timed steps; the computed estimate (``estimate_base_memory``) is printed beside
it. ``--largest`` then doubles the batch until it runs out of memory and bisects (to a multiple
of 16) for the largest batch that fits. Needs CUDA.
"""
from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path
from typing import Optional

import torch

from eclipse_lite.config import ModelConfig
from eclipse_lite.model import ECLIPSE
from eclipse_lite.train.config import TrainConfig, resolve_precision
from eclipse_lite.train.optim import build_optimizer, build_scheduler
from eclipse_lite.train.step import TrainingModule, optimizer_step, train_step


def random_inputs(cfg: ModelConfig, batch: int, device: torch.device) -> dict:
    """Model inputs of ``batch`` videos at ``cfg``'s shape: frames [B, T, 3, H, W], audio
    [B, T, A], caption ids/mask [B, L]."""
    g = torch.Generator().manual_seed(0)
    t, s = cfg.num_frames, cfg.image_size
    ids = torch.randint(1, cfg.vocab_size - 1, (batch, cfg.context_length), generator=g)
    ids[:, -1] = cfg.vocab_size - 1                      # an end-of-text token in every row
    return {"frames": torch.randn(batch, t, 3, s, s, generator=g).to(device),
            "frame_mask": None,
            "audio": torch.randn(batch, t, cfg.audio_dim, generator=g).to(device),
            "audio_mask": None,
            "input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def one_batch(batch: int, steps: int = 2, warmup: int = 1, preset: str = "base",
              device: str = "cuda") -> dict:
    """Peak memory (GiB) and seconds per step of the paper's recipe at ``batch``."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    tc = TrainConfig.paper(device=str(device), batch_size=batch)
    cfg = ModelConfig.preset(preset, audio_encoder="precomputed", gradient_checkpointing=True)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    model = ECLIPSE(cfg).to(device).train()
    module = TrainingModule(model)
    optimizer = build_optimizer(model, tc)
    scheduler = build_scheduler(optimizer, tc, total_steps=warmup + steps)
    dtype, _ = resolve_precision(tc.precision, device)
    inputs = random_inputs(cfg, batch, device)
    times, losses = [], []
    for i in range(warmup + steps):
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        losses.append(train_step(module, inputs, autocast_dtype=dtype))
        optimizer_step(optimizer, scheduler, None, tc.grad_clip, i)
        if cuda:
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 1024 ** 3 if cuda else float("nan")
    reserved = torch.cuda.max_memory_reserved(device) / 1024 ** 3 if cuda else float("nan")
    del model, module, optimizer, scheduler, inputs
    sec = min(times)
    return {"batch": batch, "peak_allocated_gib": round(peak, 2),
            "peak_reserved_gib": round(reserved, 2), "seconds_per_step": round(sec, 3),
            "samples_per_s": round(batch / sec, 1), "losses": [round(x, 4) for x in losses],
            "precision": str(dtype), "gradient_checkpointing": True, "num_frames": cfg.num_frames}


_on_probe: list = []


def fits(batch: int, log: list) -> bool:
    try:
        row = one_batch(batch, steps=1, warmup=1)
    except torch.OutOfMemoryError:
        log.append({"batch": batch, "fits": False})
        for callback in _on_probe:
            callback()
        print(f"batch {batch}: out of memory", flush=True)
        gc.collect()
        torch.cuda.empty_cache()
        return False
    log.append({**row, "fits": True})
    for callback in _on_probe:
        callback()
    print(f"batch {batch}: {row['peak_allocated_gib']} GiB, {row['samples_per_s']} samples/s", flush=True)
    return True


def largest_batch(start: int, log: list, step: int = 16, limit: int = 4096,
                  bad: Optional[int] = None) -> int:
    """Double from ``start`` (known to fit) until out of memory, then bisect to a multiple of
    ``step``; ``bad``: a batch already known not to fit."""
    good = start
    while bad is None and good * 2 <= limit:
        if fits(good * 2, log):
            good *= 2
        else:
            bad = good * 2
    if bad is None:
        return good
    while bad - good > step:
        mid = (good + bad) // 2 // step * step
        if fits(mid, log):
            good = mid
        else:
            bad = mid
    return good


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--batches", type=int, nargs="+", default=[64])
    p.add_argument("--largest", action="store_true")
    p.add_argument("--between", type=int, nargs=2, metavar=("FITS", "OOM"), default=None,
                   help="search the largest batch between these two known batches")
    p.add_argument("--no-estimate", dest="estimate", action="store_false",
                   help="skip the computed estimate (it runs the base model on the CPU)")
    p.add_argument("--preset", default="base", help="base (default); ci for a CPU smoke run")
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_paper_step.py needs a CUDA GPU (or --device cpu --preset ci)")
    from eclipse_lite.studies.memory import estimate_base_memory
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(out)

    result = {"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
              "torch": torch.__version__, "cuda": torch.version.cuda, "rows": []}
    if args.estimate:
        result["estimate_gib_batch64"] = round(estimate_base_memory()["peak_gib"], 2)
    for b in args.batches:
        row = one_batch(b, preset=args.preset, device=args.device)
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        save()
    if args.largest or args.between:
        result["search"] = []
        _on_probe.append(save)
        start, bad = args.between if args.between else (max(args.batches), None)
        result["largest_batch"] = largest_batch(start, result["search"], bad=bad)
        print(f"largest batch that fits: {result['largest_batch']}", flush=True)
    save()


if __name__ == "__main__":
    main()
