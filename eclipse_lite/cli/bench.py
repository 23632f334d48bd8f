"""``eclipse-lite bench``: FLOPs, peak memory and throughput, ECLIPSE vs video-only (paper Table 2,
Fig. 2), by :func:`eclipse_lite.studies.bench.run`."""
from __future__ import annotations

import argparse
import shlex
from typing import List, Sequence

from eclipse_lite.cli.common import CommandError, one_line
from eclipse_lite.studies.bench import DEFAULT_SWEEP, MODES, WHAT
from eclipse_lite.studies.bench import run as run_bench


def _int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 8,16,32, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _name_list(allowed: Sequence[str]):
    def parse(text: str) -> List[str]:
        names = [v for v in text.replace(",", " ").split() if v]
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"{bad or text!r}: choose from {', '.join(allowed)}")
        return names
    return parse


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "bench", help="FLOPs, memory and throughput of ECLIPSE vs video-only (Table 2, Fig. 2)",
        description="FLOPs, peak memory and throughput of ECLIPSE vs video-only (paper Table 2, "
                    "Fig. 2). Writes bench.{json,md,png} and frame_sweep.{json,png}.")
    p.add_argument("--preset", default="tiny", help="ci, tiny or base (default tiny)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a ModelConfig field (repeatable), e.g. --set image_size=96")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--out", default="runs/bench", help="output folder (default runs/bench)")
    p.add_argument("--what", type=_name_list(WHAT), default=list(WHAT),
                   help="any of flops,memory,sweep (default all); memory includes speed")
    p.add_argument("--modes", type=_name_list(MODES), default=list(MODES),
                   help="infer,train (default both)")
    p.add_argument("--batch", type=int, default=4, help="videos per step (default 4)")
    p.add_argument("--steps", type=int, default=3, help="timed steps (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads in the measurements (default: torch's default)")
    p.add_argument("--repeats", type=int, default=1,
                   help="alternate the two models this many times; median speed (default 1)")
    p.add_argument("--video-frames", type=int, default=None,
                   help="frames of the video-only model (default 3 x --eclipse-frames)")
    p.add_argument("--eclipse-frames", type=int, default=None,
                   help="frames of ECLIPSE (default the preset's num_frames)")
    p.add_argument("--sweep", type=_int_list, default=list(DEFAULT_SWEEP),
                   help="frame counts of the sweep (default 8,16,32,64,96)")
    p.add_argument("--audio-encoder", action="store_true",
                   help="run the audio encoder on raw windows inside each timed step "
                        "(default: precomputed embeddings, as the paper)")
    p.add_argument("--audio-frontend", choices=("logmel", "vggsound"), default=None,
                   help="spectrogram counted for the audio encoder's FLOPs (default logmel)")
    amp = p.add_mutually_exclusive_group()
    amp.add_argument("--amp", dest="amp", action="store_true", default=None,
                     help="autocast (default on CUDA)")
    amp.add_argument("--no-amp", dest="amp", action="store_false", help="full precision")
    p.add_argument("--no-isolate", dest="isolate", action="store_false", default=None,
                   help="measure in this process (CPU memory is then not reported)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> None:
    try:
        run_bench(preset=args.preset, sets=args.sets, device=args.device, out=args.out,
                  what=args.what, modes=args.modes, batch=args.batch, steps=args.steps,
                  warmup=args.warmup, threads=args.threads, repeats=args.repeats,
                  video_frames=args.video_frames, eclipse_frames=args.eclipse_frames,
                  sweep=args.sweep, audio_encoder=args.audio_encoder,
                  audio_frontend=args.audio_frontend, amp=args.amp, isolate=args.isolate,
                  command=shlex.join(["eclipse-lite", *args.argv]))
    except ValueError as exc:   # a bad --preset, --set or size; the message names it
        raise CommandError(one_line(exc)) from exc
