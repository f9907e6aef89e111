"""The stage with the openai teacher: outputs, cost, secrets, and resuming from the request journal
after a stop or a kill."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fake_openai_server import API_KEY, KEY_ENV

from longalign.config import GenerationConfig, TeacherAPIConfig
from longalign.errors import UserError
from longalign.generation import generate

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("teacher_key")


def _config(server, **api) -> GenerationConfig:
    api = {"base_url": server.url, "api_key_env": KEY_ENV, "concurrency": 2, "backoff_seconds": 0.01,
           "backoff_max_seconds": 0.05, "price_prompt_per_million": 3.0, "price_completion_per_million": 15.0,
           **api}
    return GenerationConfig(teacher="openai", teacher_model="fake-teacher", synthetic_per_document=1,
                            max_new_tokens=64, api=TeacherAPIConfig(**api), seed=3)


def _rows(out: Path) -> list[dict]:
    rows = []
    for path in sorted(out.glob("samples-*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return sorted(rows, key=lambda r: r["id"])


def _journal_tags(directory: Path) -> set[str]:
    """The request tags of the replies stored in a journal folder."""
    tags = set()
    for path in directory.glob("requests-*.jsonl"):
        for line in path.read_text().splitlines():
            if line.endswith("}"):
                tags.add(json.loads(line)["text"].rsplit("[ref ", 1)[1].rstrip("]"))
    return tags


def test_stage_with_openai_teacher_writes_samples_usage_and_cost(server, corpus, tmp_path):
    stats = generate(_config(server), corpus, tmp_path / "out")
    rows = _rows(tmp_path / "out")
    teacher_rows = [r for r in rows if r["teacher"] == "openai:fake-teacher"]
    assert len(teacher_rows) == 5 and len(rows) == 10
    assert all("[ref " in r["messages"][1]["content"] for r in teacher_rows)
    usage = stats["teacher_usage"]
    assert usage["calls"] == 10 == len(server.records) and usage["cached"] == 0
    assert usage["prompt_tokens"] > 0 and usage["generated_tokens"] > 0
    expected = round(usage["prompt_tokens"] * 3.0 / 1e6 + usage["generated_tokens"] * 15.0 / 1e6, 6)
    assert usage["estimated_cost"] == expected and stats["metrics"]["estimated_cost"] == expected
    assert usage["max_in_flight"] <= 2
    # The journal keeps every reply: a forced re-run sends nothing and gives the same rows.
    assert stats["journal"]["appended"] == 10
    again = generate(_config(server), corpus, tmp_path / "out", overwrite=True)
    assert again["teacher_usage"]["calls"] == 0 and again["teacher_usage"]["cached"] == 10
    assert len(server.records) == 10
    assert _rows(tmp_path / "out") == rows


def test_api_key_never_reaches_logs_or_outputs(server, corpus, tmp_path, caplog):
    server.faults.extend(["429", "500", "drop", "400"])
    server.retry_after = "0"
    with caplog.at_level(logging.DEBUG):  # every logger, httpx2's included
        generate(_config(server, allow_partial=True), corpus, tmp_path / "out")  # 1 failure of 5 asked
        config = _config(server).model_copy(update={"work_dir": str(tmp_path / "work")})
        server.faults.append("401")
        with pytest.raises(UserError) as info:
            generate(config, corpus, tmp_path / "out2")
    assert "rejected the API key" in str(info.value) and API_KEY not in str(info.value)
    assert caplog.records and API_KEY not in caplog.text
    assert "retry" in caplog.text  # the faults were logged (without the key)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in files) and any(p.suffix == ".parquet" for p in files)
    for path in files:
        assert API_KEY.encode() not in path.read_bytes(), path


def test_stopped_run_resumes_without_resending_and_matches_an_uninterrupted_run(server, corpus, tmp_path,
                                                                              journal_home):
    generate(_config(server).model_copy(update={"work_dir": str(tmp_path / "elsewhere")}), corpus, tmp_path / "full")
    everything = set(server.keys())
    server.reset()
    # The key is revoked after 4 replies: the stage stops, keeping what it got.
    server.fault_for = lambda messages, seen: "401" if len(server.records) > 4 else None
    with pytest.raises(UserError, match="teacher endpoint .* rejected the API key"):
        generate(_config(server, concurrency=1), corpus, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    first = set(server.keys())
    assert len(first) == 4
    assert _journal_tags(journal_home) == first
    server.reset()
    server.fault_for = None
    stats = generate(_config(server), corpus, tmp_path / "out")  # same command: resumes
    second = set(server.keys(None))
    assert not second & first
    assert second | first == everything
    assert stats["teacher_usage"]["cached"] == 4
    assert _rows(tmp_path / "out") == _rows(tmp_path / "full")


def test_a_failed_request_is_counted_and_sent_again_by_the_next_run(server, corpus, tmp_path):
    state = {"failed": False}

    def fault_for(messages, seen):
        if "Question:" in messages[-1]["content"] and not state["failed"]:
            state["failed"] = True  # the first answer request fails, for good (HTTP 400)
            return "400"
        return None

    server.fault_for = fault_for
    stats = generate(_config(server), corpus, tmp_path / "out")
    assert stats["rejects"]["teacher_error"] == 1 and stats["teacher_usage"]["failures"] == {"http_400": 1}
    assert stats["partial"] and stats["teacher_failures"]["failed"] == 1 and stats["metrics"]["teacher_partial"] == 1
    assert stats["samples"]["by_teacher"]["openai:fake-teacher"] == 4
    server.reset()
    again = generate(_config(server), corpus, tmp_path / "out", overwrite=True)
    assert len(server.records) == 1  # only the failed request is sent again
    assert again["samples"]["by_teacher"]["openai:fake-teacher"] == 5 and again["rejects"]["teacher_error"] == 0


def _cli(server, corpus, out, work=None) -> list[str]:
    sets = {"work_dir": str(work or out.parent / "work"), "teacher": "openai", "teacher_model": "fake-teacher", "api.base_url": server.url,
            "api.api_key_env": KEY_ENV, "api.concurrency": 2, "teacher_documents": "null",
            "synthetic_per_document": 1, "max_new_tokens": 64, "seed": 3}
    args = [sys.executable, "-m", "longalign.cli", "generate", "--corpus", str(corpus), "-o", str(out),
            "--preset", "tiny"]
    for key, value in sets.items():
        args += ["--set", f"generation.{key}={value}"]
    return args


def test_killed_process_restarts_without_resending_finished_requests(server, tmp_path, corpus_writer, document):
    corpus = corpus_writer(tmp_path / "corpus", [document(n, paragraphs=4) for n in range(8)])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # The reference: one uninterrupted run (in this process, with the same settings).
    generate(_config(server), corpus, tmp_path / "full")
    everything = set(server.keys())
    assert len(everything) == 16
    server.reset()
    server.latency = 0.15  # slow enough to kill the run half way
    proc = subprocess.Popen(_cli(server, corpus, tmp_path / "out"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    journals = tmp_path / "work"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_journal_tags(journals)) < 5:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    killed_output = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.3)  # let the server finish replies the dead client no longer reads
    saved = _journal_tags(journals)
    assert 5 <= len(saved) < 16  # killed half way
    server.reset()
    server.latency = 0.0
    restart = subprocess.run(_cli(server, corpus, tmp_path / "out"), env=env, capture_output=True, text=True)
    assert restart.returncode == 0, restart.stderr
    resent = set(server.keys(None))
    assert not resent & saved  # no finished request was sent again
    assert resent | saved == everything and len(server.records) == 16 - len(saved)
    assert _rows(tmp_path / "out") == _rows(tmp_path / "full")
    for text in (killed_output, restart.stdout, restart.stderr):
        assert API_KEY not in text


def test_cli_reports_a_revoked_key_as_one_line_and_exit_code_2(server, corpus, tmp_path, capsys):
    from longalign.cli import main

    server.api_key = "sk-another-key-0000"
    args = _cli(server, corpus, tmp_path / "out")[3:]  # without "python -m longalign.cli"
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: the teacher endpoint") and "HTTP 401" in err[-1]
    assert "Traceback" not in "\n".join(err) and API_KEY not in "\n".join(err)
    assert len(server.records) <= 2  # stopped at once: at most the requests already in flight
