"""The endpoint client against a real HTTP server on 127.0.0.1: replies, retries, limits, errors,
the journal, the failure rule and the secrecy of the key."""

import logging
import socket

import pytest
from fake_openai_server import API_KEY, KEY_ENV, NOT_COMPLETIONS, body_key, canned_reply

from longalign.config import EndpointConfig, TeacherAPIConfig
from longalign.endpoints import (Client, EndpointFailed, EndpointStopped, Journal, Reply, Usage, check_failures,
                                 request_key)
from longalign.errors import UserError

pytestmark = pytest.mark.usefixtures("teacher_key")


def _api(url, **kw) -> TeacherAPIConfig:
    base = dict(base_url=url, api_key_env=KEY_ENV, concurrency=4, timeout_seconds=5,
                max_retries=6, backoff_seconds=0.01, backoff_max_seconds=0.05)
    return TeacherAPIConfig(**{**base, **kw})


def _client(server, **kw) -> Client:
    return Client(_api(server.url, **kw), "fake-teacher", role="teacher", what="generation.api")


def _bodies(client, n, max_tokens=32):
    return [client.body([{"role": "user", "content": f"Tell me about item {i}. Question: what is it?"}],
                        max_tokens=max_tokens) for i in range(n)]


def test_replies_come_back_in_order_with_usage(server):
    client = _client(server)
    seen = {}
    bodies = _bodies(client, 6)
    out = client.complete_many(bodies, on_result=lambda i, r: seen.setdefault(i, r))
    assert [r.text for r in out] == [canned_reply(b["messages"]) for b in bodies]
    assert all(r.finish_reason == "stop" and r.error is None for r in out)
    assert [r.prompt_tokens for r in out] == [len(b["messages"][0]["content"].split()) for b in bodies]
    assert seen == dict(enumerate(out))  # every reply was reported as it finished
    assert {r.authorization for r in server.records} == {f"Bearer {API_KEY}"}
    assert client.usage.http_requests == 6 and client.usage.calls == 6 and client.usage.retries == {}


def test_transient_faults_are_retried_until_the_reply_arrives(server):
    # the timeout leaves an ordinary reply room on a loaded machine (0.5 s once timed out a good one)
    server.slow_seconds = 4.0
    server.faults.extend(["429", "500", "drop", "malformed", "empty_choices", "slow"])
    client = _client(server, concurrency=1, timeout_seconds=2.0)
    (body,) = _bodies(client, 1)
    (reply,) = client.complete_many([body])
    assert reply.error is None and reply.text == canned_reply(body["messages"])
    assert [r.outcome for r in server.records] == ["429", "500", "drop", "malformed", "empty_choices", "slow", "ok"]
    assert client.usage.retries == {"http_429": 1, "http_500": 1, "connection": 1, "malformed": 1,
                                    "no_choice": 1, "timeout": 1}
    assert client.usage.http_requests == 7 and client.usage.failures == {}


def test_json_that_is_not_a_chat_completion_is_retried_as_malformed(server):
    # 200 replies whose JSON is a list, a string, null, an object without choices, a choice whose
    # message is not an object, or nested too deep to parse: each is retried (never an exception
    # out of the batch)
    faults = list(NOT_COMPLETIONS) + ["too_deep"]
    server.faults.extend(faults)
    client = _client(server, concurrency=1, max_retries=len(faults))
    (body,) = _bodies(client, 1)
    (reply,) = client.complete_many([body])
    assert reply.error is None and reply.text == canned_reply(body["messages"])
    assert [r.outcome for r in server.records] == faults + ["ok"]
    assert client.usage.retries == {"malformed": len(faults)} and client.usage.failures == {}


