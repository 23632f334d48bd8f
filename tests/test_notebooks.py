"""The notebooks are tests: every ``notebooks/*.ipynb`` runs headless at ``PRESET="ci"``.

* conventions (static, instant): one ``parameters`` cell first with exactly the seven names and
  their defaults, kernel ``python3``, stored clean, exercise markup valid, writes metrics.json;
* the run (papermill, kernel ``python3``, a ci benchmark made once per session): the notebook's
  ``OUT_DIR/metrics.json`` is a non-empty flat dict of finite numbers, and the numbers a notebook
  is known for are in range (``EXPECTED``; a notebook without an entry is still checked for
  finite, non-empty metrics);
* reproducibility (nbval ``--nbval-lax``): the executed copy, cut after its last cell marked
  ``# NBVAL_CHECK_OUTPUT``, is run again by nbval in a fresh kernel, which compares the marked
  cells' outputs with the first run's. Committed notebooks hold no outputs, so the reference
  outputs come from the papermill run; ``test_nbval_detects_an_irreproducible_cell`` shows the
  check fails when a marked cell's output changes between runs.

``NOTEBOOK_TEST_DATA=/some/folder`` reuses a ci benchmark (and its cached pretrained towers)
across sessions instead of making one in the session's temp folder.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest
from script_loader import load_script

from eclipse_lite.course.runs import notebook_out

ROOT = Path(__file__).resolve().parent.parent


run_notebooks = load_script("run_notebooks")
check_clean = load_script("check_notebooks_clean")

NOTEBOOKS = run_notebooks.notebook_paths()
CI_PARAMETERS = {"PRESET": "ci", "SEED": 0, "DEVICE": "cpu", "MAX_STEPS": 4, "INTERACTIVE": False}
CELL_TIMEOUT = 600          # seconds per cell; a ci run of a whole notebook takes well under 2 min
NBVAL_MARK = "# NBVAL_CHECK_OUTPUT"
DEFAULTS = {"PRESET": "tiny", "SEED": 0, "DEVICE": "cpu", "DATA_DIR": None, "MAX_STEPS": None,
            "INTERACTIVE": False}            # OUT_DIR: "runs/notebooks/<notebook name>"
WITH_EXPLORER = ("00_data_tour", "06_sound_localization")  # also run with INTERACTIVE=True (headless)
EXPLORER_CELL_SECONDS = 120  # a lost kernel reply shows up as a cell that lasts its whole timeout

# ------------------------------------------------------------------------------ expectations
# Per notebook: {metric: (low, high)} (inclusive; None = unbounded), and relations between metrics.
# 04-07: the ranges their author gave for a ci run.
Range = Tuple[Optional[float], Optional[float]]
RANGES: Dict[str, Dict[str, Range]] = {
    "00_data_tour": {
        "videos": (12, 12), "test_videos": (4, 4),                 # the ci benchmark: 6/2/4 videos
        "brief_events": (1, None),
        "brief_seen_fraction": (0.0, 0.0),         # brief visuals lie strictly between the 8 frames
        "brief_heard_fraction": (0.5, 1.0),        # ... but their sound reaches the windows
        "heard_only_heard_fraction": (0.5, 1.0),
        "seen_only_seen_fraction": (0.5, 1.0),
        "oracle_r1_audio": (0.0, 100.0), "oracle_r1_video": (0.0, 100.0), "oracle_r1_both": (0.0, 100.0),
        "audio_window_s": (2.0, 2.0),
    },
    "01_patch_embedding": {
        "num_patches": (16, 16), "tokens_per_frame": (17, 17),
        "conv_vs_matmul_max_err": (0.0, 1e-4),
        "shuffle_change_without_positions": (0.0, 1e-4),   # no positions: a bag of patches
        "shuffle_change_with_positions": (1e-3, None),
        "pos_structure_random": (-0.2, 0.2),
        "pos_structure_sincos": (0.2, None), "pos_structure_resized": (0.2, None),
    },
    "02_attention": {
        "single_key_weight": (1.0, 1.0),                   # softmax over one audio key
        "init_minus_clip4clip_max_abs": (0.0, 1e-6),       # zero-initialised projections
        "layer_order_gap_trained": (1e-5, None),
        "grad_step1_a2v_proj": (1e-6, None), "grad_step1_v2a_proj": (0.0, 0.0),
        "grad_step1_attn": (0.0, 0.0), "grad_step1_audio_proj": (0.0, 0.0),
        "grad_step2_audio_proj": (1e-8, None), "grad_step2_v2a_proj": (1e-8, None),
        "grad_step2_v2a_proj_last_layer": (0.0, 0.0),      # the audio stream ends there
        "new_params_none": (0, 0), "new_params_a2v": (1, None),
    },
    "03_audio": {
        "window_samples": (32000, 32000), "spectrogram_frames": (201, 201),   # 2 s at 16 kHz, 10 ms hop
        "logmel_max_err": (0.0, 1e-3),
        "released_centre_offset_s": (0.0, None),
        "coverage_window_1s": (0.0, 1.0), "coverage_window_10s": (0.0, 1.0), "coverage_window_30s": (0.0, 1.0),
        "classes_per_window_10s": (0.0, None),
        "effect_10s_over_1s": (0.0, 1.0),                  # a 1 s sound is diluted in a 10 s window
        "gflops_per_10s_window": (1e-6, None),
        "pretrain_audio_heldout_acc": (0.0, 1.0),          # the audio encoder, pretrained (and cached) here
        "embedded_videos": (1, None),                      # every split decoded and embedded (cached) here
    },
    "04_contrastive_training": {
        "infonce_max_abs_diff": (0.0, 0.0001), "logit_scale_init": (14.2847, 14.2867),
        "pretrain_clip_loss_first": (0.0, None), "pretrain_clip_loss_last": (0.0, None),
        "pretrain_audio_heldout_acc": (0.0, 1.0), "n_test": (1, None),
        "pretrain_sound_caption_cos": (-1.0, 0.9),       # the text tower tells sounds apart
        "chance_t2v_r1": (0.0, 100.0), "pretrained_t2v_r1": (0.0, 100.0),
        "eclipse_steps": (1, None), "eclipse_final_loss": (0.0, None),
        "eclipse_from_checkpoint": (0, 1), "eclipse_t2v_r1": (0.0, 100.0),
        "eclipse_t2v_r5": (0.0, 100.0), "eclipse_t2v_mnr": (1.0, None),
        "eclipse_v2t_r1": (0.0, 100.0), "none_steps": (1, None), "none_final_loss": (0.0, None),
        "none_from_checkpoint": (0, 1), "none_t2v_r1": (0.0, 100.0), "none_t2v_r5": (0.0, 100.0),
        "none_t2v_mnr": (1.0, None), "none_v2t_r1": (0.0, 100.0), "diag_steps": (1, None),
        "diag_random_first_step_grad": (0.0, 0.0), "diag_pretrained_first_step_grad": (0.0, 0.0),
        "diag_random_final_proj_norm": (1e-06, None),
        "diag_pretrained_final_proj_norm": (1e-06, None),
        "diag_random_final_sensitivity": (0.0, 2.0),
        "diag_pretrained_final_sensitivity": (0.0, 2.0), "diag_random_audio_cos": (-1.0, 1.0),
        "diag_pretrained_audio_cos": (-1.0, 1.0), "seconds": (0.0, None),
    },
    "05_evaluation": {
        "n_test": (1, None), "chance_t2v_r1": (0.0, 100.0), "constant_matrix_rank": (3.0, 3.0),
        "eclipse_from_checkpoint": (0, 1), "eclipse_steps": (1, None),
        "eclipse_t2v_r1": (0.0, 100.0), "eclipse_t2v_r5": (0.0, 100.0),
        "eclipse_t2v_r10": (0.0, 100.0), "eclipse_t2v_mdr": (1.0, None),
        "eclipse_t2v_mnr": (1.0, None), "eclipse_v2t_r1": (0.0, 100.0),
        "eclipse_v2t_r5": (0.0, 100.0), "eclipse_v2t_r10": (0.0, 100.0),
        "eclipse_v2t_mdr": (1.0, None), "eclipse_v2t_mnr": (1.0, None), "gallery_queries": (1, 3),
        "ablation_rows": (1, None), "ablation_from_file": (0, 1), "ablation_r1_min": (0.0, 100.0),
        "ablation_r1_max": (0.0, 100.0), "seconds": (0.0, None),
    },
    "06_sound_localization": {
        "saliency_max_abs_diff": (0.0, 0.0001), "eclipse_from_checkpoint": (0, 1),
        "eclipse_steps": (1, None), "videos_scored": (1, None), "seeds": (3, 3),
        "frames_scored": (1, None), "dot_beats_baselines": (0, 1), "dot_pointing_game": (0.0, 1.0),
        "dot_pointing_game_std": (0.0, 1.0), "dot_miou": (0.0, 1.0), "dot_miou_std": (0.0, 1.0),
        "dot_projected_pointing_game": (0.0, 1.0), "dot_projected_pointing_game_std": (0.0, 1.0),
        "dot_projected_miou": (0.0, 1.0), "dot_projected_miou_std": (0.0, 1.0),
        "v2a_pointing_game": (0.0, 1.0), "v2a_pointing_game_std": (0.0, 1.0),
        "v2a_miou": (0.0, 1.0), "v2a_miou_std": (0.0, 1.0),
        "dot_shuffled_audio_pointing_game": (0.0, 1.0),
        "dot_shuffled_audio_pointing_game_std": (0.0, 1.0), "dot_shuffled_audio_miou": (0.0, 1.0),
        "dot_shuffled_audio_miou_std": (0.0, 1.0), "centre_prior_pointing_game": (0.0, 1.0),
        "centre_prior_pointing_game_std": (0.0, 1.0), "centre_prior_miou": (0.0, 1.0),
        "centre_prior_miou_std": (0.0, 1.0), "random_pointing_game": (0.0, 1.0),
        "random_pointing_game_std": (0.0, 1.0), "random_miou": (0.0, 1.0),
        "random_miou_std": (0.0, 1.0), "dot_projected_shuffled_audio_pointing_game": (0.0, 1.0),
        "dot_projected_shuffled_audio_pointing_game_std": (0.0, 1.0),
        "dot_projected_shuffled_audio_miou": (0.0, 1.0),
        "dot_projected_shuffled_audio_miou_std": (0.0, 1.0),
        "v2a_shuffled_audio_pointing_game": (0.0, 1.0),
        "v2a_shuffled_audio_pointing_game_std": (0.0, 1.0), "v2a_shuffled_audio_miou": (0.0, 1.0),
        "v2a_shuffled_audio_miou_std": (0.0, 1.0), "dot_beats_shuffled_audio": (0, 1),
        "seconds": (0.0, None),
    },
    "07_efficiency": {
        "flops_formula_max_rel_diff": (0.0, 1e-09), "base_gflops_eclipse32": (330.0, 340.0),
        "base_gflops_eclipse32_with_audio_encoder": (470.0, 490.0),
        "base_gflops_clip4clip96": (848.0, 855.0), "base_gflops_ratio": (2.45, 2.65),
        "base_gflops_ratio_with_audio_encoder": (1.7, 1.85),
        "paper_gflops_eclipse32": (827.0, 827.0), "paper_gflops_clip4clip96": (1251.0, 1251.0),
        "paper_gflops_ratio": (1.512, 1.513), "base_est_memory_gib_eclipse32": (5.0, 80.0),
        "base_est_memory_gib_clip4clip96": (10.0, 160.0), "base_est_memory_ratio": (1.2, 4.0),
        "paper_memory_ratio": (2.33, 2.34), "sweep_points": (5, 5), "preset_eclipse_frames": (4, 4),
        "preset_video_only_frames": (12, 12), "preset_gflops_ratio": (1.0, 3.0),
        "preset_infer_samples_per_s_eclipse": (1e-06, None),
        "preset_infer_samples_per_s_video_only": (1e-06, None),
        "preset_train_samples_per_s_eclipse": (1e-06, None),
        "preset_train_samples_per_s_video_only": (1e-06, None),
        "preset_speed_infer_ratio": (1e-06, None), "preset_speed_train_ratio": (1e-06, None),
        "preset_infer_peak_memory_mb_eclipse": (0.0, None),
        "preset_infer_peak_memory_mb_video_only": (0.0, None),
        "preset_train_peak_memory_mb_eclipse": (0.0, None),
        "preset_train_peak_memory_mb_video_only": (0.0, None),
        "preset_memory_infer_ratio": (0.0, None), "preset_memory_train_ratio": (0.0, None),
        "seconds": (0.0, None),
    },
}
# keys that may be missing (a platform that cannot measure memory); checked when present
OPTIONAL: Dict[str, Tuple[str, ...]] = {
    "06_sound_localization": tuple(f"{m}_shuffled_audio_{s}" for m in ("dot_projected", "v2a")
                                   for s in ("pointing_game", "pointing_game_std", "miou", "miou_std"))
                             + ("dot_beats_shuffled_audio",),
    "07_efficiency": tuple(f"preset_{mode}_peak_memory_mb_{m}" for mode in ("infer", "train")
                           for m in ("eclipse", "video_only"))
                     + ("preset_memory_infer_ratio", "preset_memory_train_ratio"),
}
Relation = Tuple[str, Callable[[dict], bool]]
RELATIONS: Dict[str, List[Relation]] = {
    "02_attention": [
        ("eclipse > joint > a2v: two cross-attentions per layer cost most",
         lambda m: m["new_params_eclipse"] > m["new_params_joint"] > m["new_params_a2v"]),
    ],
    "03_audio": [
        ("a longer window hears at least what a shorter one hears",
         lambda m: m["coverage_window_1s"] <= m["coverage_window_10s"] <= m["coverage_window_30s"]),
    ],
    "04_contrastive_training": [
        ("chance is 1 / test videos", lambda m: abs(m["chance_t2v_r1"] - 100.0 / m["n_test"]) < 1e-9),
        ("fine-tuned ECLIPSE retrieves above chance", lambda m: m["eclipse_t2v_r1"] > m["chance_t2v_r1"]),
        ("a pretrained audio encoder tells windows apart better than a random one",
         lambda m: m["diag_pretrained_audio_cos"] < m["diag_random_audio_cos"]),
    ],
    "05_evaluation": [
        ("T2V R@1 <= R@5 <= R@10", lambda m: m["eclipse_t2v_r1"] <= m["eclipse_t2v_r5"] <= m["eclipse_t2v_r10"]),
        ("V2T R@1 <= R@5 <= R@10", lambda m: m["eclipse_v2t_r1"] <= m["eclipse_v2t_r5"] <= m["eclipse_v2t_r10"]),
        ("ECLIPSE retrieves above chance", lambda m: m["eclipse_t2v_r1"] > m["chance_t2v_r1"]),
        ("ablation min <= max", lambda m: m["ablation_r1_min"] <= m["ablation_r1_max"]),
    ],
    "07_efficiency": [
        ("ECLIPSE-32 costs fewer FLOPs than CLIP4Clip-96",
         lambda m: m["base_gflops_eclipse32"] < m["base_gflops_clip4clip96"]),
        ("... also counting its audio encoder",
         lambda m: m["base_gflops_eclipse32_with_audio_encoder"] < m["base_gflops_clip4clip96"]),
        ("... and less memory", lambda m: m["base_est_memory_gib_eclipse32"] < m["base_est_memory_gib_clip4clip96"]),
    ],
}


def check_expectations(name: str, metrics: dict) -> List[str]:
    """What is wrong with a notebook's metrics against ``RANGES``/``RELATIONS`` (empty: fine)."""
    errors = []
    for key, (lo, hi) in RANGES.get(name, {}).items():
        if key not in metrics:
            if key not in OPTIONAL.get(name, ()):
                errors.append(f"{key} missing (expected in [{lo}, {hi}])")
            continue
        value = metrics[key]
        if not isinstance(value, (int, float)) or (lo is not None and value < lo) or \
                (hi is not None and value > hi):
            errors.append(f"{key} = {value!r} not in [{lo}, {hi}]")
    for text, holds in RELATIONS.get(name, []):
        try:
            ok = bool(holds(metrics))
        except KeyError as err:
            errors.append(f"{text}: metric {err} missing")
            continue
        if not ok:
            errors.append(f"{text}: does not hold")
    return errors


