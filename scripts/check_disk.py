"""Fail early, and say why, when the disk cannot hold the environment ``make install`` builds.

PyPI's torch 2.9.1 for Linux x86_64 is the CUDA build: with its NVIDIA libraries and torchaudio
the environment takes about 7.6 GiB, and pip needs room for the downloaded wheels beside it while
it installs. Without this check a full disk shows up minutes later as pip's
``OSError: [Errno 28] No space left on device`` halfway through a download.
Usage: ``python3 scripts/check_disk.py ENV_DIR [--need-gib 12]``
(``ECLIPSE_LITE_SKIP_DISK_CHECK=1`` skips it.)
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

# The peak measured while `make install` built a fresh .venv was 11.4 GiB (2026-12-03; README, Install).
NEED_GIB = 12.0


def free_gib(path: Path) -> float:
    """Free space, in GiB, on the filesystem that holds ``path`` (or its nearest existing parent)."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free / 2**30


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env_dir", type=Path)
    parser.add_argument("--need-gib", type=float, default=NEED_GIB)
    args = parser.parse_args(argv)
    if os.environ.get("ECLIPSE_LITE_SKIP_DISK_CHECK") == "1":
        return 0
    if any(args.env_dir.glob("lib/python*/site-packages/torch/__init__.py")):
        return 0  # torch is installed already: a re-install adds little
    have = free_gib(args.env_dir)
    if have < args.need_gib:
        print(f"error: installing into {args.env_dir} needs about {args.need_gib:.0f} GiB free "
              f"(torch's CUDA wheels from PyPI, torchaudio and the rest), but only {have:.1f} GiB "
              f"is free there. Free some space (old .venv copies, /tmp/pytest-of-$USER, "
              f"data/generated/) or set ECLIPSE_LITE_SKIP_DISK_CHECK=1 to try anyway.",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
