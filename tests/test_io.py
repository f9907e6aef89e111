import os
import pathlib
import stat
import subprocess
import sys

import pytest

from longalign import io
from longalign.errors import UserError
from longalign.io import (atomic_dir, check_output, markdown_table, read_json, remove_stale_temps, remove_unfinished,
                          require_dir, write_json)


def test_atomic_dir_renames_into_place(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("x")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_refuses_non_empty_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(UserError, match="not empty"):
        with atomic_dir(out):
            pass
    assert (out / "old.txt").exists()
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_dir_accepts_empty_existing_dir(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
    assert (out / "a").exists()


# -- stale temporaries of killed runs, permissions, unfinished folders ---------------------------
def _dead_pid() -> int:
    """The id of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_dead_runs_are_removed_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    dead = _dead_pid()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        try:
            stale = [tmp_path / f".out.tmp-{dead}-abc", tmp_path / f".out.old-{dead}"]
            kept = [tmp_path / f".out.tmp-{alive.pid}-live", tmp_path / f".out.tmp-{os.getpid()}-mine",
                    tmp_path / f".other.tmp-{dead}-x", tmp_path / f".out.tmpx-{dead}", tmp_path / "out.tmp-1",
                    tmp_path / f".out.tmp-{dead}-link"]
            for d in stale + kept[:-1]:
                d.mkdir()
                (d / "part.bin").write_bytes(b"x")
            kept[-1].symlink_to(kept[0], target_is_directory=True)  # a link is never followed or removed
            (tmp_path / f".out.tmp-{dead}-file").write_text("a file, not our folder")
            kept.append(tmp_path / f".out.tmp-{dead}-file")
            assert sorted(remove_stale_temps(out)) == sorted(stale)
            with pytest.raises(subprocess.TimeoutExpired):  # looking whether a process lives must not signal it
                alive.wait(timeout=0.5)
            assert not any(p.exists() for p in stale)
            assert all(p.exists() for p in kept)
            assert (kept[0] / "part.bin").exists()
            # the stage's own writer does the same before it starts
            (tmp_path / f".out.tmp-{dead}-again").mkdir()
            with atomic_dir(out) as tmp:
                (tmp / "a").write_text("1")
            assert not (tmp_path / f".out.tmp-{dead}-again").exists() and (out / "a").exists()
        finally:
            alive.kill()


@pytest.mark.parametrize("listing", [sorted, lambda paths: sorted(paths, reverse=True)])
def test_a_live_runs_folder_does_not_stop_the_cleanup_of_the_others(tmp_path, monkeypatch, listing):
    """Whatever order the directory lists its entries in, a folder that is not ours to remove
    (another name, a live run) is skipped and the dead runs' folders after it are still removed."""
    dead = _dead_pid()
    mine = tmp_path / f".out.tmp-{os.getpid()}-0live"
    other = tmp_path / ".other.tmp-1-x"
    stale = [tmp_path / f".out.tmp-{dead}-{i}" for i in range(3)]
    for d in [mine, other, *stale]:
        d.mkdir()
    listed = pathlib.Path.iterdir
    monkeypatch.setattr(pathlib.Path, "iterdir", lambda self: iter(listing(listed(self))))
    assert sorted(remove_stale_temps(tmp_path / "out")) == stale
    assert mine.exists() and other.exists() and not any(d.exists() for d in stale)


def test_a_folder_of_another_users_live_process_is_kept(tmp_path, monkeypatch):
    folder = tmp_path / f".out.tmp-{_dead_pid()}-theirs"
    folder.mkdir()

    def kill(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(io.os, "kill", kill)
    assert remove_stale_temps(tmp_path / "out") == [] and folder.exists()


def test_a_full_disk_is_a_user_error_naming_the_output(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.tempfile, "mkdtemp", full)
    with pytest.raises(UserError, match=r"^cannot write output (.*out): No space left on device \(\1\)$"):
        with atomic_dir(tmp_path / "out"):
            pass


@pytest.mark.parametrize("umask, dirs, files", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_outputs_get_the_modes_the_umask_allows(tmp_path, umask, dirs, files):
    outside = tmp_path / "secret.txt"
    outside.write_text("s")
    outside.chmod(0o600)
    old = os.umask(umask)
    try:
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "sub").mkdir(mode=0o700)
            (tmp / "sub" / "weights.bin").write_bytes(b"w")
            (tmp / "sub" / "weights.bin").chmod(0o600)
            (tmp / "top.txt").write_text("t")
            (tmp / "top.txt").chmod(0o600)
            (tmp / "link").symlink_to(outside)
    finally:
        os.umask(old)
    out = tmp_path / "out"
    mode = lambda p: stat.S_IMODE(os.lstat(p).st_mode)  # noqa: E731
    assert mode(out) == dirs and mode(out / "sub") == dirs
    assert mode(out / "top.txt") == files and mode(out / "sub" / "weights.bin") == files
    assert mode(outside) == 0o600  # the target of a link is not ours to change


def test_unfinished_folders_are_forgotten_and_removable(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "failed") as tmp:
            raise RuntimeError("killed")
    assert not tmp.exists() and tmp not in io._UNFINISHED
    with atomic_dir(tmp_path / "done") as tmp:
        assert tmp in io._UNFINISHED
    assert tmp not in io._UNFINISHED
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(tmp_path / "interrupted") as tmp:
            (tmp / "half").write_text("x")
            remove_unfinished()  # what the CLI does on Ctrl-C
            assert not tmp.exists() and tmp not in io._UNFINISHED
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done"]


def test_check_output_and_location_errors_are_user_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"^output .*file exists and is not a directory$"):
        check_output(tmp_path / "file")
    with pytest.raises(UserError, match=r"^cannot create output .*file[/\\]out: .*file is not a directory$"):
        with atomic_dir(tmp_path / "file" / "out"):
            pass
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        check_output(full)  # overwrite is off unless asked for
    check_output(full, overwrite=True)
    check_output(tmp_path / "new")


# -- small helpers ------------------------------------------------------------------------------
def test_json_is_written_atomically_and_read_back(tmp_path):
    path = tmp_path / "stats.json"
    write_json(path, {"b": 1, "a": ["ü", 2.5]})
    assert path.read_text(encoding="utf-8") == '{\n  "a": [\n    "ü",\n    2.5\n  ],\n  "b": 1\n}\n'
    assert read_json(path) == {"a": ["ü", 2.5], "b": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]  # no temporary left
    with pytest.raises(UserError, match=r"^missing file: .*nope\.json$"):
        read_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match=r"^not valid JSON: .*bad\.json \("):
        read_json(tmp_path / "bad.json")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(UserError, match="not valid JSON"):
        read_json(tmp_path / "binary.json")


def test_require_dir(tmp_path):
    assert require_dir(str(tmp_path), "corpus") == tmp_path
    with pytest.raises(UserError, match=r"^corpus not found: .*missing$"):
        require_dir(tmp_path / "missing", "corpus")
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match=r"^corpus is not a directory: .*f$"):
        require_dir(tmp_path / "f", "corpus")


def test_markdown_table():
    assert markdown_table([(1, "a"), (2.5, None)], ("n", "name")) == (
        "| n | name |\n|---|---|\n| 1 | a |\n| 2.5 | None |\n")
    assert markdown_table([], ("x",)) == "| x |\n|---|\n"
