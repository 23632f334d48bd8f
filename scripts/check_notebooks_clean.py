#!/usr/bin/env python
"""Fail when a notebook is committed with outputs, execution counts or run state.

The course notebooks are stored clean (no outputs, ``execution_count`` null, no widget state or
papermill/timing metadata; cell tags are kept): diffs stay readable and a reader runs them
fresh. ``make test`` runs this first::

    python scripts/check_notebooks_clean.py                 # checks notebooks/ (recursively)
    python scripts/check_notebooks_clean.py a.ipynb dir/    # given files / folders
    python scripts/check_notebooks_clean.py --fix           # strip them in place (atomically)

Exit status: 0 when every notebook is clean (or was fixed), 1 when some are not (each listed
with what is wrong), 2 when a notebook cannot be read.
"""
from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
RUN_CELL_METADATA = ("execution", "papermill", "ExecuteTime")
RUN_NB_METADATA = ("papermill", "widgets")


def find_notebooks(paths: Iterable[Path]) -> List[Path]:
    """``*.ipynb`` files under ``paths`` (files are taken as given), checkpoints skipped, sorted."""
    found = set()
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found.update(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        elif path.suffix == ".ipynb" and path.is_file():
            found.add(path)
        else:
            raise FileNotFoundError(f"{path}: not a notebook or a folder")
    return sorted(found)


def problems(nb: dict) -> List[str]:
    """What makes a notebook (as parsed JSON) not clean; empty when it is clean."""
    out = []
    with_outputs, with_counts, with_meta = [], [], []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "code":
            if cell.get("outputs"):
                with_outputs.append(i)
            if cell.get("execution_count") is not None:
                with_counts.append(i)
        if any(k in cell.get("metadata", {}) for k in RUN_CELL_METADATA):
            with_meta.append(i)
    if with_outputs:
        out.append(f"outputs in cell(s) {with_outputs}")
    if with_counts:
        out.append(f"execution counts in cell(s) {with_counts}")
    if with_meta:
        out.append(f"run metadata ({'/'.join(RUN_CELL_METADATA)}) in cell(s) {with_meta}")
    meta = [k for k in RUN_NB_METADATA if k in nb.get("metadata", {})]
    if meta:
        out.append(f"notebook metadata {meta} (papermill run record / saved widget state)")
    return out


def clean(nb: dict) -> dict:
    """``nb`` with outputs, execution counts and run metadata removed (in place; returned)."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        for key in RUN_CELL_METADATA:
            cell.get("metadata", {}).pop(key, None)
    for key in RUN_NB_METADATA:
        nb.get("metadata", {}).pop(key, None)
    return nb


def write_atomic(nb: dict, path: Path) -> None:
    """Write as nbformat does (indent 1, sorted keys, trailing newline), via a temp file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".ipynb.tmp")
    try:
        os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))      # keep the file's permissions
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(nb, f, indent=1, sort_keys=True, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[ROOT / "notebooks"],
                        help="notebooks or folders (default: notebooks/)")
    parser.add_argument("--fix", action="store_true", help="strip the dirty notebooks in place")
    args = parser.parse_args(argv)
    try:
        notebooks = find_notebooks(args.paths)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    dirty, unreadable = 0, 0
    for path in notebooks:
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            print(f"{path}: cannot be read as a notebook ({err})", file=sys.stderr)
            unreadable += 1
            continue
        found = problems(nb)
        if not found:
            continue
        if args.fix:
            write_atomic(clean(nb), path)
            print(f"{path}: stripped ({'; '.join(found)})")
        else:
            dirty += 1
            print(f"{path}: {'; '.join(found)}")
    if unreadable:
        return 2
    if dirty:
        print(f"\n{dirty} of {len(notebooks)} notebook(s) are committed with outputs or run state; "
              f"clear them (Kernel > Restart and Clear Outputs, or "
              f"`python scripts/check_notebooks_clean.py --fix`) before committing", file=sys.stderr)
        return 1
    if not args.fix:
        print(f"{len(notebooks)} notebook(s) clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