def test_expectation_tables_catch_bad_metrics():
    good = {"coverage_window_1s": 0.5, "coverage_window_10s": 0.9, "coverage_window_30s": 1.0}
    assert check_expectations("no such notebook", {"x": 1.0}) == []
    errors = check_expectations("03_audio", dict(good, logmel_max_err=0.5))
    assert "logmel_max_err = 0.5 not in [0.0, 0.001]" in errors
    assert any(e.startswith("window_samples missing") for e in errors)
    assert any(e.startswith("pretrain_audio_heldout_acc missing") for e in errors)
    assert "pretrain_audio_heldout_acc = 1.5 not in [0.0, 1.0]" in \
        check_expectations("03_audio", dict(good, pretrain_audio_heldout_acc=1.5))
    assert any("does not hold" in e for e in check_expectations("03_audio", dict(good, coverage_window_1s=0.95)))
    assert not any("coverage" in e for e in check_expectations("03_audio", good))
    assert not any("peak_memory" in e for e in check_expectations("07_efficiency", {}))   # optional keys


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def ci_benchmark(tmp_path_factory) -> Path:
    """The ci benchmark, made once per session (pretrained towers get cached inside it)."""
    from eclipse_lite.data.benchmark import ensure_benchmark
    folder = os.environ.get("NOTEBOOK_TEST_DATA") or tmp_path_factory.getbasetemp() / "ci-benchmark"
    return Path(ensure_benchmark("ci", Path(folder), progress=False)).resolve()


