"""FeatureCache: stored per-frame features, their invalidation, and atomic writes."""
import glob
import json
import os
import re
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from data_fixtures import write_garbage, write_video

from eclipse_lite.audio import encode_windows
from eclipse_lite.audio_encoders import build_audio_encoder
from eclipse_lite.config import ModelConfig
from eclipse_lite.data import cache as cache_mod
from eclipse_lite.data.cache import CacheSettings, FeatureCache, StaleCacheError, weights_hash
from eclipse_lite.data.dataset import RetrievalDataset
from eclipse_lite.data.readers import Item, SkippedItemWarning

SETTINGS = dict(num_frames=4, sample_rate=16000, window_s=2.0, encoder="stats")


class Stats:
    """A transparent 'encoder': [T, W] windows -> [T, 3] (mean, std, max |x|); counts calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, windows, mask):
        self.calls += 1
        assert windows.shape[0] == mask.shape[0] == 4
        return torch.stack([windows.mean(1), windows.std(1), windows.abs().amax(1)], dim=1)


@pytest.fixture
def videos(tmp_path):
    return [Item("a", write_video(str(tmp_path / "a.mp4"), n_frames=12, size=32), ["a"]),
            Item("b", write_video(str(tmp_path / "b.mp4"), n_frames=8, size=32), ["b"]),
            Item("quiet", write_video(str(tmp_path / "q.mp4"), n_frames=8, size=32,
                                      audio=False), ["q"])]


def cache_files(root):
    return sorted(glob.glob(os.path.join(root, "*.safetensors")))


def test_build_and_get(tmp_path, videos):
    enc = Stats()
    cache = FeatureCache(str(tmp_path / "cache"))
    report = cache.build(videos, enc, SETTINGS, progress=False)
    assert report == {"computed": 3, "cached": 0, "failed": []} and enc.calls == 3
    assert len(cache_files(cache.root)) == 3
    feats = cache.get("a")
    assert feats.shape == (4, 3) and feats.dtype == torch.float32
    # the stored numbers are the encoder applied to the dataset's own windows
    ds = RetrievalDataset(videos, num_frames=4, image_size=32, audio_window_s=2.0)
    x = ds[0]
    torch.testing.assert_close(feats, Stats()(x["audio"], x["audio_mask"]))
    entry = cache.entry("quiet")
    assert entry["audio_mask"].sum() == 0 and entry["audio"].abs().sum() == 0
    torch.testing.assert_close(entry["frame_times"], ds[2]["frame_times"])
    # a second build finds everything fresh and encodes nothing
    assert cache.build(videos, enc, SETTINGS, progress=False)["cached"] == 3 and enc.calls == 3
    # a new FeatureCache on the same folder (e.g. in the training process) reads the settings
    again = FeatureCache(cache.root)
    assert again.settings == CacheSettings(**SETTINGS)
    torch.testing.assert_close(again.get("a"), feats)
    with pytest.raises(KeyError, match="'nope'"):
        again.get("nope")


def test_changing_the_video_invalidates_its_entry(tmp_path, videos):
    enc = Stats()
    cache = FeatureCache(str(tmp_path / "cache"))
    cache.build(videos, enc, SETTINGS, progress=False)
    write_video(videos[1].video_path, n_frames=16, size=32)  # re-encoded in place
    with pytest.raises(StaleCacheError, match="'b'.*changed"):
        cache.get("b")
    cache.get("a")  # untouched entries stay valid
    report = cache.build(videos, enc, SETTINGS, progress=False)
    assert report["computed"] == 1 and report["cached"] == 2
    assert cache.get("b").shape == (4, 3)


def test_changing_settings_or_encoder_weights_invalidates(tmp_path, videos):
    cache = FeatureCache(str(tmp_path / "cache"))
    cache.build(videos, Stats(), SETTINGS, progress=False)
    wider = dict(SETTINGS, window_s=4.0)
    stale = FeatureCache(cache.root, settings=wider)
    with pytest.raises(StaleCacheError, match="window_s: 2.0 -> 4.0"):
        stale.get("a")
    assert stale.build(videos, Stats(), wider, progress=False)["computed"] == 3
    # a different encoder (here: weights changed by training) has a different hash
    cfg = ModelConfig.preset("ci")
    encoder = build_audio_encoder(cfg).eval()
    s1 = CacheSettings.from_config(cfg, encoder, window_s=2.0)
    fn = lambda w, m: encode_windows(encoder, w[None], m[None])[0]  # noqa: E731
    cache.build(videos, fn, s1, progress=False)
    assert cache.get("a").shape == (4, cfg.audio_dim)
    with torch.no_grad():
        next(encoder.parameters()).add_(0.01)
    s2 = CacheSettings.from_config(cfg, encoder, window_s=2.0)
    assert s2.encoder_hash != s1.encoder_hash
    assert weights_hash(encoder) == s2.encoder_hash
    with pytest.raises(StaleCacheError, match="encoder_hash"):
        FeatureCache(cache.root, settings=s2).get("a")


def test_crash_mid_write_leaves_no_partial_file(tmp_path, videos, monkeypatch):
    root = str(tmp_path / "cache")
    cache = FeatureCache(root)

    def crash(fd):
        raise KeyboardInterrupt("power cut while writing")

    monkeypatch.setattr(cache_mod.os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.build(videos, Stats(), SETTINGS, progress=False)
    monkeypatch.undo()
    assert cache_files(root) == [] and os.listdir(root) == []  # no final file, no temp file
    assert cache.build(videos, Stats(), SETTINGS, progress=False)["computed"] == 3


def test_killed_process_leaves_no_visible_partial_file(tmp_path, videos):
    """A real crash: the process dies after the temporary file is written, before the rename."""
    root = str(tmp_path / "cache")
    script = textwrap.dedent(f"""
        import os, sys, torch
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from eclipse_lite.data import cache as c
        from eclipse_lite.data.readers import Item
        real_replace = os.replace
        def die(src, dst):
            if dst.endswith(".safetensors"):
                assert os.path.getsize(src) > 0
                os._exit(3)          # no cleanup, no finally: like SIGKILL
            real_replace(src, dst)
        c.os.replace = die
        items = [Item("a", {videos[0].video_path!r}, ["a"])]
        enc = lambda w, m: torch.stack([w.mean(1), w.std(1)], 1)
        c.FeatureCache({root!r}).build(items, enc, {SETTINGS!r}, progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert cache_files(root) == []
    assert len(glob.glob(os.path.join(root, ".*.tmp"))) == 1  # hidden, never read
    cache = FeatureCache(root)
    with pytest.raises(KeyError):
        cache.get("a")
    assert cache.build(videos, Stats(), SETTINGS, progress=False)["computed"] == 3
    assert glob.glob(os.path.join(root, ".*.tmp")) == []  # the next build cleans up


def test_a_build_removes_only_the_temporaries_of_dead_writers(tmp_path, videos):
    """Two processes on one cache: one build's clean-up must not delete the other's file in
    flight (its name carries a live pid), only what a dead writer left."""
    root = tmp_path / "cache"
    root.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        in_flight = root / f".b.safetensors.{live.pid}.0123abcd.tmp"
        leftover = root / f".a.safetensors.{dead.pid}.4567cdef.tmp"
        in_flight.write_bytes(b"being written")
        leftover.write_bytes(b"a crash left this")
        FeatureCache(str(root)).build(videos, Stats(), SETTINGS, progress=False)
        assert in_flight.exists() and not leftover.exists()
    finally:
        live.kill()
        live.wait()


def test_dataset_reads_the_cache(tmp_path, videos):
    broken = Item("broken", write_garbage(str(tmp_path / "broken.mp4")), ["x"])
    items = videos + [broken]
    cache = FeatureCache(str(tmp_path / "cache"))
    with pytest.warns(RuntimeWarning, match="1 of 4 videos did not decode"):
        report = cache.build(items, Stats(), SETTINGS, progress=False)
    assert [vid for vid, _ in report["failed"]] == ["broken"]
    ds = RetrievalDataset(items, num_frames=4, image_size=32, audio_window_s=2.0,
                          audio_features=cache)
    x = ds[0]
    assert x["audio"].shape == (4, 3) and x["audio_mask"].tolist() == [1, 1, 1, 1]
    torch.testing.assert_close(x["audio"], cache.get("a"))
    assert ds[2]["audio_mask"].sum() == 0
    with pytest.warns(SkippedItemWarning, match="'broken'"):
        assert ds[3] is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedItemWarning)
        assert [vid for vid, _ in ds.check(progress=False)] == ["broken"]
    write_video(videos[1].video_path, n_frames=16, size=32)  # changed after the build
    with pytest.raises(StaleCacheError, match="'b'"):
        ds[1]  # a stale cache is a configuration error, never a silently skipped item
    with pytest.raises(ValueError, match="num_frames=8 .cache: 4."):
        RetrievalDataset(items, num_frames=8, image_size=32, audio_window_s=2.0,
                         audio_features=cache)
    with pytest.raises(ValueError, match="sampling"):
        RetrievalDataset(items, num_frames=4, image_size=32, audio_window_s=2.0,
                         sampling="random", audio_features=cache)


