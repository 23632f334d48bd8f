"""The bundled benchmark (eclipse_lite.data.synth.generate*) and its modality oracle, at the ci size."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from eclipse_lite.cli import main
from eclipse_lite.data.synth import generate as synth
from eclipse_lite.data.synth import oracle as oracle_mod
from eclipse_lite.data.synth import plan as synth_plan
from eclipse_lite.data.synth.captions import MOTION_WORDS, PLACE_WORDS
from eclipse_lite.data.synth.generate import (
    EVENT_KINDS,
    SIZES,
    SOUND_CLASSES,
    VISUAL_CLASSES,
    box_at,
    make_benchmark,
    pretrain_rng,
    sample_frame_caption,
    sample_sound_clip,
)
from eclipse_lite.data.synth.plan import FRAME_GRID, uniform_frame_times
from eclipse_lite.data.synth.sounds import RECORDED_CLASSES, SOUND_PHRASES
from eclipse_lite.data.synth.visuals import COLOURS, SHAPES

av = pytest.importorskip("av")


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ci_dir(tmp_path_factory) -> Path:
    """The ci benchmark, made with a process pool of 2 workers."""
    return make_benchmark(tmp_path_factory.mktemp("bench") / "ci", size="ci", seed=0, workers=2,
                          progress=False)


@pytest.fixture(scope="module")
def plans(ci_dir):
    return json.loads((ci_dir / "events.json").read_text())


def _manifest(ci_dir: Path, split: str):
    return [json.loads(line) for line in (ci_dir / f"{split}.jsonl").read_text().splitlines()]


def _hashes(root: Path):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _decode(path: Path):
    """(frames uint8 [T, H, W, 3], audio float32 [N], audio sample rate) with PyAV."""
    with av.open(str(path)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(str(path)) as c:
        rate = c.streams.audio[0].sample_rate
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return frames, audio, rate


# ----------------------------------------------------------------------------- the dataset
def test_class_lists():
    assert len(SOUND_CLASSES) >= 20 and len(set(SOUND_CLASSES)) == len(SOUND_CLASSES)
    assert len(VISUAL_CLASSES) >= 20 and len(set(VISUAL_CLASSES)) == len(VISUAL_CLASSES)
    assert set(RECORDED_CLASSES) <= set(SOUND_CLASSES) and len(RECORDED_CLASSES) == 10
    assert set(SOUND_PHRASES) == set(SOUND_CLASSES)
    tiny = SIZES["tiny"]
    assert (tiny.n_train, tiny.n_val, tiny.n_test, tiny.min_seconds, tiny.max_seconds) == (400, 50, 100, 60, 120)


def test_same_seed_same_bytes(ci_dir, tmp_path):
    again = make_benchmark(tmp_path / "ci", size="ci", seed=0, workers=1, progress=False)
    assert _hashes(again) == _hashes(ci_dir)  # also: 1 worker == a pool of 2
    other = synth._plan_split(SIZES["ci"], 1, "test")  # another seed, another benchmark
    assert [c for _, c in other] != [row["captions"][0] for row in _manifest(ci_dir, "test")]


def test_manifests_match_events(ci_dir, plans):
    spec = SIZES["ci"]
    seen_ids = []
    for split in ("train", "val", "test"):
        rows = _manifest(ci_dir, split)
        assert len(rows) == spec.count(split)
        for row in rows:
            assert set(row) == {"id", "video", "captions", "segments"}
            assert (ci_dir / row["video"]).is_file() and not Path(row["video"]).is_absolute()
            assert len(row["captions"]) == 1 and row["captions"][0].strip()
            plan = plans[row["id"]]
            assert spec.min_seconds <= plan["duration"] <= spec.max_seconds
            described = [e for e in plan["events"] if e["in_caption"]]
            assert row["segments"] == [[e["start"], e["end"]] for e in described]
            assert 3 <= len(plan["events"]) <= 8 and 3 <= len(described) <= 4
            starts = [e["start"] for e in plan["events"]]
            assert starts == sorted(starts)
            for e in plan["events"]:
                assert e["kind"] in EVENT_KINDS and e["in_caption"] == (e["kind"] not in ("distractor", "echo"))
                assert 0 <= e["start"] < e["end"] <= plan["duration"]
                has_visual = e["kind"] in ("seen_heard", "seen_only", "brief")
                has_sound = e["kind"] in ("seen_heard", "heard_only", "brief")
                if e["in_caption"]:
                    assert (e["visual_class"] is not None) == has_visual
                    assert (e["sound_class"] is not None) == has_sound
                assert e["visual_class"] is None or e["visual_class"] in VISUAL_CLASSES
                assert e["sound_class"] is None or e["sound_class"] in SOUND_CLASSES
            seen_ids.append(row["id"])
    assert sorted(seen_ids) == sorted(plans)
    meta = json.loads((ci_dir / "meta.json").read_text())
    assert meta["splits"] == {"train": 6, "val": 2, "test": 4} and meta["seed"] == 0
    assert meta["sound_classes"] == SOUND_CLASSES and meta["visual_classes"] == VISUAL_CLASSES
    assert meta["event_counts"] == {k: sum(e["kind"] == k for p in plans.values() for e in p["events"])
                                    for k in EVENT_KINDS}


def test_uncaptioned_echoes_are_as_prominent_as_the_captioned_sound(plans):
    """Each video has UNCAPTIONED_ECHOES extra sound classes, outside the caption, that sound as
    often, as long and as loud as the captioned one: prominence does not tell which is described."""
    assert synth_plan.UNCAPTIONED_ECHOES >= 1
    for plan in plans.values():
        described = [e for e in plan["events"] if e["in_caption"] and e["sound_class"]]
        echoes = [e for e in plan["events"] if e["kind"] == "echo"]
        classes = {e["sound_class"] for e in echoes}
        assert len(classes) == synth_plan.UNCAPTIONED_ECHOES
        assert not classes & set(plan["palette"]) and not classes & {e["sound_class"] for e in described}
        lengths = sorted(e["sound_end"] - e["sound_start"] for e in described)
        for cls in classes:
            mine = sorted(e["sound_end"] - e["sound_start"] for e in echoes if e["sound_class"] == cls)
            np.testing.assert_allclose(mine, lengths, atol=2e-3)
        for e in echoes:
            assert not e["in_caption"] and e["visual_class"] is None
            assert -2.0 <= e["sound_gain_db"] <= 2.0
            assert 0 <= e["sound_start"] < e["sound_end"] <= plan["duration"]


def test_plans_hold_3_to_8_events_echoes_included():
    """The issue's 3-8 events per video count every event: described, distractors and echoes."""
    rng = np.random.default_rng(0)
    totals, distractors = [], []
    for i in range(300):
        plan = synth_plan.plan_video(rng, f"v{i}", float(rng.integers(240, 480)) / 4, 4)
        kinds = [e["kind"] for e in plan["events"]]
        sounding = sum(e["in_caption"] and e["sound_class"] is not None for e in plan["events"])
        assert kinds.count("echo") == synth_plan.UNCAPTIONED_ECHOES * sounding
        assert 3 <= len(kinds) <= synth_plan.MAX_EVENTS == 8
        totals.append(len(kinds))
        distractors.append(kinds.count("distractor"))
    assert max(totals) == 8 and max(distractors) >= 2 and 0 < np.mean(distractors) < 2


