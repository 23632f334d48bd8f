"""What every notebook does at its end: write ``OUT_DIR/metrics.json``, the numbers the tests read."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Mapping, Union

import numpy as np

from eclipse_lite.files import atomic_write_text


def write_metrics(metrics: Mapping[str, Any], path: Union[str, Path]) -> Dict[str, Any]:
    """Write ``metrics`` as ``metrics.json``: a flat dict of finite numbers and short strings
    (bools and numpy scalars become Python numbers), atomically. Returns what was written.

    Raises ValueError naming a metric that is NaN or infinite, TypeError naming one that is not a
    number or a string.
    """
    clean: Dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, (bool, np.bool_)):
            value = int(value)
        if isinstance(value, (np.integer, np.floating)):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"metric {key!r} is not finite: {value}")
        if not isinstance(value, (int, float, str)):
            raise TypeError(f"metric {key!r} has type {type(value).__name__}")
        clean[key] = value
    atomic_write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n", path)
    return clean
