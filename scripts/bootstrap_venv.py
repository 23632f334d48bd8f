"""Create ``.venv`` with a working pip, on a machine that has only ``python3``.

Debian and Ubuntu ship ``python3`` without ``ensurepip`` (the ``python3-venv`` package), so
``python3 -m venv`` fails there. This script tries the normal way first; when ensurepip is
missing it creates the environment without pip and installs pip from its wheel on PyPI.
Usage: ``python3 scripts/bootstrap_venv.py .venv``
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.request
import venv
from pathlib import Path


def main(target: str) -> None:
    path = Path(target)
    python = path / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-m", "pip", "--version"],
                                          capture_output=True).returncode == 0:
        return
    try:
        venv.create(path, with_pip=True, clear=True)
        return
    except Exception as exc:  # ensurepip missing (Debian/Ubuntu without python3-venv)
        print(f"venv with pip failed ({exc}); installing pip from PyPI instead", file=sys.stderr)
    venv.create(path, with_pip=False, clear=True)
    meta = json.load(urllib.request.urlopen("https://pypi.org/pypi/pip/json", timeout=60))
    wheel = next(f for f in meta["urls"] if f["packagetype"] == "bdist_wheel")
    with tempfile.TemporaryDirectory() as tmp:
        whl = Path(tmp) / wheel["filename"]
        whl.write_bytes(urllib.request.urlopen(wheel["url"], timeout=300).read())
        # a pip wheel can run itself: python pip.whl/pip install pip.whl
        subprocess.run([str(python), f"{whl}/pip", "install", "--no-index", str(whl)], check=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".venv")
