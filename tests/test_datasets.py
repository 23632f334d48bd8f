"""RetrievalDataset and the dataset readers, on fixtures written in each dataset's real format."""
import csv
import json
import warnings

import numpy as np
import pytest
import torch
from data_fixtures import frame_level, write_garbage, write_video
from torch.utils.data import DataLoader

from eclipse_lite.config import CLIP_MEAN, CLIP_STD, ModelConfig
from eclipse_lite.data.dataset import RetrievalDataset, collate, expand_compact
from eclipse_lite.data.readers import (
    Item,
    SkippedItemWarning,
    join_paragraph,
    read_activitynet,
    read_charades,
    read_dataset,
    read_didemo,
    read_jsonl_manifest,
    read_msrvtt,
    read_qvhighlights,
    read_youcook2,
)


def tiny(path, n_frames=4, audio=False):
    """A 1 s, 16 px video: readers only need the file to exist and decode."""
    return write_video(str(path), n_frames=n_frames, fps=4, size=16, audio=audio)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {
        "good": write_video(str(d / "good.mp4"), n_frames=12, fps=4, size=32),
        "good2": write_video(str(d / "good2.mp4"), n_frames=16, fps=4, size=32),
        "silent": write_video(str(d / "silent.mp4"), n_frames=12, fps=4, size=32, audio=False),
        "short": write_video(str(d / "short.mp4"), n_frames=3, fps=4, size=32),
        "broken": write_garbage(str(d / "broken.mp4")),
    }


def ci_dataset(items, **kw):
    return RetrievalDataset.from_config(items, ModelConfig.preset("ci"), **kw)


# ------------------------------------------------------------------------------- items
def test_empty_caption_fails_at_load_time_naming_the_item(clips):
    for captions in ([""], ["ok", "   "], []):
        with pytest.raises(ValueError, match="'vid7'"):
            Item("vid7", clips["good"], captions)
    item = Item("vid8", clips["good"], ["fine"])
    item.captions[0] = " "
    with pytest.raises(ValueError, match="'vid8'.*empty"):
        ci_dataset([item])
    with pytest.raises(ValueError, match="captions must be a list"):
        Item("vid9", clips["good"], "a string is not a list")
    with pytest.raises(ValueError, match="1 segments for 2 captions"):
        Item("vid9", clips["good"], ["a", "b"], [(0, 1)])
    # one paragraph caption may carry the times of all the events it describes
    assert len(Item("vid9", clips["good"], ["a. b."], [(0, 1), (1, 2)]).segments) == 2
    with pytest.raises(ValueError, match="segment 0"):
        Item("vid9", clips["good"], ["a"], [(0, float("nan"))])


def test_join_paragraph():
    assert join_paragraph(["A man runs.", "  He  stops "]) == "A man runs. He stops."
    assert join_paragraph(["add salt", "stir!"]) == "add salt. stir!"


# ------------------------------------------------------------------------------- dataset
def test_item_tensors(clips):
    cfg = ModelConfig.preset("ci")
    ds = ci_dataset([Item("g", clips["good"], ["A dog runs.", "It barks."])])
    x = ds[0]
    t, s, w = cfg.num_frames, cfg.image_size, int(cfg.audio_window_s * cfg.sample_rate)
    assert x["video_id"] == "g" and x["caption"] == "A dog runs. It barks." and x["index"] == 0
    assert x["frames"].shape == (t, 3, s, s) and x["frames"].dtype == torch.float32
    assert x["frame_mask"].tolist() == [1.0] * t
    assert x["audio"].shape == (t, w) and x["audio"].dtype == torch.float32
    assert x["audio_mask"].tolist() == [1.0] * t
    # frames are CLIP-normalised: undoing it gives the grey level of the sampled frame
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    pixels = (x["frames"] * std + mean) * 255
    expected = [frame_level(i) for i in (1, 4, 7, 10)]  # uniform centres of 12 frames, T=4
    np.testing.assert_allclose(pixels.mean(dim=(1, 2, 3)).numpy(), expected, atol=3)
    np.testing.assert_allclose(x["frame_times"].numpy(), [0.25, 1.0, 1.75, 2.5], atol=1e-6)
    # the audio window of each frame is centred on it: a 440 Hz tone of amplitude 0.5
    assert 0.45 < float(x["audio"][1].abs().max()) < 0.55


