"""scripts/check_disk.py, the free-space check `make install` runs before pip."""
from script_loader import load_script

check_disk = load_script("check_disk")


def test_too_little_free_space_fails_naming_the_directory_and_the_need(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ECLIPSE_LITE_SKIP_DISK_CHECK", raising=False)
    env = tmp_path / "not-yet" / ".venv"        # does not exist yet: its nearest parent is measured
    have = check_disk.free_gib(tmp_path)
    assert check_disk.main([str(env), "--need-gib", str(have + 1000)]) == 1
    err = capsys.readouterr().err
    assert str(env) in err and f"{have + 1000:.0f} GiB" in err and "ECLIPSE_LITE_SKIP_DISK_CHECK" in err
    assert check_disk.main([str(env), "--need-gib", "0.001"]) == 0


def test_an_env_that_has_torch_or_the_skip_variable_passes(tmp_path, monkeypatch):
    monkeypatch.delenv("ECLIPSE_LITE_SKIP_DISK_CHECK", raising=False)
    impossible = ["--need-gib", "1e12"]
    assert check_disk.main([str(tmp_path), *impossible]) == 1
    torch_init = tmp_path / "lib" / "python3.11" / "site-packages" / "torch" / "__init__.py"
    torch_init.parent.mkdir(parents=True)
    torch_init.touch()
    assert check_disk.main([str(tmp_path), *impossible]) == 0
    monkeypatch.setenv("ECLIPSE_LITE_SKIP_DISK_CHECK", "1")
    assert check_disk.main([str(tmp_path / "other"), *impossible]) == 0

