"""fit / evaluate / checkpoints: the recipe, exact accumulation, exact resume, atomic saves,
best-epoch selection on validation, retrieval metrics of whole splits, results files, memory."""
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import eclipse_lite as el
import eclipse_lite.train.loop as loop_mod
import eclipse_lite.train.results as results_mod
import eclipse_lite.train.state as state_mod
from eclipse_lite.config import ModelConfig
from eclipse_lite.heads import MeanHead
from eclipse_lite.model import TextFeatures, VideoFeatures
from eclipse_lite.studies.memory import estimate_peak_memory
from eclipse_lite.train.config import TrainConfig, resolve_precision
from eclipse_lite.train.evaluate import evaluate
from eclipse_lite.train.finetune import fit_best
from eclipse_lite.train.loop import FitResult, fit
from eclipse_lite.train.optim import (
    build_optimizer,
    build_scheduler,
    lr_factor,
    param_groups,
    warmup_steps_for,
)
from eclipse_lite.train.results import write_results
from eclipse_lite.train.state import find_checkpoint, load_checkpoint, save_checkpoint
from eclipse_lite.train.step import TrainingModule, batch_inputs, train_step

WORDS = ["red", "blue", "green", "cat", "dog", "bird", "car", "tree", "boat", "drum", "rain", "bell"]


class Pairs(Dataset):
    """``n`` synthetic videos in the loaders' batch format: seeded random frames and audio
    embeddings (ci sizes), a distinct caption per video (so the pairs can be learned)."""

    def __init__(self, n, seed=0, cfg=None, raw_audio_samples=None):
        cfg = cfg or ModelConfig.preset("ci")
        g = torch.Generator().manual_seed(seed)
        t, s = cfg.num_frames, cfg.image_size
        self.frames = torch.randn(n, t, 3, s, s, generator=g)
        width = raw_audio_samples or cfg.audio_dim
        self.audio = torch.randn(n, t, width, generator=g) * (0.1 if raw_audio_samples else 1.0)
        self.captions = [f"a {WORDS[i % len(WORDS)]} and a {WORDS[(i * 5 + seed) % len(WORDS)]} "
                         f"number {i}" for i in range(n)]
        self.ids = [f"s{seed}v{i}" for i in range(n)]

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        t = self.frames.shape[1]
        return {"frames": self.frames[i], "frame_mask": torch.ones(t), "audio": self.audio[i],
                "audio_mask": torch.ones(t), "caption": self.captions[i], "video_id": self.ids[i]}


def make_model(seed=0, **kw):
    torch.manual_seed(seed)
    return el.ECLIPSE(ModelConfig.preset("ci", **kw))


def tc_(**kw):
    base = dict(epochs=2, batch_size=8, lr_clip=1e-3, lr_new=1e-3, log_every=1, progress=False,
                device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def full_batch(ds, idx=None):
    idx = range(len(ds)) if idx is None else idx
    return torch.utils.data.default_collate([ds[i] for i in idx])


def params_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------ configuration
def test_train_config_json_roundtrip_and_bad_values():
    tc = TrainConfig(epochs=3, max_steps=7, betas=(0.8, 0.9), precision="bf16")
    again = TrainConfig.from_dict(json.loads(tc.to_json()))
    assert again == tc and again.betas == (0.8, 0.9)
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="grad_accum_steps"):
        TrainConfig(batch_size=6, grad_accum_steps=4)
    with pytest.raises(ValueError, match="warmup_fraction"):
        TrainConfig(warmup_fraction=1.0)
    with pytest.raises(ValueError, match="unknown TrainConfig"):
        TrainConfig.from_dict({"epochs": 1, "lr": 1e-3})
    paper = TrainConfig.paper()
    assert (paper.batch_size, paper.lr_clip, paper.weight_decay) == (64, 1e-7, 0.2)


def test_resolve_precision():
    assert resolve_precision("auto", "cpu") == (None, False)
    assert resolve_precision("bf16", "cpu") == (torch.bfloat16, False)
    assert resolve_precision("fp16", "cpu") == (torch.float16, True)
    assert resolve_precision("fp32", "cpu") == (None, False)


