"""``evaluate``: text-to-video and video-to-text retrieval metrics over a whole split."""
from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import Any, Dict, List, Optional, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from eclipse_lite.metrics import retrieval_metrics
from eclipse_lite.model import TextFeatures, VideoFeatures
from eclipse_lite.train.config import autocast, resolve_precision
from eclipse_lite.train.distributed import (
    ShardedEvalSampler,
    all_gather_variable,
    get_world_size,
    resolve_device,
)
from eclipse_lite.train.step import as_dataset, batch_inputs, prepare_audio

log = logging.getLogger(__name__)


def _gather_strings(values: List[str]) -> List[str]:
    if get_world_size() == 1:
        return list(values)
    parts: List[Any] = [None] * get_world_size()
    dist.all_gather_object(parts, list(values))
    return [v for part in parts for v in part]


@torch.no_grad()
def evaluate(model: nn.Module, loader: Union[Dataset, DataLoader], audio_encoder: Optional[nn.Module] = None,
             device: Union[str, torch.device, None] = None, batch_size: int = 32,
             precision: str = "auto", num_workers: int = 0, return_sim: bool = False,
             strict: bool = True) -> Dict[str, Any]:
    """Text-to-video and video-to-text retrieval over a whole split.

    Embeds every caption and every video in batches (eval mode, no gradient, autocast per
    ``precision``), builds the similarity matrix ``sim [texts, videos]`` of cosine similarities
    (row ``i`` = caption of video ``i``), and scores T2V = ``retrieval_metrics(sim)``, V2T =
    ``retrieval_metrics(sim.T)``. Under ``torchrun`` every process embeds a contiguous shard and
    the embeddings are gathered in dataset order (no padding duplicates); all processes return
    the same result.

    Args:
        loader: a Dataset (batched here, in order) or a DataLoader (used as is in one process;
            re-batched into shards under torchrun). Batches as in :func:`fit`; "video_id" needed.
        device: where to run; None = where the model's parameters are.
        strict: a batch that lost items which failed to decode raises (it would change N and
            the metric); with False the loss is reported as ``"num_skipped"`` and a warning.
    Returns:
        ``{"t2v": {R@1, R@5, R@10, MdR, MnR}, "v2t": {...}, "n": N}``, plus ``"sim"`` (float32
        CPU tensor ``[N, N]``), ``"video_ids"`` and ``"captions"`` (in row order) when
        ``return_sim``.
    Raises:
        ValueError: duplicate video ids (retrieval needs one item per video), an empty split,
            or skipped items with ``strict``.
    """
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = resolve_device(device)
    model.to(device)
    if audio_encoder is not None:
        audio_encoder.to(device)
    cfg = model.config
    dataset, collate = as_dataset(loader, "evaluation data")
    if not (isinstance(loader, DataLoader) and get_world_size() == 1):
        bs = loader.batch_size if isinstance(loader, DataLoader) and loader.batch_size else batch_size
        loader = DataLoader(dataset, batch_sampler=ShardedEvalSampler(len(dataset), bs),
                            collate_fn=collate, num_workers=num_workers,
                            pin_memory=device.type == "cuda")
    autocast_dtype, _ = resolve_precision(precision, device)
    modes = [(m, m.training) for m in (model, audio_encoder) if m is not None]
    for m, _ in modes:
        m.eval()
    head = model.head
    texts: Dict[str, List[Tensor]] = {k: [] for k in head.text_fields}
    videos: Dict[str, List[Tensor]] = {k: [] for k in head.video_fields}
    ids, captions = [], []
    skipped = 0
    try:
        for batch in loader:
            if batch is None:
                raise ValueError("a whole evaluation batch failed to load: run dataset.check() "
                                 "first to drop undecodable videos from the split")
            skipped += int(batch.get("num_skipped", 0) or 0)
            if "video_id" not in batch:
                raise KeyError("evaluation batches need 'video_id' (to check that every video "
                               "appears once)")
            inputs = batch_inputs(batch, cfg, device)
            _check_finite(inputs, batch["video_id"])
            with autocast(device, autocast_dtype):
                audio = prepare_audio(cfg, inputs["audio"], inputs["audio_mask"], audio_encoder)
                video = model.video_features(inputs["frames"], audio, inputs["frame_mask"],
                                             inputs["audio_mask"])
                text = model.text_features(inputs["input_ids"], inputs["attention_mask"])
            _keep(videos, video)
            _keep(texts, text)
            ids.extend(str(v) for v in batch["video_id"])
            caps = batch.get("caption")
            captions.extend(list(caps) if caps is not None else [""] * len(batch["video_id"]))
    finally:
        for m, was_training in modes:
            m.train(was_training)
    empty = torch.zeros(0, cfg.embed_dim, device=device)
    text_all = TextFeatures(**_gathered(texts, TextFeatures, empty))
    video_all = VideoFeatures(**_gathered(videos, VideoFeatures, empty))
    ids = _gather_strings(ids)
    if return_sim:
        captions = _gather_strings(captions)
    if get_world_size() > 1:
        skipped = int(all_gather_variable(torch.tensor([skipped], device=device)).sum())
    if skipped:
        message = (f"{skipped} evaluation item(s) failed to load and were dropped; the metrics "
                   f"would be over {len(ids)} videos instead of {len(dataset)}. Run "
                   "dataset.check() first to drop undecodable videos from the split")
        if strict:
            raise ValueError(message)
        warnings.warn(message)
    if len(ids) == 0:
        raise ValueError("the evaluation set is empty")
    _check_unique(ids)
    with torch.no_grad():
        sim = model.similarity(text_all, video_all).float().cpu()   # [texts, videos], cosine
    result: Dict[str, Any] = {"t2v": retrieval_metrics(sim), "v2t": retrieval_metrics(sim.T),
                              "n": len(ids)}
    if skipped:
        result["num_skipped"] = skipped
    if return_sim:
        result.update(sim=sim, video_ids=ids, captions=captions)
    return result


