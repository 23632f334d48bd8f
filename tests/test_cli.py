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
    import eclipse_lite.cli.run as cli_run
    from eclipse_lite.config import ModelConfig
    from eclipse_lite.model import ECLIPSE
    ECLIPSE(ModelConfig.preset("ci")).save_pretrained(tmp_path / "ckpt")
    monkeypatch.setattr(cli_run, "_towers", lambda *a, **k: pytest.fail("pretrained before checking the data"))
    assert main(["eval", "--checkpoint", str(tmp_path / "ckpt"), "--data", str(tmp_path / "none")]) == 2
    assert "eclipse-lite make-data --preset ci" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "ckpt"), "--data", str(tmp_path / "none"),
                 "--set", "num_frames=8"]) == 2
    assert "would be ignored" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["bench", "--preset", "huge"], "known presets: ci, tiny, base"),
    (["saliency", "--data", "/nonexistent/bench", "--checkpoint", "/nonexistent/ckpt"], "save_pretrained"),
    (["demo", "--preset", "ci", "--set", "fusion=none"], "does not apply"),
    (["oracle", "--data", "/nonexistent/bench"], "eclipse-lite make-data --out /nonexistent/bench"),
    (["assignments", "/nonexistent/notebooks", "/nonexistent/out"], "no notebooks"),
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


COMMANDS = ["make-data", "pretrain", "train", "eval", "cache-audio", "ablate", "bench", "saliency",
            "report", "demo", "oracle", "loader-bench", "assignments"]


def test_every_command_is_listed():
    from eclipse_lite.cli import build_parser
    [sub] = [a for a in build_parser()._actions if a.dest == "command"]
    assert sorted(sub.choices) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: eclipse-lite {command}")


def test_no_argument_parser_outside_the_cli():
    """Every command is `eclipse-lite <command>`: argparse lives in eclipse_lite/cli/ only."""
    from pathlib import Path
    package = Path(__file__).resolve().parents[1] / "eclipse_lite"
    outside = {str(p.relative_to(package)) for p in package.rglob("*.py")
               if p.relative_to(package).parts[0] != "cli" and "argparse" in p.read_text()}
    assert not outside, f"argparse outside eclipse_lite/cli/: {sorted(outside)}"


