"""Several processes, one model: process groups, seeded sharded batches, the cross-rank loss.

``torchrun --nproc_per_node N -m eclipse_lite.cli train ...`` starts N processes with the
environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``;
:func:`init_distributed` reads them (backend ``nccl`` on CUDA, ``gloo`` on CPU). One process per
GPU, each holding a full copy of the model wrapped in ``DistributedDataParallel``.

Three things make N processes compute exactly what one process computes on the same global batch:

1. **Data order** (:class:`ShardedBatchSampler`). Epoch ``e`` visits the items in a permutation that
   depends only on ``(seed, e)``; optimizer step ``s`` uses the global batch
   ``order[s*G : (s+1)*G]`` (``G`` = global batch size) and rank ``r`` loads the contiguous slice
   ``[r*G/N, (r+1)*G/N)`` of it. Gathering the ranks' embeddings in rank order therefore rebuilds
   the one-process batch row for row. Skipping the first ``k`` batches of an epoch resumes it.
2. **The contrastive loss** (:func:`global_infonce`). Every rank gathers all ranks' text and video
   embeddings (``all_gather``) and puts its own, still attached to the autograd graph, back in
   its slot (CLIP4Clip's ``AllGather``), then computes the symmetric InfoNCE of the whole
   ``[G, G]`` similarity matrix: the same loss value on every rank, equal to the one-process loss.
   Each rank back-propagates only through its own shard, and DDP *averages* gradients over the
   N ranks; the loss therefore scales the gradient reaching the embeddings by N (and the logit
   scale's, which every rank sees in full, by 1), so that the averaged gradient is the
   one-process gradient — not 1/N of it as in CLIP4Clip.
3. **Evaluation** (:class:`ShardedEvalSampler`, :func:`all_gather_variable`): contiguous shards,
   no padding duplicates, embeddings gathered back in dataset order.

Single-process use needs none of this: every helper degrades to the identity when no process
group is initialised.
"""
from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Sampler

from eclipse_lite.losses import symmetric_infonce

log = logging.getLogger(__name__)

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "get_rank", "get_world_size",
           "is_main_process", "barrier", "all_gather_variable", "gather_with_grad",
           "global_infonce", "scale_grad", "any_across_ranks", "ShardedBatchSampler",
           "ShardedEvalSampler", "resolve_device", "epoch_permutation",
           "shard_bounds", "main_process_first"]


# ---------------------------------------------------------------------------------------------
# process group
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, its GPU ``local_rank``, its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def resolve_device(device: Any = "auto", local_rank: int = 0) -> torch.device:
    """The one device rule: ``"auto"``/None → ``cuda:<local_rank>`` when CUDA is available, else
    ``cpu``; ``"cuda"`` → ``cuda:<local_rank>``; else as given. ValueError when CUDA is asked
    for and absent."""
    if device is None or str(device) == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: CUDA is not available on this machine; "
                             "use 'cpu' or 'auto'")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def init_distributed(device: Any = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    With ``WORLD_SIZE`` unset or 1 (a plain ``python`` run) nothing is initialised and the result
    is rank 0 of 1. Under ``torchrun``: backend ``nccl`` when the device is CUDA (each process
    takes GPU ``LOCAL_RANK``), ``gloo`` on CPU. Calling it again returns the existing group.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = _env_int("LOCAL_RANK", rank)
        backend = dist.get_backend()
        dev = resolve_device(device, local)
        return DistInfo(rank, world, local, dev, backend)
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device, local)
    if world <= 1:
        return DistInfo(0, 1, 0, dev, None)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={world} but {name} is not set: start the processes "
                               "with torchrun --nproc_per_node N ...")
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside 0..WORLD_SIZE-1={world - 1}")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    log.info("joined process group: rank %d of %d, backend %s, device %s", rank, world, backend, dev)
    return DistInfo(rank, world, local, dev, backend)