@pytest.mark.parametrize("fault", sorted(NOT_COMPLETIONS))
def test_a_reply_that_stays_not_a_chat_completion_is_a_counted_failure(server, fault, caplog):
    client = _client(server, concurrency=2, max_retries=1)
    bodies = _bodies(client, 3)
    bad = bodies[1]["messages"]
    server.fault_for = lambda messages, seen: fault if messages == bad else None
    with caplog.at_level(logging.WARNING, logger="longalign"):
        out = client.complete_many(bodies)
    assert [r.error for r in out] == [None, "malformed", None]
    assert out[1].text == "" and out[0].text == canned_reply(bodies[0]["messages"])
    assert server.keys(None).count(body_key(bad)) == 2  # the first try and one retry
    assert client.usage.failures == {"malformed": 1} and client.usage.retries == {"malformed": 1}
    assert "teacher request given up (malformed) after 2 attempt(s)" in caplog.text
    with pytest.raises(EndpointFailed, match=r"failed 1 of 3 requests after retries \(malformed 1\)"):
        check_failures(client.usage, client.config, role="teacher", host=client.host, what="generation.api")


def test_refusals_missing_finish_reasons_and_missing_usage_are_read_as_such(server):
    """A refusal (no content, a ``refusal`` text) is an empty reply finished by the content filter;
    a reply without finish reason finished normally; one without usage is counted by an estimate
    from the characters (``chars_per_token``), and the estimate is counted."""
    server.faults.extend(["refusal", "no_finish", "no_usage"])
    client = _client(server, concurrency=1, chars_per_token=4.0)
    bodies = _bodies(client, 4)
    refused, unfinished, uncounted, normal = client.complete_many(bodies)
    assert (refused.text, refused.finish_reason, refused.error) == ("", "content_filter", None)
    assert (unfinished.text, unfinished.finish_reason) == (canned_reply(bodies[1]["messages"]), "stop")
    text = canned_reply(bodies[2]["messages"])
    assert uncounted.text == text and uncounted.error is None
    assert uncounted.prompt_tokens == int(len(bodies[2]["messages"][0]["content"]) / 4.0)
    assert uncounted.completion_tokens == int(len(text) / 4.0)
    assert normal.prompt_tokens == len(bodies[3]["messages"][0]["content"].split())
    assert client.usage.usage_estimated == 1 and client.usage.retries == {} and client.usage.failures == {}


def test_the_request_body_is_what_the_caller_asked_for(server, tmp_path):
    client = _client(server, concurrency=1)
    messages = [{"role": "user", "content": "Say hi. Question: why?"}]
    client.complete_many([client.body(messages, max_tokens=16, temperature=0.7, seed=7), client.body(messages)])
    assert [r.body for r in server.records] == [
        {"model": "fake-teacher", "messages": messages, "temperature": 0.7, "max_tokens": 16, "seed": 7},
        {"model": "fake-teacher", "messages": messages, "temperature": 0.0}]  # no max_tokens or seed unless given
    # a client with its own journal keys each request by its body and attempt number
    journaled = Client(_api(server.url), "fake-teacher", journal_path=tmp_path / "requests.jsonl")
    server.reset()
    body = journaled.body(messages)
    journaled.complete_many([body, body], attempts=[0, 1])  # a deliberate repeat: two requests
    journaled.complete_many([body, body])  # attempt 0 twice: served from the journal
    journaled.complete_many([body], attempts=[2])  # a new attempt is sent
    assert len(server.records) == 3


def test_retry_after_is_honoured(server):
    server.retry_after = "1"
    server.faults.append("429")
    client = _client(server, concurrency=1)
    (reply,) = client.complete_many(_bodies(client, 1))
    assert reply.error is None
    first, second = server.records
    # The backoff alone would wait at most 0.05 s; the server asked for 1 s.
    assert second.start - first.end >= 1.0


def test_a_request_is_given_up_after_max_retries_and_others_finish(server):
    client = _client(server, max_retries=2)
    bodies = _bodies(client, 3)
    failing = bodies[1]["messages"]
    server.fault_for = lambda messages, seen: "500" if messages == failing else None
    out = client.complete_many(bodies)
    assert [r.error for r in out] == [None, "http_500", None]
    assert server.keys(None).count(body_key(failing)) == 3  # first try + 2 retries
    assert client.usage.failures == {"http_500": 1} and client.usage.retries == {"http_500": 2}
    assert (client.usage.calls, client.usage.failed, client.usage.attempted) == (2, 1, 3)


