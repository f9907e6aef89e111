"""Failure semantics and the teacher's context window, with the openai teacher against a real HTTP
server on 127.0.0.1: no dataset from a failed teacher, partial data only when asked for, a rerun
after an outage sends only what failed, and a long document reaches a long-window teacher whole."""

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fake_openai_server import API_KEY, KEY_ENV, body_key

from longalign.config import GenerationConfig, TeacherAPIConfig
from longalign.endpoints import EndpointFailed, EndpointStopped
from longalign.generation import generate
from longalign.generation.interface import TRUNCATION_MARK

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("teacher_key")


def _config(server, teacher_kw=None, **api) -> GenerationConfig:
    api = {"base_url": server.url, "api_key_env": KEY_ENV, "concurrency": 2, "max_retries": 1,
           "backoff_seconds": 0.01, "backoff_max_seconds": 0.02, **api}
    return GenerationConfig(teacher="openai", teacher_model="fake-teacher", max_new_tokens=64,
                            api=TeacherAPIConfig(**api), seed=3, **(teacher_kw or {}))


def _question_requests_failing(n):
    """A fault function failing (HTTP 500, every time) the question requests of the first n
    documents the server sees."""
    doomed: list[str] = []

    def fault_for(messages, seen):
        key = body_key(messages)
        if "Question:" in messages[-1]["content"]:
            return None
        if key not in doomed and len(doomed) < n:
            doomed.append(key)
        return "500" if key in doomed else None

    return fault_for


@pytest.fixture
def ten(tmp_path, corpus_writer, document):
    return corpus_writer(tmp_path / "corpus10", [document(n, paragraphs=4) for n in range(10)])


