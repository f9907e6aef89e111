"""The endpoint client's batch interface against a real HTTP server on 127.0.0.1: a client's own
journal (keys, on_result, its lock), a batch sent from inside a running event loop, where requests
go, token estimates and the counters the stages report."""

import asyncio
import threading

import pytest
from fake_openai_server import KEY_ENV, canned_reply

from longalign.config import EndpointConfig, TeacherAPIConfig
from longalign.endpoints import Client, Journal

pytestmark = pytest.mark.usefixtures("teacher_key")


def _api(url, **kw) -> TeacherAPIConfig:
    base = dict(base_url=url, api_key_env=KEY_ENV, concurrency=4, timeout_seconds=5,
                max_retries=2, backoff_seconds=0.01, backoff_max_seconds=0.05)
    return TeacherAPIConfig(**{**base, **kw})


def _bodies(client, n, start=0):
    return [client.body([{"role": "user", "content": f"Tell me about item {i}. Question: what is it?"}],
                        max_tokens=32) for i in range(start, start + n)]


def _texts(bodies):
    return [canned_reply(b["messages"]) for b in bodies]


def test_a_clients_own_journal_keys_each_body_and_attempt_and_reports_only_new_replies(server, tmp_path):
    client = Client(_api(server.url), "fake-teacher", journal_path=tmp_path / "requests.jsonl")
    first, second, third = _bodies(client, 3)
    seen = {}
    out = client.complete_many([first, second], on_result=lambda i, r: seen.setdefault(i, r))
    assert [r.text for r in out] == _texts([first, second])
    assert seen == dict(enumerate(out))  # on_result saw each new reply, by its index in the batch
    # two different bodies are two journal entries: both come back, each with its own reply, unsent;
    # attempt 0 is the default
    seen.clear()
    again = client.complete_many([second, first], attempts=[0, 0], on_result=lambda i, r: seen.setdefault(i, r))
    assert [r.text for r in again] == _texts([second, first]) and all(r.cached for r in again)
    assert len(server.records) == 2 and seen == {}
    # a batch of one served and one new body: only the new one is sent and reported, at its index
    mixed = client.complete_many([first, third], on_result=lambda i, r: seen.setdefault(i, r))
    assert [r.text for r in mixed] == _texts([first, third]) and [r.cached for r in mixed] == [True, False]
    assert seen == {1: mixed[1]} and len(server.records) == 3
    assert client.batches == 2  # batches sent; the one served whole from the journal sent nothing


def test_a_clients_own_journal_waits_while_another_batch_holds_it(server, tmp_path):
    path = tmp_path / "requests.jsonl"
    client = Client(_api(server.url), "fake-teacher", journal_path=path)
    bodies = _bodies(client, 2)
    result = {}

    def batch():
        try:
            result["out"] = client.complete_many(bodies)
        except Exception as exc:  # noqa: BLE001 - reported to the test below
            result["error"] = exc

    holder = Journal(path)  # another client's batch (judges and teachers hold a journal per batch)
    try:
        thread = threading.Thread(target=batch)
        thread.start()
        thread.join(0.3)
        assert thread.is_alive() and not server.records and not result  # waiting, nothing sent
    finally:
        holder.close()
    thread.join(30)
    assert "error" not in result and [r.text for r in result["out"]] == _texts(bodies)


def test_a_journal_needs_one_key_per_body_and_keeps_the_callers_metadata(server, tmp_path):
    client = Client(_api(server.url), "fake-teacher")
    bodies = _bodies(client, 2)
    with Journal(tmp_path / "requests.jsonl") as journal:
        for keys in (None, ["only-one"]):
            with pytest.raises(ValueError, match="one key per body"):
                client.complete_many(bodies, journal=journal, keys=keys)
        assert not server.records
        client.complete_many(bodies, journal=journal, keys=["a", "b"], meta=[{"doc": "d1"}, {"doc": "d2"}])
    with Journal(tmp_path / "requests.jsonl") as journal:
        assert {k: journal.records[k]["doc"] for k in ("a", "b")} == {"a": "d1", "b": "d2"}