# ------------------------------------------------------------------ optimizer and schedule
def test_param_groups_have_the_right_lrs_and_decay():
    model = make_model()
    tc = tc_(lr_clip=1e-4, lr_new=3e-3, weight_decay=0.2)
    groups = {g["name"]: g for g in param_groups(model, tc)}
    assert set(groups) == {"clip_decay", "clip_no_decay", "new_decay", "new_no_decay"}
    assert groups["clip_decay"]["lr"] == groups["clip_no_decay"]["lr"] == 1e-4
    assert groups["new_decay"]["lr"] == groups["new_no_decay"]["lr"] == 3e-3
    assert groups["clip_decay"]["weight_decay"] == groups["new_decay"]["weight_decay"] == 0.2
    assert groups["clip_no_decay"]["weight_decay"] == groups["new_no_decay"]["weight_decay"] == 0.0
    where = {id(p): name for name, g in groups.items() for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(where) == len(named) == sum(len(g["params"]) for g in groups.values())
    expect = {
        "logit_scale": "clip_no_decay",
        "visual.class_embedding": "clip_no_decay",
        "visual.position_embedding": "clip_no_decay",
        "text.position_embedding": "clip_no_decay",
        "visual.blocks.0.ln_1.weight": "clip_no_decay",
        "visual.blocks.0.attn.q_proj.bias": "clip_no_decay",
        "visual.blocks.0.attn.q_proj.weight": "clip_decay",
        "visual.patch_embed.weight": "clip_decay",
        "text.token_embedding.weight": "clip_decay",
        "av_blocks.1.a2v_proj.weight": "new_decay",
        "av_blocks.1.a2v_proj.bias": "new_no_decay",
        "av_blocks.0.norm_audio.weight": "new_no_decay",
        "audio_proj.weight": "new_decay",
    }
    for name, group in expect.items():
        assert where[id(named[name])] == group, name
    opt = build_optimizer(model, tc)
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-6


def test_video_only_model_has_only_clip_groups_and_frozen_params_are_left_out():
    model = make_model(fusion="none")
    model.text.token_embedding.weight.requires_grad_(False)
    groups = param_groups(model, tc_())
    assert [g["name"] for g in groups] == ["clip_decay", "clip_no_decay"]
    assert all(p is not model.text.token_embedding.weight for g in groups for p in g["params"])


def test_warmup_then_cosine_values():
    total, warm = 10, warmup_steps_for(10, 0.2)
    assert warm == 2
    assert lr_factor(0, warm, total) == pytest.approx(0.5)
    assert lr_factor(1, warm, total) == pytest.approx(1.0)
    assert lr_factor(2, warm, total) == pytest.approx(0.5 * (1 + math.cos(math.pi * 1 / 9)))
    assert lr_factor(9, warm, total) == pytest.approx(0.5 * (1 + math.cos(math.pi * 8 / 9)))
    # through the real scheduler, per group
    model = make_model()
    tc = tc_(lr_clip=1e-4, lr_new=1e-2, warmup_fraction=0.2)
    opt = build_optimizer(model, tc)
    sched = build_scheduler(opt, tc, total)
    seen = []
    for _ in range(total):
        seen.append({g["name"]: g["lr"] for g in opt.param_groups})
        opt.step()
        sched.step()
    clip = [s["clip_decay"] for s in seen]
    new = [s["new_decay"] for s in seen]
    assert clip[0] == pytest.approx(0.5e-4) and clip[1] == pytest.approx(1e-4)
    assert new[1] == pytest.approx(1e-2)
    assert all(a > b for a, b in zip(clip[1:], clip[2:]))          # strictly decreasing after warm-up
    assert 0 < clip[-1] < 0.05e-4
    assert [n / c for n, c in zip(new, clip)] == pytest.approx([100.0] * total)


# ------------------------------------------------------------------ training
def set_loss(model, ds):
    with torch.no_grad():
        inputs = batch_inputs(full_batch(ds), model.config, torch.device("cpu"))
        t, v, s = TrainingModule(model)(**inputs)
        return float(el.symmetric_infonce(t, v, s))


def test_a_few_steps_reduce_the_loss():
    ds = Pairs(16)
    model = make_model()
    before = set_loss(model, ds)
    result = fit(model, ds, tc=tc_(epochs=8))
    after = set_loss(model, ds)
    assert isinstance(result, FitResult) and result.global_step == 16 == len(result.losses)
    assert all(math.isfinite(x) for x in result.losses)
    assert after < before - 0.5, (before, after)
    assert sum(result.losses[-4:]) < sum(result.losses[:4]) - 1.0
    rec = result.steps[-1]
    assert set(rec["lr"]) == {"clip_decay", "clip_no_decay", "new_decay", "new_no_decay"}
    assert rec["grad_norm"] > 0 and rec["logit_scale"] > 1 and rec["epoch"] == 7


def test_grad_accumulation_is_exact_for_the_contrastive_loss():
    ds = Pairs(8)
    grads = {}
    for k in (1, 2, 4):
        model = make_model()
        inputs = batch_inputs(full_batch(ds), model.config, torch.device("cpu"))
        loss = train_step(TrainingModule(model), inputs, accum_steps=k)
        grads[k] = (loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    loss1, g1 = grads[1]
    for k in (2, 4):
        loss_k, gk = grads[k]
        assert loss_k == pytest.approx(loss1, abs=1e-6)
        assert set(gk) == set(g1)
        for name in g1:
            torch.testing.assert_close(gk[name], g1[name], atol=1e-6, rtol=1e-4, msg=name)
    # and independent micro-batch losses would not be the same objective:
    model = make_model()
    half = batch_inputs(full_batch(ds, range(4)), model.config, torch.device("cpu"))
    assert train_step(TrainingModule(model), half) != pytest.approx(loss1, abs=1e-3)


def test_fit_with_accumulation_follows_the_same_curve():
    ds = Pairs(16)
    a = fit(make_model(), ds, tc=tc_(epochs=1))
    b = fit(make_model(), ds, tc=tc_(epochs=1, grad_accum_steps=2))
    assert b.losses == pytest.approx(a.losses, abs=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    ds = Pairs(8)
    out = []
    for ckpt in (False, True):
        model = make_model(gradient_checkpointing=ckpt).train()
        inputs = batch_inputs(full_batch(ds), model.config, torch.device("cpu"))
        train_step(TrainingModule(model), inputs)
        out.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    for name in out[0]:
        torch.testing.assert_close(out[1][name], out[0][name], atol=1e-6, rtol=1e-5, msg=name)
    model = make_model()
    fit(model, ds, tc=tc_(epochs=1, gradient_checkpointing=True))
    assert model.config.gradient_checkpointing is True


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_paths_run_on_cpu(precision, tmp_path):
    ds = Pairs(8)
    ref = fit(make_model(), ds, tc=tc_(epochs=1, max_steps=1))
    res = fit(make_model(), ds, tc=tc_(epochs=1, max_steps=2, precision=precision),
              out_dir=tmp_path)
    assert all(math.isfinite(x) for x in res.losses)
    assert res.losses[0] == pytest.approx(ref.losses[0], abs=0.05)   # same first batch, same init
    state = json.loads((tmp_path / "last" / "trainer_state.json").read_text())
    if precision == "fp16":   # the GradScaler path: its state is checkpointed
        assert state["scaler"]["scale"] > 0
    else:
        assert state["scaler"] is None


def test_frozen_and_trained_audio_encoder_on_raw_windows():
    from eclipse_lite.audio_encoders import build_audio_encoder
    cfg = ModelConfig.preset("ci")
    samples = int(cfg.sample_rate * cfg.audio_window_s)
    ds = Pairs(8, cfg=cfg, raw_audio_samples=samples)
    torch.manual_seed(1)
    encoder = build_audio_encoder(cfg)
    before = params_of(encoder)
    res = fit(make_model(), ds, tc=tc_(epochs=1, max_steps=1), audio_encoder=encoder)
    assert math.isfinite(res.losses[0])
    after = params_of(encoder)
    assert all(torch.equal(before[k], after[k]) for k in before)      # frozen: BN stats too
    model = make_model()
    tc = tc_(epochs=1, max_steps=1, train_audio_encoder=True, lr_audio_encoder=1e-2)
    assert "audio_encoder_decay" in [g["name"] for g in param_groups(model, tc, encoder)]
    fit(model, ds, tc=tc, audio_encoder=encoder)
    changed = params_of(encoder)
    assert not torch.equal(changed["backbone.proj.weight"], before["backbone.proj.weight"])
    with pytest.raises(ValueError, match="audio_encoder"):
        fit(make_model(), ds, tc=tc_(epochs=1))    # windows without an encoder


def test_fit_rejects_what_it_cannot_do(tmp_path):
    ds = Pairs(8)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        fit(make_model(), Pairs(5), tc=tc_())
    with pytest.raises(ValueError, match="batch_size"):
        fit(make_model(), DataLoader(ds, batch_size=2), tc=tc_())
    with pytest.raises(ValueError, match="out_dir"):
        fit(make_model(), ds, tc=tc_(), resume=True)


# ------------------------------------------------------------------ resume
class Boom(RuntimeError):
    pass


def raise_at(step):
    def cb(event, record, model):
        if event == "step" and record["step"] == step:
            raise Boom(f"crash at step {step}")
    return cb


def stop_at(step):
    def cb(event, record, model):
        return event == "step" and record["step"] == step
    return cb


@pytest.mark.parametrize("interrupt", ["exception", "stop"])
def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(interrupt, tmp_path):
    train, val = Pairs(24), Pairs(8, seed=1)
    tc = tc_(epochs=3, checkpoint_every=2, warmup_fraction=0.3)     # 3 steps per epoch, 9 in all
    ref_model = make_model()
    ref = fit(ref_model, train, val, tc, out_dir=tmp_path / "ref")
    assert ref.global_step == 9
    run = tmp_path / "run"
    if interrupt == "exception":     # crashes after step 5: the last checkpoint is step 4
        with pytest.raises(Boom):
            fit(make_model(), train, val, tc, out_dir=run, callbacks=[raise_at(5)])
        assert json.loads((run / "last" / "trainer_state.json").read_text())["global_step"] == 4
    else:                            # a requested stop (e.g. preemption) saves at step 5
        stopped = fit(make_model(), train, val, tc, out_dir=run, callbacks=[stop_at(5)])
        assert stopped.stopped_early and stopped.global_step == 5
    resumed_model = make_model(seed=123)         # other initial weights: all must come from last/
    resumed = fit(resumed_model, train, val, tc, out_dir=run, resume=True)
    assert resumed.losses == ref.losses                                  # bit for bit
    assert [r["step"] for r in resumed.steps] == list(range(1, 10))
    assert resumed.val == ref.val and resumed.best_epoch == ref.best_epoch
    for name, value in ref_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], value), name
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    steps = [x["step"] for x in lines if x["kind"] == "step"]
    assert steps == list(range(1, 10))                                   # no duplicates
    # a finished run resumes to itself
    again = fit(make_model(), train, val, tc, out_dir=run, resume=True)
    assert again.losses == ref.losses and again.global_step == 9


def test_max_steps_ends_mid_epoch_with_a_final_validation(tmp_path):
    res = fit(make_model(), Pairs(16), Pairs(6, seed=1), tc_(epochs=3, max_steps=3),
              out_dir=tmp_path)
    assert res.global_step == res.total_steps == 3 and not res.stopped_early
    assert [(v["epoch"], v["step"], v["partial"]) for v in res.val] == [(0, 2, False), (1, 3, True)]
    assert res.steps[-1]["lr"]["clip_decay"] > 0                   # the schedule spans 3 steps
    state = json.loads((tmp_path / "last" / "trainer_state.json").read_text())
    assert (state["epoch"], state["batch"], state["finished"]) == (1, 1, True)


def test_loader_workers_do_not_change_the_data_order():
    ds = Pairs(16)
    assert fit(make_model(), ds, tc=tc_(epochs=2, num_workers=2)).losses == \
        fit(make_model(), ds, tc=tc_(epochs=2)).losses


def test_resume_refuses_a_changed_configuration(tmp_path):
    train = Pairs(16)
    fit(make_model(), train, tc=tc_(epochs=1), out_dir=tmp_path)
    with pytest.raises(ValueError, match="lr_clip"):
        fit(make_model(), train, tc=tc_(epochs=1, lr_clip=5e-4), out_dir=tmp_path, resume=True)
    # settings that do not change the computation may change
    fit(make_model(), train, tc=tc_(epochs=1, log_every=5), out_dir=tmp_path, resume=True)


# ------------------------------------------------------------------ atomic checkpoints
def test_a_crash_while_saving_leaves_the_previous_last_loadable(tmp_path, monkeypatch):
    model = make_model()
    opt = build_optimizer(model, tc_())
    save_checkpoint(tmp_path / "last", model, {"global_step": 1}, opt)
    saved = params_of(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    real_write = state_mod.atomic_write_text

    def dying_write(text, path):          # the process "dies" while writing the state file
        if Path(path).name == "trainer_state.json":
            raise KeyboardInterrupt("killed")
        return real_write(text, path)

    monkeypatch.setattr(state_mod, "atomic_write_text", dying_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last", model, {"global_step": 2}, opt)
    monkeypatch.undo()
    fresh = make_model(seed=5)
    state = load_checkpoint(tmp_path / "last", fresh, build_optimizer(fresh, tc_()))
    assert state["global_step"] == 1
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in saved.items())

    # a crash between the two renames: last/ is gone, last.old/ is complete and is used
    real_replace = os.replace

    def dying_replace(src, dst):
        if str(src).endswith(".partial"):
            raise KeyboardInterrupt("killed between renames")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last", model, {"global_step": 3}, opt)
    monkeypatch.undo()
    assert not (tmp_path / "last").exists()
    assert find_checkpoint(tmp_path / "last") == tmp_path / "last.old"
    fresh = make_model(seed=6)
    assert load_checkpoint(tmp_path / "last", fresh)["global_step"] == 1
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in saved.items())
    # the next save recovers a clean layout
    save_checkpoint(tmp_path / "last", model, {"global_step": 4}, opt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert el.ECLIPSE.from_pretrained(tmp_path / "last").config == model.config


# ------------------------------------------------------------------ best epoch on validation
def test_best_epoch_is_chosen_on_validation_r1_then_r5(tmp_path, monkeypatch):
    train, val = Pairs(16), Pairs(8, seed=1)
    scripted = iter([(10.0, 20.0), (30.0, 40.0), (30.0, 50.0), (20.0, 90.0)])
    seen_data = []

    def fake_evaluate(model, data, **kw):
        seen_data.append(data)
        r1, r5 = next(scripted)
        m = {"R@1": r1, "R@5": r5, "R@10": 100.0, "MdR": 1.0, "MnR": 1.0}
        return {"t2v": m, "v2t": dict(m), "n": len(data)}

    snapshots = {}

    def remember(event, record, model):
        if event == "epoch":
            snapshots[record["epoch"]] = params_of(model)

    monkeypatch.setattr(loop_mod, "evaluate", fake_evaluate)
    res = fit(make_model(), train, val, tc_(epochs=4), out_dir=tmp_path, callbacks=[remember])
    assert all(d is val for d in seen_data) and len(seen_data) == 4
    assert res.best_epoch == 2 and res.best_metrics["t2v"]["R@5"] == 50.0
    best = el.ECLIPSE.from_pretrained(tmp_path / "best")
    for k, v in snapshots[2].items():
        assert torch.equal(best.state_dict()[k], v), k
    assert not torch.equal(snapshots[3]["logit_scale"], snapshots[2]["logit_scale"])
    state = json.loads((tmp_path / "best" / "trainer_state.json").read_text())
    assert state["best"]["epoch"] == 2
    assert not (tmp_path / "best" / "optimizer.safetensors").exists()


def test_best_is_written_before_last_so_a_kill_between_them_loses_nothing(tmp_path, monkeypatch):
    """An improving epoch saves best/ and then last/: a kill in between leaves last/ at the
    previous epoch, so --resume redoes the epoch and writes best/ again."""
    saved = []
    real_save = loop_mod.save_checkpoint

    def recording_save(directory, *args, **kwargs):
        saved.append(Path(directory).name)
        return real_save(directory, *args, **kwargs)

    scripted = iter([10.0, 30.0, 20.0])

    def fake_evaluate(model, data, **kw):
        m = {"R@1": next(scripted), "R@5": 50.0, "R@10": 100.0, "MdR": 1.0, "MnR": 1.0}
        return {"t2v": m, "v2t": dict(m), "n": len(data)}

    monkeypatch.setattr(loop_mod, "evaluate", fake_evaluate)
    monkeypatch.setattr(loop_mod, "save_checkpoint", recording_save)
    fit(make_model(), Pairs(16), Pairs(8, seed=1), tc_(epochs=3), out_dir=tmp_path)
    assert saved == ["best", "last", "best", "last", "last"]


def test_a_missing_or_stale_best_checkpoint_is_an_error_not_the_current_weights(tmp_path):
    train, val = Pairs(16), Pairs(8, seed=1)
    tc = tc_(epochs=2)
    model = make_model()
    result = fit_best(model, train, val, tc, out_dir=tmp_path)
    assert result.best_dir == str(tmp_path / "best")
    best_state = json.loads((tmp_path / "best" / "trainer_state.json").read_text())
    # the finished run resumed: nothing to train, the best weights come from best/
    again = make_model(seed=9)
    fit_best(again, train, val, tc, out_dir=tmp_path, resume=True)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())
    # best/ holding another epoch than the one validation chose
    stale = dict(best_state, best=dict(best_state["best"], epoch=best_state["best"]["epoch"] + 7))
    (tmp_path / "best" / "trainer_state.json").write_text(json.dumps(stale))
    with pytest.raises(RuntimeError, match="holds epoch"):
        fit_best(make_model(seed=9), train, val, tc, out_dir=tmp_path, resume=True)
    # best/ gone (killed before it was written)
    shutil.rmtree(tmp_path / "best")
    with pytest.raises(RuntimeError, match="no complete checkpoint"):
        fit_best(make_model(seed=9), train, val, tc, out_dir=tmp_path, resume=True)


# ------------------------------------------------------------------ evaluate
class Oracle(nn.Module):
    """A hand-built perfect retriever: video i (frames filled with i) and caption i both embed to
    the i-th basis vector."""

    def __init__(self, captions, collapse=False):
        super().__init__()
        self.config = ModelConfig.preset("ci", fusion="none", embed_dim=64)
        self.dummy = nn.Parameter(torch.zeros(1))
        ids, _ = el.tokenize(captions, context_length=self.config.context_length)
        self.table = {tuple(row.tolist()): i for i, row in enumerate(ids)}
        self.collapse = collapse

    def one_hot(self, index):
        out = nn.functional.one_hot(index, self.config.embed_dim).float()
        return torch.ones_like(out) / 8 if self.collapse else out

    def encode_video(self, frames, audio=None, frame_mask=None, audio_mask=None):
        return self.one_hot(frames[:, 0, 0, 0, 0].round().long())

    def encode_text(self, ids, mask=None):
        return self.one_hot(torch.tensor([self.table[tuple(r.tolist())] for r in ids]))

    # what evaluate reads: the features and the model's similarity head
    head = MeanHead()

    def video_features(self, frames, audio=None, frame_mask=None, audio_mask=None):
        emb = self.encode_video(frames)
        return VideoFeatures(video_emb=emb, frame_emb=emb[:, None], frame_mask=torch.ones(len(emb), 1))

    def text_features(self, ids, mask=None):
        return TextFeatures(text_emb=self.encode_text(ids), tokens=None, mask=mask)

    def similarity(self, text, video):
        return self.head(text, video)


def indexed_pairs(n):
    ds = Pairs(n)
    for i in range(n):
        ds.frames[i].fill_(float(i))
    return ds


def test_evaluate_a_perfect_model_scores_100():
    ds = indexed_pairs(10)
    res = evaluate(Oracle(ds.captions), ds, batch_size=3, return_sim=True)
    assert res["n"] == 10
    for direction in ("t2v", "v2t"):
        assert res[direction] == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0, "MdR": 1.0, "MnR": 1.0}
    assert res["video_ids"] == ds.ids and res["captions"] == ds.captions
    torch.testing.assert_close(res["sim"], torch.eye(10))
    flat = evaluate(Oracle(ds.captions, collapse=True), ds, batch_size=4)
    assert flat["t2v"]["R@1"] == 0.0 and flat["t2v"]["MnR"] == 5.5    # ties: expected rank