def _rows(out: Path) -> list[dict]:
    rows = []
    for path in sorted(out.glob("samples-*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return sorted(rows, key=lambda r: r["id"])


def test_the_issue_command_with_a_dead_endpoint_exits_non_zero_with_one_line(tmp_path, corpus_writer, document):
    """The command from the issue (plus short retry waits), run as a new user would."""
    corpus = corpus_writer(tmp_path / "corpus", [document(n, paragraphs=30) for n in range(3)])
    with socket.socket() as sock:  # a port nothing listens on (the issue used port 9)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [sys.executable, "-m", "longalign.cli", "generate", "--corpus", str(corpus), "-o", str(tmp_path / "g"),
            "--preset", "tiny", "--teacher", "openai", "--set", "teacher_model=teacher",
            "--set", f"generation.api.base_url=http://127.0.0.1:{port}/v1", "--set", "teacher_documents=1",
            "--set", "api.backoff_seconds=0.01", "--set", "api.backoff_max_seconds=0.02"]
    env = {**os.environ, "OPENAI_API_KEY": "x", "PYTHONPATH": str(REPO), "LONGALIGN_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr
    assert f"teacher endpoint 127.0.0.1:{port} failed 1 of 1 requests after retries (connection 1)" in errors[0]
    assert not (tmp_path / "g").exists()  # nothing in the output location
    assert done.stdout.strip() == ""  # no table of metrics of a dataset that was never written


def test_five_percent_failures_succeed_and_are_reported(server, ten, tmp_path):
    server.fault_for = _question_requests_failing(1)
    stats = generate(_config(server), ten, tmp_path / "out")
    failures = stats["teacher_failures"]
    assert (failures["failed"], failures["attempted"]) == (1, 19)  # 10 question + 9 answer requests
    assert failures["reasons"] == {"http_500": 1} and not failures["over_limit"]
    assert stats["partial"] and stats["metrics"]["teacher_failed"] == 1 and stats["metrics"]["teacher_partial"] == 1
    assert stats["samples"]["by_teacher"]["openai:fake-teacher"] == 9
    preview = (tmp_path / "out" / "preview.md").read_text()
    assert "1 of 19 teacher requests" in preview and "http_500 1" in preview


def test_half_failing_fails_with_nothing_written_unless_partial_data_is_allowed(server, ten, tmp_path):
    server.fault_for = _question_requests_failing(5)
    with pytest.raises(EndpointFailed, match=r"teacher endpoint 127.0.0.1:\d+ failed 5 of 10 requests after "
                                             r"retries \(http_500 5\): over the 10% limit; 5 successful replies"):
        generate(_config(server), ten, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert {len(server.keys(None))} == {10 + 5}  # the answer batch was never sent; 5 retries
    server.reset()
    stats = generate(_config(server, allow_partial=True), ten, tmp_path / "out")
    assert stats["partial"] and stats["teacher_failures"]["over_limit"]
    assert stats["samples"]["by_teacher"]["openai:fake-teacher"] == 5
    assert "PARTIAL DATA" in (tmp_path / "out" / "preview.md").read_text()
    # the 5 question replies of the failed run came from the journal
    assert stats["teacher_usage"]["cached"] == 5


def test_an_endpoint_that_dies_halfway_and_comes_back(server, ten, tmp_path):
    generate(_config(server, teacher_kw={"work_dir": str(tmp_path / "other")}), ten, tmp_path / "full")
    everything = set(server.keys())
    server.reset()
    # After 12 answered requests the endpoint stops answering (connections dropped).
    served = []

    def fault_for(messages, seen):
        if len(served) >= 12:
            return "drop"
        served.append(body_key(messages))
        return None

    server.fault_for = fault_for
    with pytest.raises(EndpointFailed, match="a rerun sends only the failed requests"):
        generate(_config(server), ten, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    first = set(served)
    assert len(first) == 12
    server.reset()
    server.fault_for = None
    stats = generate(_config(server), ten, tmp_path / "out")  # the same command, endpoint back
    resent = server.keys(None)
    assert not set(resent) & first and len(resent) == len(set(resent))  # only what had failed
    assert set(resent) | first == everything
    assert stats["teacher_usage"]["cached"] == 12 and not stats["partial"]
    assert _rows(tmp_path / "out") == _rows(tmp_path / "full")


def test_a_40k_token_document_reaches_a_128k_teacher_whole(server, tmp_path, corpus_writer, document, tiny_model):
    from longalign.models import load_tokenizer

    text = document(7, paragraphs=620)
    tokens = len(load_tokenizer(tiny_model)(text, add_special_tokens=False)["input_ids"])
    assert 40_000 <= tokens < 60_000
    corpus = corpus_writer(tmp_path / "corpus", [text])
    stats = generate(_config(server, teacher_kw={"teacher_context_tokens": 131072}), corpus, tmp_path / "out")
    question_request, answer_request = server.records
    assert question_request.size > len(text) and answer_request.size > len(text)  # the server got it all
    assert stats["teacher_window"]["truncated_documents"] == 0 and stats["teacher_window"]["tokens"] == 131072
    assert text in question_request.prompt and TRUNCATION_MARK not in question_request.prompt
    # the same document and a 16k window: middle-truncated for the teacher, and counted
    server.reset()
    stats = generate(_config(server, teacher_kw={"teacher_context_tokens": 16384}), corpus, tmp_path / "short")
    assert server.records[0].size < len(text) / 2
    assert stats["teacher_window"]["truncated_documents"] == 1 and stats["metrics"]["truncated_documents"] == 1
    assert "1 of 1 documents were longer" in (tmp_path / "short" / "preview.md").read_text()
    (row,) = _rows(tmp_path / "short")
    assert row["messages"][0]["content"].startswith(text)  # the training sample keeps the whole document


def test_error_bodies_that_echo_the_key_leave_no_trace_in_a_stage_run(server, ten, tmp_path, caplog):
    """Issue 21: a provider's error text may repeat the key, in full or partly masked. Through a
    whole generation run (one request refused with such a text, then a run stopped by one), the key
    reaches no log line, exception text, stats or file the stage wrote (outputs and journal)."""
    masked = f"{API_KEY[:6]}***{API_KEY[-4:]}"
    secrets = (API_KEY, masked, API_KEY[3:], API_KEY[-12:])
    refused = []

    def fault_for(messages, seen):  # the first question request is refused with the key in the text
        if "Question:" not in messages[-1]["content"] and (not refused or refused == [body_key(messages)]):
            refused.append(body_key(messages))
            return "400_echo"
        return None

    server.fault_for = fault_for
    work = tmp_path / "work"
    with caplog.at_level(logging.DEBUG):  # every logger: ours, the SDK's and its HTTP client's
        stats = generate(_config(server, teacher_kw={"work_dir": str(work)}), ten, tmp_path / "out")
        server.fault_for = None
        server.faults.append("403_echo")
        with pytest.raises(EndpointStopped) as stopped:
            generate(_config(server, teacher_kw={"work_dir": str(tmp_path / "work2")}), ten, tmp_path / "out2")
    assert stats["teacher_failures"]["reasons"] == {"http_400": 1}  # the refusal happened and was counted
    assert "refused with HTTP 400" in caplog.text and "HTTP 403" in str(stopped.value)
    files = [p for d in (tmp_path / "out", work, tmp_path / "work2") for p in d.rglob("*") if p.is_file()]
    assert any(p.name == "stats.json" for p in files) and any(p.suffix == ".parquet" for p in files)
    texts = {"log": caplog.text, "exception": str(stopped.value), "stats": json.dumps(stats, default=str)}
    texts.update({str(p): p.read_bytes().decode("utf-8", "replace") for p in files})
    for name, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"the key ({secret[:8]}...) in {name}"
    assert "sk-***" in caplog.text and "sk-***" in str(stopped.value)  # the echoed text was there, redacted
    assert not (tmp_path / "out2").exists()