class CiRuns:
    """Papermill runs at ci, one per notebook and parameter set, memoised for the module."""

    def __init__(self, root: Path, data_dir: Path) -> None:
        self.root, self.data_dir = root, data_dir
        self.done: Dict[tuple, tuple] = {}

    def run(self, path: Path, **overrides) -> Tuple[Path, Path, float]:
        """``(executed notebook, OUT_DIR, seconds)``; re-raises the first run's error."""
        key = (path.stem, tuple(sorted(overrides.items())))
        if key not in self.done:
            tag = path.stem + "".join(f"-{k}={v}" for k, v in sorted(overrides.items()))
            out_dir = self.root / tag
            executed = self.root / f"{tag}.ipynb"
            params = dict(CI_PARAMETERS, DATA_DIR=str(self.data_dir), OUT_DIR=str(out_dir), **overrides)
            try:
                seconds = run_notebooks.execute(path, executed, params, timeout=CELL_TIMEOUT)
                self.done[key] = ("ok", (executed, out_dir, seconds))
            except Exception as err:  # remembered, so that the nbval test fails fast with it
                self.done[key] = ("error", err)
        status, value = self.done[key]
        if status == "error":
            raise value
        return value


@pytest.fixture(scope="module")
def ci_runs(ci_benchmark, tmp_path_factory) -> CiRuns:
    return CiRuns(tmp_path_factory.mktemp("notebook-runs"), ci_benchmark)