# ------------------------------------------------------------------ real data, the base preset
# a base-preset run at ci size: a random 2-layer CLIP (save_pretrained), the ci benchmark as real
# manifests, 4 frames, 0.5 s audio windows through a random-weight VGGSound ResNet-18 (512-d)
BASE = ["--preset", "base", "--set", "num_frames=4", "--set", "audio_window_s=0.5"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import torch
    from transformers import CLIPConfig, CLIPModel
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64),
        vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=64)
    out = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(config).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def vggsound_weights(tmp_path_factory):
    import torch

    from eclipse_lite.audio_encoders import ResNet18Audio
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vggsound") / "resnet18.pth"
    torch.save(ResNet18Audio().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def audio_cache(ci_data, vggsound_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("features") / "ci"
    assert main(["cache-audio", *BASE, "--vggsound", str(vggsound_weights), "--data", str(ci_data),
                 "--device", "cpu", "--out", str(out)]) == 0
    return out


def test_cache_audio_holds_the_vggsound_embeddings_of_every_video(ci_data, audio_cache, vggsound_weights,
                                                                  capsys):
    import torch

    from eclipse_lite.audio import encode_windows
    from eclipse_lite.config import ModelConfig
    from eclipse_lite.data import FeatureCache, RetrievalDataset, read_jsonl_manifest
    from eclipse_lite.train.realdata import vggsound_encoder
    cfg = ModelConfig.preset("base", num_frames=4, audio_window_s=0.5)
    cache = FeatureCache(str(audio_cache))
    assert cache.settings.encoder == "resnet18-vggsound" and cache.settings.window_s == 0.5
    items = read_jsonl_manifest(str(ci_data / "test.jsonl"))
    x = RetrievalDataset.from_config(items, cfg)[0]                     # windows [T, W]
    with torch.no_grad():
        fresh = encode_windows(vggsound_encoder(cfg, vggsound_weights), x["audio"][None],
                               x["audio_mask"][None])[0]
    assert cache.get(items[0].video_id).shape == (4, 512)
    torch.testing.assert_close(cache.get(items[0].video_id), fresh, rtol=1e-4, atol=1e-4)
    # a second run finds all 12 videos cached and computes nothing
    assert main(["cache-audio", *BASE, "--vggsound", str(vggsound_weights), "--data", str(ci_data),
                 "--device", "cpu", "--out", str(audio_cache)]) == 0
    assert "0 computed, 12 already cached" in capsys.readouterr().out


def test_base_train_then_eval_on_precomputed_audio(ci_data, tiny_clip, audio_cache, vggsound_weights,
                                                   tmp_path, monkeypatch):
    import math

    import eclipse_lite.cli.run as cli_run
    monkeypatch.setattr(cli_run, "_towers", lambda *a, **k: pytest.fail("base pretrained tiny towers"))
    out = tmp_path / "run"
    assert main(["train", *BASE, "--clip", str(tiny_clip), "--data", str(ci_data),
                 "--audio-features", str(audio_cache), "--set", "epochs=1", "--set", "batch_size=4",
                 "--device", "cpu", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    t2v = results["metrics"]["t2v"]
    assert set(t2v) == {"R@1", "R@5", "R@10", "MdR", "MnR"} and all(math.isfinite(v) for v in t2v.values())
    assert 1 <= t2v["MnR"] <= 4                                        # 4 test videos
    assert results["model_config"]["vision_width"] == 64 and results["model_config"]["num_frames"] == 4
    tc = results["train_config"]                                       # the paper's recipe
    assert tc["lr_clip"] == 1e-7 and tc["gradient_checkpointing"] is True and tc["epochs"] == 1
    assert results["run"]["best_epoch"] == 0 and results["run"]["steps"] == 1
    assert (out / "best" / "model.safetensors").exists()
    common = ["eval", "--preset", "base", "--checkpoint", str(out / "best"), "--data", str(ci_data),
              "--device", "cpu"]
    assert main([*common, "--audio-features", str(audio_cache), "--out", str(tmp_path / "e1")]) == 0
    again = json.loads((tmp_path / "e1" / "results.json").read_text())
    assert again["metrics"]["t2v"] == t2v and again["metrics"]["v2t"] == results["metrics"]["v2t"]
    # the same scores with the audio embedded on the fly from the waveform
    assert main([*common, "--vggsound", str(vggsound_weights), "--out", str(tmp_path / "e2")]) == 0
    fly = json.loads((tmp_path / "e2" / "results.json").read_text())
    assert fly["metrics"]["t2v"] == pytest.approx(t2v)


def test_base_trains_with_audio_embedded_on_the_fly(ci_data, tiny_clip, vggsound_weights, tmp_path):
    out = tmp_path / "run"
    assert main(["train", *BASE, "--clip", str(tiny_clip), "--data", str(ci_data),
                 "--vggsound", str(vggsound_weights), "--set", "epochs=1", "--set", "batch_size=4",
                 "--device", "cpu", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["run"]["audio"].startswith("vggsound") and results["run"]["steps"] == 1
    assert (out / "best" / "model.safetensors").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda f, s: f.pop("--clip"), "pass --clip NAME_OR_PATH"),
    (lambda f, s: f.update({"--clip": "openai/no-such-clip"}),
     "--clip openai/no-such-clip could not be loaded"),
    (lambda f, s: f.update({"--data": "EMPTY"}), "has no train.jsonl, val.jsonl, test.jsonl"),
    (lambda f, s: f.pop("--audio-features"), "got neither of --audio-features and --vggsound"),
    (lambda f, s: s.remove("audio_window_s=0.5"), "window_s=10.0 (cache: 0.5)"),
    (lambda f, s: s.append("audio_dim=64"), "set audio_dim=512"),
    (lambda f, s: f.update({"--preset": "tiny", "--clip": None}), "go with --clip"),
], ids=["no_clip", "hub_offline", "no_manifests", "no_audio", "other_window", "audio_dim",
        "tiny_with_features"])
def test_base_errors_are_one_actionable_line(edit, message, ci_data, tiny_clip, audio_cache, tmp_path,
                                             capsys):
    flags = {"--preset": "base", "--clip": str(tiny_clip), "--data": str(ci_data),
             "--audio-features": str(audio_cache), "--device": "cpu", "--out": str(tmp_path / "run")}
    sets = ["num_frames=4", "audio_window_s=0.5"]
    edit(flags, sets)
    if flags["--data"] == "EMPTY":
        flags["--data"] = str(tmp_path)
    argv = ["train"] + [x for k, v in flags.items() if v is not None for x in (k, v)]
    assert main(argv + [x for s in sets for x in ("--set", s)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1, err
    if "no-such-clip" in message:
        assert "save_pretrained" in err
    assert not (tmp_path / "run").exists()


def test_a_video_missing_from_the_feature_cache_is_named(ci_data, tiny_clip, audio_cache, tmp_path,
                                                         capsys):
    import os
    import shutil

    from eclipse_lite.data import FeatureCache
    partial = tmp_path / "features"
    shutil.copytree(audio_cache, partial)
    os.remove(FeatureCache(str(partial)).path_for("val_0001"))
    argv = ["--data", str(ci_data), "--audio-features", str(partial), "--device", "cpu"]
    assert main(["train", *BASE, "--clip", str(tiny_clip), *argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "'val_0001' (val)" in err and "eclipse-lite cache-audio --preset base" in err
    assert "--set audio_window_s=0.5" in err and err.count("\n") == 1


@pytest.mark.parametrize("setting, message", [
    ("name=base", "ModelConfig.name is the preset's name"),
    ("audio_window_s=nan", "audio_window_s must be a finite number"),
    ("logit_scale_init=nan", "logit_scale_init must be a finite number"),
    ("epochs=0", "TrainConfig.epochs must be a positive integer"),
    ("lr_clip=nan", "TrainConfig.lr_clip must be a finite number"),
    ("precision=fp8", "TrainConfig.precision='fp8' is not one of"),
])
def test_bad_model_settings_are_one_line_errors(capsys, ci_data, setting, message):
    assert main(["train", "--preset", "ci", "--data", str(ci_data), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_broken_manifest_is_a_one_line_error_naming_the_line(capsys, ci_data, tmp_path):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(ci_data, data)
    with open(data / "test.jsonl", "a") as f:
        f.write("not json\n")
    assert main(["train", "--preset", "ci", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "test.jsonl:5: not valid JSON" in err and "Traceback" not in err
