#!/usr/bin/env python
"""Execute the course notebooks with papermill, for reading (``make notebooks``) and for the tests.

    python scripts/run_notebooks.py --preset tiny --out runs/notebooks
    python scripts/run_notebooks.py --preset ci --only 00 02 --data /tmp/ci-benchmark

Every ``notebooks/NN_*.ipynb`` runs in a fresh ``python3`` kernel, from the ``notebooks/`` folder
as in JupyterLab, with its ``parameters`` cell overridden (``PRESET``, ``OUT_DIR`` =
``OUT/NN_name``, and ``DATA_DIR`` / ``MAX_STEPS`` / ``SEED`` when given). The executed copy is
written to ``OUT/NN_name.ipynb`` (atomically, also when a cell fails, so the error can be read
there), each notebook's numbers to ``OUT/NN_name/metrics.json`` by the notebook itself, and a
summary (seconds, status, metrics per notebook) to ``OUT/summary.json``. A failing notebook does
not stop the others; the exit status is 1 if any failed.

The functions here (:func:`execute`, :func:`notebook_paths`, :func:`read_metrics`) are also what
``tests/test_notebooks.py`` and ``tests/test_assignments.py`` use.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
KERNEL = "python3"
PARAMETER_NAMES = ("PRESET", "SEED", "DEVICE", "DATA_DIR", "OUT_DIR", "MAX_STEPS", "INTERACTIVE")


def notebook_paths(folder: Path = NOTEBOOK_DIR, only: Optional[Sequence[str]] = None) -> List[Path]:
    """The course notebooks ``folder/*.ipynb`` in order (not ``assignments/``), optionally only
    those whose name starts with one of ``only`` (e.g. ``["00", "02_attention"]``)."""
    paths = sorted(p for p in Path(folder).glob("*.ipynb") if p.is_file())
    if only:
        paths = [p for p in paths if any(p.stem.startswith(o) for o in only)]
        missing = [o for o in only if not any(p.stem.startswith(o) for p in paths)]
        if missing:
            raise FileNotFoundError(f"no notebook in {folder} starts with {missing}")
    return paths


def execute(notebook, output: Path, parameters: Dict[str, Any], cwd: Optional[Path] = NOTEBOOK_DIR,
            timeout: Optional[float] = None, kernel: str = KERNEL) -> float:
    """Run ``notebook`` (a path, or an nbformat node) with papermill; return the seconds it took.

    The executed notebook goes to ``output`` atomically, whether the run succeeded or not.
    ``timeout`` is per cell. Raises papermill's ``PapermillExecutionError`` (with ``ename``,
    ``evalue``, ``cell_index``) when a cell fails.
    """
    import nbformat
    import papermill as pm

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.stem}.", suffix=".ipynb")
    os.close(fd)
    _default_mode(tmp)
    src_tmp = None
    if not isinstance(notebook, (str, os.PathLike)):   # an in-memory notebook
        fd, src_tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.stem}.src.", suffix=".ipynb")
        os.close(fd)
        nbformat.write(notebook, src_tmp)
        notebook = src_tmp
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(notebook), tmp, parameters=dict(parameters), kernel_name=kernel,
                            cwd=str(cwd) if cwd is not None else None, progress_bar=False,
                            execution_timeout=timeout, log_output=False)
    finally:
        if os.path.exists(tmp) and os.path.getsize(tmp) > 0:
            os.replace(tmp, output)
        for leftover in (tmp, src_tmp):
            if leftover and os.path.exists(leftover):
                os.remove(leftover)
    return time.perf_counter() - start


def read_metrics(out_dir: Path) -> Dict[str, Any]:
    """``out_dir/metrics.json`` of a run, checked: a non-empty flat dict of finite numbers and
    short strings. Raises ``ValueError`` naming what is wrong."""
    path = Path(out_dir) / "metrics.json"
    if not path.is_file():
        raise ValueError(f"{path} was not written (the notebook's last cell writes it)")
    metrics = json.loads(path.read_text())
    if not isinstance(metrics, dict) or not metrics:
        raise ValueError(f"{path} must hold a non-empty JSON object, got {metrics!r}")
    for key, value in metrics.items():
        if isinstance(value, bool) or isinstance(value, (int, float)):
            if not math.isfinite(value):
                raise ValueError(f"{path}: {key} = {value} is not finite")
        elif isinstance(value, str):
            if len(value) > 200:
                raise ValueError(f"{path}: {key} is a string of {len(value)} characters (200 at most)")
        else:
            raise ValueError(f"{path}: {key} = {value!r} is not a number or a short string "
                             f"(metrics.json is a flat dict)")
    return metrics


def _default_mode(path: str) -> None:
    """Give a ``mkstemp`` file (mode 0600) the permissions a normally created file gets."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _atomic_json(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".json.tmp")
    _default_mode(tmp)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Execute the course notebooks with papermill.")
    parser.add_argument("--preset", default="tiny", choices=("ci", "tiny", "base"))
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "notebooks")
    parser.add_argument("--data", type=Path, default=None,
                        help="benchmark folder (default: each notebook's own, data/generated/PRESET)")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on every training loop")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--only", nargs="+", default=None, metavar="NN",
                        help="run only the notebooks whose names start with these")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per cell")
    parser.add_argument("--kernel", default=KERNEL)
    args = parser.parse_args(argv)

    try:
        paths = notebook_paths(NOTEBOOK_DIR, args.only)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    summary: Dict[str, Any] = {"preset": args.preset, "notebooks": {}}
    failed = []
    for path in paths:
        params: Dict[str, Any] = {"PRESET": args.preset, "OUT_DIR": str(out / path.stem)}
        if args.data is not None:
            params["DATA_DIR"] = str(args.data.resolve())
        if args.max_steps is not None:
            params["MAX_STEPS"] = args.max_steps
        if args.seed is not None:
            params["SEED"] = args.seed
        start = time.perf_counter()
        entry: Dict[str, Any] = {"output": str(out / path.name)}
        try:
            entry["seconds"] = execute(path, out / path.name, params, timeout=args.timeout, kernel=args.kernel)
            entry["metrics"] = read_metrics(out / path.stem)
            entry["status"] = "ok"
            print(f"{path.name}: ok ({entry['seconds']:.0f} s)", flush=True)
        except Exception as err:  # report and go on with the next notebook
            entry["seconds"] = time.perf_counter() - start
            entry["status"] = "failed"
            entry["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
            failed.append(path.name)
            print(f"{path.name}: FAILED ({entry['seconds']:.0f} s): {entry['error']}", flush=True)
        summary["notebooks"][path.stem] = entry
    summary["total_seconds"] = sum(e["seconds"] for e in summary["notebooks"].values())
    _atomic_json(summary, out / "summary.json")
    print(f"{len(paths) - len(failed)} of {len(paths)} notebook(s) ran in {summary['total_seconds']:.0f} s; "
          f"executed copies and summary.json in {out}")
    if failed:
        print(f"failed: {', '.join(failed)} (the executed copies show the failing cell)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