def test_a_cache_of_another_format_is_refused_naming_the_folder(tmp_path, videos, monkeypatch):
    """A folder written in an older format (here the one whose settings had image_* fields) is
    never read or mixed with new entries: opening it says which folder to delete and rebuild."""
    root = tmp_path / "cache"
    old_format = cache_mod.CACHE_FORMAT - 1
    monkeypatch.setattr(cache_mod, "CACHE_FORMAT", old_format)
    FeatureCache(str(root)).build(videos, Stats(), SETTINGS, progress=False)
    monkeypatch.undo()
    settings_file = root / "settings.json"
    stored = json.loads(settings_file.read_text())
    stored["settings"].update(image_size=None, image_encoder="", image_encoder_hash="")
    settings_file.write_text(json.dumps(stored))
    for settings in (None, SETTINGS):
        with pytest.raises(StaleCacheError,
                           match=f"feature cache {re.escape(str(root))} is in cache format "
                                 f"{old_format} .*delete the folder {re.escape(str(root))} and "
                                 f"build the cache again"):
            FeatureCache(str(root), settings=settings)
    # its entries are stale even without the settings file, and build() replaces them
    settings_file.unlink()
    cache = FeatureCache(str(root), settings=SETTINGS)
    with pytest.raises(StaleCacheError, match=f"'a'.*cache format {old_format} != "):
        cache.get("a")
    assert not cache.is_fresh("a", videos[0].video_path)
    assert cache.build(videos, Stats(), SETTINGS, progress=False)["computed"] == 3
    assert cache.get("a").shape == (4, 3)