def cleanup_distributed() -> None:
    """Leave the process group (no-op when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if _initialised() else 0


def get_world_size() -> int:
    return dist.get_world_size() if _initialised() else 1


def is_main_process() -> bool:
    """Only rank 0 writes files, logs and progress bars."""
    return get_rank() == 0


def barrier() -> None:
    if _initialised() and get_world_size() > 1:
        dist.barrier()


@contextmanager
def main_process_first(device: Any = "auto") -> Iterator[DistInfo]:
    """Run the block on rank 0 first, then on the other ranks (all of them at once).

    For work that writes a cache the others can then read: pretraining the tiny towers,
    decoding a split into tensors. Without it, ``torchrun --nproc_per_node N`` would start N
    copies of the same minutes-long job, each writing the same files. Joins the process group
    (:func:`init_distributed`) and yields this process's :class:`DistInfo`; a plain run just
    runs the block. Rank 0 reaches its barrier even when the block raises, so the others are
    released to fail the same way rather than wait out the group's timeout.
    """
    info = init_distributed(device)
    if info.distributed and not info.is_main:
        barrier()                        # wait for rank 0 to finish the block
    try:
        yield info
    finally:
        if info.distributed and info.is_main:
            barrier()                    # release the others


def any_across_ranks(flag: bool, device: Any = "cpu") -> bool:
    """True on every rank when ``flag`` is True on at least one (one tiny all-reduce)."""
    if get_world_size() == 1:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


# ---------------------------------------------------------------------------------------------
# gathering tensors
# ---------------------------------------------------------------------------------------------
def _gather_rows(x: Tensor) -> Tuple[Tensor, List[int]]:
    """(every rank's rows concatenated in rank order, the row count of each rank); no gradient."""
    world = get_world_size()
    x = x.detach().contiguous()
    sizes = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    all_sizes = [torch.zeros_like(sizes) for _ in range(world)]
    dist.all_gather(all_sizes, sizes)
    counts = [int(s.item()) for s in all_sizes]
    longest = max(counts)
    if x.shape[0] < longest:
        x = torch.cat([x, x.new_zeros((longest - x.shape[0],) + tuple(x.shape[1:]))])
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x)
    return torch.cat([p[:n] for p, n in zip(parts, counts)]), counts


def all_gather_variable(x: Tensor) -> Tensor:
    """Concatenate every rank's ``x [n_r, ...]`` along dim 0 in rank order (no gradient).

    Ranks may hold different ``n_r`` (a shorter last shard): rows are padded to the largest
    ``n_r`` for the collective and the padding is cut off again, so no row appears twice.
    """
    if get_world_size() == 1:
        return x.detach()
    return _gather_rows(x)[0]


def gather_with_grad(x: Tensor) -> Tensor:
    """All ranks' ``x`` concatenated in rank order, with this rank's rows still in the graph.

    The other ranks' rows are constants here (their own processes back-propagate through them);
    this rank's slot holds ``x`` itself, so the gradient of anything computed from the result
    flows back into the local shard only (CLIP4Clip's ``AllGather``; works with unequal shards).
    """
    if get_world_size() == 1:
        return x
    everything, counts = _gather_rows(x)
    rank = get_rank()
    start = sum(counts[:rank])
    return torch.cat([everything[:start], x, everything[start + counts[rank]:]])


