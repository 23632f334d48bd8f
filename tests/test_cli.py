"""The `eclipse-lite` command end to end at ci size: make-data, pretrain, train, eval, demo, ablate."""
import json
import subprocess
import sys

import pytest

from eclipse_lite.cli import main


@pytest.fixture(scope="module")
def ci_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "ci"
    assert main(["make-data", "--preset", "ci", "--out", str(out)]) == 0
    return out


def test_unknown_preset_lists_the_known_ones(capsys, ci_data):
    assert main(["train", "--preset", "huge", "--data", str(ci_data)]) == 2
    assert "known presets: ci, tiny, base" in capsys.readouterr().err


def test_missing_data_dir_names_the_command_that_makes_it(capsys, tmp_path):
    assert main(["train", "--preset", "ci", "--data", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "eclipse-lite make-data --preset ci" in err


def test_eval_checks_the_data_before_pretraining_and_refuses_ignored_settings(capsys, tmp_path, monkeypatch):
    import eclipse_lite.cli as cli
    from eclipse_lite.config import ModelConfig
    from eclipse_lite.model import ECLIPSE
    ECLIPSE(ModelConfig.preset("ci")).save_pretrained(tmp_path / "ckpt")
    monkeypatch.setattr(cli, "_towers", lambda *a, **k: pytest.fail("pretrained before checking the data"))
    assert main(["eval", "--checkpoint", str(tmp_path / "ckpt"), "--data", str(tmp_path / "none")]) == 2
    assert "eclipse-lite make-data --preset ci" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "ckpt"), "--data", str(tmp_path / "none"),
                 "--set", "num_frames=8"]) == 2
    assert "would be ignored" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["bench", "--preset", "huge"], "known presets: ci, tiny, base"),
    (["saliency", "--data", "/nonexistent/bench", "--checkpoint", "/nonexistent/ckpt"], "save_pretrained"),
    (["demo", "--preset", "ci", "--set", "fusion=none"], "does not apply"),
])
def test_errors_of_every_command_are_one_clear_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"eclipse-lite {argv[0]}: error:" in err and message in err and "Traceback" not in err


def test_unknown_setting_is_named(capsys, ci_data):
    assert main(["train", "--preset", "ci", "--data", str(ci_data), "--set", "wings=2"]) == 2
    assert "--set wings: unknown setting" in capsys.readouterr().err


def test_train_then_eval(ci_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "ci", "--data", str(ci_data), "--out", str(out),
                 "--set", "fusion=eclipse", "--set", "epochs=2", "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["metrics"]["t2v"]) == {"R@1", "R@5", "R@10", "MdR", "MnR"}
    assert results["model_config"]["fusion"] == "eclipse"
    assert (out / "best" / "model.safetensors").exists() and (out / "last" / "trainer_state.json").exists()
    assert main(["eval", "--preset", "ci", "--data", str(ci_data), "--checkpoint", str(out / "best"),
                 "--out", str(tmp_path / "eval")]) == 0
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    # evaluating the best checkpoint reproduces the test metrics the training run reported
    assert again["metrics"]["t2v"] == results["metrics"]["t2v"]


def test_demo_writes_report_and_results(ci_data, tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "ci", "--data", str(ci_data), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]) == {"eclipse", "none", "audio_only"}
    for name, m in results["models"].items():
        assert set(m["t2v"]) == {"R@1", "R@5", "R@10", "MdR", "MnR"}
        assert set(m["v2t"]) == {"R@1", "R@5", "R@10", "MdR", "MnR"}
        assert m["gflops"] > 0 and m["train_seconds"] > 0
    # ECLIPSE costs more than video-only per video; audio-only least
    g = {k: v["gflops"] for k, v in results["models"].items()}
    assert g["audio_only"] < g["none"] < g["eclipse"]
    report = (out / "report.md").read_text()
    assert "| ECLIPSE (A2V + V2A) |" in report
    assert (out / "loss_curves.png").stat().st_size > 0 and (out / "gallery.png").stat().st_size > 0
    assert main(["report", "--run", str(out)]) == 0


def test_ablation_grid_smoke(ci_data, tmp_path):
    out = tmp_path / "ablate"
    assert main(["ablate", "--preset", "ci", "--data", str(ci_data), "--out", str(out),
                 "--set", "epochs=1"]) == 0
    summary = json.loads((out / "ablation.json").read_text())
    groups = {r["group"] for r in summary["rows"]}
    assert groups == {"fusion", "blocks", "frames", "window", "sampling", "modalities"}
    assert all(0 <= r["t2v_R@1_mean"] <= 100 for r in summary["rows"])
    table = (out / "ablation.md").read_text()
    assert "## frames" in table and "32 frames, ECLIPSE" in table


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "eclipse_lite.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "make-data" in out.stdout
