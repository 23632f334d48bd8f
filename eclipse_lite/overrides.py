"""``--set key=value`` overrides for the command line, typed by the dataclass field they set."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence, Tuple


def _coerce(key: str, raw: str, field: dataclasses.Field) -> Any:
    """The text of ``--set key=value`` as the type of the field."""
    low = raw.strip().lower()
    hint = str(field.type)
    default = field.default if field.default is not dataclasses.MISSING else None
    if low in ("none", "null") and ("Optional" in hint or default is None):
        return None
    if key == "av_layers":
        if low == "all":
            return None
        parts = [p for p in low.strip("[]() ").replace(",", " ").split() if p]
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"--set av_layers={raw!r}: expected layer indices like 0,1,2, 'all' "
                             "or 'none'") from None
    if "Tuple" in hint or "tuple" in hint:
        try:
            return tuple(float(p) for p in low.strip("[]() ").replace(",", " ").split())
        except ValueError:
            raise ValueError(f"--set {key}={raw!r}: expected numbers like 0.9,0.98") from None
    if isinstance(default, bool) or "bool" in hint:
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--set {key}={raw!r}: expected true or false")
    try:
        if isinstance(default, int) or hint.endswith("int") or "Optional[int]" in hint:
            return int(raw)
        if isinstance(default, float) or "float" in hint:
            return float(raw)
    except ValueError:
        raise ValueError(f"--set {key}={raw!r}: expected a number") from None
    return raw.strip()


def parse_sets(pairs: Optional[Sequence[str]], *classes: type) -> Tuple[Dict[str, Any], ...]:
    """Split ``["fusion=none", "epochs=3"]`` into one typed dict per dataclass in ``classes``.

    A key goes to the first class that has a field of that name; an unknown key raises a
    ``ValueError`` listing every known field.
    """
    fields = [{f.name: f for f in dataclasses.fields(c)} for c in classes]
    out: Tuple[Dict[str, Any], ...] = tuple({} for _ in classes)
    for pair in pairs or ():
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, raw = (s.strip() for s in pair.split("=", 1))
        for i, known in enumerate(fields):
            if key in known:
                out[i][key] = _coerce(key, raw, known[key])
                break
        else:
            names = sorted(set().union(*fields))
            raise ValueError(f"--set {key}: unknown setting; known: {', '.join(names)}")
    return out