class _ScaleGrad(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``factor``."""

    @staticmethod
    def forward(ctx, x: Tensor, factor: float) -> Tensor:  # noqa: D401
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.factor, None


def scale_grad(x: Tensor, factor: float) -> Tensor:
    """``x`` unchanged, but gradients flowing back through it are multiplied by ``factor``."""
    if factor == 1.0:
        return x
    return _ScaleGrad.apply(x, float(factor))


def global_infonce(text_emb: Tensor, video_emb: Tensor, scale: Tensor) -> Tensor:
    """Symmetric InfoNCE over the global batch of all ranks (Sec. 3.3; see ``losses.py``).

    Args:
        text_emb: ``[b, D]`` this rank's L2-normalised text embeddings.
        video_emb: ``[b, D]`` the matching video embeddings.
        scale: the logit scale ``exp(logit_scale)`` (a one-element tensor with grad, or a float).
    Returns:
        scalar: the loss of the gathered ``[G, G]`` matrix — the same value on every rank, equal to
        ``symmetric_infonce`` of the concatenated global batch in one process. Its gradient is
        arranged for DDP's *mean* over ranks: ``N x`` into this rank's embeddings (N ranks each own
        one shard) and ``1/N x`` into the scale (every rank sees all of it), so that after DDP
        averages, every parameter's gradient equals the one-process gradient.
    """
    world = get_world_size()
    if world == 1:
        return symmetric_infonce(text_emb, video_emb, scale)
    text_all = gather_with_grad(text_emb)
    video_all = gather_with_grad(video_emb)
    if isinstance(scale, Tensor):
        scale = scale_grad(scale, 1.0 / world)
    loss = symmetric_infonce(text_all, video_all, scale)
    return scale_grad(loss, float(world))


# ---------------------------------------------------------------------------------------------
# data order
# ---------------------------------------------------------------------------------------------
def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits ``n`` items: a function of ``(seed, epoch)`` only."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(int(n))


class ShardedBatchSampler(Sampler[List[int]]):
    """Training batches: seeded per epoch, sharded over ranks, resumable mid-epoch.

    Yields this rank's list of dataset indices for each optimizer step. Epoch ``e``'s order is
    :func:`epoch_permutation` ``(n, seed, e)`` (or ``0..n-1`` with ``shuffle=False``); global
    batch ``s`` is ``order[s*G:(s+1)*G]`` and rank ``r`` gets its ``r``-th contiguous slice of
    ``G / world_size`` indices. Incomplete global batches are dropped (a contrastive batch needs
    its negatives and every rank the same shape), so an epoch has ``n // G`` steps.

    ``set_epoch(e, start_batch=k)`` selects the epoch and skips its first ``k`` batches (resume).
    """

    def __init__(self, num_items: int, global_batch_size: int, seed: int = 0, shuffle: bool = True,
                 rank: Optional[int] = None, world_size: Optional[int] = None) -> None:
        world = get_world_size() if world_size is None else int(world_size)
        rank = get_rank() if rank is None else int(rank)
        if int(global_batch_size) <= 0:
            raise ValueError(f"global_batch_size must be positive, got {global_batch_size}")
        if global_batch_size % world:
            raise ValueError(f"the global batch size {global_batch_size} is not divisible by the "
                             f"{world} processes; choose a multiple of {world}")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside 0..{world - 1}")
        self.num_items = int(num_items)
        self.global_batch_size = int(global_batch_size)
        self.local_batch_size = self.global_batch_size // world
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.rank, self.world_size = rank, world
        self.epoch, self.start_batch = 0, 0
        if self.batches_per_epoch == 0:
            raise ValueError(f"the training set has {self.num_items} items, fewer than one global "
                             f"batch of {self.global_batch_size}: lower batch_size or add data")

    @property
    def batches_per_epoch(self) -> int:
        return self.num_items // self.global_batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= int(start_batch) <= self.batches_per_epoch:
            raise ValueError(f"start_batch={start_batch} is outside 0..{self.batches_per_epoch}")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def order(self) -> np.ndarray:
        if self.shuffle:
            return epoch_permutation(self.num_items, self.seed, self.epoch)
        return np.arange(self.num_items)

    def __iter__(self) -> Iterator[List[int]]:
        order = self.order()
        g, b = self.global_batch_size, self.local_batch_size
        for step in range(self.start_batch, self.batches_per_epoch):
            start = step * g + self.rank * b
            yield [int(i) for i in order[start:start + b]]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch


def shard_bounds(num_items: int, rank: int, world_size: int) -> Tuple[int, int]:
    """Contiguous ``[start, stop)`` of rank ``rank``: sizes differ by at most one, nothing repeats."""
    base, extra = divmod(int(num_items), int(world_size))
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class ShardedEvalSampler(Sampler[List[int]]):
    """Evaluation batches: rank ``r`` walks its contiguous shard (:func:`shard_bounds`) in order,
    ``batch_size`` items at a time. Concatenating the ranks' outputs in rank order restores the
    dataset order, with every item exactly once (no padding duplicates)."""

    def __init__(self, num_items: int, batch_size: int, rank: Optional[int] = None,
                 world_size: Optional[int] = None) -> None:
        if int(batch_size) <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        world = get_world_size() if world_size is None else int(world_size)
        rank = get_rank() if rank is None else int(rank)
        self.start, self.stop = shard_bounds(num_items, rank, world)
        self.batch_size = int(batch_size)

    def __iter__(self) -> Iterator[List[int]]:
        for i in range(self.start, self.stop, self.batch_size):
            yield list(range(i, min(i + self.batch_size, self.stop)))

    def __len__(self) -> int:
        return math.ceil((self.stop - self.start) / self.batch_size)
