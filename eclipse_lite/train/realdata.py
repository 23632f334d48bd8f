"""Real data for the ``base`` preset: manifests, audio embeddings, one fine-tuning run.

What ``eclipse-lite train --preset base`` (and ``eval``, ``cache-audio``) do, as functions::

    items = read_splits("data/anet")                         # {"train"|"val"|"test": ItemList}
    encoder = vggsound_encoder(cfg, "vggsound_resnet18.pth")  # windows [..., W] -> [..., 512]
    build_audio_cache(all_items, cfg, encoder, "features/anet")   # once: [T, 512] per video
    cache = open_audio_cache("features/anet", items, cfg, hint="...")   # every item checked
    data = make_datasets(items, cfg, audio_features=cache)
    res = train_and_test(ECLIPSE.from_clip(...), data, TrainConfig.paper(epochs=5), "runs/anet")   # train.finetune

Videos are decoded when a batch needs them (DataLoader workers, ``TrainConfig.num_workers``),
never all held in memory as the small presets' ``data.benchmark.load_benchmark`` does: ActivityNet has 15k
videos. The paper's audio is a frozen VGGSound ResNet-18 embedding of the 10 s around each frame
(Sec. 4 "Implementation Details"), read from a :class:`FeatureCache` built once, or computed on
the fly from the waveform windows by the encoder that ``fit`` gets as ``audio_encoder=``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from torch import nn

from eclipse_lite.audio import encode_windows
from eclipse_lite.audio_encoders import ResNet18Audio, build_audio_encoder
from eclipse_lite.config import ModelConfig
from eclipse_lite.data.cache import (
    CacheSettings,
    FeatureCache,
    MissingFeaturesError,
    StaleCacheError,
)
from eclipse_lite.data.dataset import RetrievalDataset
from eclipse_lite.data.readers import Item, ItemList, read_jsonl_manifest

SPLITS = ("train", "val", "test")
VGGSOUND_ENCODER = "resnet18-vggsound"   # the encoder's name in CacheSettings


def read_splits(data_dir: Any, splits: Sequence[str] = SPLITS) -> Dict[str, ItemList]:
    """The generic JSONL manifests ``data_dir/<split>.jsonl`` (:func:`read_jsonl_manifest`).

    Raises ``FileNotFoundError`` naming every missing manifest, ``ValueError`` for a malformed
    one or one whose videos are all missing.
    """
    data_dir = Path(data_dir)
    missing = [f"{s}.jsonl" for s in splits if not (data_dir / f"{s}.jsonl").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{data_dir} has no {', '.join(missing)}: --data needs a folder with "
            f"{', '.join(s + '.jsonl' for s in splits)}, one JSON object per line "
            '({"video": "<path relative to the folder>", "captions": ["...", ...]}; '
            "see data/README.md)")
    items = {}
    for split in splits:
        items[split] = read_jsonl_manifest(str(data_dir / f"{split}.jsonl"))
        if not items[split]:
            raise ValueError(f"{data_dir / (split + '.jsonl')} lists no video that exists")
    return items


def vggsound_encoder(cfg: ModelConfig, weights: Any) -> nn.Module:
    """The paper's frozen audio encoder, in eval mode: ``VGGSoundSpectrogram`` + ``ResNet18Audio``
    with the VGGSound release's weights (``AudioEncoder.load_vggsound``); windows ``[..., W]`` →
    embeddings ``[..., 512]``."""
    if cfg.audio_dim != ResNet18Audio.out_dim:
        raise ValueError(f"the VGGSound ResNet-18 gives {ResNet18Audio.out_dim}-d embeddings but "
                         f"the model takes audio_dim={cfg.audio_dim}: set audio_dim=512")
    if not Path(weights).is_file():
        raise FileNotFoundError(f"VGGSound weights {weights} not found (the release's "
                                f"H.pth.tar, or a state dict of torchvision resnet18 names)")
    encoder = build_audio_encoder(cfg.replace(audio_encoder="resnet18"), frontend="vggsound")
    encoder.load_vggsound(str(weights))
    return encoder.eval()


def audio_cache_settings(cfg: ModelConfig, encoder: nn.Module) -> CacheSettings:
    """What a cache of ``encoder``'s embeddings for ``cfg`` holds: ``cfg.num_frames`` uniform
    frames, ``cfg.audio_window_s`` windows at ``cfg.sample_rate``, the encoder's weights hash."""
    return CacheSettings.from_config(cfg, encoder, encoder=VGGSOUND_ENCODER)


