"""Data fingerprints: equal for unchanged data, different for every change the readers would see."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sourcing_helpers import write

from longalign.config import SourcingConfig
from longalign.errors import UserError
from longalign.sourcing.fingerprint import UNRESOLVED, fingerprint, metrics, source_fingerprint


def fp(*sources: str, mode: str = "stat") -> str:
    return fingerprint(SourcingConfig(sources=list(sources), fingerprint=mode))["digest"]


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t",
                           "-c", "commit.gpgsign=false", *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def test_dir_changes_with_added_edited_or_touched_files_only(tmp_path):
    write(tmp_path / "d" / "a.txt", "alpha\n")
    write(tmp_path / "d" / "sub" / "b.md", "beta\n")
    spec = f"dir:{tmp_path / 'd'}"
    first = fp(spec)
    assert fp(spec) == first
    write(tmp_path / "d" / ".hidden", "skipped by the reader\n")
    write(tmp_path / "d" / "__pycache__" / "x.pyc", b"\0")
    assert fp(spec) == first, "files the reader skips must not count"
    write(tmp_path / "d" / "c.txt", "gamma\n")
    added = fp(spec)
    assert added != first
    bump_mtime(tmp_path / "d" / "c.txt")
    assert fp(spec) != added, "stat mode sees a new modification time"
    entry = source_fingerprint(spec)
    assert (entry["kind"], entry["files"], entry["bytes"]) == ("files", 3, 17)


def test_dir_content_mode_ignores_touch_but_sees_same_size_edits(tmp_path):
    path = write(tmp_path / "d" / "a.txt", "alpha\n")
    spec = f"dir:{tmp_path / 'd'}"
    first = fp(spec, mode="content")
    bump_mtime(path)
    assert fp(spec, mode="content") == first
    st = path.stat()
    path.write_text("omega\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime, new content
    assert fp(spec) == fp(spec)  # stat mode cannot see this one ...
    assert fp(spec, mode="content") != first  # ... content mode does


def test_dir_include_and_exclude_limit_what_counts(tmp_path):
    write(tmp_path / "d" / "a.md", "alpha\n")
    spec = f"dir:{tmp_path / 'd'}?include=*.md"
    first = fp(spec)
    write(tmp_path / "d" / "b.txt", "not included\n")
    assert fp(spec) == first
    write(tmp_path / "d" / "c.md", "included\n")
    assert fp(spec) != first
    assert fp(f"dir:{tmp_path / 'd'}?include=*.txt") != fp(spec)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_git_follows_commits_and_work_tree_edits_of_tracked_files(tmp_path):
    repo = tmp_path / "repo"
    write(repo / "src" / "a.py", "def a():\n    return 1\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "one")
    spec = f"git:{repo}"
    first = source_fingerprint(spec)
    assert first["kind"] == "git" and first["commit"] == git(repo, "rev-parse", "HEAD")
    write(repo / "notes.txt", "untracked: the reader does not read it\n")
    assert source_fingerprint(spec)["digest"] == first["digest"]
    write(repo / "src" / "a.py", "def a():\n    return 2\n")
    edited = source_fingerprint(spec)
    assert edited["modified"]["files"] == 1 and edited["digest"] != first["digest"]
    git(repo, "add", "src/a.py")
    git(repo, "commit", "-q", "-m", "two")
    committed = source_fingerprint(spec)
    assert committed["commit"] != first["commit"] and "modified" not in committed
    assert committed["digest"] not in (first["digest"], edited["digest"])
    assert fp(f"{spec}?exclude=*.txt") != fp(spec), "include/exclude settings are part of it"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_git_each_fingerprints_every_repository(tmp_path):
    for name in ("one", "two"):
        write(tmp_path / "repos" / name / "x.py", f"name = {name!r}\n")
        git(tmp_path / "repos" / name, "init", "-q")
        git(tmp_path / "repos" / name, "add", "-A")
        git(tmp_path / "repos" / name, "commit", "-q", "-m", "init")
    spec = f"git:{tmp_path / 'repos'}?each=true"
    first = source_fingerprint(spec)
    assert set(first["repositories"]) == {"one", "two"}
    write(tmp_path / "repos" / "two" / "y.py", "more = 1\n")
    git(tmp_path / "repos" / "two", "add", "-A")
    git(tmp_path / "repos" / "two", "commit", "-q", "-m", "more")
    assert source_fingerprint(spec)["digest"] != first["digest"]


def test_plain_tree_under_git_spec_counts_files_like_dir(tmp_path):
    write(tmp_path / "tree" / "a.py", "x = 1\n")
    spec = f"git:{tmp_path / 'tree'}"
    first = source_fingerprint(spec)
    assert first["kind"] == "files" and first["files"] == 1
    write(tmp_path / "tree" / "b.py", "y = 2\n")
    assert source_fingerprint(spec)["digest"] != first["digest"]


def test_jsonl_and_parquet_are_hashed_by_content(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = write(tmp_path / "t" / "rows.jsonl", '{"text": "one"}\n')
    spec = f"jsonl:{tmp_path / 't'}"
    first = fp(spec)
    bump_mtime(path)
    assert fp(spec) == first, "a touch does not change hashed content"
    write(tmp_path / "t" / "rows.jsonl", '{"text": "two"}\n')
    assert fp(spec) != first
    assert source_fingerprint(f"jsonl:{path}#text")["files"] == 1
    pq.write_table(pa.table({"text": ["a"]}), tmp_path / "p.parquet")
    before = fp(f"parquet:{tmp_path / 'p.parquet'}")
    pq.write_table(pa.table({"text": ["b"]}), tmp_path / "p.parquet")
    assert fp(f"parquet:{tmp_path / 'p.parquet'}") != before


def test_hf_hub_dataset_offline_uses_the_local_cache_or_says_it_is_unresolved(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    entry = source_fingerprint("hf:org/data:default:train")
    assert entry["revision"] is None and entry["note"] == UNRESOLVED
    assert metrics({"sources": [entry]})["unresolved"] == 1
    write(tmp_path / "hub" / "datasets--org--data" / "refs" / "main", "0123abcd\n")
    cached = source_fingerprint("hf:org/data:default:train")
    assert (cached["revision"], cached["revision_from"]) == ("0123abcd", "local hub cache")
    assert "note" not in cached and cached["digest"] != entry["digest"]


def test_hf_local_folder_counts_its_files(tmp_path):
    write(tmp_path / "saved" / "state.json", "{}")
    first = source_fingerprint(f"hf:{tmp_path / 'saved'}")
    assert first["kind"] == "files" and first["files"] == 1


def test_stdlib_is_the_python_version_and_path():
    entry = source_fingerprint("stdlib:")
    assert entry["python"] == sys.version.split()[0] and Path(entry["path"]).is_dir()


def test_overall_digest_follows_every_source_and_missing_paths_are_user_errors(tmp_path):
    write(tmp_path / "d" / "a.txt", "alpha\n")
    assert fp("stdlib:", f"dir:{tmp_path / 'd'}") != fp("stdlib:")
    with pytest.raises(UserError, match="path not found"):
        fp(f"dir:{tmp_path / 'missing'}")
    with pytest.raises(UserError, match="path not found"):
        fp(f"jsonl:{tmp_path / 'missing.jsonl'}")
