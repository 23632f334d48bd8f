"""The package's shape: imports run one way through the layers, and no file or function outgrows
what a reader can hold (docs/architecture.md draws the layers).

    model    config tokenizer attention clip audio audio_encoders model heads losses metrics
             checkpoints files overrides       tensors in, tensors out; the paper's equations
    data     eclipse_lite.data.*               decoding, sampling, datasets, caches, the benchmark
    train    eclipse_lite.train.*              the recipe, fit, evaluate, checkpoints, pretraining
    studies  eclipse_lite.studies.*            demo, ablations, bench, saliency, plots
    course   eclipse_lite.course.*             what the notebooks and the teacher use
    cli      eclipse_lite.cli, eclipse_lite    the command line and the public API

A module may import its own layer and the layers above it in this list, never one below.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "eclipse_lite"
LAYERS = ["model", "data", "train", "studies", "course", "cli"]
# files over MAX_LINES or functions over MAX_FUNCTION_LINES (docstrings aside), and why
LONG_FILES = {
    "studies/bench.py": "Table 2's three measurements (FLOPs, memory, speed) and their table",
}
LONG_FUNCTIONS = {
    "data/synth/plan.py::plan_video": "the benchmark's generative story read top to bottom; "
                                      "splitting it would hide the order of the random draws that "
                                      "fixes the benchmark's bytes",
}
MAX_LINES, MAX_FUNCTION_LINES = 520, 80


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts == ["eclipse_lite"] or parts[1] in ("cli", "__main__"):
        return "cli"
    if parts[1] in ("data", "train", "studies", "course"):
        return parts[1]
    return "model"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def python_files():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def imports_of(tree: ast.AST):
    """(node, imported module, inside a function) for every import statement."""
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((child, alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    found.append((child, "." * child.level + (child.module or ""), in_function))
                else:
                    found.append((child, child.module, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def test_the_layer_rule_catches_an_upward_import():
    assert LAYERS.index(layer_of("eclipse_lite.model")) < LAYERS.index(layer_of("eclipse_lite.train.loop"))
    assert layer_of("eclipse_lite.data.synth.plan") == "data"
    assert layer_of("eclipse_lite") == "cli"
    tree = ast.parse("def f():\n    from eclipse_lite.train.loop import fit\n")
    [(_, target, inner)] = imports_of(tree)
    assert target == "eclipse_lite.train.loop" and inner


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path):
    module = module_name(path)
    here = LAYERS.index(layer_of(module))
    source = path.read_text()
    lines = source.splitlines()
    problems = []
    for node, target, in_function in imports_of(ast.parse(source)):
        where = f"{path.relative_to(PACKAGE)}:{node.lineno}"
        if target.startswith("."):
            problems.append(f"{where}: relative import {target!r} (write eclipse_lite.… in full)")
            continue
        if target == "eclipse_lite" or target.startswith("eclipse_lite."):
            if in_function:
                problems.append(f"{where}: {target} imported inside a function (import it at the top)")
            elif LAYERS.index(layer_of(target)) > here:
                problems.append(f"{where}: {module} ({layer_of(module)}) imports {target} "
                                f"({layer_of(target)}), a layer below it")
        elif in_function:
            line, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
            if "#" not in line and not above.startswith("#"):
                problems.append(f"{where}: {target} imported inside a function without a one-line "
                                "reason (a comment on the line)")
    assert not problems, "\n".join(problems)


def _body_lines(fn: ast.AST) -> int:
    body = fn.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        if len(body) == 1:
            return 0
        first = body[1]
    return fn.end_lineno - first.lineno + 1


def test_files_and_functions_stay_readable():
    problems = []
    for path in python_files():
        rel = str(path.relative_to(PACKAGE))
        source = path.read_text()
        n = len(source.splitlines())
        if n > MAX_LINES and rel not in LONG_FILES:
            problems.append(f"{rel}: {n} lines (split it, or name it in LONG_FILES with a reason)")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                key = f"{rel}::{node.name}"
                if _body_lines(node) > MAX_FUNCTION_LINES and key not in LONG_FUNCTIONS:
                    problems.append(f"{key}: {_body_lines(node)} lines")
    for name in list(LONG_FILES) + [k.split("::")[0] for k in LONG_FUNCTIONS]:
        assert (PACKAGE / name).exists(), f"{name} is listed as an exception but does not exist"
    assert not problems, "\n".join(problems)


def test_public_api_is_the_library_not_its_internals():
    import eclipse_lite as el
    for name in ("ECLIPSE", "ModelConfig", "TextFeatures", "VideoFeatures", "tokenize",
                 "retrieval_metrics", "TrainConfig", "fit", "evaluate", "make_benchmark",
                 "load_benchmark"):
        assert hasattr(el, name) and name in el.__all__, name
    for internal in ("masked_mean_pool", "ground_truth_ranks", "infonce_from_logits", "AudioVisualBlock"):
        assert not hasattr(el, internal), f"el.{internal} is an internal: import it from its module"
    assert sorted(el.__all__) == sorted(set(el.__all__))
