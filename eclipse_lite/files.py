"""Atomic writes: a file or a folder is either the old one or the complete new one, never half.

    with atomic_path("runs/x/plot.png") as tmp:      # write anything to tmp; it becomes the file
        fig.savefig(tmp)
    atomic_write_text(json.dumps(results), "runs/x/results.json")
    swap_in_folder(Path("runs/x/last.partial"), Path("runs/x/last"))

A file is written under a hidden temporary name in its own folder (so the rename never crosses
file systems), flushed to disk, then renamed over the target with ``os.replace``; a failure or an
interrupt removes the temporary file. Temporary names carry the process id
(``.<name>.<pid>.<random>.tmp``), so a clean-up can tell a dead writer's leftovers from a live
writer's file (``is_stale_temporary``).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]
TEMPORARY_SUFFIX = ".tmp"


def temporary_name(path: PathLike, keep_extension: bool = False) -> Path:
    """``<folder>/.<name>.<pid>.<random>.tmp`` beside ``path`` (``….tmp<ext>`` with
    ``keep_extension``, for writers that pick the format from the extension)."""
    path = Path(path)
    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    if keep_extension:
        return path.with_name(f".{path.stem}.{tag}{TEMPORARY_SUFFIX}{path.suffix}")
    return path.with_name(f".{path.name}.{tag}{TEMPORARY_SUFFIX}")


def writer_pid(temporary: PathLike) -> int:
    """The process id in a :func:`temporary_name` (``.<name>.<pid>.<random>.tmp[<ext>]``), or -1
    when the name is not one."""
    name = Path(temporary).name
    head, found, _ = name.rpartition(TEMPORARY_SUFFIX)
    parts = head.rsplit(".", 2) if found else []
    if len(parts) == 3 and parts[1].isdigit():
        return int(parts[1])
    return -1


def is_stale_temporary(temporary: PathLike) -> bool:
    """True when the process that named ``temporary`` no longer runs on this machine."""
    pid = writer_pid(temporary)
    if pid <= 0:
        return True
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:      # another user's live process
        return False
    return False


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: PathLike, keep_extension: bool = True, mode: int = 0o666) -> Iterator[str]:
    """Yield a temporary path beside ``path``; when the block succeeds, the file written there
    is flushed and renamed to ``path``. The parent folder is created; the file gets ``mode``
    less the umask, as ``open`` would give it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, keep_extension=keep_extension)
    try:
        yield str(tmp)
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file of {path}")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, mode & ~umask)
        _fsync(tmp)
        os.replace(str(tmp), str(path))
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(data: bytes, path: PathLike) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, keep_extension=False) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(text: str, path: PathLike) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(text.encode("utf-8"), path)


def swap_in_folder(partial: Path, final: Path) -> None:
    """Replace folder ``final`` by the complete folder ``partial`` with two renames.

    ``final`` → ``final.old``, ``partial`` → ``final``, remove ``final.old``. At every instant a
    complete copy exists as ``final`` or ``final.old``, so a reader that falls back to
    ``final.old`` (as ``train.state.find_checkpoint`` does) never sees a half-written folder.
    """
    partial, final = Path(partial), Path(final)
    old = final.with_name(final.name + ".old")
    if final.exists():
        if old.exists():
            shutil.rmtree(old)   # final is complete, so the older copy is not needed
        os.replace(final, old)
    os.replace(partial, final)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
