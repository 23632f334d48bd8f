"""Data: decoding (io), frame sampling (sampling), dataset-format readers (readers), the retrieval
dataset and its batching (dataset), the feature cache (cache), pre-decoded clips (memory) and
the bundled benchmark (benchmark: find, make, load; synth: its generator).

    from eclipse_lite.data import read_video, read_audio, RetrievalDataset, read_dataset
    items = read_dataset("activitynet", json_path="val_1.json", video_dir="videos/")
    ds = RetrievalDataset.from_config(items, cfg)
"""
from eclipse_lite.data.cache import (
    CacheSettings,
    FeatureCache,
    MissingFeaturesError,
    StaleCacheError,
)
from eclipse_lite.data.dataset import RetrievalDataset, collate, expand_compact
from eclipse_lite.data.io import DecodeError, VideoClip, read_audio, read_video
from eclipse_lite.data.readers import (
    Item,
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
from eclipse_lite.data.sampling import random_indices, uniform_indices

__all__ = ["DecodeError", "VideoClip", "read_video", "read_audio", "uniform_indices",
           "random_indices", "Item", "RetrievalDataset", "collate", "expand_compact",
           "join_paragraph",
           "read_activitynet", "read_qvhighlights", "read_didemo", "read_youcook2", "read_charades",
           "read_msrvtt", "read_jsonl_manifest", "read_dataset", "FeatureCache", "CacheSettings",
           "StaleCacheError", "MissingFeaturesError"]