def test_the_event_cap_only_drops_distractors_quieter_sounds_first(monkeypatch):
    """A capped plan is the uncapped one (same seed) less some distractors: sounds go first, and
    everything drawn later (background, echoes) is unchanged."""
    dropped_any = False
    for seed in range(200):
        def plan(max_events):
            monkeypatch.setattr(synth_plan, "MAX_EVENTS", max_events)
            return synth_plan.plan_video(np.random.default_rng(seed), "v", 90.0, 4)
        capped, full = plan(8), plan(100)
        assert {k: v for k, v in capped.items() if k != "events"} == \
            {k: v for k, v in full.items() if k != "events"}
        kept = [e for e in full["events"] if e in capped["events"]]
        assert kept == capped["events"]
        dropped = [e for e in full["events"] if e not in capped["events"]]
        assert all(e["kind"] == "distractor" for e in dropped)
        if any(e["sound_class"] is None for e in dropped):  # a silent object went: no sound is left
            assert not any(e["kind"] == "distractor" and e["sound_class"] for e in capped["events"])
        dropped_any = dropped_any or bool(dropped)
    assert dropped_any


def test_every_event_kind_present(plans):
    kinds = {e["kind"] for p in plans.values() for e in p["events"]}
    assert kinds == set(EVENT_KINDS)


