"""The bundled benchmark on disk: where it is, making it when it is missing, loading it.

    data_dir = ensure_benchmark("tiny")                    # data/generated/tiny, made if absent
    clips = load_benchmark(data_dir, cfg, audio_encoder)   # {"train"|"val"|"test": ClipTensors}
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional

from eclipse_lite.config import ModelConfig
from eclipse_lite.data.dataset import RetrievalDataset
from eclipse_lite.data.memory import ClipTensors, cached_materialize
from eclipse_lite.data.readers import read_jsonl_manifest
from eclipse_lite.data.synth.generate import make_benchmark

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def default_data_dir(preset: str) -> Path:
    return Path("data") / "generated" / preset


def ensure_benchmark(preset: str, data_dir: Optional[Path] = None, seed: int = 0,
                     progress: bool = True) -> Path:
    """The bundled benchmark for ``preset`` in ``data_dir``, generated if it is not there."""
    data_dir = Path(data_dir) if data_dir else default_data_dir(preset)
    if not (data_dir / "test.jsonl").exists():
        log.info("making the %s benchmark in %s", preset, data_dir)
        make_benchmark(data_dir, size=preset, seed=seed, progress=progress)
    return data_dir


def check_data_dir(data_dir: Path, preset: str) -> None:
    """A missing benchmark names the command that makes it."""
    missing = [s for s in SPLITS if not (Path(data_dir) / f"{s}.jsonl").exists()]
    if missing:
        raise FileNotFoundError(
            f"{data_dir} has no {', '.join(s + '.jsonl' for s in missing)}: make the bundled benchmark "
            f"with `eclipse-lite make-data --preset {preset} --out {data_dir}` (or `make data "
            f"PRESET={preset}`), or point --data at a folder with train/val/test.jsonl manifests")


def load_benchmark(data_dir: Path, cfg: ModelConfig, audio_encoder, sampling: str = "uniform",
               progress: bool = True) -> Dict[str, ClipTensors]:
    """Every split of the benchmark in ``data_dir`` as in-memory tensors: frames decoded and
    CLIP-normalised ``[T, 3, H, W]``, audio embedded per frame by ``audio_encoder`` ``[T, A]``
    (``ClipTensors``; decoded once, then read from ``data_dir/cache``)."""
    check_data_dir(data_dir, cfg.name)
    clips = {}
    for split in SPLITS:
        manifest = Path(data_dir) / f"{split}.jsonl"
        items = read_jsonl_manifest(str(manifest))
        dataset = RetrievalDataset.from_config(items, cfg, sampling=sampling)
        clips[split] = cached_materialize(manifest, dataset, audio_encoder, Path(data_dir) / "cache",
                                          progress=progress)
    return clips