def _ids(paths):
    return [p.stem for p in paths]


def _read(path: Path):
    import nbformat
    return nbformat.read(str(path), as_version=4)


def _marked(nb) -> List[int]:
    return [i for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and any(line.strip() == NBVAL_MARK for line in c.source.splitlines())]


# ------------------------------------------------------------------------------ conventions
def test_there_are_notebooks():
    assert [p.stem[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(len(NOTEBOOKS))], \
        f"notebooks must be numbered 00, 01, ... without gaps: {[p.name for p in NOTEBOOKS]}"
    assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_conventions(path):
    from eclipse_lite.course.assignments import find_exercises
    nb = _read(path)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", "kernelspec name must be python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and code[0] is tagged[0], "the first code cell, and only it, is tagged 'parameters'"
    values = {}
    for node in ast.parse(tagged[0].source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, \
            f"the parameters cell holds plain assignments only, got: {ast.unparse(node)}"
        values[node.targets[0].id] = ast.literal_eval(node.value)
    assert set(values) == set(run_notebooks.PARAMETER_NAMES), \
        f"parameters must be exactly {run_notebooks.PARAMETER_NAMES}, got {sorted(values)}"
    assert values["OUT_DIR"] == str(notebook_out(path.stem))       # where course.runs looks
    for name, default in DEFAULTS.items():
        assert values[name] == default, f"default {name} = {values[name]!r}, expected {default!r}"
    assert check_clean.problems(nb) == [], f"{path.name} is stored with run state"
    find_exercises(nb, path.name)                       # raises on broken exercise markup
    assert any("metrics.json" in c.source for c in code), "the notebook must write OUT_DIR/metrics.json"


def test_clean_check_catches_a_dirty_notebook(tmp_path):
    """scripts/check_notebooks_clean.py (run by `make test`) passes the repository's notebooks,
    fails on a copy with outputs, execution counts or widget state, and --fix cleans it."""
    import json
    import shutil
    script = [sys.executable, str(ROOT / "scripts" / "check_notebooks_clean.py")]
    ok = subprocess.run(script, capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    clean_copy = tmp_path / "clean.ipynb"
    shutil.copy(NOTEBOOKS[0], clean_copy)
    dirty = tmp_path / "sub" / "dirty.ipynb"
    dirty.parent.mkdir()
    nb = json.loads(NOTEBOOKS[0].read_text())
    code = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    nb["cells"][code[0]]["execution_count"] = 3
    nb["cells"][code[1]]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}]
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    dirty.write_text(json.dumps(nb))
    found = subprocess.run(script + [str(tmp_path)], capture_output=True, text=True)
    assert found.returncode == 1
    assert f"{dirty}: outputs in cell(s) [{code[1]}]; execution counts in cell(s) [{code[0]}]" in found.stdout
    assert "widgets" in found.stdout and str(clean_copy) not in found.stdout

    fixed = subprocess.run(script + ["--fix", str(dirty)], capture_output=True, text=True)
    assert fixed.returncode == 0 and "stripped" in fixed.stdout
    assert subprocess.run(script + [str(tmp_path)], capture_output=True).returncode == 0
    after = json.loads(dirty.read_text())
    assert [c.get("metadata", {}).get("tags") for c in after["cells"]] == \
        [c.get("metadata", {}).get("tags") for c in nb["cells"]], "--fix keeps the cell tags"

    dirty.write_text("{not json")
    assert subprocess.run(script + [str(dirty)], capture_output=True).returncode == 2


def test_python3_kernel_is_this_environment():
    """papermill's kernel "python3" must be this interpreter (``make install`` registers it)."""
    from jupyter_client.kernelspec import KernelSpecManager
    spec = KernelSpecManager().get_kernel_spec("python3")
    exe = Path(spec.argv[0])
    if not exe.is_absolute():                           # "python": resolved on PATH by jupyter
        pytest.fail(f"kernel python3 runs {spec.argv[0]!r}, not an absolute path to this "
                    f"environment's python ({sys.executable}); run `make install`")
    assert Path(os.path.realpath(exe)).parent == Path(os.path.realpath(sys.executable)).parent, \
        f"kernel python3 ({spec.resource_dir}) runs {exe}, not {sys.executable}: " \
        f"reinstall it with `python -m ipykernel install --sys-prefix --name python3`"


# ------------------------------------------------------------------------------ runs
@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_runs_at_ci(path, ci_runs):
    executed, out_dir, seconds = ci_runs.run(path)
    metrics = run_notebooks.read_metrics(out_dir)       # non-empty, flat, finite
    errors = check_expectations(path.stem, metrics)
    assert not errors, f"{path.name} at ci ({seconds:.0f} s): " + "; ".join(errors)
    print(f"{path.name}: {seconds:.1f} s at ci")


@pytest.mark.notebook
@pytest.mark.slow
def test_03_leaves_the_audio_encoder_and_the_clips_cached_for_04(ci_runs, monkeypatch):
    """Notebook 03 pretrains the audio encoder into the folder notebook 04's pretrained_towers
    reads (``DATA_DIR/pretrained/<preset>-<key>/``), so that 04 only pretrains CLIP, and leaves
    every split decoded and embedded with it in ``DATA_DIR/cache/``, the cache 04's load_benchmark reads."""
    from eclipse_lite.config import ModelConfig
    from eclipse_lite.data.synth import generate as synth
    from eclipse_lite.studies.demo import pretrain_config_for
    ci_runs.run(next(p for p in NOTEBOOKS if p.stem == "03_audio"))
    cfg = ModelConfig.preset("ci")
    key = pretrain_config_for("ci").key(cfg, extra=synth.PRETRAIN_DATA_VERSION)
    folder = ci_runs.data_dir / "pretrained" / f"ci-{key}"
    assert (folder / "audio.safetensors").exists() and (folder / "audio_info.json").exists(), \
        f"03 left no audio encoder in {folder}"
    import eclipse_lite.data.memory as memory
    from eclipse_lite.data.benchmark import SPLITS, load_benchmark
    from eclipse_lite.train.pretrain import pretrained_audio_encoder
    encoder, info = pretrained_audio_encoder(cfg, ci_runs.data_dir / "pretrained", pretrain_config_for("ci"),
                                             progress=False)
    assert info["cached"]

    def must_not_decode(dataset, *args, **kwargs):
        pytest.fail(f"03 left no decoded clips for 04 in {ci_runs.data_dir / 'cache'}")

    monkeypatch.setattr(memory, "materialize", must_not_decode)
    clips = load_benchmark(ci_runs.data_dir, cfg, encoder, progress=False)   # what 04 asks for
    assert set(clips) == set(SPLITS)


@pytest.mark.notebook
@pytest.mark.slow
def test_05_reuses_a_fine_tuned_model_only_if_trained_after_the_benchmark_was_made(ci_benchmark, tmp_path):
    """Notebooks 04-06 load a finished fine-tuning run of the same model and recipe instead of
    training again, but not one older than the benchmark: remade data (a new generator version)
    means fine-tuning again."""
    import re
    import shutil
    import time
    data = tmp_path / "data"
    shutil.copytree(ci_benchmark, data)                  # its pretrained towers come along
    notebook = next(p for p in NOTEBOOKS if p.stem == "05_evaluation")
    params = dict(CI_PARAMETERS, DATA_DIR=str(data), OUT_DIR=str(tmp_path / "out"))

    def model_source(run: int) -> str:
        executed = tmp_path / f"05-run{run}.ipynb"
        run_notebooks.execute(notebook, executed, params, timeout=CELL_TIMEOUT)
        text = "".join(o.get("text", "") for c in _read(executed).cells if c.cell_type == "code"
                       for o in c.outputs)
        return re.search(r"ECLIPSE \((.*?), \d+ steps\)", text).group(1)

    assert model_source(1) == "fine-tuned now"
    assert model_source(2) == str(tmp_path / "out" / "models" / "eclipse" / "best")
    remade = time.time() + 60                            # the benchmark is made again, later
    os.utime(data / "meta.json", (remade, remade))
    assert model_source(3) == "fine-tuned now"


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.stem in WITH_EXPLORER],
                         ids=[s for s in WITH_EXPLORER if any(p.stem == s for p in NOTEBOOKS)])
