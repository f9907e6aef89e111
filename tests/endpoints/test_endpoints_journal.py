"""The request journal on real files: keys, durable lines, damaged and torn lines, serving."""

import json
import logging
import os
import re
import threading

import pytest

from longalign.endpoints import Journal, Reply, journal_name, request_key
from longalign.endpoints.journal import through_journal
from longalign.errors import UserError


def test_request_keys_are_stable_across_versions_and_key_order():
    # pinned: a changed key silently invalidates every journal users keep (and resends everything)
    body = {"model": "m", "messages": [{"role": "user", "content": "Où? 東京"}]}
    assert request_key(body, 2) == "0cfc68fea851779855b396c51d8f9066"
    assert request_key("x") == request_key("x", 0) == "e31863e444338b94473a00bc1371633e"
    assert request_key({"b": 1, "a": 2}) == request_key({"a": 2, "b": 1})
    assert len({request_key(body), request_key(body, 1), request_key({**body, "model": "n"})}) == 3


def test_a_reply_is_appended_as_one_sorted_line_and_served_after_reopening(tmp_path, caplog):
    path = tmp_path / "deep" / "er" / "journal.jsonl"  # folders are made as needed
    old = os.umask(0o022)
    try:
        with Journal(path) as journal:
            journal.append("k1", Reply("Hello ☕", 12, 3, "length"), doc="d1", task="qa")
            assert journal.appended == 1 and journal.get("k1").text == "Hello ☕"
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    (line,) = path.read_text(encoding="utf-8").splitlines()
    assert line == json.dumps({"completion_tokens": 3, "doc": "d1", "finish_reason": "length", "key": "k1",
                               "prompt_tokens": 12, "task": "qa", "text": "Hello ☕"}, ensure_ascii=False)
    with caplog.at_level(logging.INFO, logger="longalign"), Journal(path) as again:
        reply = again.get("k1")
        assert (reply.text, reply.prompt_tokens, reply.completion_tokens, reply.finish_reason, reply.cached) == (
            "Hello ☕", 12, 3, "length", True)
        assert again.get("k2") is None
        assert again.info() == {"path": str(path), "loaded": 1, "served": 0, "appended": 0, "damaged_lines": 0}
    assert f"request journal {path}: 1 finished requests" in caplog.text and "damaged" not in caplog.text


def test_damaged_lines_are_skipped_and_a_torn_last_line_is_cut(tmp_path, caplog):
    path = tmp_path / "j.jsonl"
    good = json.dumps({"key": "a", "text": "A"}) + "\n"
    minimal = json.dumps({"key": "b", "text": "B"}) + "\n"
    path.write_text(good + "not json\n" + "[1, 2]\n" + json.dumps({"text": "no key"}) + "\n" + minimal
                    + '{"key": "c", "te')
    with caplog.at_level(logging.INFO, logger="longalign"), Journal(path) as journal:
        assert sorted(journal.records) == ["a", "b"] and journal.loaded == 2 and journal.damaged == 4
        reply = journal.get("b")  # a line without usage: zero tokens, finished normally
        assert (reply.prompt_tokens, reply.completion_tokens, reply.finish_reason) == (0, 0, "stop")
        journal.append("c", Reply("C", 1, 1))
    lines = path.read_text().splitlines()
    assert lines[:5] == [good.strip(), "not json", "[1, 2]", json.dumps({"text": "no key"}), minimal.strip()]
    assert json.loads(lines[5])["key"] == "c" and len(lines) == 6  # the torn line is gone, not glued
    assert "2 finished requests, 4 damaged line(s) skipped" in caplog.text


def test_a_closed_journal_is_free_for_the_next_run_and_a_bad_place_is_a_user_error(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    with pytest.raises(UserError, match=r"^the request journal .*j\.jsonl is in use by another running job; "
                                        "wait for it or give this run its own folder$"):
        Journal(path)
    waited = []
    waiter = threading.Thread(target=lambda: waited.append(Journal(path, wait=True)))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # wait=True blocks until the holder lets go
    journal.close()
    waiter.join(10)
    assert waited and not waiter.is_alive()
    waited[0].close()
    journal.close()  # twice is fine, and closes no other descriptor
    os.fstat(1)
    with Journal(path):  # not blocked
        pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"^cannot open the request journal .*file[/\\]j\.jsonl: "):
        Journal(tmp_path / "file" / "j.jsonl")


def test_through_journal_serves_what_it_has_and_keeps_only_new_successes(tmp_path):
    sent = []

    def send(indices, on_result):
        sent.append(list(indices))
        replies = [Reply("", error="timeout") if i == 2 else Reply(f"r{i}", 1, 1) for i in indices]
        on_result(0, replies[0])  # reported early, and again at the end: written once
        return replies

    with Journal(tmp_path / "j.jsonl") as journal:
        journal.append("k0", Reply("old", 1, 1))
        out = through_journal(journal, ["k0", "k1", "k2"], send, meta=[{"i": 0}, {"i": 1}, {"i": 2}])
        assert [r.text for r in out] == ["old", "r1", ""] and out[0].cached and out[2].error == "timeout"
        assert sent == [[1, 2]] and journal.served == 1 and journal.appended == 2
        assert sorted(journal.records) == ["k0", "k1"] and journal.records["k1"]["i"] == 1
        lines = (tmp_path / "j.jsonl").read_text().splitlines()
        assert [json.loads(x)["key"] for x in lines] == ["k0", "k1"]
        through_journal(journal, ["k0", "k1"], send)
        assert journal.served == 3  # counted over the run, not per batch
    assert through_journal(None, ["k0", "k1"], send) and sent[-1] == [0, 1]  # no journal: everything is sent


def test_journal_names_separate_unrelated_runs_and_keep_related_ones_together():
    name = journal_name("teacher-fp", 0, ["doc-a", "doc-b"])
    assert re.fullmatch(r"requests-[0-9a-f]{16}\.jsonl", name)
    assert journal_name("teacher-fp", 0, ["doc-a", "doc-b"]) == name  # the same run again: the same file
    assert len({name, journal_name("teacher-fp", 1, ["doc-a", "doc-b"]), journal_name("other-fp", 0, ["doc-a", "doc-b"]),
                journal_name("teacher-fp", 0, ["doc-a"])}) == 4  # another seed, teacher or document set: another
    assert journal_name({"b": 1, "a": 2}) == journal_name({"a": 2, "b": 1})  # key order does not matter
