"""``eclipse-lite saliency``: sound-localisation maps and their scores, by
:func:`eclipse_lite.studies.saliency.run`."""
from __future__ import annotations

import argparse
from typing import List

from eclipse_lite.cli.common import CommandError, one_line
from eclipse_lite.studies.saliency import METHODS
from eclipse_lite.studies.saliency import run as run_saliency
from eclipse_lite.studies.saliency.ground_truth import SCORED_KINDS


def _comma(text: str) -> List[str]:
    return [v for v in text.replace(",", " ").split() if v]


def _ints(text: str) -> List[int]:
    try:
        return [int(v) for v in _comma(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 0,1,2, got {text!r}") from None


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "saliency", help="sound-localisation maps and their scores (pointing game, IoU)",
        description="Sound-localisation maps of ECLIPSE on the bundled benchmark, scored against "
                    "the sound sources' boxes (pointing game, IoU) next to centre-prior and random "
                    "baselines over several seeds; overlay PNGs and a GIF per video.")
    p.add_argument("--preset", default="tiny", help="preset of a random model when no "
                   "--checkpoint is given (default tiny)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="ModelConfig override for that random model (repeatable)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--out", default="runs/saliency", help="output folder (default runs/saliency)")
    p.add_argument("--data", default=None, help="benchmark folder with {split}.jsonl and events.json "
                   "(default data/generated/<preset>)")
    p.add_argument("--split", default="test")
    p.add_argument("--events", default=None, help="ground-truth file (default DATA/events.json)")
    p.add_argument("--manifest", default=None, help="video list (default DATA/SPLIT.jsonl)")
    p.add_argument("--checkpoint", action="append", default=[],
                   help="a model saved with save_pretrained (repeatable: seed i uses checkpoint "
                        "i mod count); without it a randomly initialised model (maps meaningless)")
    p.add_argument("--audio-encoder", action="append", default=[],
                   help="audio encoder weights per checkpoint (default CHECKPOINT/"
                        "audio_encoder.safetensors, else the benchmark's pretrained encoder "
                        "DATA/pretrained/<preset>-*/audio.safetensors)")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2],
                   help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--methods", type=_comma, default=list(METHODS),
                   help=f"maps to compute, first one drawn in the GIFs (default {','.join(METHODS)})")
    p.add_argument("--layers", type=_ints, default=None, help="layer indices for the maps "
                   "(default: last layer for dot, all AV layers for v2a)")
    p.add_argument("--frames-per-event", type=int, default=4)
    p.add_argument("--kinds", type=_comma, default=list(SCORED_KINDS),
                   help="event kinds whose frames are scored (default seen_heard; add brief)")
    p.add_argument("--threshold", type=float, default=0.5, help="IoU threshold, fraction of the "
                   "map's range (default 0.5)")
    p.add_argument("--max-videos", type=int, default=None, help="score only the first N videos")
    p.add_argument("--pictures", type=int, default=None, help="write PNG + GIF for the first N "
                   "videos only (default: every video; 0 = none)")
    p.add_argument("--gif-frames", type=int, default=24)
    p.add_argument("--display-size", type=int, default=128)
    p.set_defaults(func=cmd_saliency)


def cmd_saliency(args: argparse.Namespace) -> None:
    try:
        run_saliency(checkpoints=args.checkpoint, audio_encoders=args.audio_encoder,
                     data=args.data, split=args.split, events=args.events, manifest=args.manifest,
                     out=args.out, preset=args.preset, sets=args.sets, device=args.device,
                     seeds=args.seeds, methods=args.methods, layers=args.layers,
                     frames_per_event=args.frames_per_event, kinds=args.kinds,
                     threshold=args.threshold, max_videos=args.max_videos,
                     pictures=args.pictures, gif_frames=args.gif_frames,
                     display_size=args.display_size)
    except ValueError as exc:   # a bad --preset, --set, --methods ...; the message names it
        raise CommandError(one_line(exc)) from exc
