"""Data: decoding, frame/audio sampling, real dataset formats, feature cache, bundled benchmark.

    from eclipse_lite.data import read_video, read_audio, RetrievalDataset, read_dataset
    items = read_dataset("activitynet", json_path="val_1.json", video_dir="videos/")
    ds = RetrievalDataset.from_config(items, cfg)
"""
from eclipse_lite.data.cache import CacheSettings, FeatureCache, MissingFeaturesError, StaleCacheError
from eclipse_lite.data.dataset import (Item, RetrievalDataset, collate, expand_compact, join_paragraph,
                       read_activitynet, read_charades, read_dataset, read_didemo,
                       read_jsonl_manifest, read_msrvtt, read_qvhighlights, read_youcook2)
from eclipse_lite.data.io import DecodeError, VideoClip, read_audio, read_video
from eclipse_lite.data.sampling import random_indices, uniform_indices

__all__ = ["DecodeError", "VideoClip", "read_video", "read_audio", "uniform_indices",
           "random_indices", "Item", "RetrievalDataset", "collate", "expand_compact",
           "join_paragraph",
           "read_activitynet", "read_qvhighlights", "read_didemo", "read_youcook2", "read_charades",
           "read_msrvtt", "read_jsonl_manifest", "read_dataset", "FeatureCache", "CacheSettings",
           "StaleCacheError", "MissingFeaturesError"]