def test_runs_with_the_explorer(path, ci_runs):
    """With INTERACTIVE=True the ipywidgets explorer is built and drawn once (headless)."""
    executed, out_dir, _ = ci_runs.run(path, INTERACTIVE=True)
    nb = _read(executed)
    views = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert views, "INTERACTIVE=True displayed no widget"
    slow = {i: c.metadata["papermill"]["duration"] for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and c.metadata.get("papermill", {}).get("duration", 0) > EXPLORER_CELL_SECONDS}
    assert not slow, (f"cells {slow} ran over {EXPLORER_CELL_SECONDS} s: under papermill, capturing output "
                      f"in an ipywidgets.Output can lose the kernel's reply until the cell timeout")
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    drawn = {m["model_name"]: m for m in state.values() if m["model_name"] in ("ImageModel", "AudioModel")}
    assert set(drawn) == {"ImageModel", "AudioModel"}, f"the explorer drew {sorted(drawn)}"
    for name, model in drawn.items():   # binary values travel as base64 buffers in the saved state
        sizes = [len(b.get("data", "")) for b in model.get("buffers", []) if b.get("path") == ["value"]]
        assert sizes and sizes[0] > 1000, f"the explorer's {name} has no picture/sound ({sizes})"


def nbval_rerun(executed: Path, workdir: Path) -> subprocess.CompletedProcess:
    """Re-run ``executed`` (cut after its last marked cell) with ``pytest --nbval-lax``."""
    import nbformat
    nb = _read(executed)
    marked = _marked(nb)
    nb.cells = nb.cells[:marked[-1] + 1]
    workdir.mkdir(parents=True, exist_ok=True)
    copy = workdir / executed.name
    nbformat.write(nb, str(copy))
    (workdir / "pytest.ini").write_text("[pytest]\n")   # keep the repository's pytest settings out
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
           "--nbval-current-env", f"--nbval-cell-timeout={CELL_TIMEOUT}", copy.name]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=3 * CELL_TIMEOUT)


