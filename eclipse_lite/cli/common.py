"""What the command modules share: the error a person can act on, and the common flags."""
from __future__ import annotations

import argparse

from eclipse_lite.config import PRESETS, ModelConfig
from eclipse_lite.overrides import parse_sets
from eclipse_lite.train.config import TrainConfig


class CommandError(Exception):
    """An error with a message a person can act on (printed on one line, without a traceback)."""


def one_line(exc: BaseException) -> str:
    """``exc``'s message with its line breaks and runs of spaces folded into single spaces."""
    return " ".join(str(exc).split())


def add_common(p: argparse.ArgumentParser, out_default: str) -> None:
    """--preset, --set, --device, --out."""
    p.add_argument("--preset", default="tiny",
                   help=f"model/data size: {', '.join(PRESETS)} (default tiny)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a ModelConfig or TrainConfig field (repeatable)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--out", default=out_default, help=f"output folder (default {out_default})")


def add_data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None,
                   help="benchmark folder with train/val/test.jsonl (default data/generated/PRESET)")


def add_real_data_args(p: argparse.ArgumentParser, clip: bool = False) -> None:
    """--audio-features, --vggsound (and --clip): real data, the base preset."""
    if clip:
        p.add_argument("--clip", default=None, metavar="NAME_OR_PATH",
                       help="start from these CLIP weights: a Hugging Face hub id or a folder "
                            "written by CLIPModel.save_pretrained (required for --preset base)")
    p.add_argument("--audio-features", default=None, metavar="DIR",
                   help="real data: a cache of per-frame audio embeddings (eclipse-lite cache-audio)")
    p.add_argument("--vggsound", default=None, metavar="PATH",
                   help="real data: VGGSound ResNet-18 weights; embeds the audio on the fly")


def configs(args: argparse.Namespace):
    """``(ModelConfig of --preset with its --set fields, TrainConfig overrides incl. --device)``."""
    if args.preset not in PRESETS:
        raise CommandError(f"unknown preset {args.preset!r}; known presets: {', '.join(PRESETS)}")
    try:
        model_over, train_over = parse_sets(args.sets, ModelConfig, TrainConfig)
        cfg = ModelConfig.preset(args.preset, **model_over)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if args.device != "auto":
        train_over["device"] = args.device
    return cfg, train_over
