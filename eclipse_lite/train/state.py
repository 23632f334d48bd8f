"""Checkpoints of a training run: model, optimizer, schedule, scaler, RNG and data position.

``out_dir/last/`` holds ``model.safetensors`` + ``config.json`` (loadable with
``ECLIPSE.from_pretrained``), ``optimizer.safetensors`` (AdamW moments and RNG tensors) and
``trainer_state.json`` (everything else: schedule, scaler, RNG, data position, history);
``out_dir/best/`` (best validation epoch) the same without the optimizer file, which would
double its size and is only needed to resume. A directory is written whole under a temporary
name and swapped in with renames (see :func:`save_checkpoint`), so a crash never leaves a broken
``last``. Resuming restores all of it and skips the batches the interrupted epoch already used,
so a resumed run reproduces the uninterrupted loss curve bit for bit on a CPU.
"""
from __future__ import annotations

import json
import logging
import math
import random
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from eclipse_lite.checkpoints import atomic_save_safetensors, read_state_dict
from eclipse_lite.config import ModelConfig
from eclipse_lite.files import atomic_write_text, swap_in_folder
from eclipse_lite.train.config import RESUMABLE_CHANGES, TrainConfig

log = logging.getLogger(__name__)

STATE_FORMAT = 1


def _flatten_optimizer(sd: dict) -> Tuple[dict, Dict[str, Tensor]]:
    """An optimizer state dict as (JSON-able dict, tensors for safetensors)."""
    tensors: Dict[str, Tensor] = {}
    state = {}
    for pid, entry in sd["state"].items():
        flat = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                name = f"optimizer.{pid}.{key}"
                tensors[name] = value
                flat[key] = {"tensor": name}
            else:
                flat[key] = value
        state[str(pid)] = flat
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
              for g in sd["param_groups"]]
    return {"state": state, "param_groups": groups}, tensors