MARKED = [p for p in NOTEBOOKS if _marked(_read(p))]


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path", MARKED, ids=_ids(MARKED))
def test_marked_outputs_reproduce(path, ci_runs, tmp_path):
    executed, _, _ = ci_runs.run(path)
    nb = _read(executed)
    assert all(nb.cells[i].outputs for i in _marked(nb)), \
        f"{path.name}: a cell marked {NBVAL_MARK} printed nothing at ci: nothing to check"
    result = nbval_rerun(executed, tmp_path)
    assert result.returncode == 0, f"nbval on {path.name}:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"


@pytest.mark.notebook
def test_nbval_detects_an_irreproducible_cell(tmp_path):
    """The harness above can fail: a marked cell whose output differs between runs is caught."""
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("X = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params,
                nbformat.v4.new_code_cell(f"{NBVAL_MARK}\nprint('stable', X)"),
                nbformat.v4.new_code_cell(f"{NBVAL_MARK}\nimport time\nprint(time.perf_counter_ns())")]
    executed = tmp_path / "run" / "probe.ipynb"
    run_notebooks.execute(nb, executed, {"X": 2}, cwd=tmp_path)
    result = nbval_rerun(executed, tmp_path / "nbval")
    assert result.returncode != 0, "nbval accepted an output that changed between runs"
    # four cells (papermill's injected parameters included); only the clock cell differs
    assert "1 failed, 3 passed" in result.stdout and "mismatch 'stdout'" in result.stdout, result.stdout[-3000:]