def test_settings_validation(tmp_path):
    with pytest.raises(ValueError, match="only deterministic"):
        CacheSettings(num_frames=4, sampling="random", encoder="x")
    with pytest.raises(ValueError, match="must name the audio encoder"):
        CacheSettings(num_frames=4)
    with pytest.raises(ValueError, match="unknown cache setting"):
        FeatureCache(str(tmp_path)).build([], Stats(), dict(SETTINGS, frames=3))
    with pytest.raises(ValueError, match="is empty"):
        FeatureCache(str(tmp_path / "new")).check_compatible(4, "uniform", 16000, 2.0)


def test_fit_trains_from_the_cache_and_counts_the_items_it_skipped(tmp_path, videos):
    """An ActivityNet-scale run reads per-frame audio embeddings from the cache, not the
    encoder; a broken video is left out of its batches and counted once per epoch."""
    from eclipse_lite.model import ECLIPSE
    from eclipse_lite.train.config import TrainConfig
    from eclipse_lite.train.loop import fit
    broken = Item("broken", write_garbage(str(tmp_path / "broken.mp4")), ["x"])
    items = videos + [broken]
    cache = FeatureCache(str(tmp_path / "cache"))
    with pytest.warns(RuntimeWarning, match="did not decode"):
        cache.build(items, Stats(), SETTINGS, progress=False)
    ds = RetrievalDataset(items, num_frames=4, image_size=32, audio_window_s=2.0,
                          audio_features=cache)
    torch.manual_seed(0)
    model = ECLIPSE(ModelConfig.preset("ci", audio_dim=3))
    tc = TrainConfig(epochs=2, batch_size=4, lr_clip=1e-3, lr_new=1e-3, progress=False,
                     device="cpu", log_every=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fit(model, ds, tc=tc)
    assert res.global_step == 2 and all(torch.isfinite(torch.tensor(res.losses)))
    assert res.items_skipped == 2                       # the broken video, in each epoch
    assert [r.get("num_skipped") for r in res.steps] == [1, 1]
    assert any("2 training item(s) failed to load" in str(w.message) for w in caught)
    # the AV blocks saw the cached embeddings: their projections moved off zero
    assert any(float(p.detach().abs().sum()) > 0 for n, p in model.named_parameters() if "a2v_proj.weight" in n)