def test_a_dead_port_fails_every_request_as_a_connection_error():
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = Client(_api(f"http://127.0.0.1:{port}/v1", max_retries=2), "m", role="teacher")
    out = client.complete_many(_bodies(client, 2))
    assert [r.error for r in out] == ["connection", "connection"]
    assert client.usage.http_requests == 6 and client.usage.failures == {"connection": 2}
    with pytest.raises(EndpointFailed, match=rf"teacher endpoint 127.0.0.1:{port} failed 2 of 2 requests "
                                             r"after retries \(connection 2\): no request succeeded"):
        check_failures(client.usage, client.config, role="teacher", host=client.host, what="generation.api")


def test_a_reply_cut_by_max_tokens_says_so(server):
    server.finish_reason = "length"
    client = _client(server)
    (reply,) = client.complete_many(_bodies(client, 1, max_tokens=8))
    assert reply.finish_reason == "length" and reply.error is None
    assert server.records[0].size > 0


def test_other_client_errors_fail_one_request_without_retry(server, caplog):
    server.faults.append("400")
    client = _client(server, concurrency=1)
    with caplog.at_level(logging.WARNING, logger="longalign"):
        out = client.complete_many(_bodies(client, 2))
    assert [r.error for r in out] == ["http_400", None]
    assert len(server.records) == 2
    assert "maximum context length" in caplog.text


def test_concurrency_is_bounded_and_retry_waits_hold_no_slot(server):
    server.latency = 0.05
    server.retry_after = "1"
    server.faults.extend(["429", "429"])
    client = _client(server, concurrency=2)
    out = client.complete_many(_bodies(client, 10))
    assert all(r.error is None for r in out)
    assert server.max_in_flight == 2 and client.usage.max_in_flight == 2  # reached, never exceeded
    retried = {r.key for r in server.records if r.outcome == "429"}
    done_while_waiting = [r for r in server.records if r.key not in retried and r.end < max(
        x.start for x in server.records if x.key in retried)]
    assert len(done_while_waiting) == 8  # both slots served the other requests during the 1 s wait


@pytest.mark.parametrize("fault,match", [("401", f"rejected the API key .*\\${KEY_ENV}"),
                                         ("404", "model 'fake-teacher'.*generation.api.base_url")])
def test_permanent_errors_stop_with_one_clear_message(server, fault, match):
    server.faults.append(fault)
    client = _client(server, concurrency=1)
    with pytest.raises(EndpointStopped, match=match) as info:
        client.complete_many(_bodies(client, 3))
    assert isinstance(info.value, UserError) and API_KEY not in str(info.value)
    assert len(server.records) == 1  # nothing more was sent


def test_no_key_means_no_authorization_header(server, tmp_path):
    secret = tmp_path / "key"
    secret.write_text(API_KEY)
    client = Client(_api(server.url, api_key_file=str(secret), api_key_env=None), "m")
    assert client.complete_many(_bodies(client, 1))[0].error is None
    assert server.records[-1].authorization == f"Bearer {API_KEY}" and API_KEY not in repr(client)
    client = Client(_api(server.url, api_key_env=None), "m", role="teacher")
    with pytest.raises(EndpointStopped, match="no key configured"):
        client.complete_many(_bodies(client, 1))
    assert server.records[-1].authorization == ""


def test_server_texts_that_repeat_the_key_are_redacted_everywhere(server, caplog):
    """A provider's error body may repeat the key in full or partly masked; neither may reach a
    log line, an exception text or the usage stats."""
    masked = f"{API_KEY[:6]}***{API_KEY[-4:]}"
    server.retry_after = "0"
    with caplog.at_level(logging.DEBUG):  # every logger, the SDK's and httpx2's included
        client = _client(server, concurrency=1)
        server.faults.extend(["400_echo", "500"])
        out = client.complete_many(_bodies(client, 2))
        assert [r.error for r in out] == ["http_400", None]
        texts = []
        for fault in ("401", "403_echo"):
            server.faults.append(fault)
            with pytest.raises(EndpointStopped) as info:
                client.complete_many(_bodies(client, 1))
            texts.append(str(info.value))
    assert "refused" in caplog.text and "rejected the API key" in texts[0] and "HTTP 403" in texts[1]
    assert "sk-***" in caplog.text + texts[1]  # the echoed key was there, and was replaced
    for secret in (API_KEY, masked, API_KEY[3:]):
        assert secret not in caplog.text
        assert all(secret not in text for text in texts)
        assert secret not in str(client.usage.as_dict()) and secret not in repr(client)
    assert "sk-proj-4f9a" not in caplog.text + "".join(texts)  # any key-shaped text, not only ours


