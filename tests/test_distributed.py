"""Several processes compute what one process computes: seeded sharded batches, the gathered
contrastive loss and its gradients, fit and evaluate under ``torchrun`` (2 gloo processes on CPU).

Run directly (``torchrun --nproc_per_node 2 tests/test_distributed.py OUT``) this file is the
worker that the last test launches.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, default_collate

import eclipse_lite as el
from eclipse_lite.config import ModelConfig
from eclipse_lite.train.distributed import (
    ShardedBatchSampler,
    ShardedEvalSampler,
    epoch_permutation,
    shard_bounds,
)

GRAD_NAMES = ("logit_scale", "visual.blocks.0.attn.q_proj.weight", "av_blocks.1.a2v_proj.weight",
              "text.proj.weight", "audio_proj.weight")


class Pairs(Dataset):
    """``n`` synthetic videos in the loaders' batch format (ci sizes), distinct captions."""

    def __init__(self, n, seed=0):
        cfg = ModelConfig.preset("ci")
        g = torch.Generator().manual_seed(seed)
        self.frames = torch.randn(n, cfg.num_frames, 3, cfg.image_size, cfg.image_size, generator=g)
        self.audio = torch.randn(n, cfg.num_frames, cfg.audio_dim, generator=g)
        self.captions = [f"clip {i} with sound {seed}" for i in range(n)]

    def __len__(self):
        return len(self.captions)

    def __getitem__(self, i):
        t = self.frames.shape[1]
        return {"frames": self.frames[i], "frame_mask": torch.ones(t), "audio": self.audio[i],
                "audio_mask": torch.ones(t), "caption": self.captions[i], "video_id": f"v{i}"}


def make_model():
    torch.manual_seed(0)
    return el.ECLIPSE(ModelConfig.preset("ci"))


def fit_config():
    from eclipse_lite.train.config import TrainConfig
    return TrainConfig(epochs=2, batch_size=8, lr_clip=1e-3, lr_new=1e-3, log_every=1,
                       progress=False, device="cpu", warmup_fraction=0.25)


def one_step(module_fn, items, accum):
    """Loss and selected gradients of one train_step on ``items`` of Pairs(16)."""
    from eclipse_lite.train.step import TrainingModule, batch_inputs, train_step
    ds = Pairs(16)
    model = make_model()
    module = module_fn(TrainingModule(model))
    inputs = batch_inputs(default_collate([ds[i] for i in items]), model.config, torch.device("cpu"))
    loss = train_step(module, inputs, accum_steps=accum)
    named = dict(model.named_parameters())
    return {"loss": loss, "grads": {n: named[n].grad.clone() for n in GRAD_NAMES}}


def everything(module_fn, items, out_dir):
    """What the worker computes and the test recomputes in one process."""
    from eclipse_lite.train.evaluate import evaluate
    from eclipse_lite.train.loop import fit
    result = {f"step{k}": one_step(module_fn, items, k) for k in (1, 2)}
    model = make_model()
    res = fit(model, Pairs(16), Pairs(7, seed=1), fit_config(), out_dir=out_dir)
    result["fit"] = {"losses": res.losses, "val": res.val, "steps": res.global_step}
    result["eval"] = evaluate(model, Pairs(7, seed=2), batch_size=2)
    return result


def worker(out: Path) -> None:
    """Body of each torchrun process."""
    from torch.nn.parallel import DistributedDataParallel

    from eclipse_lite.train.distributed import cleanup_distributed, init_distributed
    torch.use_deterministic_algorithms(True, warn_only=True)
    from eclipse_lite.train.distributed import main_process_first
    info = init_distributed("cpu")
    assert info.world_size == 2 and info.backend == "gloo", info
    marker = out / "written-by-rank-0"
    with main_process_first("cpu") as first:
        if first.is_main:
            time.sleep(1.0)              # a slow cache writer
            marker.write_text("done")
        saw_cache = marker.exists()      # rank 1 enters only after rank 0 has left
    lo, hi = shard_bounds(8, info.rank, info.world_size)      # this rank's half of batch 0..7
    result = everything(lambda m: DistributedDataParallel(m, find_unused_parameters=True),
                        range(lo, hi), out / "run")
    result["rank"] = info.rank
    result["saw_cache"] = saw_cache
    torch.save(result, out / f"rank{info.rank}.pt")
    cleanup_distributed()