def test_video_without_audio_gives_zero_audio_and_mask(clips):
    x = ci_dataset([Item("s", clips["silent"], ["quiet"])])[0]
    assert x["audio_mask"].sum() == 0 and x["audio"].abs().sum() == 0
    assert x["frame_mask"].sum() == x["frame_mask"].numel()


def test_short_video_masks_repeated_frames(clips):
    ds = RetrievalDataset([Item("s", clips["short"], ["short"])], num_frames=8, image_size=16,
                          audio_window_s=1.0)
    x = ds[0]
    assert x["frame_mask"].tolist() == [1, 0, 0, 1, 0, 1, 0, 0]  # frames 0,0,0,1,1,2,2,2
    assert x["frames"].shape == (8, 3, 16, 16)


def test_broken_item_is_skipped_warned_and_counted(clips):
    items = [Item("g", clips["good"], ["a"]), Item("bad", clips["broken"], ["b"]),
             Item("gone", clips["good"] + ".missing.mp4", ["c"]), Item("g2", clips["good2"], ["d"])]
    ds = ci_dataset(items)
    with pytest.warns(SkippedItemWarning, match="'bad'"):
        assert ds[1] is None
    assert ds.skipped[0][0] == "bad" and "broken.mp4" in ds.skipped[0][1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedItemWarning)
        batches = list(DataLoader(ds, batch_size=4, collate_fn=collate))
    assert len(batches) == 1
    batch = batches[0]
    assert batch["num_skipped"] == 2 and batch["video_id"] == ["g", "g2"]
    assert batch["frames"].shape[:2] == (2, 4) and batch["index"].tolist() == [0, 3]
    assert torch.isfinite(batch["frames"]).all() and torch.isfinite(batch["audio"]).all()
    assert collate([None, None]) is None


def test_check_drops_broken_items_up_front(clips, capsys):
    items = [Item("g", clips["good"], ["a"]), Item("bad", clips["broken"], ["b"]),
             Item("g2", clips["good2"], ["c"])]
    ds = ci_dataset(items)
    with pytest.warns(SkippedItemWarning, match="dropped 1 of 3"):
        dropped = ds.check(progress=True)
    assert [vid for vid, _ in dropped] == ["bad"]
    assert [it.video_id for it in ds.items] == ["g", "g2"] and len(ds) == 2
    assert "2 of 3 items decode, 1 dropped" in capsys.readouterr().out
    assert all(ds[i] is not None for i in range(len(ds)))


def test_dataloader_workers(clips):
    items = [Item(f"v{i}", clips["good" if i % 2 else "good2"], [f"caption {i}"]) for i in range(4)]
    ds = ci_dataset(items)
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    ids = [vid for b in loader for vid in b["video_id"]]
    assert ids == ["v0", "v1", "v2", "v3"]


def test_compact_batches_expand_to_the_same_tensors(clips):
    # videos of different lengths (padded waveforms), one without audio, one shorter than T
    items = [Item("g", clips["good"], ["a"]), Item("g2", clips["good2"], ["b"]),
             Item("s", clips["silent"], ["c"]), Item("sh", clips["short"], ["d"]),
             Item("x", clips["broken"], ["e"])]
    with pytest.warns(SkippedItemWarning):
        eager = collate([ci_dataset(items)[i] for i in range(len(items))])
        compact_ds = ci_dataset(items, compact=True)
        raw = DataLoader(compact_ds, batch_size=len(items), num_workers=1,
                         collate_fn=collate).__iter__().__next__()
    assert raw["frames_uint8"].dtype == torch.uint8 and "audio" not in raw
    assert raw["waveform_length"].tolist()[2] == 0  # the silent video
    assert raw["waveform"].is_shared()  # it left the worker through shared memory
    with pytest.warns(SkippedItemWarning, match="'x'"):
        in_process = collate([compact_ds[i] for i in range(len(items))])
    assert torch.equal(in_process["waveform"], raw["waveform"])
    for row, length in enumerate(in_process["waveform_length"].tolist()):
        assert not in_process["waveform"][row, length:].any(), "padding must be zeros"
    full = expand_compact(raw)
    assert full.keys() == eager.keys() and full["num_skipped"] == eager["num_skipped"] == 1
    for key, value in eager.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(full[key], value), key
        else:
            assert full[key] == value, key
    assert expand_compact(eager) is eager  # finished batches pass through