def test_redact_handles_full_and_masked_keys():
    client = Client(EndpointConfig(base_url="http://127.0.0.1:1/v1", model="m", api_key_env=KEY_ENV), "m")
    text = f"Incorrect API key provided: sk-abc***xyz; sent {API_KEY}; other sk-live-0123"
    clean = client.redact(text)
    assert "abc***xyz" not in clean and API_KEY not in clean and "0123" not in clean
    assert clean.startswith("Incorrect API key provided: sk-***")


def test_journal_serves_successes_and_resends_only_failures(server, tmp_path):
    client = _client(server, max_retries=0)
    bodies = _bodies(client, 4)
    keys = [request_key(b) for b in bodies]
    failing = {body_key(bodies[1]["messages"]), body_key(bodies[3]["messages"])}
    server.fault_for = lambda messages, seen: "500" if body_key(messages) in failing else None
    with Journal(tmp_path / "j" / "requests.jsonl") as journal:
        first = client.complete_many(bodies, journal=journal, keys=keys, meta=[{"i": i} for i in range(4)])
        assert [r.error for r in first] == [None, "http_500", None, "http_500"]
        assert journal.appended == 2
    server.reset()
    server.fault_for = None
    again = Client(client.config, client.model)
    with Journal(tmp_path / "j" / "requests.jsonl") as journal:
        assert journal.loaded == 2
        second = again.complete_many(bodies, journal=journal, keys=keys)
        assert journal.served == 2 and journal.appended == 2
    assert set(server.keys()) == failing  # only the failed requests were sent again
    assert [r.text for r in second] == [canned_reply(b["messages"]) for b in bodies]
    assert [r.cached for r in second] == [True, False, True, False]
    assert (again.usage.cached, again.usage.calls) == (2, 2)


def test_journal_cuts_a_torn_last_line_and_is_locked(tmp_path):
    path = tmp_path / "requests.jsonl"
    with Journal(path) as journal:
        journal.append("a", Reply("one"))
        journal.append("b", Reply("two"))
        with pytest.raises(UserError, match="in use by another running job"):
            Journal(path)
    data = path.read_bytes()
    path.write_bytes(data[:-5])  # a kill in the middle of the last write
    with Journal(path) as journal:
        assert journal.loaded == 1 and journal.damaged == 1
        assert journal.get("a").text == "one" and journal.get("a").cached and journal.get("b") is None
        journal.append("b", Reply("two again"))
    with Journal(path) as journal:
        assert journal.get("b").text == "two again" and journal.damaged == 0


@pytest.mark.parametrize("calls,failed,allow,fails", [
    (95, 5, False, False),  # 5%: under the 10% limit
    (90, 10, False, False),  # exactly at the limit
    (89, 11, False, True),
    (50, 50, False, True),
    (50, 50, True, False),  # partial data allowed
    (0, 3, True, True),  # nothing succeeded: never allowed
])
def test_failure_rule(calls, failed, allow, fails):
    usage = Usage(calls=calls, failed=failed)
    usage.failures["http_500"] = failed
    config = _api("http://h:1/v1", allow_partial=allow)
    if fails:
        with pytest.raises(EndpointFailed, match=rf"teacher endpoint h:1 failed {failed} of {calls + failed} "
                                                 r"requests after retries \(http_500 \d+\)"):
            check_failures(usage, config, role="teacher", host="h:1", what="generation.api")
    else:
        report = check_failures(usage, config, role="teacher", host="h:1", what="generation.api")
        assert report["partial"] and report["failed"] == failed and report["over_limit"] == (failed > 10)
    assert check_failures(Usage(calls=3), config, role="t", host="h", what="w")["partial"] is False