# ------------------------------------------------------------------ samplers
def test_sharded_batches_rebuild_the_one_process_batches():
    n, g = 23, 8
    single = list(ShardedBatchSampler(n, g, seed=3, rank=0, world_size=1))
    shards = [list(ShardedBatchSampler(n, g, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert len(single) == n // g == len(shards[0]) == len(shards[1])
    for step, batch in enumerate(single):
        assert shards[0][step] + shards[1][step] == batch        # rank order = batch order
    assert sorted(i for b in single for i in b) == sorted(epoch_permutation(n, 3, 0)[:16].tolist())
    with pytest.raises(ValueError, match="not divisible"):
        ShardedBatchSampler(n, 6, rank=0, world_size=4)


def test_epoch_order_depends_only_on_seed_and_epoch_and_resumes_mid_epoch():
    s = ShardedBatchSampler(40, 8, seed=1, rank=0, world_size=1)
    s.set_epoch(2)
    full = list(s)
    np.random.seed(99)
    torch.manual_seed(99)                               # global RNG state plays no role
    again = ShardedBatchSampler(40, 8, seed=1, rank=0, world_size=1)
    again.set_epoch(2, start_batch=3)
    assert list(again) == full[3:] and len(again) == 2
    s.set_epoch(3)
    assert list(s) != full
    assert list(ShardedBatchSampler(40, 8, seed=2, rank=0, world_size=1)) != \
        list(ShardedBatchSampler(40, 8, seed=1, rank=0, world_size=1))


@pytest.mark.parametrize("n,world,bs", [(7, 2, 2), (7, 3, 5), (2, 4, 1), (10, 1, 3)])
def test_eval_shards_cover_every_item_once_in_order(n, world, bs):
    batches = [b for r in range(world) for b in ShardedEvalSampler(n, bs, rank=r, world_size=world)]
    assert [i for b in batches for i in b] == list(range(n))
    sizes = [shard_bounds(n, r, world)[1] - shard_bounds(n, r, world)[0] for r in range(world)]
    assert max(sizes) - min(sizes) <= 1


def test_global_loss_is_the_plain_loss_in_one_process():
    from eclipse_lite.train.distributed import global_infonce
    g = torch.Generator().manual_seed(0)
    t = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    v = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    s = torch.tensor(20.0)
    assert torch.equal(global_infonce(t, v, s), el.symmetric_infonce(t, v, s))


# ------------------------------------------------------------------ torchrun, 2 processes
def test_two_gloo_processes_match_one_process(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", CI="1", PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["saw_cache"] for r in ranks] == [True, True]   # main_process_first: rank 0 first
    reference = everything(lambda m: m, range(8), tmp_path / "single")

    for k in (1, 2):                     # one step: loss and DDP-averaged gradients
        ref = reference[f"step{k}"]
        for got in ranks:
            assert got[f"step{k}"]["loss"] == pytest.approx(ref["loss"], abs=1e-6)
            for name in GRAD_NAMES:
                torch.testing.assert_close(got[f"step{k}"]["grads"][name], ref["grads"][name],
                                           atol=1e-6, rtol=1e-4, msg=f"accum {k}: {name}")
    ref_fit = reference["fit"]
    for got in ranks:                     # the whole run: same curve, same validation
        assert got["fit"]["steps"] == ref_fit["steps"] == 4
        assert got["fit"]["losses"] == pytest.approx(ref_fit["losses"], abs=1e-5)
        for a, b in zip(got["fit"]["val"], ref_fit["val"]):
            assert a["n"] == b["n"] == 7
            for d in ("t2v", "v2t"):
                assert a[d] == pytest.approx(b[d])
        assert got["eval"]["n"] == 7     # uneven shards 4 + 3, gathered without duplicates
        for d in ("t2v", "v2t"):
            assert got["eval"][d] == pytest.approx(reference["eval"][d])
    # only rank 0 wrote the run directory: one log line per step, no interleaving
    def events(run):
        lines = (tmp_path / run / "log.jsonl").read_text().splitlines()
        return [(r["kind"], r["step"]) for r in map(json.loads, lines)]
    assert events("run") == events("single") == [("step", 1), ("step", 2), ("val", 2), ("epoch", 2),
                                                 ("step", 3), ("step", 4), ("val", 4), ("epoch", 4)]
    assert (tmp_path / "run" / "last" / "model.safetensors").exists()


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