def test_compact_batches_train(clips):
    from eclipse_lite.train.step import batch_inputs

    cfg = ModelConfig.preset("ci")
    items = [Item("g", clips["good"], ["a dog"]), Item("g2", clips["good2"], ["a cat"])]
    eager = batch_inputs(collate([ci_dataset(items)[i] for i in range(2)]), cfg,
                         torch.device("cpu"))
    compact = batch_inputs(collate([ci_dataset(items, compact=True)[i] for i in range(2)]), cfg,
                           torch.device("cpu"))
    for key, value in eager.items():
        assert torch.equal(compact[key], value), key


def test_compact_refuses_cached_audio_features(clips):
    with pytest.raises(ValueError, match="compact"):
        ci_dataset([Item("g", clips["good"], ["a"])], compact=True, audio_features=object())


def test_random_sampling_and_sentences_are_seeded_per_epoch(clips):
    items = [Item("g", clips["good2"], [f"sentence {i}" for i in range(6)])]
    make = lambda seed: ci_dataset(items, sampling="random", caption_mode="random_sentence",  # noqa
                                   seed=seed)
    a, b = make(0), make(0)
    assert a[0]["frame_times"].tolist() == b[0]["frame_times"].tolist()
    assert a[0]["caption"] == b[0]["caption"]
    seen_times, seen_caps = set(), set()
    for epoch in range(8):
        a.set_epoch(epoch)
        x = a[0]
        seen_times.add(tuple(x["frame_times"].tolist()))
        seen_caps.add(x["caption"])
        for i, t in enumerate(x["frame_times"].tolist()):  # one frame per quarter of 4 s
            assert i <= t < i + 1
    assert len(seen_times) > 1 and len(seen_caps) > 1
    assert ci_dataset(items)[0]["caption"].count("sentence") == 6


def test_dataset_argument_errors(clips):
    item = Item("g", clips["good"], ["a"])
    with pytest.raises(ValueError, match="appears twice"):
        ci_dataset([item, Item("g", clips["good2"], ["b"])])
    with pytest.raises(ValueError, match="sampling"):
        ci_dataset([item], sampling="dense")
    with pytest.raises(ValueError, match="caption_mode"):
        ci_dataset([item], caption_mode="first")
    with pytest.raises(TypeError, match="not an Item"):
        ci_dataset([("g", clips["good"], ["a"])])


