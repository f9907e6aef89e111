"""Issue #18's reproductions, run as a new user would: each ends in one ``error:`` line, exit code 2,
no traceback and nothing left in the output location, or (links in ``dir:``, temp folders of killed
runs, sourcing that keeps nothing) in the corrected behaviour."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from longalign.config import MAX_TOKENS


def run_cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "longalign.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600, env=env)


def assert_one_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "\x1b[" not in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def stages(tmp_path_factory, tiny_model):
    """A sourcing output and a generation output of the tiny preset (what the issue calls out/chats)."""
    root = tmp_path_factory.mktemp("stages")
    result = run_cli("source", "--preset", "tiny", "-o", root / "corpus")
    assert result.returncode == 0, result.stderr
    result = run_cli("generate", "--preset", "tiny", "--corpus", root / "corpus", "-o", root / "chats")
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture
def scratch(tmp_path):
    (tmp_path / "afile").write_text("hi\n")
    return tmp_path


# 1. output locations that cannot be written


@pytest.mark.parametrize("argv", [
    ["pack", "--chats", "{chats}", "-o", "{tmp}/afile/sub", "--preset", "tiny"],
    ["run", "--preset", "tiny", "--root", "{tmp}/afile"],
    ["compile", "-o", "{tmp}/afile/x.yaml"],
    ["components", "export", "{tmp}/afile"],
])
def test_output_under_a_file(stages, scratch, argv):
    argv = [a.replace("{tmp}", str(scratch)).replace("{chats}", str(stages / "chats")) for a in argv]
    assert_one_error(run_cli(*argv, cwd=scratch), "afile")
    assert (scratch / "afile").read_text() == "hi\n"
    assert hidden_leftovers(scratch) == []


def test_output_parent_without_write_permission(stages, tmp_path):
    if os.geteuid() == 0:  # root writes anywhere a mode allows nothing: use a folder no one may write
        parent = Path("/sys/longalign-test")
        try:
            parent.mkdir()
        except PermissionError:
            pass
        else:
            parent.rmdir()
            pytest.skip("no folder here refuses root")
    else:
        parent = tmp_path / "readonly"
        parent.mkdir()
        parent.chmod(0o555)
    line = assert_one_error(run_cli("pack", "--chats", stages / "chats", "-o", parent / "sub",
                                    "--preset", "tiny"), str(parent))
    assert "not permitted" in line or "permission" in line.lower()


# 2. sizes are bounded before anything is allocated


@pytest.mark.parametrize("value", ["99999999999999999999", "4000000000", str(MAX_TOKENS + 1)])
def test_max_len_has_a_ceiling(stages, tmp_path, value):
    out = tmp_path / "packed"
    assert_one_error(run_cli("pack", "--chats", stages / "chats", "-o", out, "--preset", "tiny",
                             "--max-len", value), "packing.max_len", str(MAX_TOKENS))
    assert not out.exists() and hidden_leftovers(tmp_path) == []


def test_scoring_lengths_have_a_ceiling(tmp_path):
    assert_one_error(run_cli("score", "--model", "embedded:tiny", "-o", tmp_path / "s", "--preset", "tiny",
                             "--set", f"lengths=[{MAX_TOKENS * 4}]"), "scoring.lengths")


# 3. dir: follows links (loop-safe), or counts them when told not to


def _linked_tree(tmp_path: Path) -> Path:
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for n in range(3):
        (blobs / f"b{n}").write_text(f"Document {n}. " + " ".join(f"word{n}x{i}" for i in range(150)))
    snapshot = tmp_path / "snapshot"
    (snapshot / "sub").mkdir(parents=True)
    os.symlink(blobs / "b0", snapshot / "a.txt")  # a Hugging Face snapshot: links into blobs/
    os.symlink(blobs / "b1", snapshot / "sub" / "b.md")
    (snapshot / "c.txt").write_text((blobs / "b2").read_text())
    os.symlink(snapshot, snapshot / "sub" / "loop")  # a cycle
    os.symlink(tmp_path / "gone", snapshot / "broken.txt")
    return snapshot


def test_dir_follows_links_to_files_and_ends_loops(tmp_path):
    snapshot = _linked_tree(tmp_path)
    out = tmp_path / "corpus"
    result = run_cli("source", "--preset", "tiny", "--source", f"dir:{snapshot}", "--min-tokens", "16",
                     "-o", out)
    assert result.returncode == 0, result.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["documents_kept"] == 3
    assert stats["rejected"] == {"broken_link": 1, "link_loop": 1}


def test_dir_can_skip_links_and_counts_them(tmp_path):
    snapshot = _linked_tree(tmp_path)
    out = tmp_path / "corpus"
    result = run_cli("source", "--preset", "tiny", "--source", f"dir:{snapshot}?follow_links=false",
                     "--min-tokens", "16", "-o", out)
    assert result.returncode == 0, result.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["documents_kept"] == 1
    assert stats["rejected"] == {"link_skipped": 4}
    assert "link_skipped" in (out / "summary.md").read_text()


# 4. temp folders of killed runs are removed by the next run; SIGINT (9) says nothing was written


def _start_and_wait_for_temp(tmp_path: Path, out: Path) -> subprocess.Popen:
    # SIGINT at its default: a parent that ignores it (pytest-xdist's workers do) would pass that on
    proc = subprocess.Popen([sys.executable, "-m", "longalign.cli", "source", "--preset", "tiny",
                             "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not any(p.name.startswith(f".{out.name}.tmp-") for p in tmp_path.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return proc


def test_rerun_removes_temp_folders_of_killed_runs_only(tmp_path, tiny_model):
    out = tmp_path / "corpus"
    proc = _start_and_wait_for_temp(tmp_path, out)
    proc.kill()
    proc.communicate()
    (left,) = [p for p in tmp_path.iterdir() if p.name.startswith(".corpus.tmp-")]
    # a live process's temp folder (this test's pid) and someone else's folder stay untouched
    live = tmp_path / f".corpus.tmp-{os.getpid()}-live"
    live.mkdir()
    other = tmp_path / ".notes.tmp-1-x"
    other.mkdir()
    result = run_cli("source", "--preset", "tiny", "-o", out)
    assert result.returncode == 0, result.stderr
    assert not left.exists()
    assert hidden_leftovers(tmp_path) == sorted([live.name, other.name])


def test_sigint_says_nothing_was_written(tmp_path, tiny_model):
    out = tmp_path / "corpus"
    proc = _start_and_wait_for_temp(tmp_path, out)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("interrupted")] == [
        "interrupted: nothing was written (unfinished outputs are removed)"]
    assert not out.exists() and hidden_leftovers(tmp_path) == []


# 5. config files


def test_config_file_not_utf8(stages, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_bytes("packing:\n  strategy: pack # caf\u00e9\n".encode("latin-1"))
    assert_one_error(run_cli("pack", "--chats", stages / "chats", "-o", tmp_path / "p", "--config", config),
                     "c.yaml", "UTF-8")
    assert not (tmp_path / "p").exists()


def test_yaml_error_has_line_and_column(stages, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("packing:\n  strategy: pack\n  max_len: [1\n")
    assert_one_error(run_cli("pack", "--chats", stages / "chats", "-o", tmp_path / "p", "--config", config),
                     "c.yaml", "line 4, column 1")


# 6. scoring checks lengths before loading weights


@pytest.fixture
def model_with_bad_weights(tmp_path, tiny_model):
    """The tiny model's config and tokenizer with a weights file that fails to load."""
    from longalign.models import resolve_model

    model = tmp_path / "model"
    shutil.copytree(resolve_model(tiny_model), model)
    (model / "model.safetensors").write_bytes(b"not weights")
    return model


