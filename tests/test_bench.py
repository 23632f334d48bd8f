"""FLOP counts against a hand count, the config overrides, and the bench command at ci size."""
import json
import os

import pytest

from eclipse_lite.cli import main
from eclipse_lite.config import ModelConfig
from eclipse_lite.studies.bench import (
    compare,
    count_flops,
    format_table,
    frame_sweep,
    measure,
    parse_overrides,
)


# ----------------------------------------------------------------------------- hand counts
# A multiply-add counts 2 FLOPs; a Linear with n inputs and m outputs applied to k tokens costs
# 2*k*n*m (its bias add is not counted, as FlopCounterMode does); attention over q queries and
# k keys of width D (all heads together) costs 2*q*k*D for Q K^T and again for weights @ V.
def linear(tokens, n_in, n_out):
    return 2 * tokens * n_in * n_out


def self_attention_layer(tokens, width, hidden):
    """One pre-norm transformer layer: Q, K, V, out projections; QK^T; AV; the two-layer MLP."""
    projections = 4 * linear(tokens, width, width)
    scores = 2 * tokens * tokens * width
    mix = 2 * tokens * tokens * width
    mlp = linear(tokens, width, hidden) + linear(tokens, hidden, width)
    return projections + scores + mix + mlp


def av_block(tokens, audio_tokens, width):
    """ECLIPSE's AV block for one frame (Eq. 3 and 4): A2V, V2A and their zero-init projections."""
    if audio_tokens == 1:
        # A2V's softmax runs over one key: every frame token gets out_proj(v_proj(a)), computed
        # once per frame (model.AudioVisualBlock) — v, out_proj and a2v_proj on one token
        a2v = 3 * linear(1, width, width)
    else:
        a2v = (linear(tokens, width, width)               # q from the frame's tokens
               + 2 * linear(audio_tokens, width, width)   # k, v from the audio token(s)
               + 2 * 2 * tokens * audio_tokens * width    # QK^T and AV
               + linear(tokens, width, width)             # out_proj
               + linear(tokens, width, width))            # a2v_proj (vis_audio_fc)
    v2a = (linear(audio_tokens, width, width)         # q from the audio token(s)
           + 2 * linear(tokens, width, width)         # k, v from the frame's tokens
           + 2 * 2 * audio_tokens * tokens * width
           + linear(audio_tokens, width, width)       # out_proj
           + linear(audio_tokens, width, width))      # v2a_proj (audio_vis_fc)
    return a2v + v2a


def test_ci_video_flops_equal_hand_count():
    cfg = ModelConfig.preset("ci")  # 32 px, patch 8 -> 16 patches + CLS; width 64; 2 layers
    d, e, p = cfg.vision_width, cfg.embed_dim, cfg.num_patches
    tokens = p + 1
    hidden = int(cfg.vision_width * cfg.mlp_ratio)
    assert (tokens, d, hidden) == (17, 64, 256)
    one_layer = self_attention_layer(tokens, d, hidden)
    # written out: 4*2*17*64*64 + 2*(2*17*17*64) + 2*2*17*64*256
    assert one_layer == 557_056 + 73_984 + 1_114_112 == 1_745_152
    patch_embed = 2 * p * d * (3 * cfg.patch_size ** 2)   # conv as a matmul per patch
    head = linear(1, d, e)                                # proj of the CLS token
    per_frame = patch_embed + cfg.vision_layers * one_layer + head
    for frames in (1, 4):
        got = count_flops(cfg, frames=frames, fusion="none")
        assert got["video"] * 1e9 == pytest.approx(frames * per_frame, abs=0.5)
        assert got["audio"] == 0.0

    av = av_block(tokens, 1, d)
    assert av == 3 * 2 * 64 * 64 + 307_456
    audio_proj = linear(1, cfg.audio_dim, d)
    per_frame_av = per_frame + cfg.vision_layers * av + audio_proj
    got = count_flops(cfg, frames=4, fusion="eclipse")
    assert got["video"] * 1e9 == pytest.approx(4 * per_frame_av, abs=0.5)


def test_one_more_layer_costs_exactly_one_hand_counted_layer():
    one = ModelConfig.preset("ci", vision_layers=1)
    two = ModelConfig.preset("ci", vision_layers=2)
    tokens, d = one.num_patches + 1, one.vision_width
    layer = self_attention_layer(tokens, d, 4 * d) + av_block(tokens, 1, d)
    diff = count_flops(two, frames=1)["video"] - count_flops(one, frames=1)["video"]
    assert diff * 1e9 == pytest.approx(layer, abs=0.5)


def test_ci_text_flops_equal_hand_count():
    cfg = ModelConfig.preset("ci")
    n, d = cfg.context_length, cfg.text_width
    want = cfg.text_layers * self_attention_layer(n, d, 4 * d) + linear(1, d, cfg.embed_dim)
    assert count_flops(cfg)["text"] * 1e9 == pytest.approx(want, abs=0.5)
    short = count_flops(cfg, text_tokens=8)["text"] * 1e9
    assert short == pytest.approx(cfg.text_layers * self_attention_layer(8, d, 4 * d)
                                  + linear(1, d, cfg.embed_dim), abs=0.5)