def build_audio_cache(items: Sequence[Item], cfg: ModelConfig, encoder: nn.Module, root: Any,
                      device: Any = "cpu", workers: int = 0, progress: bool = True) -> dict:
    """Encode every item's ``T`` audio windows once into ``FeatureCache(root)``: float32 [T, A].

    Fresh entries are kept, stale and missing ones computed (``workers`` processes decode while
    ``encoder`` runs on ``device``); a video listed twice (e.g. in two splits) is encoded once.
    Returns :meth:`FeatureCache.build`'s report ``{"computed", "cached", "failed"}``.
    """
    encoder = encoder.to(device).eval()

    def encode(windows, mask):                        # [T, W], [T] -> [T, A]
        return encode_windows(encoder, windows[None], mask[None])[0].cpu()

    unique: Dict[str, Item] = {}
    for item in items:
        unique.setdefault(item.video_id, item)
    cache = FeatureCache(str(root))
    return cache.build(list(unique.values()), encode, audio_cache_settings(cfg, encoder), progress=progress,
                       workers=workers)


def open_audio_cache(root: Any, items: Dict[str, Sequence[Item]], cfg: ModelConfig,
                     hint: str) -> FeatureCache:
    """The feature cache at ``root``, checked before a run against ``cfg`` and every item.

    A dataset skips an item without cached features (with a warning), which would quietly shrink
    training and break evaluation; here it is an error naming the items and ``hint`` (how to
    build the cache). Raises ``FileNotFoundError`` (no cache), ``ValueError`` (built for other
    frames / window / rate, or of another width than ``cfg.audio_dim``),
    :class:`MissingFeaturesError` and :class:`StaleCacheError` (entries missing / out of date).
    """
    root = Path(root)
    if not (root / "settings.json").is_file():
        raise FileNotFoundError(f"{root} is not an audio feature cache (no settings.json): "
                                f"build it with {hint}")
    cache = FeatureCache(str(root))
    cache.check_compatible(cfg.num_frames, "uniform", cfg.sample_rate, cfg.audio_window_s)
    missing, stale = [], []
    for split, split_items in items.items():
        for item in split_items:
            if not cache.is_fresh(item.video_id, item.video_path):
                exists = os.path.exists(cache.path_for(item.video_id))
                (stale if exists else missing).append(f"{item.video_id!r} ({split})")
    if missing:
        raise MissingFeaturesError(
            f"{len(missing)} video(s) have no audio features in {root}: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; build them with "
            f"{hint} (a video that does not decode gets no entry: drop it from its manifest)")
    if stale:
        raise StaleCacheError(
            f"{len(stale)} video(s) have out-of-date audio features in {root} (the video file "
            f"changed): {', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''}; rebuild with "
            f"{hint}")
    first = next(item for split_items in items.values() for item in split_items)
    width = int(cache.get(first.video_id).shape[-1])
    if width != cfg.audio_dim:
        raise ValueError(f"the cached audio features in {root} are {width}-d but the model takes "
                         f"audio_dim={cfg.audio_dim}: set audio_dim={width}")
    return cache


def make_datasets(items: Dict[str, Sequence[Item]], cfg: ModelConfig,
                  audio_features: Optional[FeatureCache] = None,
                  compact: bool = False) -> Dict[str, RetrievalDataset]:
    """One streaming :class:`RetrievalDataset` per split: ``cfg.num_frames`` uniform frames of
    ``cfg.image_size`` px, audio as cached embeddings [T, A] (``audio_features``) or as waveform
    windows [T, W] for an encoder (``compact``: cut on the GPU, see ``expand_compact``)."""
    return {split: RetrievalDataset.from_config(split_items, cfg, audio_features=audio_features,
                                                compact=compact)
            for split, split_items in items.items()}


__all__ = ["SPLITS", "read_splits", "vggsound_encoder", "audio_cache_settings",
           "build_audio_cache", "open_audio_cache", "make_datasets"]
