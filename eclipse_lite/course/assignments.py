"""Classroom assignments: student notebooks generated from the course notebooks.

An exercise in a source notebook is a code cell whose solution sits between two comment lines,
followed by a grading cell tagged ``grade``::

    def attention(q, k, v, mask=None):
        # Eq. 1: softmax(q k^T / sqrt(d)) v
        ### BEGIN SOLUTION
        ...the solution...
        ### END SOLUTION

    # next cell, tagged "grade":
    torch.testing.assert_close(attention(q, k, v)[0], scaled_dot_product_attention(q, k, v)[0])
    print("✓ exercise scaled dot-product attention passed")

The student version replaces every region (markers included) with
``raise NotImplementedError("exercise: <name>")`` at the marker's indentation, keeps everything
else (the signature above the marker, the grading cell, tags), and strips outputs, execution
counts and run metadata. A student notebook therefore runs up to its first unsolved exercise
and stops there with that exercise's name; solving it makes its grading cell pass.

The exercise's name is, in order of preference: text after the marker
(``### BEGIN SOLUTION: attention``), the ``✓ exercise <name> passed`` line of its grading
cell, the function the marker sits in, or ``"<notebook> cell <i>"``.

Command line (``make assignments``)::

    eclipse-lite assignments notebooks notebooks/assignments [--all]

writes one student notebook per source notebook that has exercises (``--all``: also copies the
others, stripped, so that students get the whole course in one folder).
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from eclipse_lite.files import atomic_path

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
GRADE_TAG = "grade"
NOTEBOOK_GLOB = "*.ipynb"
_GRADE_NAME = re.compile(r"""exercise\s+(.+?)\s+passed""")
_DEF = re.compile(r"^\s*(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(")
# metadata a run leaves behind (papermill, JupyterLab timing, widget state)
_RUN_CELL_METADATA = ("execution", "papermill", "ExecuteTime", "collapsed", "scrolled")
_RUN_NB_METADATA = ("papermill", "widgets")


class AssignmentError(ValueError):
    """A source notebook's exercise markup is broken; the message names the notebook and cell."""


@dataclass(frozen=True)
class Exercise:
    """One exercise of a source notebook.

    notebook    the source notebook's file name (e.g. ``"02_attention.ipynb"``)
    name        the exercise's name (see the module docstring)
    cell        index of the exercise cell in the notebook's ``cells``
    grade_cell  index of its grading cell (always ``cell + 1``)
    regions     the solution regions of the cell, markers included, exactly as in the source
    """

    notebook: str
    name: str
    cell: int
    grade_cell: int
    regions: Tuple[str, ...]

    @property
    def placeholder(self) -> str:
        """The statement that replaces each region in the student notebook (unindented)."""
        return placeholder(self.name)


def placeholder(name: str) -> str:
    """``raise NotImplementedError("exercise: <name>")`` (a JSON string is a valid Python literal)."""
    return f"raise NotImplementedError({json.dumps('exercise: ' + name, ensure_ascii=False)})"


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _tags(cell) -> List[str]:
    tags = cell.get("metadata", {}).get("tags", [])
    return list(tags) if isinstance(tags, list) else []


def _is_marker(line: str, marker: str) -> bool:
    return line.strip().startswith(marker)


def _regions(text: str, where: str) -> List[Tuple[int, int, str]]:
    """``(first line, last line, marker suffix)`` of every solution region in ``text``."""
    lines = text.split("\n")
    out, start, suffix = [], None, ""
    for i, line in enumerate(lines):
        if _is_marker(line, BEGIN):
            if start is not None:
                raise AssignmentError(f"{where}: line {i + 1} opens a solution region inside the "
                                      f"one opened on line {start + 1} (regions cannot nest)")
            start = i
            suffix = line.strip()[len(BEGIN):].strip().lstrip(":").strip()
        elif _is_marker(line, END):
            if start is None:
                raise AssignmentError(f"{where}: line {i + 1} closes a solution region that was "
                                      f"never opened ({END!r} without {BEGIN!r})")
            out.append((start, i, suffix))
            start = None
    if start is not None:
        raise AssignmentError(f"{where}: the solution region opened on line {start + 1} is never "
                              f"closed with {END!r}")
    return out


def _enclosing_def(lines: Sequence[str], line: int) -> Optional[str]:
    indent = len(lines[line]) - len(lines[line].lstrip())
    for j in range(line - 1, -1, -1):
        m = _DEF.match(lines[j])
        if m and len(lines[j]) - len(lines[j].lstrip()) < indent:
            return m.group(1)
    return None