def test_brief_events_fall_between_uniform_frames(plans):
    n_brief = 0
    for plan in plans.values():
        d, fps = plan["duration"], plan["fps"]
        n_frames = int(round(d * fps))
        centres = uniform_frame_times(d, FRAME_GRID)
        gap = d / FRAME_GRID
        # every way a sampler may turn segment centres into frames: exact, floor and nearest index
        candidates = [centres, np.floor(centres * fps) / fps, np.round(centres * fps) / fps,
                      np.floor(uniform_frame_times(n_frames, FRAME_GRID)) / fps]
        windows = [(t - 5.0, t + 5.0) for t in centres]
        for e in plan["events"]:
            if e["kind"] != "brief":
                continue
            n_brief += 1
            vs, ve = e["visual_start"], e["visual_end"]
            assert ve - vs < gap
            for times in candidates:
                assert not np.any((times >= vs) & (times < ve)), (plan["id"], e)
            assert e["sound_end"] - e["sound_start"] > ve - vs  # the sound lasts longer ...
            assert any(min(b, e["sound_end"]) - max(a, e["sound_start"]) >= 1.0 for a, b in windows)
    assert n_brief > 0


def test_box_at_inside_unit_square(plans):
    for plan in plans.values():
        for e in plan["events"]:
            if e["visual_class"] is None:
                assert box_at(e, e["start"]) is None
                continue
            assert box_at(e, e["visual_start"] - 1e-3) is None and box_at(e, e["visual_end"]) is None
            for t in np.linspace(e["visual_start"], e["visual_end"], 50, endpoint=False):
                x0, y0, x1, y1 = box_at(e, t)
                assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0
            if e["kind"] == "seen_heard":  # the sound-source box exists while the source sounds
                assert e["visual_start"] <= e["sound_start"] < e["sound_end"] <= e["visual_end"]


def test_videos_decode_with_pyav(ci_dir, plans):
    for vid, plan in plans.items():
        frames, audio, rate = _decode(ci_dir / "videos" / f"{vid}.mp4")
        assert frames.shape == (int(round(plan["duration"] * plan["fps"])), 64, 64, 3)
        assert rate == 16000
        assert abs(audio.size / rate - plan["duration"]) < 0.1  # AAC pads to whole 1024-sample frames
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0.05


