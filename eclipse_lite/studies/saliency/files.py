"""Finding things on disk: the benchmark's videos with their plans, and audio encoder weights."""
from __future__ import annotations

import glob
import os
from typing import List, Optional

import torch

from eclipse_lite.audio_encoders import build_audio_encoder
from eclipse_lite.checkpoints import read_state_dict
from eclipse_lite.config import ModelConfig
from eclipse_lite.data.readers import read_jsonl_manifest
from eclipse_lite.data.synth.ground_truth import load_plans
from eclipse_lite.studies.saliency.ground_truth import VideoRecord

AUDIO_ENCODER_FILES = ("audio_encoder.safetensors", "audio_encoder.pt", "audio_encoder.pth")


def load_audio_encoder(cfg: ModelConfig, path: Optional[str]) -> torch.nn.Module:
    """``build_audio_encoder(cfg)`` with weights from ``path`` (safetensors or torch state dict)."""
    encoder = build_audio_encoder(cfg)
    if path is not None:
        state = read_state_dict(path)
        try:
            encoder.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{path}: does not fit build_audio_encoder(preset {cfg.name!r}, "
                             f"audio_encoder={cfg.audio_encoder!r}): {str(e).splitlines()[0]}") from None
    return encoder.eval()


def find_audio_encoder(checkpoint: str, cfg: ModelConfig, data_dir: Optional[str] = None) -> str:
    """The audio encoder weights that go with a fine-tuned ``checkpoint``.

    In order: ``checkpoint/audio_encoder.safetensors`` (written when the encoder was fine-tuned),
    then the frozen pretrained encoder of the benchmark, ``data_dir/pretrained/<preset>-*/
    audio.safetensors`` (``eclipse_lite.train.pretrain``'s cache) when exactly one matches.
    Raises ``FileNotFoundError`` naming what was looked for.
    """
    for name in AUDIO_ENCODER_FILES:
        if os.path.isfile(os.path.join(checkpoint, name)):
            return os.path.join(checkpoint, name)
    looked = [os.path.join(checkpoint, AUDIO_ENCODER_FILES[0])]
    if data_dir is not None:
        pattern = os.path.join(data_dir, "pretrained", f"{cfg.name}-*", "audio.safetensors")
        found = sorted(glob.glob(pattern))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise FileNotFoundError(f"several pretrained audio encoders match {pattern}: {found}; "
                                    f"pass the one the checkpoint was trained with as "
                                    f"--audio-encoder")
        looked.append(pattern)
    raise FileNotFoundError(f"no audio encoder weights for {checkpoint} (looked for "
                            f"{' and '.join(looked)}); pass --audio-encoder PATH")


def find_videos(data_dir: str, split: str = "test", events: Optional[str] = None,
                manifest: Optional[str] = None) -> List[VideoRecord]:
    """Benchmark videos of ``split`` with their plans: ``{data_dir}/{split}.jsonl`` (the generic
    manifest) joined with ``{data_dir}/events.json`` on the video id."""
    manifest = manifest or os.path.join(data_dir, f"{split}.jsonl")
    events = events or os.path.join(data_dir, "events.json")
    for what, p in (("manifest", manifest), ("ground truth", events)):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p}: no {what} of the bundled benchmark; make it with "
                                    f"`eclipse-lite make-data --preset PRESET --out {data_dir}` (or pass "
                                    "--manifest/--events)")
    plans = load_plans(events)
    items = read_jsonl_manifest(manifest, missing="error")
    records = [VideoRecord(it.video_id, it.video_path, plans[it.video_id]) for it in items
               if it.video_id in plans]
    if not records:
        raise ValueError(f"none of the {len(items)} videos of {manifest} has a plan in {events}")
    return records