@pytest.mark.parametrize("key, lengths, fragment", [("lengths", "[64]", "too short"),
                                                    ("lengths", "[100000]", "window"),
                                                    ("recall_lengths", "[100000]", "window")])
def test_scoring_lengths_checked_before_weights_load(stages, tmp_path, model_with_bad_weights,
                                                     key, lengths, fragment):
    out = tmp_path / "scores"
    assert_one_error(run_cli("score", "--preset", "tiny", "--model", model_with_bad_weights, "--corpus",
                             stages / "corpus", "--set", f"{key}={lengths}", "-o", out),
                     fragment, f"scoring.{key}")
    assert not out.exists()


# 7. sourcing reports


def test_all_rejected_gives_the_real_reasons_and_writes_stats(tmp_path):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "bin.txt").write_bytes(b"\x00\x01binary")
    (texts / "short.txt").write_text("A short note with a few words. " * 3)
    out = tmp_path / "corpus"
    line = assert_one_error(run_cli("source", "--preset", "tiny", "--source", f"dir:{texts}", "-o", out),
                            "binary 1", "too_short 1", str(out / "stats.json"))
    assert "no documents kept from 2 read" in line
    stats = json.loads((out / "stats.json").read_text())
    assert stats["documents_kept"] == 0 and stats["rejected"] == {"binary": 1, "too_short": 1}
    assert not list(out.glob("*.parquet"))
    # a rerun with a fixed source replaces that report without --overwrite
    (texts / "long.txt").write_text(" ".join(f"word{i}" for i in range(300)))
    result = run_cli("source", "--preset", "tiny", "--source", f"dir:{texts}", "-o", out)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "stats.json").read_text())["documents_kept"] == 1