def test_videos_decode_with_decord(ci_dir, plans):
    decord = pytest.importorskip("decord")
    for vid, plan in list(plans.items())[:4]:
        path = str(ci_dir / "videos" / f"{vid}.mp4")
        vr = decord.VideoReader(path)
        assert len(vr) == int(round(plan["duration"] * plan["fps"]))
        assert vr.get_batch([0, len(vr) // 2, len(vr) - 1]).asnumpy().shape == (3, 64, 64, 3)
        ar = decord.AudioReader(path, sample_rate=16000, mono=True)
        assert abs(ar.shape[1] / 16000 - plan["duration"]) < 0.1


def test_pixels_and_sound_follow_the_plan(ci_dir, plans):
    """Objects are where box_at says, in their class colour; the audio is the planned track."""
    checked, matched = 0, 0
    for vid, plan in list(plans.items())[:6]:
        frames, audio, rate = _decode(ci_dir / "videos" / f"{vid}.mp4")
        size = frames.shape[1]
        visuals = [e for e in plan["events"] if e["visual_class"] is not None]
        for k in range(frames.shape[0]):
            t = k / plan["fps"]
            boxes = [(e, box_at(e, t)) for e in visuals]
            boxes = [(e, b) for e, b in boxes if b is not None]
            for e, (x0, y0, x1, y1) in boxes:
                colour, _, shape = e["visual_class"].partition(" ")
                if colour not in COLOURS or shape not in SHAPES or (x1 - x0) * size < 10:
                    continue
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                if any(o is not e and b[0] - .05 < cx < b[2] + .05 and b[1] - .05 < cy < b[3] + .05
                       for o, b in boxes):
                    continue  # another object covers it
                px, py = int(cx * size), int(cy * size)
                patch = frames[k, py - 1:py + 2, px - 1:px + 2].reshape(-1, 3).mean(0)
                checked += 1
                matched += bool(np.abs(patch - np.array(COLOURS[colour])).max() < 60)
        # the soundtrack: re-render it from the plan and compare with what was decoded
        rendered = synth.render_audio(plan, synth._video_rngs(0, vid.split("_")[0], int(vid.split("_")[1]))[2], rate)
        assert np.corrcoef(audio[:rendered.size], rendered)[0, 1] > 0.9
    assert checked > 50 and matched / checked > 0.95, (checked, matched)


def _fact_words(fact):
    """Regexes the caption must match for a fact."""
    kind = fact[0]
    if kind == "object":
        return [re.escape(fact[1])]
    if kind == "place":
        return [re.escape(fact[1]) + r".*?(" + "|".join(PLACE_WORDS[fact[2]]) + ")"]
    if kind == "motion":
        if fact[2].startswith("slide"):
            return [re.escape(fact[1]) + r" \w+ from " + fact[2][len("slide "):]]
        return [re.escape(fact[1]) + r".*?(" + "|".join(MOTION_WORDS[fact[2]] + ("bouncing", "growing")) + ")"]
    if kind == "sound":
        verb, noun = SOUND_PHRASES[fact[1]]
        return [f"({re.escape(verb)}|{re.escape(noun)})"]
    if kind == "background":
        from eclipse_lite.data.synth.captions import BACKGROUND_PHRASES
        return [re.escape(BACKGROUND_PHRASES[fact[1]])]
    raise AssertionError(fact)


def test_captions_state_their_facts_and_fit(ci_dir, plans):
    from eclipse_lite.tokenizer import count_tokens

    captions = []
    for split in ("train", "val", "test"):
        for row in _manifest(ci_dir, split):
            caption = row["captions"][0]
            captions.append(caption)
            assert caption[0].isupper() and caption.endswith(".")
            low = caption.lower()
            for fact in oracle_mod.caption_facts(plans[row["id"]]):
                for pattern in _fact_words(fact):
                    assert re.search(pattern, low), (fact, caption)
    assert len(set(captions)) == len(captions)
    tokens = [count_tokens(c) for c in captions]
    assert np.mean(tokens) <= 56 and max(tokens) <= 72, tokens
    meta = json.loads((ci_dir / "meta.json").read_text())
    rate = np.mean([count_tokens(c) > 64 for c in captions])
    assert meta["caption_tokens"]["truncated_fraction"] == pytest.approx(rate)
    assert meta["brief_events"] == meta["brief_events_missed_by_8_uniform_frames"] > 0


# ----------------------------------------------------------------------------- atomicity
def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synth._render_job

    def flaky(job):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(synth, "_render_job", flaky)
    with pytest.raises(KeyboardInterrupt):
        make_benchmark(tmp_path / "ci", size="ci", seed=0, workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_directory(ci_dir, tmp_path):
    before = _hashes(ci_dir)
    assert make_benchmark(ci_dir, size="ci", seed=0, progress=False) == ci_dir  # reused, not remade
    assert _hashes(ci_dir) == before
    with pytest.raises(FileExistsError, match="seed 1"):
        make_benchmark(ci_dir, size="ci", seed=1, progress=False)
    (tmp_path / "junk").mkdir()
    with pytest.raises(FileExistsError, match="junk"):
        make_benchmark(tmp_path / "junk", size="ci", progress=False)
    with pytest.raises(ValueError, match="known sizes"):
        make_benchmark(tmp_path / "x", size="huge", progress=False)


# ----------------------------------------------------------------------------- oracle
def _toy_plan(vid, sound, brief_sound):
    """A 40 s video: one still red square (0-40 s) and a brief blue star with a sound."""
    base = {"visual_start": None, "visual_end": None, "motion": None, "region": None, "direction": None,
            "box": None, "box_end": None, "bounce_height": None, "bounce_period": None,
            "sound_class": None, "sound_start": None, "sound_end": None, "sound_gain_db": None}
    square = dict(base, kind="seen_heard", in_caption=True, start=0.0, end=40.0, visual_class="red square",
                  visual_start=0.0, visual_end=40.0, motion="still", region="left",
                  box=[0.1, 0.4, 0.4, 0.7], sound_class=sound, sound_start=0.0, sound_end=40.0, sound_gain_db=0.0)
    star = dict(base, kind="brief", in_caption=True, start=4.0, end=9.0, visual_class="blue star",
                visual_start=6.0, visual_end=7.0, motion="still", region="top", box=[0.4, 0.1, 0.7, 0.4],
                sound_class=brief_sound, sound_start=4.0, sound_end=9.0, sound_gain_db=0.0)
    return {"id": vid, "duration": 40.0, "fps": 4, "background": "grass", "background_in_caption": False,
            "palette": [sound], "events": [square, star]}


def test_oracle_logic():
    # frames at 2.5, 7.5, ... (gap 5 s): the brief star (6-7 s) is never seen, its sound is heard
    plans = [_toy_plan("a", "bell", "dog"), _toy_plan("b", "bell", "cow"), _toy_plan("c", "siren", "dog")]
    caption = oracle_mod.caption_facts(plans[0])
    assert ("object", "blue star") in caption and ("sound", "dog") in caption
    assert ("object", "blue star") not in oracle_mod.revealed_facts(plans[0], "video")
    assert ("object", "blue star") in oracle_mod.revealed_facts(plans[0], "video", num_frames=32)
    assert oracle_mod.revealed_facts(plans[0], "audio") == {("sound", "bell"), ("sound", "dog")}
    result = oracle_mod.oracle_metrics(plans)
    # video cannot tell the three apart (rank 2 each); audio separates a from b and c (a ties
    # with nobody: b lacks the dog, c the bell); both = audio here
    assert result["video"]["R@1"] == 0.0 and result["video"]["MnR"] == 2.0
    assert result["video"]["R@1_random_ties"] == pytest.approx(100.0 / 3)  # a three-way tie
    assert result["audio"]["R@1_random_ties"] == pytest.approx(100.0)
    assert result["audio"]["R@1"] == pytest.approx(100.0) and result["both"]["R@1"] == pytest.approx(100.0)


def test_oracle_cli_on_ci(ci_dir, capsys):
    result = oracle_mod.run_oracle(ci_dir)
    for m in oracle_mod.MODALITIES:
        assert 0.0 <= result[m]["R@1"] <= result[m]["R@5"] <= 100.0
    assert main(["oracle", "--data", str(ci_dir)]) == 0
    out = capsys.readouterr().out
    assert "| audio |" in out and "| video |" in out and "| both |" in out
    with pytest.raises(FileNotFoundError, match="eclipse-lite make-data"):
        oracle_mod.run_oracle(ci_dir / "missing")


def test_tiny_calibration_matches_the_paper_shape():
    """The tiny size's plans and captions (no media needed): audio weak, video strong, both best;
    captions fit 64 tokens but for a few per cent."""
    from eclipse_lite.tokenizer import count_tokens

    spec = SIZES["tiny"]
    test = synth._plan_split(spec, 0, "test")
    r = oracle_mod.oracle_metrics([p for p, _ in test])
    assert r["audio"]["R@1"] <= 30.0
    assert 50.0 <= r["video"]["R@1"] <= 85.0
    assert r["both"]["R@1"] >= r["video"]["R@1"] + 10.0
    # with ties broken at random, as a trained model breaks them: audio alone still weak (version
    # 1.0 of the generator had 36 here, and a trained audio-only model beat video-only)
    assert r["audio"]["R@1_random_ties"] <= 15.0
    assert r["both"]["R@1_random_ties"] >= r["video"]["R@1_random_ties"] + 5.0
    captions = [c for split in ("train", "val") for _, c in synth._plan_split(spec, 0, split)]
    captions += [c for _, c in test]
    assert np.mean([count_tokens(c) > 64 for c in captions]) <= 0.05


# ----------------------------------------------------------------------------- pretraining
def test_frame_caption_sampler():
    a = [sample_frame_caption(pretrain_rng(0), 64) for _ in range(2)]
    assert a[0][1] == a[1][1] and np.array_equal(a[0][0], a[1][0])  # seeded
    rng = pretrain_rng(0, worker=1)
    for _ in range(40):
        frame, caption = sample_frame_caption(rng, 64)
        assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
        named = [c for c in VISUAL_CLASSES if c in caption]
        assert 1 <= len(named) <= 4, caption
        assert frame.std() > 5  # not blank


def test_narrated_frames_draw_what_they_say(monkeypatch):
    """A narrated frame draws exactly the objects its caption names, and its captions reach the
    paragraphs' length and verbs (what the list captions never did)."""
    from eclipse_lite.tokenizer import count_tokens
    drawn = []
    real_render = synth.render_frame
    monkeypatch.setattr(synth, "render_frame", lambda bg, objects: drawn.append(list(objects)) or
                        real_render(bg, objects))
    rng = pretrain_rng(2)
    lengths, verbs = [], set()
    for _ in range(60):
        frame, caption = synth._narrative_frame(rng, 64)
        lengths.append(count_tokens(caption))
        named = sorted(c for c in VISUAL_CLASSES if re.search(rf"\b{c}\b", caption))
        assert sorted(cls for cls, _ in drawn[-1]) == named, caption
        for _, (x0, y0, x1, y1) in drawn[-1]:
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        verbs.update(w for words in MOTION_WORDS.values() for w in words if f" {w} " in f" {caption} ")
    assert {"slides", "bounces", "grows", "flashes"} <= verbs
    assert len(verbs) >= 6
    rng = pretrain_rng(3)
    list_lengths = [count_tokens(synth._list_frame_caption(rng, 64)[1]) for _ in range(60)]
    assert max(list_lengths) <= 30 and max(lengths) >= 40 and np.mean(lengths) > np.mean(list_lengths)


def test_sound_clip_sampler():
    rng = pretrain_rng(0)
    seen = set()
    for _ in range(30):
        wave, index, name = sample_sound_clip(rng, 2.0, 16000)
        assert wave.shape == (32000,) and wave.dtype == np.float32 and np.isfinite(wave).all()
        assert SOUND_CLASSES[index] == name and np.abs(wave).max() <= 1.0
        seen.add(name)
    assert len(seen) > 10
    w1, i1, _ = sample_sound_clip(pretrain_rng(3), 1.0)
    w2, i2, _ = sample_sound_clip(pretrain_rng(3), 1.0)
    assert i1 == i2 and np.array_equal(w1, w2)
    with pytest.raises(ValueError):
        sample_sound_clip(rng, 0.0)