# ------------------------------------------------------------------------------- readers
def test_read_activitynet(tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    tiny(vids / "v_QOlSCBRmfWY.mp4")
    tiny(vids / "ehGHCYKzyZ8.mkv")  # a download that dropped the v_ prefix
    ann = {
        "v_QOlSCBRmfWY": {"duration": 82.73, "timestamps": [[21.5, 40.0], [0.83, 19.86]],
                          "sentences": [" Then she dances.", "A young woman is seen."]},
        "v_ehGHCYKzyZ8": {"duration": 61.72, "timestamps": [[0, 10.2]],
                          "sentences": ["A man plays a drum."]},
        "v_nofile00000": {"duration": 10.0, "timestamps": [[0, 5]], "sentences": ["Gone."]},
    }
    path = tmp_path / "val_1.json"
    path.write_text(json.dumps(ann))
    with pytest.warns(SkippedItemWarning, match="1 of 3 videos have no file"):
        items = read_activitynet(str(path), str(vids))
    assert [it.video_id for it in items] == ["v_QOlSCBRmfWY", "v_ehGHCYKzyZ8"]
    assert items.missing == ["v_nofile00000"]
    assert items[0].captions == ["A young woman is seen.", " Then she dances."]  # time order
    assert items[0].segments == [(0.83, 19.86), (21.5, 40.0)]
    assert items[0].paragraph == "A young woman is seen. Then she dances."
    assert items[1].video_path.endswith("ehGHCYKzyZ8.mkv")
    with pytest.raises(FileNotFoundError):
        read_activitynet(str(path), str(vids), missing="error")
    kept = read_activitynet(str(path), str(vids), missing="keep")
    assert len(kept) == 3 and kept[2].video_path == str(vids / "v_nofile00000.mp4")
    with pytest.warns(SkippedItemWarning, match="v_nofile00000.*no such file"):
        assert ci_dataset(kept)[2] is None
    ann["v_ehGHCYKzyZ8"]["sentences"] = [""]
    path.write_text(json.dumps(ann))
    with pytest.raises(ValueError, match="v_ehGHCYKzyZ8.*empty"):
        read_activitynet(str(path), str(vids))


def test_read_qvhighlights(tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    tiny(vids / "bP5KfdFJzC4_660.0_810.0.mp4")
    tiny(vids / "NUsG9BgSes0_210.0_360.0.mp4")
    rows = [
        {"qid": 1, "query": "a chef plates the dish", "duration": 150,
         "vid": "bP5KfdFJzC4_660.0_810.0", "relevant_windows": [[100, 120]],
         "relevant_clip_ids": [50, 51], "saliency_scores": [[4, 4, 3], [4, 3, 3]]},
        {"qid": 2, "query": "A man talks to the camera", "duration": 150,
         "vid": "NUsG9BgSes0_210.0_360.0", "relevant_windows": [[0, 16]]},
        {"qid": 3, "query": "the chef chops onions", "duration": 150,
         "vid": "bP5KfdFJzC4_660.0_810.0", "relevant_windows": [[10, 20], [30, 44]]},
    ]
    path = tmp_path / "highlight_val_release.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = read_qvhighlights(str(path), str(vids))
    assert [it.video_id for it in items] == ["bP5KfdFJzC4_660.0_810.0", "NUsG9BgSes0_210.0_360.0"]
    assert items[0].captions == ["the chef chops onions", "a chef plates the dish"]
    assert items[0].segments == [(10.0, 44.0), (100.0, 120.0)]
    assert items[0].paragraph == "the chef chops onions. a chef plates the dish."
    # the test split has no windows: file order, no segments
    for r in rows:
        r.pop("relevant_windows")
    path.write_text("\n".join(json.dumps(r) for r in rows))
    items = read_qvhighlights(str(path), str(vids))
    assert items[0].captions == ["a chef plates the dish", "the chef chops onions"]
    assert items[0].segments is None


def test_read_didemo(tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    tiny(vids / "10015567@N08_3655084291_d8b58466fa.mp4")  # re-encoded from .mov
    tiny(vids / "54322086@N00_2495377128_4b4c5ca6f5.avi")
    anns = [
        {"annotation_id": 1, "description": "the girl jumps into the water",
         "video": "10015567@N08_3655084291_d8b58466fa.mov", "times": [[3, 3], [3, 4], [3, 3],
                                                                     [2, 3]],
         "dl_link": "https://www.flickr.com/...", "num_segments": 6},
        {"annotation_id": 2, "description": "camera pans to the left",
         "video": "10015567@N08_3655084291_d8b58466fa.mov", "times": [[0, 0], [0, 1], [0, 0],
                                                                     [0, 0]],
         "dl_link": "https://www.flickr.com/...", "num_segments": 6},
        {"annotation_id": 3, "description": "a dog runs past",
         "video": "54322086@N00_2495377128_4b4c5ca6f5.avi", "times": [[1, 1]] * 4,
         "dl_link": "https://www.flickr.com/...", "num_segments": 6},
    ]
    path = tmp_path / "test_data.json"
    path.write_text(json.dumps(anns))
    items = read_didemo(str(path), str(vids))
    assert [it.video_id for it in items] == ["10015567@N08_3655084291_d8b58466fa.mov",
                                            "54322086@N00_2495377128_4b4c5ca6f5.avi"]
    assert items[0].captions == ["camera pans to the left", "the girl jumps into the water"]
    assert items[0].segments[0] == (0.0, 6.25)          # mean chunks [0, 0.25] -> seconds
    assert items[0].segments[1] == (13.75, 21.25)       # mean chunks [2.75, 3.25]
    assert items[0].video_path.endswith("d8b58466fa.mp4")


def test_read_youcook2(tmp_path):
    vids = tmp_path / "raw_videos"
    (vids / "validation" / "113").mkdir(parents=True)
    (vids / "training" / "101").mkdir(parents=True)
    tiny(vids / "validation" / "113" / "xHr8X2Wpmno.mp4")
    tiny(vids / "training" / "101" / "GLd3aX16zBg.webm")
    db = {"database": {
        "GLd3aX16zBg": {"duration": 241.62, "subset": "training", "recipe_type": "101",
                        "video_url": "https://www.youtube.com/watch?v=GLd3aX16zBg",
                        "annotations": [{"segment": [90, 102], "id": 0,
                                         "sentence": "spread margarine on two slices of bread"}]},
        "xHr8X2Wpmno": {"duration": 400.0, "subset": "validation", "recipe_type": "113",
                        "annotations": [{"segment": [50, 60], "id": 1, "sentence": "add oil"},
                                        {"segment": [10, 20], "id": 0,
                                         "sentence": "cut the chicken"}]},
    }}
    path = tmp_path / "youcookii_annotations_trainval.json"
    path.write_text(json.dumps(db))
    val = read_youcook2(str(path), str(vids), "validation")
    assert [it.video_id for it in val] == ["xHr8X2Wpmno"]
    assert val[0].paragraph == "cut the chicken. add oil."
    assert val[0].segments == [(10.0, 20.0), (50.0, 60.0)]
    train = read_youcook2(str(path), str(vids), "train")
    assert train[0].video_path.endswith("GLd3aX16zBg.webm")
    with pytest.raises(ValueError, match="subset"):
        read_youcook2(str(path), str(vids), "testing")


def test_read_charades(tmp_path):
    vids = tmp_path / "Charades_v1_480"
    vids.mkdir()
    tiny(vids / "46GP8.mp4")
    tiny(vids / "N11GT.mp4")
    fields = ["id", "subject", "scene", "quality", "relevance", "verified", "script", "objects",
              "descriptions", "actions", "length"]
    rows = [
        ["46GP8", "HR43", "Kitchen", "6", "7", "Yes",
         "A person cooking on a stove while watching something out a window.",
         "food;stove;window",
         "A person cooks food on a stove before looking out of a window.;The person stirs a pot.",
         "c092 11.90 21.20;c147 0.00 12.60", "24.83"],
        ["N11GT", "P0MG", "Stairs", "6", "7", "Yes",
         "One person opens a closet door, takes a towel and walks down the stairs.",
         "closet/cabinet;door;towel", "A person opens a closet and takes out a towel.;",
         "c141 0.00 5.80", "19.21"],
    ]
    path = tmp_path / "Charades_v1_test.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        w.writerows(rows)
    items = read_charades(str(path), str(vids))
    assert items[0].captions == ["A person cooks food on a stove before looking out of a "
                                 "window.", "The person stirs a pot."]
    assert items[1].captions == ["A person opens a closet and takes out a towel."]
    script = read_charades(str(path), str(vids), text="script")
    assert script[1].captions == [rows[1][6]]
    sta = tmp_path / "charades_sta_test.txt"
    sta.write_text("46GP8 10.1 20.0##person looks out the window.\n"
                   "46GP8 0.0 8.4##a person is cooking on the stove.\n")
    seg = read_charades(str(path), str(vids), sta_path=str(sta))
    assert [it.video_id for it in seg] == ["46GP8"]
    assert seg[0].captions == ["a person is cooking on the stove.",
                               "person looks out the window."]
    assert seg[0].segments == [(0.0, 8.4), (10.1, 20.0)]
    rows[1][8] = ""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        w.writerows(rows)
    with pytest.raises(ValueError, match="N11GT.*empty"):
        read_charades(str(path), str(vids))


def test_read_msrvtt(tmp_path):
    vids = tmp_path / "MSRVTT_Videos"
    vids.mkdir()
    for i in (0, 1, 7020):
        tiny(vids / f"video{i}.mp4")
    data = {
        "info": {"year": 2016},
        "videos": [{"category": 9, "url": "https://www.youtube.com/watch?v=9lZi22qLlEo",
                    "video_id": "video0", "start time": 137.72, "end time": 149.44,
                    "split": "train", "id": 0},
                   {"category": 16, "url": "https://www.youtube.com/watch?v=w4JM08PDEng",
                    "video_id": "video1", "start time": 184.33, "end time": 206.89,
                    "split": "train", "id": 1},
                   {"category": 7, "url": "https://www.youtube.com/watch?v=X", "video_id":
                    "video7020", "start time": 0, "end time": 10, "split": "test", "id": 7020}],
        "sentences": [{"caption": "a car is shown", "video_id": "video0", "sen_id": 0},
                      {"caption": "a man drives a car", "video_id": "video0", "sen_id": 1},
                      {"caption": "a woman sings", "video_id": "video1", "sen_id": 2},
                      {"caption": "a baby laughs", "video_id": "video7020", "sen_id": 3}],
    }
    path = tmp_path / "MSRVTT_data.json"
    path.write_text(json.dumps(data))
    everything = read_msrvtt(str(path), str(vids))
    assert [it.video_id for it in everything] == ["video0", "video1", "video7020"]
    assert everything[0].captions == ["a car is shown", "a man drives a car"]
    assert [it.video_id for it in read_msrvtt(str(path), str(vids), "train")] == ["video0",
                                                                                 "video1"]
    test_list = tmp_path / "MSRVTT_JSFUSION_test.csv"
    test_list.write_text("key,vid_key,video_id,sentence\n"
                         "ret0,msr7020,video7020,a baby is laughing on a bed\n"
                         "ret1,msr1,video1,a woman is singing\n")
    test = read_msrvtt(str(path), str(vids), str(test_list))
    assert [(it.video_id, it.captions) for it in test] == [
        ("video7020", ["a baby is laughing on a bed"]), ("video1", ["a woman is singing"])]
    train_list = tmp_path / "MSRVTT_train.9k.csv"
    train_list.write_text("video_id\nvideo1\n")
    assert [it.video_id for it in read_msrvtt(str(path), str(vids), str(train_list))] == ["video1"]


def test_read_jsonl_manifest(tmp_path, clips):
    (tmp_path / "videos").mkdir()
    tiny(tmp_path / "videos" / "a.mp4", audio=True)
    tiny(tmp_path / "videos" / "b.mp4")
    lines = [{"video": "videos/a.mp4", "captions": ["first a cow moos", "then a bell rings"],
              "segments": [[0, 1], [1, 2]], "events": [{"kind": "heard"}]},
             {"video": "videos/b.mp4", "captions": ["a red square"], "id": "clip-b"}]
    path = tmp_path / "test.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n\n")
    items = read_jsonl_manifest(str(path))
    assert [it.video_id for it in items] == ["a", "clip-b"]
    assert items[0].video_path == str(tmp_path / "videos" / "a.mp4")
    assert items[0].segments == [(0.0, 1.0), (1.0, 2.0)]
    ds = ci_dataset(items)
    assert ds[0]["caption"] == "first a cow moos. then a bell rings."
    assert read_dataset("jsonl", path=str(path))[1].video_id == "clip-b"
    path.write_text(json.dumps(lines[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match="test.jsonl:2"):
        read_jsonl_manifest(str(path))
    path.write_text(json.dumps({"video": "videos/a.mp4", "captions": [" "]}) + "\n")
    with pytest.raises(ValueError, match="test.jsonl:1.*'a'.*empty"):
        read_jsonl_manifest(str(path))


def test_read_dataset_dispatch(tmp_path):
    with pytest.raises(ValueError, match="activitynet.*charades.*msrvtt"):
        read_dataset("kinetics")
    path = tmp_path / "val_1.json"
    path.write_text(json.dumps({}))
    assert read_dataset("ActivityNet", json_path=str(path), video_dir=str(tmp_path)) == []


def test_throughput_bench_runs(tmp_path, capsys):
    """`eclipse-lite loader-bench` end to end on two 3 s videos it writes itself (the figure is
    not checked: it depends on the machine)."""
    from eclipse_lite.cli import main

    assert main(["loader-bench", "--make", "2", "--out", str(tmp_path / "bench"), "--duration", "3",
                 "--size", "32", "--frames", "4", "--workers", "0", "--image-size", "32",
                 "--window", "1", "--batch-size", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["clips"] == 4 and result["skipped"] == 0 and result["clips_per_s"] > 0
    assert len(list((tmp_path / "bench").glob("*.mp4"))) == 2