def test_kept_read_and_split_pieces_agree(tmp_path):
    texts = tmp_path / "texts"
    texts.mkdir()
    paragraphs = [" ".join(f"p{p}w{i}" for i in range(60)) for p in range(40)]
    (texts / "long.txt").write_text("\n\n".join(paragraphs))
    (texts / "whole.txt").write_text(paragraphs[0].replace("p", "q"))
    out = tmp_path / "corpus"
    result = run_cli("source", "--preset", "tiny", "--source", f"dir:{texts}", "--min-tokens", "64",
                     "--max-tokens", "400", "-o", out)
    assert result.returncode == 0, result.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["documents_read"] == 2 and stats["split_documents"] == 1
    assert stats["pieces_kept"] >= 1 and stats["unused_after_cap"] >= 1 and stats["documents_kept"] == 1 + stats["pieces_kept"]
    assert stats["pieces"] == stats["pieces_kept"] + stats["unused_after_cap"] + sum(
        n for r, n in stats["rejected"].items())
    summary = (out / "summary.md").read_text()
    assert (f"Read 2 records and kept **{stats['documents_kept']}** documents" in summary
            and f"1 whole records and {stats['pieces_kept']} pieces of 1 over-long records" in summary)


# 9. permissions and help


def test_every_artifact_has_the_same_permissions(tmp_path):
    from longalign.io import atomic_dir

    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "stats.json").write_text("{}")
        fd = os.open(tmp / "model.safetensors", os.O_CREAT | os.O_WRONLY, 0o600)  # as some writers do
        os.close(fd)
        (tmp / "sub").mkdir(mode=0o700)
    umask = os.umask(0)
    os.umask(umask)
    assert {oct(p.stat().st_mode & 0o777) for p in out.iterdir() if p.is_file()} == {oct(0o666 & ~umask)}
    assert oct((out / "sub").stat().st_mode & 0o777) == oct(0o777 & ~umask)


def test_help_renders_every_spec_form():
    result = run_cli("source", "--help", env={**os.environ, "COLUMNS": "400"})
    for form in ("jsonl:PATH[#field]", "parquet:PATH[#field]", "hf:NAME[:config][:split]"):
        assert form in result.stdout
