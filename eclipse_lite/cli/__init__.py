"""The ``eclipse-lite`` command.

    eclipse-lite make-data --preset tiny                 # the bundled benchmark → data/generated/tiny
    eclipse-lite pretrain  --preset tiny                 # tiny CLIP + audio encoder (cached)
    eclipse-lite train     --preset tiny --set fusion=eclipse --set epochs=12 --out runs/eclipse
    eclipse-lite eval      --checkpoint runs/eclipse/best --preset tiny
    eclipse-lite ablate    --preset tiny --seeds 3 --out runs/ablate
    eclipse-lite bench     --preset base                 # FLOPs / memory / speed (Table 2, Fig. 2)
    eclipse-lite saliency  --checkpoint runs/eclipse/best   # sound-localisation maps and scores
    eclipse-lite report    --run runs/demo               # re-write report.md from results.json
    eclipse-lite demo      --out runs/demo               # the main job (make demo)
    eclipse-lite oracle    --data data/generated/tiny    # what frames, sound or both can tell
    eclipse-lite loader-bench --make 20 --frames 32      # data-loading clips/s
    eclipse-lite assignments notebooks notebooks/assignments   # student notebooks (make assignments)

Real data, the ``base`` preset (``eclipse_lite.train.realdata``): ``--data`` holds the generic manifests
train/val/test.jsonl (data/README.md), ``--clip`` a Hugging Face hub id or a save_pretrained folder,
and the audio comes precomputed (``--audio-features``, the paper's setting) or on the fly from the
VGGSound ResNet-18 (``--vggsound``)::

    eclipse-lite cache-audio --preset base --vggsound H.pth.tar --data data/anet --out features/anet
    eclipse-lite train --preset base --clip openai/clip-vit-base-patch32 --data data/anet \\
        --audio-features features/anet --out runs/anet [--set epochs=5 --set num_workers=8]
    eclipse-lite eval  --preset base --checkpoint runs/anet/best --data data/anet \\
        --audio-features features/anet

``--set key=value`` sets any ModelConfig or TrainConfig field. Multi-GPU:
``torchrun --nproc_per_node N -m eclipse_lite.cli train ...`` (same flags).

Every argument parser of the package is here, one module per group of commands: ``run`` (the
main job on the bundled benchmark), ``realdata`` (base preset, cache-audio), ``bench``,
``saliency``, ``data`` (oracle, loader-bench), ``course`` (assignments). The modules they call
take keyword arguments and know nothing of argparse.
"""
from __future__ import annotations

import argparse
import logging
import sys
import traceback
from typing import Optional, Sequence

from eclipse_lite.cli import bench, course, data, realdata, run, saliency
from eclipse_lite.cli.common import CommandError

__all__ = ["CommandError", "build_parser", "main"]

# what a user's input or files can cause: the library raises these with a message naming the
# setting, file or line at fault, so the command prints that one line (``-v`` adds the traceback)
USER_ERRORS = (CommandError, ValueError, FileNotFoundError, FileExistsError, PermissionError,
               IsADirectoryError, NotADirectoryError)


def build_parser() -> argparse.ArgumentParser:
    """The ``eclipse-lite`` parser: one subcommand per command, each with ``func`` to call."""
    parser = argparse.ArgumentParser(prog="eclipse-lite", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log progress; on an error, print its traceback too")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (run, realdata, bench, saliency, data, course):
        module.add_parsers(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; returns the exit status (0, or 2 after a one-line error message)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv                                   # recorded by bench in bench.json
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except USER_ERRORS as exc:
        if args.verbose:
            traceback.print_exception(exc)
        hint = "" if args.verbose or isinstance(exc, CommandError) else " (-v shows where)"
        print(f"eclipse-lite {args.command}: error: {exc}{hint}", file=sys.stderr)
        return 2
    return 0
