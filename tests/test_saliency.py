"""Sound-localisation maps (paper Fig. 7/9) and their scores (pointing game, IoU, baselines)."""
import json
import os
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eclipse_lite.attention import v2a_attention
from eclipse_lite.cli import main
from eclipse_lite.config import ModelConfig
from eclipse_lite.model import ECLIPSE
from eclipse_lite.studies import saliency as S
from eclipse_lite.studies.saliency import media

sys.path.insert(0, os.path.dirname(__file__))
from data_fixtures import write_video  # noqa: E402

BOX = [0.5, 0.5, 1.0, 1.0]   # bottom-right quarter


def peaked_map(size, y, x):
    """A smooth bump at pixel (y, x) of a size x size map."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.exp(-((ys - y) ** 2 + (xs - x) ** 2) / 8.0)


# ----------------------------------------------------------------------------- scores
def test_map_peaked_inside_box_scores_one_outside_zero():
    inside = peaked_map(32, 24, 24)
    outside = peaked_map(32, 6, 6)
    boxes = torch.tensor([BOX, BOX])
    hits = S.pointing_hits(torch.stack([inside, outside]), boxes)
    assert hits.tolist() == [1.0, 0.0]
    got = S.score_maps(torch.stack([inside, outside]), boxes)
    assert got["pointing_game"] == 0.5 and got["n"] == 2
    assert S.map_ious(outside[None], boxes[:1]).item() == 0.0
    assert S.map_ious(inside[None], boxes[:1]).item() > 0.0


def test_box_indicator_map_has_iou_one_and_numpy_works():
    mask = S.box_masks(torch.tensor([BOX]), 16, 16)
    assert mask.sum() == 64 and mask[0, 8:, 8:].all()
    scores = S.score_maps(mask.float().numpy(), np.array([BOX]))
    assert scores == {"pointing_game": 1.0, "miou": 1.0, "n": 1}


def test_flat_map_scores_expected_value_of_random_tie_breaking():
    flat = torch.ones(1, 10, 10)
    box = torch.tensor([[0.0, 0.0, 0.3, 0.5]])               # 3 x 5 pixels of 100
    assert S.pointing_hits(flat, box).item() == pytest.approx(0.15)
    assert S.map_ious(flat, box).item() == pytest.approx(0.15)   # every pixel on


def test_tiny_box_gets_one_pixel_and_bad_inputs_are_errors():
    m = S.box_masks(torch.tensor([[0.51, 0.51, 0.52, 0.52]]), 8, 8)
    assert m.sum() == 1 and m[0, 4, 4]
    with pytest.raises(ValueError, match="box 1"):
        S.box_masks(torch.tensor([BOX, [0.6, 0.2, 0.4, 0.3]]), 8, 8)
    with pytest.raises(ValueError, match="NaN"):
        S.score_maps(torch.full((1, 4, 4), float("nan")), torch.tensor([BOX]))
    with pytest.raises(ValueError, match="N = 0"):
        S.score_maps(torch.zeros(0, 4, 4), torch.zeros(0, 4))
    with pytest.raises(ValueError, match="2 maps but 1 boxes"):
        S.pointing_hits(torch.rand(2, 4, 4), torch.tensor([BOX]))


def test_centre_prior_hits_centred_boxes_and_misses_corners():
    prior = S.centre_prior_maps(2, 32, 32)
    boxes = torch.tensor([[0.3, 0.3, 0.7, 0.7], [0.0, 0.0, 0.35, 0.35]])
    assert S.pointing_hits(prior, boxes).tolist() == [1.0, 0.0]


def test_random_baseline_is_seeded_and_scores_about_the_box_area():
    a, b = S.random_maps(6, 4, 32, seed=1), S.random_maps(6, 4, 32, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, S.random_maps(6, 4, 32, seed=2))
    maps = S.random_maps(3000, 4, 32, seed=0)
    box = torch.tensor([[0.25, 0.25, 0.75, 0.75]]).expand(3000, 4)
    pg = S.score_maps(maps, box)["pointing_game"]
    assert 0.15 < pg < 0.35     # chance (box area 0.25), far from a map that knows the box (1.0)


def test_summary_and_bar():
    per_seed = [{"dot": {"pointing_game": p, "miou": 0.3}, "centre_prior": {"pointing_game": 0.4,
                 "miou": 0.2}, "random": {"pointing_game": 0.2, "miou": 0.1}} for p in (0.7, 0.8, 0.9)]
    summary = S.summarise_seeds(per_seed)
    assert summary["dot"]["pointing_game"]["mean"] == pytest.approx(0.8)
    assert summary["dot"]["pointing_game"]["std"] == pytest.approx(0.1)     # sample std
    assert summary["random"]["pointing_game"]["std"] == pytest.approx(0.0, abs=1e-12)
    assert S.beats_baselines(summary, "dot")["passed"]
    close = S.summarise_seeds([{**s, "dot": {"pointing_game": 0.45 + d, "miou": 0.3}}
                               for s, d in zip(per_seed, (-0.1, 0.0, 0.1))])
    assert not S.beats_baselines(close, "dot")["passed"]   # margin 0.05 < spread 0.1


# ----------------------------------------------------------------------------- pictures
def test_paper_postprocessing_cubes_between_two_min_max():
    m = torch.tensor([[[2.0, 3.0], [4.0, 4.0]]])      # min-max -> 0, .5, 1, 1 -> cube -> 0, .125, 1, 1
    assert S.normalise_maps(m).flatten().tolist() == [0.0, 0.125, 1.0, 1.0]
    assert S.normalise_maps(torch.full((1, 3, 3), 7.0)).abs().sum() == 0   # flat: zeros, no NaN
    heat = S.heatmaps(torch.rand(2, 3, 4, 4), 32)
    assert heat.shape == (2, 3, 32, 32) and heat.min() >= 0 and heat.max() <= 1


def test_overlay_blends_seventy_thirty():
    frame = np.full((8, 8, 3), 100, np.uint8)
    heat = np.zeros((8, 8))
    from eclipse_lite.studies.viz import heat_colours
    colour = heat_colours(heat)[0, 0].astype(float)
    got = S.overlay(frame, heat)
    assert np.allclose(got[0, 0], np.round(0.7 * 100 + 0.3 * colour), atol=1)
    assert S.overlay(frame, np.zeros((2, 2))).shape == (8, 8, 3)   # heat resized to the frame


# ----------------------------------------------------------------------------- maps of a model
@pytest.fixture
def av_model():
    torch.manual_seed(0)
    model = ECLIPSE(ModelConfig.preset("ci")).eval()
    for block in model.av_blocks.values():   # non-zero projections: the streams interact
        torch.nn.init.normal_(block.a2v_proj.weight, std=0.05)
        torch.nn.init.normal_(block.v2a_proj.weight, std=0.05)
    return model


def test_dot_map_is_final_audio_token_times_final_patches(av_model):
    frames, audio = torch.randn(2, 4, 3, 32, 32), torch.randn(2, 4, 64)
    with torch.no_grad():
        vf = av_model.video_features(frames, audio, return_tokens=True)
    trace = S.trace_layers(av_model, frames, audio)
    assert torch.allclose(trace.tokens[1], vf.tokens) and torch.allclose(trace.audio[1], vf.audio_tokens)
    maps = S.compute_maps(av_model, frames, audio, methods=S.METHODS)
    want = (vf.tokens[:, :, 1:] * vf.audio_tokens).sum(-1).reshape(2, 4, 4, 4)
    assert torch.allclose(maps["dot"], want, atol=1e-5)
    head = lambda x: av_model.visual.proj(av_model.visual.ln_post(x))  # noqa: E731
    with torch.no_grad():
        want_p = (head(vf.tokens[:, :, 1:]) * head(vf.audio_tokens)).sum(-1).reshape(2, 4, 4, 4)
    assert torch.allclose(maps["dot_projected"], want_p, atol=1e-5)
    assert all(m.shape == (2, 4, 4, 4) for m in maps.values())
    assert av_model.training is False


def test_v2a_map_equals_the_attention_modules_own_weights(av_model):
    frames, audio = torch.randn(1, 4, 3, 32, 32), torch.randn(1, 4, 64)
    trace = S.trace_layers(av_model, frames, audio)
    per_layer = []
    with torch.no_grad():
        for key, block in av_model.av_blocks.items():
            video, sound, _ = trace.av_inputs[int(key)]
            _, w = v2a_attention(block.v2a_attn, block.norm_audio(sound), block.norm_video(video),
                                 need_weights=True)                       # [N, heads, 1, L]
            per_layer.append(w[..., 1:].mean(dim=(1, 2)))
    want = torch.stack(per_layer).mean(0).reshape(1, 4, 4, 4)
    assert torch.allclose(S.saliency_maps(av_model, frames, audio, method="v2a"), want, atol=1e-6)
    first = S.saliency_maps(av_model, frames, audio, method="v2a", layers=[0])
    assert not torch.allclose(first, want)


def test_maps_of_the_wrong_model_are_errors():
    video_only = ECLIPSE(ModelConfig.preset("ci", fusion="none"))
    x, a = torch.randn(1, 4, 3, 32, 32), torch.randn(1, 4, 64)
    with pytest.raises(ValueError, match="audio stream"):
        S.saliency_maps(video_only, x, a)
    a2v = ECLIPSE(ModelConfig.preset("ci", fusion="a2v"))
    assert S.saliency_maps(a2v, x, a, method="dot").shape == (1, 4, 4, 4)
    with pytest.raises(ValueError, match="V2A"):
        S.saliency_maps(a2v, x, a, method="v2a")
    joint = ECLIPSE(ModelConfig.preset("ci", fusion="joint"))
    assert S.saliency_maps(joint, x, a, method="v2a").shape == (1, 4, 4, 4)
    with pytest.raises(ValueError, match="unknown saliency method"):
        S.saliency_maps(joint, x, a, method="gradcam")


# ----------------------------------------------------------------------------- the benchmark
def _event(kind, visual, box, sound, motion="still", box_end=None):
    return {"kind": kind, "in_caption": True, "visual_class": "red square" if visual else None,
            "visual_start": visual[0] if visual else None, "visual_end": visual[1] if visual else None,
            "motion": motion if visual else None, "region": None, "direction": None, "box": box,
            "box_end": box_end, "bounce_height": None, "bounce_period": None,
            "sound_class": "bell" if sound else None, "sound_start": sound[0] if sound else None,
            "sound_end": sound[1] if sound else None, "sound_gain_db": 0.0}


def test_sounding_sources_need_sight_and_sound():
    plan = {"events": [
        _event("seen_heard", (0.0, 3.0), [0.0, 0.2, 0.4, 0.6], (0.5, 3.0), "slide", [0.6, 0.2, 1.0, 0.6]),
        _event("seen_only", (3.0, 6.0), [0.5, 0.5, 0.9, 0.9], None),
        _event("heard_only", None, None, (3.0, 5.0))]}
    assert S.sounding_sources(plan, 0.25) == []                  # seen, not yet heard
    (i, box), = S.sounding_sources(plan, 1.5)                    # half way through the slide
    assert i == 0 and box == pytest.approx((0.3, 0.2, 0.7, 0.6))
    assert S.sounding_sources(plan, 4.0) == []                   # silent object + off-screen sound


def test_saliency_command_scores_and_draws(tmp_path):
    data = tmp_path / "data"
    (data / "videos").mkdir(parents=True)
    plans = []
    for k in range(2):
        write_video(str(data / "videos" / f"v{k}.mp4"), n_frames=16, fps=4, size=48)
        plans.append({"id": f"v{k}", "duration": 4.0, "fps": 4, "events": [
            _event("seen_heard", (0.0, 3.0), [0.1, 0.1, 0.5, 0.5], (0.5, 3.0)),
            _event("seen_only", (3.0, 4.0), [0.5, 0.5, 0.9, 0.9], None)]})
    (data / "events.json").write_text(json.dumps(plans))
    (data / "test.jsonl").write_text("".join(
        json.dumps({"video": f"videos/v{k}.mp4", "captions": ["a square"], "id": f"v{k}"}) + "\n"
        for k in range(2)))
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="randomly initialised"):        # the command line
        assert main(["saliency", "--preset", "ci", "--data", str(data), "--out", str(out), "--seeds",
                     "0,1", "--frames-per-event", "3", "--device", "cpu", "--gif-frames", "6",
                     "--display-size", "48", "--pictures", "1"]) == 0
    result = json.loads((out / "saliency_scores.json").read_text())
    assert result["frames_scored"] == [6, 6]        # 3 frames per event, one event per video
    methods = set(result["summary"])
    assert methods == {"dot", "dot_projected", "v2a", "dot_shuffled_audio",
                       "dot_projected_shuffled_audio", "v2a_shuffled_audio", "centre_prior", "random"}
    assert "subsets" not in result            # no frame has a second object on screen
    for m in methods:
        for metric in ("pointing_game", "miou"):
            s = result["summary"][m][metric]
            assert 0.0 <= s["mean"] <= 1.0 and len(s["values"]) == 2
    saved = json.loads((out / "saliency_scores.json").read_text())
    assert saved["summary"] == result["summary"]
    assert (out / "v0.png").exists() and (out / "v0.gif").exists()
    assert not (out / "v1.png").exists()                         # --pictures 1
    from PIL import Image
    with Image.open(out / "v0.gif") as gif:
        assert gif.n_frames == 6

    # a fine-tuned checkpoint whose frozen audio encoder sits in the benchmark's pretrained cache
    from eclipse_lite.audio_encoders import build_audio_encoder
    from eclipse_lite.checkpoints import atomic_save_safetensors
    cfg = ModelConfig.preset("ci")
    torch.manual_seed(1)
    ECLIPSE(cfg).save_pretrained(tmp_path / "run" / "best")
    encoder = build_audio_encoder(cfg)
    atomic_save_safetensors(encoder.state_dict(), data / "pretrained" / "ci-abc" / "audio.safetensors")
    got = S.run(checkpoints=[str(tmp_path / "run" / "best")], data=str(data),       # the function
                out=str(tmp_path / "out2"), seeds=[3], methods=["dot"], pictures=0)
    assert got["audio_encoders"] == [str(data / "pretrained" / "ci-abc" / "audio.safetensors")]
    assert got["seeds"] == [3] and set(got["summary"]) == {"dot", "dot_shuffled_audio",
                                                            "centre_prior", "random"}
    assert not list((tmp_path / "out2").glob("*.gif"))


def test_find_audio_encoder_prefers_the_checkpoint_and_refuses_ambiguity(tmp_path):
    cfg = ModelConfig.preset("ci")
    ckpt, data = tmp_path / "ckpt", tmp_path / "data"
    ckpt.mkdir()
    with pytest.raises(FileNotFoundError, match="--audio-encoder"):
        S.find_audio_encoder(str(ckpt), cfg, str(data))
    for key in ("ci-a", "ci-b", "tiny-c"):
        (data / "pretrained" / key).mkdir(parents=True)
        (data / "pretrained" / key / "audio.safetensors").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="several"):
        S.find_audio_encoder(str(ckpt), cfg, str(data))
    assert S.find_audio_encoder(str(ckpt), cfg.replace(name="tiny"), str(data)).endswith(
        os.path.join("tiny-c", "audio.safetensors"))
    (ckpt / "audio_encoder.safetensors").write_bytes(b"x")
    assert S.find_audio_encoder(str(ckpt), cfg, str(data)) == str(ckpt / "audio_encoder.safetensors")


def test_pick_frames_skips_ambiguous_frames_and_other_kinds():
    plan = {"events": [
        _event("seen_heard", (0.0, 2.0), [0.0, 0.0, 0.4, 0.4], (0.0, 2.0)),
        _event("seen_heard", (1.0, 3.0), [0.6, 0.6, 1.0, 1.0], (1.0, 3.0)),   # overlaps 1-2 s
        _event("brief", (3.0, 4.0), [0.3, 0.3, 0.6, 0.6], (2.5, 4.5))]}
    times = np.arange(16) / 4.0
    picked = S.pick_frames(plan, times, per_event=10, seed=0, video_index=0)
    assert [(k, e) for k, e, _ in picked] == [(0, 0), (1, 0), (2, 0), (3, 0),
                                              (8, 1), (9, 1), (10, 1), (11, 1)]
    with_brief = S.pick_frames(plan, times, 10, 0, 0, kinds=("seen_heard", "brief"))
    assert [k for k, e, _ in with_brief if e == 2] == [12, 13, 14, 15]
    two = S.pick_frames(plan, times, per_event=2, seed=5, video_index=0)
    assert len(two) == 4 and two == S.pick_frames(plan, times, 2, 5, 0)   # seeded


def _mux_tone(out, stream, seconds, rate, freq=440.0):
    """Encode a sine of ``seconds`` into the audio ``stream`` of container ``out``."""
    samples = (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
    resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
    step = stream.codec_context.frame_size or 1024
    for start in range(0, len(samples), step):
        frame = av.AudioFrame.from_ndarray(samples[None, start:start + step], format="fltp",
                                           layout="mono")
        frame.sample_rate, frame.pts = rate, start
        for f in resampler.resample(frame):
            for packet in stream.encode(f):
                out.mux(packet)
    for f in resampler.resample(None):
        for packet in stream.encode(f):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def _write_square_video(path, plan, size=64, fps=4, sample_rate=16000):
    """Dark frames with a white square wherever the plan's first event is at frame time k / fps
    (and a grey one for its second event, if any)."""
    from eclipse_lite.data.synth.visuals import box_at

    n = int(round(plan["duration"] * fps))
    levels = [235, 120]   # the sounding object is brighter than the silent one
    with av.open(path, "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "10"}
        ast = out.add_stream("aac", rate=sample_rate)
        ast.layout = "mono"
        for k in range(n):
            img = np.full((size, size, 3), 20, np.uint8)
            for ev, level in zip(plan["events"], levels):
                box = box_at(ev, k / fps)
                if box is not None:
                    x0, y0, x1, y1 = (int(round(v * size)) for v in box)
                    img[y0:y1, x0:x1] = level
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, fps)
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        _mux_tone(out, ast, n / fps, sample_rate)


def test_frames_boxes_and_maps_line_up(tmp_path, monkeypatch):
    """A map that is the frame's own brightness must win the pointing game on videos whose only
    bright thing is the sounding square — whatever it does (slide, bounce, grow) — which checks
    that frame times, boxes and map coordinates are matched up through the whole pipeline."""
    cfg = ModelConfig.preset("ci", image_size=64)          # 8 x 8 grid
    motions = [("slide", [0.0, 0.1, 0.35, 0.45], [0.6, 0.5, 0.95, 0.85]),
               ("grow", [0.55, 0.05, 0.95, 0.45], None), ("still", [0.1, 0.55, 0.45, 0.9], None)]
    videos = []
    for k, (motion, box, end) in enumerate(motions):
        ev = _event("seen_heard", (0.0, 4.0), box, (0.0, 4.0), motion, end)
        silent = _event("distractor", (2.0, 4.0), [0.8, 0.0, 1.0, 0.2] if k != 1 else
                        [0.0, 0.8, 0.2, 1.0], None)
        plan = {"id": f"m{k}", "duration": 4.0, "fps": 4, "events": [ev] + ([silent] if k else [])}
        path = str(tmp_path / f"m{k}.mp4")
        _write_square_video(path, plan)
        videos.append(S.VideoRecord(f"m{k}", path, plan))

    def brightness(model, frames, audio, audio_mask=None, methods=("dot",), layers=None):
        grey = frames.mean(dim=2).flatten(0, 1)[:, None]                  # [B*T, 1, H, W]
        pooled = F.avg_pool2d(grey, cfg.patch_size)[:, 0]
        return {m: pooled.reshape(*frames.shape[:2], *pooled.shape[-2:]) for m in methods}

    monkeypatch.setattr(media, "compute_maps", brightness)   # what frame_maps calls
    torch.manual_seed(0)
    from eclipse_lite.audio_encoders import build_audio_encoder
    result = S.evaluate_localisation(ECLIPSE(cfg), build_audio_encoder(cfg), videos, seeds=(0, 1),
                                     frames_per_event=6, methods=("dot",), progress=False)
    assert result["frames_scored"] == [18, 18]
    assert result["summary"]["dot"]["pointing_game"]["mean"] == 1.0
    assert result["summary"]["dot"]["miou"]["mean"] > 0.5
    crowded = result["subsets"][S.CROWDED]        # frames of m1, m2 after 2 s: a silent square too
    assert all(0 < n < 18 for n in crowded["frames_scored"])
    assert crowded["summary"]["dot"]["pointing_game"]["mean"] == 1.0
    assert result["summary"]["random"]["pointing_game"]["mean"] < 0.6
    assert result["bar"]["dot"]["passed"]
    # brightness does not depend on the sound: the shuffled-audio control scores the same
    assert result["summary"]["dot_shuffled_audio"] == result["summary"]["dot"]
    assert result["bar"]["dot"]["beats_shuffled_audio"] is False