def test_a_batch_sent_from_inside_a_running_event_loop(server):
    """A notebook cell runs inside an event loop; the synchronous batch call still works there."""
    client = Client(_api(server.url), "fake-teacher")
    bodies = _bodies(client, 3)

    async def cell():
        return client.complete_many(bodies)

    out = asyncio.run(cell())
    assert [r.text for r in out] == _texts(bodies) and client.usage.calls == 3


def test_requests_go_to_chat_completions_under_the_base_url(server):
    for url in (server.url, server.url + "/"):  # with or without the trailing slash
        client = Client(_api(url), "fake-teacher")
        (reply,) = client.complete_many(_bodies(client, 1))
        assert reply.error is None
    assert [r.path for r in server.records] == ["/v1/chat/completions"] * 2


def test_replies_without_usable_token_counts_are_each_estimated(server):
    """Every reply without both token counts is estimated from its characters, at
    ``chars_per_token`` or, for endpoints configured without it (judge, answerers), 3.5."""
    config = EndpointConfig(base_url=server.url, model="judge", api_key_env=KEY_ENV, concurrency=1,
                            backoff_seconds=0.01, backoff_max_seconds=0.05)
    client = Client(config, "judge", role="judge")
    bodies = _bodies(client, 3)
    server.faults.extend(["no_usage", "partial_usage", None])
    out = client.complete_many(bodies)
    for body, reply in zip(bodies[:2], out):
        text = canned_reply(body["messages"])
        assert reply.text == text and reply.error is None
        assert reply.prompt_tokens == int(len(body["messages"][0]["content"]) / 3.5)
        assert reply.completion_tokens == int(len(text) / 3.5)
    assert out[2].prompt_tokens == len(bodies[2]["messages"][0]["content"].split())  # the server's count
    assert client.usage.usage_estimated == 2
    assert client.usage.completion_tokens == sum(r.completion_tokens for r in out)


def test_an_empty_reply_is_not_a_refusal(server):
    server.reply = lambda messages: ""
    client = Client(_api(server.url), "fake-teacher")
    (reply,) = client.complete_many(_bodies(client, 1))
    assert (reply.text, reply.finish_reason, reply.error) == ("", "stop", None)


def test_usage_reports_cost_and_the_most_requests_in_flight_over_batches(server):
    server.latency = 0.05
    client = Client(_api(server.url, concurrency=2, price_prompt_per_million=2.0,
                         price_completion_per_million=8.0), "fake-teacher")
    client.complete_many(_bodies(client, 1))
    client.complete_many(_bodies(client, 6, start=1))
    usage = client.usage
    assert usage.max_in_flight == 2 and client.batches == 2  # the first batch left no request counted in flight
    stats = usage.as_dict()
    assert stats["cost"] == pytest.approx((2.0 * usage.prompt_tokens + 8.0 * usage.completion_tokens) / 1e6)
    assert stats["cost"] > 0


def test_long_backoffs_and_retry_afters_are_cut_to_the_configured_maxima(server):
    """backoff_seconds of 30 s is cut to backoff_max_seconds, a Retry-After of an hour to
    max_retry_after_seconds: the batch is done in well under a second of waiting."""
    server.retry_after = "3600"
    server.faults.extend(["500", "429"])
    client = Client(_api(server.url, concurrency=1, backoff_seconds=30.0, backoff_max_seconds=0.05,
                         max_retry_after_seconds=0.1), "fake-teacher")
    bodies = _bodies(client, 1)
    result = {}
    thread = threading.Thread(target=lambda: result.update(out=client.complete_many(bodies)), daemon=True)
    thread.start()
    thread.join(10)  # the waits asked for add up to an hour; the caps leave 0.15 s at most
    assert not thread.is_alive(), "a wait was not cut to its configured maximum"
    assert [r.text for r in result["out"]] == _texts(bodies)
    assert [r.outcome for r in server.records] == ["500", "429", "ok"]
