"""git: repositories and source trees as one document each (real git repositories made here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from sourcing_helpers import write

from longalign.errors import UserError
from longalign.sourcing.readers import GitReader, Record, Rejection, open_reader

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t",
                           "-c", "commit.gpgsign=false", *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def make_repo(root: Path) -> Path:
    write(root / "README.md", "# Demo\n\nA demo repository.\n")
    write(root / "src" / "b.py", "def b():\n    return 2\n")
    write(root / "src" / "a.py", "def a():\n    return 1\n")
    write(root / "src" / "z.c", "int z(void) { return 3; }\n")
    write(root / "tests" / "test_a.py", "assert True\n")
    write(root / "logo.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x00")
    write(root / "latin1.txt", "caf\u00e9\n".encode("latin-1"))
    write(root / "big.txt", "x" * 5000 + "\n")
    write(root / ".gitignore", "build/\n")
    write(root / "build" / "out.py", "generated = True\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    write(root / "untracked.py", "print('not in git')\n")
    return root


def read_all(reader) -> list:
    items = list(reader.index())
    for candidate in reader.stream(None):
        items.extend(candidate)
    return items


def test_git_repository_is_one_document_of_tracked_files_in_path_order(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "demo")
    items = read_all(open_reader(f"git:{repo}?max_file_bytes=4096"))
    [doc] = [i for i in items if isinstance(i, Record)]
    headers = [line for line in doc.data.splitlines() if line.startswith("# ===== file: ")]
    assert headers == [f"# ===== file: {p} =====" for p in
                       [".gitignore", "README.md", "src/a.py", "src/b.py", "src/z.c", "tests/test_a.py"]]
    assert "# ===== file: src/a.py =====\ndef a():\n    return 1\n\n\n# ===== file: src/b.py" in doc.data
    assert "untracked" not in doc.data and "generated" not in doc.data
    assert doc.metadata["commit"] == git(repo, "rev-parse", "HEAD")
    assert doc.metadata["files"] == 6 and doc.language == "python"
    assert doc.metadata["repository"] == "demo"
    skipped = {Path(i.uri).name: i.reason for i in items if isinstance(i, Rejection)}
    assert skipped == {"logo.png": "binary", "latin1.txt": "undecodable", "big.txt": "too_large"}
    assert all(i.part for i in items if isinstance(i, Rejection))
    again = [i for i in read_all(open_reader(f"git:{repo}?max_file_bytes=4096")) if isinstance(i, Record)]
    assert again[0].data == doc.data  # stable


def test_git_globs_and_document_cap(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "demo")
    items = read_all(open_reader(f"git:{repo}?include=*.py,*.c&exclude=tests/*"))
    [doc] = [i for i in items if isinstance(i, Record)]
    assert [line[14:-6] for line in doc.data.splitlines() if line.startswith("# =====")] == [
        "src/a.py", "src/b.py", "src/z.c"]
    capped = read_all(open_reader(f"git:{repo}?include=*.py,*.c&max_doc_bytes=50"))
    [doc] = [i for i in capped if isinstance(i, Record)]
    assert doc.metadata["files"] == 2  # a.py and b.py fit in 50 bytes, z.c does not
    [cap] = [i for i in capped if isinstance(i, Rejection)]
    assert cap.reason == "size_cap" and cap.uri.endswith("src/z.c") and "1 later" in cap.detail


def test_plain_tree_and_each_subdirectory(tmp_path: Path) -> None:
    make_repo(tmp_path / "repos" / "one")
    write(tmp_path / "repos" / "two" / "main.go", "package main\n")
    write(tmp_path / "repos" / "two" / ".hidden" / "x.go", "package hidden\n")
    write(tmp_path / "repos" / "three" / "data.bin", b"\x00\x01")
    reader = open_reader(f"git:{tmp_path / 'repos'}?each=true")
    assert isinstance(reader, GitReader)
    items = read_all(reader)
    records = {Path(i.uri).name: i for i in items if isinstance(i, Record)}
    assert sorted(records) == ["one", "two"]
    assert records["two"].data == "# ===== file: main.go =====\npackage main\n"
    assert records["two"].metadata["commit"] is None and records["two"].language == "go"
    empty = [i for i in items if isinstance(i, Rejection) and not i.part]
    assert [(Path(i.uri).name, i.reason) for i in empty] == [("three", "empty")]


def test_git_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="path not found"):
        open_reader(f"git:{tmp_path / 'missing'}")
    write(tmp_path / "f.txt", "x")
    with pytest.raises(UserError, match="not a directory"):
        open_reader(f"git:{tmp_path / 'f.txt'}")


def test_stage_reports_files_left_out_and_strict_tolerates_them(tmp_path: Path) -> None:
    from longalign.config import SourcingConfig
    from longalign.sourcing import source

    repo = make_repo(tmp_path / "demo")
    spec = f"git:{repo}?max_file_bytes=4096"
    cfg = SourcingConfig(sources=[spec], min_tokens=10, max_tokens=4000, strict=True)
    stats = source(cfg, "embedded:tiny", tmp_path / "out")
    assert stats["documents_kept"] == 1 and stats["rejected"] == {}
    assert stats["sources"][spec]["parts_skipped"] == {"binary": 1, "too_large": 1, "undecodable": 1}
    assert stats["parts_skipped"] == {"binary": 1, "too_large": 1, "undecodable": 1}
    assert "Files left out of repository documents" in (tmp_path / "out" / "summary.md").read_text()