def test_base_vit_frame_matches_reference_count_and_audio_is_counted():
    base = ModelConfig.preset("base")
    frame = count_flops(base, frames=1, fusion="none")
    assert frame["video"] == pytest.approx(8.8, abs=0.05)      # REFERENCE.md: ViT-B/32 ~ 8.8
    assert frame["text"] == pytest.approx(4.9, abs=0.05)
    ecl = count_flops(base, frames=32)
    assert ecl["audio"] > 0                                    # ResNet-18 over 32 windows
    assert count_flops(base.replace(audio_encoder="precomputed"), frames=32)["audio"] == 0.0
    assert count_flops(base, frames=96, fusion="none")["video"] == pytest.approx(96 * frame["video"])


def test_frame_sweep_is_linear_in_frames():
    cfg = ModelConfig.preset("ci")
    sweep = frame_sweep(cfg, (2, 4, 8))
    for label, values in sweep["curves"].items():
        text = sweep["detail"]["video_only"][0]["text"]
        per = [(v - text) / f for v, f in zip(values, sweep["frames"])]
        assert per[0] == pytest.approx(per[1]) == pytest.approx(per[2]), label
    assert sweep["points"] == []        # paper points only at the base shape
    with pytest.raises(ValueError, match="positive"):
        frame_sweep(cfg, (0, 4))


# ----------------------------------------------------------------------------- overrides
def test_parse_overrides_types_and_errors():
    got = parse_overrides(["fusion=none", "num_frames=16", "audio_window_s=5",
                           "gradient_checkpointing=true", "av_layers=0,2"])
    assert got == {"fusion": "none", "num_frames": 16, "audio_window_s": 5.0,
                   "gradient_checkpointing": True, "av_layers": (0, 2)}
    assert parse_overrides(["av_layers=all"]) == {"av_layers": None}
    with pytest.raises(ValueError, match="unknown setting"):
        parse_overrides(["frames=3"])
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["fusion"])
    with pytest.raises(ValueError, match="expected a number"):
        parse_overrides(["num_frames=many"])


# ----------------------------------------------------------------------------- measuring
def test_measure_in_process_and_compare_ratios():
    cfg = ModelConfig.preset("ci")
    r = measure(cfg, "train", batch=2, steps=2, warmup=0, device="cpu", isolate=False)
    assert r["samples_per_s"] > 0 and len(r["step_seconds"]) == 2
    assert r["peak_memory_mb"] is None     # CPU memory needs a fresh process
    with pytest.raises(ValueError, match="mode"):
        measure(cfg, "fit")
    res = compare(cfg, batch=2, modes=("infer",), steps=1, warmup=0, device="cpu", isolate=False,
                  repeats=2)
    assert len(res["rows"]["eclipse"]["infer"]["samples_per_s_runs"]) == 2
    assert res["rows"]["video_only"]["frames"] == 3 * cfg.num_frames
    assert res["ratios"]["gflops"] == pytest.approx(
        res["rows"]["video_only"]["gflops_total"] / res["rows"]["eclipse"]["gflops_total"])
    assert res["paper_ratios"]["memory"] == pytest.approx(24802 / 10637)
    assert "ECLIPSE" in format_table(res)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak RSS via /proc (Linux)")
def test_measure_isolated_reports_cpu_memory():
    cfg = ModelConfig.preset("ci")
    r = measure(cfg, "train", batch=2, steps=1, warmup=0, device="cpu")   # child process
    assert r["peak_memory_mb"] > 0 and r["peak_rss_mb"] > r["peak_memory_mb"]


def test_bench_command_at_ci_size(tmp_path):
    out = tmp_path / "bench"
    argv = ["bench", "--preset", "ci", "--out", str(out), "--device", "cpu", "--batch", "2", "--steps",
            "1", "--warmup", "0", "--no-isolate", "--sweep", "1,2", "--set", "num_frames=2"]
    assert main(argv) == 0
    bench = json.loads((out / "bench.json").read_text())
    assert bench["command"].startswith("eclipse-lite bench --preset ci")
    assert bench["rows"]["eclipse"]["frames"] == 2 and bench["rows"]["video_only"]["frames"] == 6
    assert bench["rows"]["eclipse"]["infer"]["samples_per_s"] > 0
    assert bench["rows"]["eclipse"]["train"]["samples_per_s"] > 0
    sweep = json.loads((out / "frame_sweep.json").read_text())
    assert sweep["frames"] == [1, 2]
    assert (out / "frame_sweep.png").stat().st_size > 0 and (out / "bench.md").exists()
    assert (out / "bench.png").stat().st_size > 0
    assert not [p for p in os.listdir(out) if p.endswith(".tmp") or ".tmp." in p]
    with pytest.raises(SystemExit):
        main(["bench", "--what", "everything"])