def test_evaluate_matches_a_direct_computation_and_any_batch_size():
    model = make_model().eval()
    ds = Pairs(11, seed=2)
    batch = full_batch(ds)
    with torch.no_grad():
        inputs = batch_inputs(batch, model.config, torch.device("cpu"))
        v = model.encode_video(inputs["frames"], inputs["audio"], inputs["frame_mask"], inputs["audio_mask"])
        t = model.encode_text(inputs["input_ids"], inputs["attention_mask"])
    sim = t @ v.T
    expected = {"t2v": el.retrieval_metrics(sim), "v2t": el.retrieval_metrics(sim.T), "n": 11}
    model.train()
    for bs in (1, 4, 32):
        assert evaluate(model, ds, batch_size=bs) == expected
    assert model.training          # mode restored
    loader = DataLoader(ds, batch_size=5, shuffle=False)
    assert evaluate(model, loader) == expected


def test_evaluate_rejects_duplicate_video_ids():
    ds = Pairs(6)
    ds.ids[4] = ds.ids[1]
    with pytest.raises(ValueError, match="duplicate video ids.*s0v1"):
        evaluate(make_model(), ds)


def test_evaluate_refuses_a_split_that_lost_items():
    ds = Pairs(6)

    def collate(items):
        out = torch.utils.data.default_collate(items[1:])
        out["num_skipped"] = 1
        return out

    with pytest.raises(ValueError, match="failed to load"):
        evaluate(make_model(), DataLoader(ds, batch_size=3, collate_fn=collate))
    with pytest.warns(UserWarning, match="failed to load"):
        res = evaluate(make_model(), DataLoader(ds, batch_size=3, collate_fn=collate), strict=False)
    assert res["n"] == 4 and res["num_skipped"] == 2


