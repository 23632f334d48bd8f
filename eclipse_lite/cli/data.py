"""Data commands: ``oracle`` (what frames, sound or both can tell on the bundled benchmark,
``eclipse_lite.data.synth.oracle``) and ``loader-bench`` (clips/s of the data loader,
``eclipse_lite.studies.loader_bench``)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import List

from eclipse_lite.cli.common import CommandError, one_line
from eclipse_lite.data.readers import Item, read_jsonl_manifest
from eclipse_lite.data.synth.oracle import MODALITIES, format_table, run_oracle
from eclipse_lite.studies import loader_bench


def add_parsers(sub) -> None:
    p = sub.add_parser("oracle", help="modality oracle of the bundled benchmark: T2V R@1 from "
                                      "sparse frames, their audio, or both",
                       description="Modality oracle of the bundled benchmark: how much can sparse "
                                   "frames, their audio, or both tell?")
    p.add_argument("--data", required=True, type=Path,
                   help="a benchmark made by eclipse-lite make-data")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--frames", type=int, default=8, help="uniform frames per video (default 8)")
    p.add_argument("--window-s", type=float, default=10.0, help="audio window per frame (default 10 s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.set_defaults(func=cmd_oracle)
    _add_loader_bench(sub)


def cmd_oracle(args: argparse.Namespace) -> None:
    try:
        result = run_oracle(args.data, args.split, args.frames, args.window_s)
    except (KeyError, ValueError) as exc:   # events.json misses videos; fewer than 2 videos
        raise CommandError(one_line(exc)) from exc
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(format_table(result, args.frames, args.window_s))
    f = result["facts"]
    print(f"\n{int(f['videos'])} {args.split} videos; {f['facts_per_caption']:.1f} facts per caption "
          f"({f['sound_facts_per_caption']:.1f} sounds); fraction revealed: "
          + ", ".join(f"{m} {f[f'{m}_revealed_fraction']:.2f}" for m in MODALITIES))


def _add_loader_bench(sub) -> None:
    p = sub.add_parser("loader-bench", help="data-loading throughput: clips/s for decode + T frames "
                                            "+ per-frame audio windows",
                       description="Data-loading throughput: clips per second for decode + T frames "
                                   "+ per-frame audio windows (eclipse_lite.studies.loader_bench).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", help="folder of video files")
    src.add_argument("--manifest", help="a JSONL manifest (generic format)")
    src.add_argument("--make", type=int, metavar="N", help="write N test videos, then measure")
    p.add_argument("--out", default="data/generated/bench", help="where --make writes")
    p.add_argument("--duration", type=float, default=90.0, help="--make: seconds per video")
    p.add_argument("--fps", type=int, default=4, help="--make: frame rate")
    p.add_argument("--size", type=int, default=128, help="--make: frame size (px)")
    p.add_argument("--frames", type=int, default=32, help="frames per clip (T)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--image-size", type=int, default=224, help="frames are squashed to this")
    p.add_argument("--window", type=float, default=10.0, help="audio window per frame (s)")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--backend", default="auto", choices=["auto", "decord", "pyav"])
    p.add_argument("--epochs", type=int, default=2, help="passes over the clips")
    p.add_argument("--max-clips", type=int, default=None)
    p.add_argument("--no-compact", dest="compact", action="store_false",
                   help="workers normalise frames and cut audio windows themselves (~40 MB per "
                        "32-frame clip through shared memory instead of ~6 MB)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.set_defaults(func=cmd_loader_bench)


def _bench_items(args: argparse.Namespace) -> List[Item]:
    """The clips to load: ``--make N`` fresh test videos, a ``--videos`` folder or a ``--manifest``."""
    if args.make:
        t0 = time.perf_counter()
        loader_bench.make_bench_videos(args.out, args.make, args.duration, args.fps, args.size,
                                       args.sample_rate, workers=max(1, args.workers))
        print(f"videos ready in {args.out} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
        return loader_bench.items_from_dir(args.out)[: args.make]
    if args.videos:
        return loader_bench.items_from_dir(args.videos)
    return read_jsonl_manifest(args.manifest)


def cmd_loader_bench(args: argparse.Namespace) -> None:
    result = loader_bench.run(_bench_items(args), frames=args.frames, workers=args.workers,
                              batch_size=args.batch_size, image_size=args.image_size,
                              window_s=args.window, sample_rate=args.sample_rate,
                              backend=args.backend, epochs=args.epochs, max_clips=args.max_clips,
                              compact=args.compact)
    if args.json:
        print(json.dumps(result))
        return
    cpus = os.cpu_count()
    print(f"{result['clips']} clips in {result['seconds']} s: {result['clips_per_s']} clips/s "
          f"({result['clips_per_s_steady']} clips/s once every worker has delivered a "
          f"batch); {result['cpu_s_per_clip'] * 1000:.0f} ms of CPU per clip, i.e. at most "
          f"{cpus / result['cpu_s_per_clip']:.1f} clips/s on {cpus} idle "
          f"cores; T={args.frames}, {args.image_size} px, {args.window} s audio windows, "
          f"{args.workers} workers, backend={args.backend}, "
          f"{'compact' if args.compact else 'finished'} batches, "
          f"{result['skipped']} skipped")