def _keep(parts: Dict[str, List[Tensor]], features: Any) -> None:
    """Append the fields ``parts`` asks for of one batch's features (float32, no graph)."""
    for name, kept in parts.items():
        kept.append(getattr(features, name).float())


def _gathered(parts: Dict[str, List[Tensor]], cls: Any, empty: Tensor) -> Dict[str, Any]:
    """The kept fields over the whole split (every process's rows, in dataset order); the fields
    of ``cls`` that the head does not read are None; ``empty`` stands for a process with no rows."""
    out: Dict[str, Any] = {f.name: None for f in dataclasses.fields(cls)}
    for name, kept in parts.items():
        local = torch.cat(kept) if kept else empty
        out[name] = all_gather_variable(local)
    return out


def _check_unique(ids: List[str]) -> None:
    """Retrieval needs each video once: an error naming the first duplicated ids."""
    seen: Dict[str, int] = {}
    duplicates = []
    for i, vid in enumerate(ids):
        if vid in seen:
            duplicates.append(f"{vid!r} (rows {seen[vid]} and {i})")
        seen.setdefault(vid, i)
    if duplicates:
        raise ValueError(f"duplicate video ids in the evaluation set: {', '.join(duplicates[:5])}"
                         f"{' ...' if len(duplicates) > 5 else ''}; retrieval needs one caption "
                         "per video, each video once")


def _check_finite(inputs: Dict[str, Any], video_ids: List[str]) -> None:
    """An error naming the videos whose frames or audio hold NaN or inf (the metrics over a NaN
    row would be meaningless)."""
    bad: List[str] = []
    for name in ("frames", "audio"):
        x = inputs.get(name)
        if x is not None:
            rows = ~torch.isfinite(x.flatten(1)).all(1)
            bad += [f"{video_ids[i]} ({name})" for i in rows.nonzero().flatten().tolist()]
    if bad:
        raise ValueError(f"non-finite inputs in the evaluation set: {', '.join(bad[:10])}"
                         f"{' ...' if len(bad) > 10 else ''}")