# ------------------------------------------------------------------ results file
def test_write_results_records_config_seed_and_commit(tmp_path):
    ds = indexed_pairs(5)
    metrics = evaluate(Oracle(ds.captions), ds, return_sim=True)
    cfg, tc = ModelConfig.preset("ci"), tc_(seed=7)
    payload = write_results(tmp_path / "out" / "results.json", metrics, cfg, tc, seed=7)
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk == payload
    assert on_disk["seed"] == 7 and on_disk["model_config"] == cfg.to_dict()
    assert on_disk["train_config"] == tc.to_dict()
    assert on_disk["metrics"]["t2v"]["R@1"] == 100.0 and "sim" not in on_disk["metrics"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(results_mod.__file__).parent,
                          capture_output=True, text=True)
    expected = head.stdout.strip() if head.returncode == 0 else "unknown"
    assert on_disk["git_commit"] == expected
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["results.json"]   # no temp files
    with pytest.raises(ValueError, match="NaN"):
        write_results(tmp_path / "bad.json", {"t2v": {"R@1": float("nan")}})
    assert not (tmp_path / "bad.json").exists()


def test_git_commit_outside_a_repository(tmp_path):
    assert results_mod.git_commit(tmp_path) == ("unknown", None)


# ------------------------------------------------------------------ memory
def test_memory_estimate_terms_are_consistent():
    cfg = ModelConfig.preset("ci", audio_encoder="precomputed")
    small = estimate_peak_memory(cfg, batch_size=4, num_frames=4, precision="fp32")
    big = estimate_peak_memory(cfg, batch_size=8, num_frames=4, precision="fp32")
    full = estimate_peak_memory(cfg, batch_size=8, num_frames=4, precision="fp32",
                                gradient_checkpointing=False)
    params = sum(p.numel() for p in el.ECLIPSE(cfg).parameters())
    assert small["parameters"] == params and small["static_bytes"] == 16 * params
    tokens = cfg.num_patches + 1
    assert small["per_frame_stream_bytes"] == 4 * (tokens + 1) * cfg.vision_width   # fp32 streams
    assert big["vision_kept_bytes"] == 2 * small["vision_kept_bytes"]
    assert full["peak_bytes"] > big["peak_bytes"]        # checkpointing saves memory
    # one layer keeps far more than its input streams (that is what checkpointing drops)
    assert small["per_frame_layer_bytes"] > 4 * small["per_frame_stream_bytes"]
    bf16 = estimate_peak_memory(cfg, batch_size=8, num_frames=4, precision="bf16")
    # as under CUDA autocast: fp32 frame-token residual (layer norm runs in fp32), bf16 audio
    # tokens (they come out of a linear layer)
    assert bf16["per_frame_stream_bytes"] == 4 * tokens * cfg.vision_width + 2 * cfg.vision_width
    assert bf16["per_frame_layer_bytes"] < big["per_frame_layer_bytes"]


def test_evaluate_names_the_videos_with_non_finite_inputs():
    data = Pairs(8)
    data.frames[5, 1, 0, 0, 0] = float("nan")
    data.audio[2, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"non-finite inputs in the evaluation set: "
                                         r"s0v5 \(frames\), s0v2 \(audio\)$"):
        evaluate(make_model(), data, batch_size=8)
