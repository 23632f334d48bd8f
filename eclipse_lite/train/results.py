"""``results.json``: metrics with the configs, seed, git commit and versions that produced them."""
from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from eclipse_lite.files import atomic_write_text

log = logging.getLogger(__name__)


def git_commit(path: Union[str, Path, None] = None) -> Tuple[str, Optional[bool]]:
    """``(commit hash, working tree has uncommitted changes)`` of the repository holding ``path``
    (default: this package); ``("unknown", None)`` outside a git checkout or without git."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return "unknown", None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=where, capture_output=True, text=True, timeout=10)
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return head.stdout.strip(), dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def _config_dict(config: Any) -> Any:
    if config is None:
        return None
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    if isinstance(config, dict):
        return dict(config)
    raise TypeError(f"a config must be a dataclass with to_dict() or a dict, got {type(config).__name__}")


def write_results(path: Union[str, Path], metrics: Dict[str, Any], model_config: Any = None,
                  train_config: Any = None, seed: Optional[int] = None,
                  extra: Optional[Dict[str, Any]] = None) -> dict:
    """Write ``metrics`` with what produced them to a JSON file, atomically; returns the payload.

    Keys: "metrics" (as given, without the ``"sim"`` matrix), "model_config", "train_config",
    "seed", "git_commit" (``git rev-parse HEAD`` or "unknown"), "git_dirty", "torch_version",
    "created_utc", plus ``extra``. NaN or inf anywhere is an error (strict JSON).
    """
    metrics = {k: v for k, v in dict(metrics).items() if k != "sim"}
    bad = [k for k, v in metrics.items() if torch.is_tensor(v) and v.numel() > 1]
    if bad:
        raise TypeError(f"metrics {bad} are tensors; pass numbers, dicts or lists")
    commit, dirty = git_commit()
    payload = {"metrics": metrics, "model_config": _config_dict(model_config),
               "train_config": _config_dict(train_config), "seed": seed, "git_commit": commit,
               "git_dirty": dirty, "torch_version": torch.__version__,
               "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if extra:
        clash = sorted(set(extra) & set(payload))
        if clash:
            raise ValueError(f"extra keys {clash} would overwrite the standard ones")
        payload.update(extra)
    try:
        text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False,
                          default=lambda o: o.item() if hasattr(o, "item") else str(o))
    except ValueError as exc:
        raise ValueError(f"results for {path} hold NaN or inf: {exc}") from None
    atomic_write_text(text + "\n", Path(path))
    return payload