def _unflatten_optimizer(meta: dict, tensors: Dict[str, Tensor]) -> dict:
    state = {}
    for pid, entry in meta["state"].items():
        state[int(pid)] = {k: (tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v)
                           for k, v in entry.items()}
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()}
              for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _capture_rng() -> Tuple[dict, Dict[str, Tensor]]:
    """Python, numpy and torch (CPU + every initialised GPU) RNG states: (JSON part, tensors)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {"python": [version, list(internal), gauss],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = st
    return meta, tensors


def _restore_rng(meta: dict, tensors: Dict[str, Tensor]) -> None:
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][:torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)


def json_ready(obj: Any) -> Any:
    """Tuples → lists, numpy/torch scalars → python, non-finite floats → None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    if torch.is_tensor(obj) and obj.numel() == 1:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def save_checkpoint(directory: Union[str, Path], model: nn.Module, state: dict,
                    optimizer: Optional[torch.optim.Optimizer] = None,
                    audio_encoder: Optional[nn.Module] = None) -> Path:
    """Write a checkpoint directory atomically.

    Files: ``model.safetensors`` + ``config.json`` (as ``ECLIPSE.save_pretrained``: load with
    ``ECLIPSE.from_pretrained``), ``audio_encoder.safetensors`` (when given: a fine-tuned
    encoder), ``optimizer.safetensors`` (AdamW moments + RNG tensors; when ``optimizer`` is given)
    and ``trainer_state.json`` (``state`` plus the optimizer's hyper-parameters and the python /
    numpy RNG states). Everything goes to ``<directory>.partial`` first, which then replaces
    ``directory`` by renames (:func:`~eclipse_lite.files.swap_in_folder`): a crash at any point leaves the previous
    checkpoint loadable.
    """
    final = Path(directory)
    partial = final.with_name(final.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    atomic_save_safetensors(dict(model.state_dict()), partial / "model.safetensors")
    if getattr(model, "config", None) is not None and hasattr(model.config, "to_json"):
        atomic_write_text(model.config.to_json(), partial / "config.json")
    if audio_encoder is not None:
        atomic_save_safetensors(dict(audio_encoder.state_dict()), partial / "audio_encoder.safetensors")
    state = dict(state, format=STATE_FORMAT)
    if optimizer is not None:
        opt_meta, tensors = _flatten_optimizer(optimizer.state_dict())
        rng_meta, rng_tensors = _capture_rng()
        tensors.update(rng_tensors)
        atomic_save_safetensors(tensors, partial / "optimizer.safetensors")
        state.update(optimizer=opt_meta, rng=rng_meta)
    text = json.dumps(json_ready(state), indent=1, allow_nan=False)
    atomic_write_text(text + "\n", partial / "trainer_state.json")   # last: marks completeness
    swap_in_folder(partial, final)
    return final


def find_checkpoint(directory: Union[str, Path]) -> Optional[Path]:
    """The complete checkpoint at ``directory``, or at ``directory.old`` when a crash came between
    the two renames of :func:`save_checkpoint`, or None when there is none."""
    directory = Path(directory)
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if (candidate / "trainer_state.json").is_file() and (candidate / "model.safetensors").is_file():
            if candidate != directory:
                log.warning("using %s: %s is missing or incomplete (interrupted save)",
                            candidate, directory)
            return candidate
    return None


def load_checkpoint(directory: Union[str, Path], model: nn.Module,
                    optimizer: Optional[torch.optim.Optimizer] = None, scheduler=None,
                    scaler: Optional[torch.amp.GradScaler] = None,
                    audio_encoder: Optional[nn.Module] = None, restore_rng: bool = True) -> dict:
    """Load what :func:`save_checkpoint` wrote into the given objects; returns the trainer state.

    Tensors are read with safetensors (no pickle); a torch file would be read with
    ``weights_only=True``. Raises ``FileNotFoundError`` naming the missing file and ``KeyError``
    on parameter-name mismatches.
    """
    found = find_checkpoint(directory)
    if found is None:
        raise FileNotFoundError(f"no checkpoint in {directory} (expected model.safetensors and "
                                "trainer_state.json)")
    state = json.loads((found / "trainer_state.json").read_text())
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{found}/trainer_state.json has format {state.get('format')!r}; this "
                         f"version reads format {STATE_FORMAT}")
    weights = read_state_dict(found / "model.safetensors")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise KeyError(f"{found}/model.safetensors does not fit the model: missing "
                       f"{missing[:5]}, unexpected {unexpected[:5]}")
    if audio_encoder is not None and (found / "audio_encoder.safetensors").is_file():
        audio_encoder.load_state_dict(read_state_dict(found / "audio_encoder.safetensors"))
    if optimizer is not None or restore_rng:
        opt_file = found / "optimizer.safetensors"
        if not opt_file.is_file():
            raise FileNotFoundError(f"{opt_file} is missing: {found} is a weights-only checkpoint "
                                    "(e.g. best/), resume from last/")
        tensors = read_state_dict(opt_file)
        if optimizer is not None:
            sd = _unflatten_optimizer(state["optimizer"], tensors)
            names = [g.get("name") for g in optimizer.param_groups]
            stored = [g.get("name") for g in sd["param_groups"]]
            if names != stored:
                raise ValueError(f"optimizer groups {stored} in {found} differ from this run's "
                                 f"{names} (different model, fusion or train_audio_encoder?)")
            optimizer.load_state_dict(sd)
        if restore_rng:
            _restore_rng(state["rng"], tensors)
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return state


def check_resumable(stored: dict, tc: TrainConfig, model_cfg: Optional[ModelConfig], where: Path) -> None:
    old = dict(stored.get("train_config", {}))
    new = tc.to_dict()
    changed = sorted(k for k in set(old) | set(new)
                     if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if changed:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ValueError(f"cannot resume from {where}: the training configuration changed "
                         f"({detail}). Resume with the same settings, or start a new run.")
    if model_cfg is not None and stored.get("model_config") is not None:
        diff = model_cfg.fields_differing_from(stored["model_config"])
        if diff:
            raise ValueError(f"cannot resume from {where}: the model configuration differs in "
                             f"{diff}")
