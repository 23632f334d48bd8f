"""eclipse_lite.files: atomic writes and the temporaries they leave when a writer dies."""
import os

import pytest

from eclipse_lite.files import (atomic_path, atomic_write_text, is_stale_temporary, swap_in_folder,
                                temporary_name, writer_pid)


def test_temporary_names_carry_the_writer_pid_whatever_the_random_part():
    for keep in (False, True):
        for _ in range(200):                      # the random part is sometimes all digits
            tmp = temporary_name("/x/model.safetensors", keep_extension=keep)
            assert tmp.name.startswith(".model") and writer_pid(tmp) == os.getpid()
            assert not is_stale_temporary(tmp)    # this process is alive
    assert writer_pid(".a.safetensors.12345.87654321.tmp") == 12345
    assert writer_pid(".plot.12345.0badcafe.tmp.png") == 12345
    assert writer_pid("notes.txt") == -1 and is_stale_temporary("notes.txt")


def test_atomic_writes_leave_the_old_file_or_the_whole_new_one(tmp_path):
    path = tmp_path / "sub" / "results.json"
    atomic_write_text("old", path)
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise KeyboardInterrupt
    assert path.read_text() == "old" and os.listdir(path.parent) == ["results.json"]
    atomic_write_text("new", path)
    assert path.read_text() == "new"


def test_swap_in_folder_replaces_a_folder_whole(tmp_path):
    final, partial = tmp_path / "last", tmp_path / "last.partial"
    final.mkdir()
    (final / "a").write_text("old")
    partial.mkdir()
    (partial / "a").write_text("new")
    swap_in_folder(partial, final)
    assert (final / "a").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["last"]