def find_exercises(nb, notebook: str = "notebook") -> List[Exercise]:
    """The exercises of a source notebook (an ``nbformat`` node or the equivalent dict).

    Raises :class:`AssignmentError` when a region is unbalanced or nested, when an exercise cell
    is not followed by a code cell tagged ``grade``, or when a grading cell holds a solution.
    """
    cells = nb["cells"]
    exercises = []
    for i, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        text = _source(cell)
        where = f"{notebook} cell {i}"
        regions = _regions(text, where)
        if not regions:
            continue
        if GRADE_TAG in _tags(cell):
            raise AssignmentError(f"{where}: a grading cell (tag {GRADE_TAG!r}) contains a solution "
                                  f"region; the solution goes in the cell before it")
        nxt = cells[i + 1] if i + 1 < len(cells) else None
        if nxt is None or nxt.get("cell_type") != "code" or GRADE_TAG not in _tags(nxt):
            raise AssignmentError(f"{where}: an exercise cell must be followed by a code cell tagged "
                                  f"{GRADE_TAG!r} that grades it; cell {i + 1} is not one")
        lines = text.split("\n")
        graded = _GRADE_NAME.search(_source(nxt))
        name = (next((s for _, _, s in regions if s), "")
                or (graded.group(1).strip() if graded else "")
                or _enclosing_def(lines, regions[0][0])
                or f"{Path(notebook).stem} cell {i}")
        texts = tuple("\n".join(lines[a:b + 1]) for a, b, _ in regions)
        exercises.append(Exercise(notebook, name, i, i + 1, texts))
    names = [e.name for e in exercises]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise AssignmentError(f"{notebook}: exercise names must be unique, found {dup} more than once")
    return exercises


def strip_run_state(nb):
    """A copy of ``nb`` with no outputs, execution counts, or run/widget metadata (tags kept)."""
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        meta = cell.setdefault("metadata", {})
        for key in _RUN_CELL_METADATA:
            meta.pop(key, None)
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    for key in _RUN_NB_METADATA:
        nb.setdefault("metadata", {}).pop(key, None)
    return nb


def _replace_regions(text: str, where: str, name: str) -> str:
    lines = text.split("\n")
    for a, b, _ in reversed(_regions(text, where)):
        indent = lines[a][:len(lines[a]) - len(lines[a].lstrip())]
        lines[a:b + 1] = [indent + placeholder(name)]
    return "\n".join(lines)


def _set_source(cell, text: str) -> None:
    cell["source"] = text


def make_student_notebook(nb, notebook: str = "notebook"):
    """``(student notebook, exercises)``: every solution region replaced, run state stripped.

    The student notebook's metadata records ``{"eclipse_lite": {"assignment_of": notebook,
    "exercises": [names]}}``.
    """
    exercises = find_exercises(nb, notebook)
    student = strip_run_state(nb)
    for ex in exercises:
        cell = student["cells"][ex.cell]
        _set_source(cell, _replace_regions(_source(cell), f"{notebook} cell {ex.cell}", ex.name))
    student["metadata"]["eclipse_lite"] = {"assignment_of": notebook,
                                           "exercises": [e.name for e in exercises]}
    return student, exercises


def fill_exercises(student, exercises: Sequence[Exercise], names: Optional[Sequence[str]] = None):
    """A copy of a student notebook with the named exercises (default: all) solved again.

    Each ``raise NotImplementedError("exercise: <name>")`` line of an exercise's cell is replaced,
    in order, by that exercise's regions from the source. Filling every exercise gives back the
    source notebook's code exactly. Raises :class:`AssignmentError` for an unknown name or a cell
    whose placeholders do not match the exercise's regions.
    """
    by_name: Dict[str, Exercise] = {e.name: e for e in exercises}
    wanted = list(by_name) if names is None else list(names)
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise AssignmentError(f"unknown exercise(s) {unknown}; known: {list(by_name)}")
    nb = copy.deepcopy(student)
    for name in wanted:
        ex = by_name[name]
        cell = nb["cells"][ex.cell]
        lines = _source(cell).split("\n")
        hits = [i for i, line in enumerate(lines) if line.strip() == ex.placeholder]
        if len(hits) != len(ex.regions):
            raise AssignmentError(f"{ex.notebook} cell {ex.cell}: expected {len(ex.regions)} "
                                  f"placeholder(s) {ex.placeholder!r}, found {len(hits)}")
        for i, region in zip(reversed(hits), reversed(ex.regions)):
            lines[i:i + 1] = region.split("\n")
        _set_source(cell, "\n".join(lines))
    return nb


def _write_notebook(nb, path: Path) -> None:
    import nbformat  # the dev extra (pyproject [dev]): only the course tools read notebooks
    node = nbformat.from_dict(nb)
    nbformat.validate(node)
    with atomic_path(path) as tmp:
        nbformat.write(node, tmp)


def read_notebook(path: Path):
    """Read a notebook with ``nbformat`` (version 4)."""
    import nbformat  # the dev extra (pyproject [dev]): only the course tools read notebooks
    return nbformat.read(str(path), as_version=4)


def generate(src_dir: Path, out_dir: Path, include_all: bool = False) -> Dict[str, List[str]]:
    """Write the student notebooks of every ``src_dir/*.ipynb`` into ``out_dir``.

    Returns ``{notebook file name: [exercise names]}`` for the notebooks written. Every source
    notebook is checked before anything is written, so broken markup leaves ``out_dir`` as it was.
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    sources = sorted(p for p in src_dir.glob(NOTEBOOK_GLOB) if p.is_file())
    if not sources:
        raise FileNotFoundError(f"no notebooks ({NOTEBOOK_GLOB}) in {src_dir}")
    planned = []
    for path in sources:
        student, exercises = make_student_notebook(read_notebook(path), path.name)
        if exercises or include_all:
            planned.append((path.name, student, [e.name for e in exercises]))
    written = {}
    for name, student, names in planned:
        _write_notebook(student, out_dir / name)
        written[name] = names
    return written
