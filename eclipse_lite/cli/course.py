"""``eclipse-lite assignments``: student notebooks from the course notebooks
(:func:`eclipse_lite.course.assignments.generate`; ``make assignments``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from eclipse_lite.cli.common import CommandError
from eclipse_lite.course.assignments import AssignmentError, generate


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "assignments", help="student notebooks: solutions replaced by raise NotImplementedError",
        description="Write student notebooks: every ### BEGIN SOLUTION ... ### END SOLUTION region "
                    "replaced with raise NotImplementedError, grading cells kept, outputs stripped.")
    p.add_argument("src", type=Path, help="folder of source notebooks (e.g. notebooks)")
    p.add_argument("out", type=Path, help="folder for the student notebooks (e.g. notebooks/assignments)")
    p.add_argument("--all", action="store_true",
                   help="also copy (stripped) the notebooks that have no exercise")
    p.set_defaults(func=cmd_assignments)


def cmd_assignments(args: argparse.Namespace) -> None:
    try:
        written = generate(args.src, args.out, include_all=args.all)
    except AssignmentError as exc:   # names the notebook and the cell
        raise CommandError(str(exc)) from exc
    for name, names in written.items():
        print(f"{args.out / name}: {len(names)} exercise(s){': ' + ', '.join(names) if names else ''}")
    print(f"{len(written)} notebook(s), {sum(len(v) for v in written.values())} exercise(s) in {args.out}")
