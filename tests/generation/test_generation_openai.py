"""The openai teacher against a real HTTP server on 127.0.0.1: replies, retries, limits, errors."""

import logging

import pytest
from fake_openai_server import API_KEY, KEY_ENV, body_key, canned_reply

from longalign.config import TeacherAPIConfig
from longalign.errors import UserError
from longalign.generation.openai_teacher import OpenAITeacher, TeacherStopped, read_api_key


pytestmark = pytest.mark.usefixtures("teacher_key")


def _api(server, **kw) -> TeacherAPIConfig:
    base = dict(base_url=server.url, api_key_env=KEY_ENV, concurrency=4, timeout_seconds=5,
                max_retries=6, backoff_seconds=0.01, backoff_max_seconds=0.05)
    return TeacherAPIConfig(**{**base, **kw})


def _chats(n):
    return [[{"role": "user", "content": f"Tell me about item {i}. Question: what is it?"}] for i in range(n)]


def test_replies_come_back_in_order_with_usage(server):
    teacher = OpenAITeacher(_api(server), "fake-teacher")
    seen = {}
    chats = _chats(6)
    out = teacher.complete(chats, 32, on_result=lambda i, c: seen.setdefault(i, c))
    assert [c.text for c in out] == [canned_reply(chat) for chat in chats]
    assert all(c.finish_reason == "stop" and c.error is None for c in out)
    assert [c.prompt_tokens for c in out] == [len(chat[0]["content"].split()) for chat in chats]
    assert seen == dict(enumerate(out))  # every reply was reported as it finished
    assert {r.authorization for r in server.records} == {f"Bearer {API_KEY}"}
    assert teacher.requests == 6 and teacher.retries == {} and teacher.name == "openai:fake-teacher"


def test_transient_faults_are_retried_until_the_reply_arrives(server):
    server.slow_seconds = 1.5
    server.faults.extend(["429", "500", "drop", "malformed", "empty_choices", "slow"])
    teacher = OpenAITeacher(_api(server, concurrency=1, timeout_seconds=0.5), "fake-teacher")
    (chat,) = _chats(1)
    (reply,) = teacher.complete([chat], 32)
    assert reply.error is None and reply.text == canned_reply(chat)
    assert [r.outcome for r in server.records] == ["429", "500", "drop", "malformed", "empty_choices", "slow", "ok"]
    assert teacher.retries == {"http_429": 1, "http_500": 1, "connection": 1, "malformed": 1, "no_choice": 1,
                               "timeout": 1}
    assert teacher.requests == 7 and teacher.failures == {}


def test_retry_after_is_honoured(server):
    server.retry_after = "1"
    server.faults.append("429")
    teacher = OpenAITeacher(_api(server, concurrency=1), "fake-teacher")
    (reply,) = teacher.complete(_chats(1), 32)
    assert reply.error is None
    first, second = server.records
    # The backoff alone would wait at most 0.05 s; the server asked for 1 s.
    assert second.start - first.end >= 1.0


def test_a_request_is_given_up_after_max_retries_and_others_finish(server):
    failing = _chats(3)[1]
    server.fault_for = lambda messages, seen: "500" if messages == failing else None
    teacher = OpenAITeacher(_api(server, max_retries=2), "fake-teacher")
    out = teacher.complete(_chats(3), 32)
    assert [c.error for c in out] == [None, "http_500", None]
    assert server.keys(None).count(body_key(failing)) == 3  # first try + 2 retries
    assert teacher.failures == {"http_500": 1} and teacher.retries == {"http_500": 2}


def test_other_client_errors_fail_one_request_without_retry(server, caplog):
    server.faults.append("400")
    teacher = OpenAITeacher(_api(server, concurrency=1), "fake-teacher")
    with caplog.at_level(logging.WARNING, logger="longalign"):
        out = teacher.complete(_chats(2), 32)
    assert [c.error for c in out] == ["http_400", None]
    assert len(server.records) == 2
    assert "maximum context length" in caplog.text


def test_concurrency_is_bounded(server):
    server.latency = 0.1
    teacher = OpenAITeacher(_api(server, concurrency=3), "fake-teacher")
    out = teacher.complete(_chats(12), 32)
    assert all(c.error is None for c in out)
    assert server.max_in_flight == 3  # reached, never exceeded
    assert teacher.max_in_flight == 3


def test_retry_waits_do_not_hold_a_concurrency_slot(server):
    server.latency = 0.05
    server.retry_after = "1"
    server.faults.extend(["429", "429"])
    teacher = OpenAITeacher(_api(server, concurrency=2), "fake-teacher")
    out = teacher.complete(_chats(10), 32)
    assert all(c.error is None for c in out)
    retried = {r.key for r in server.records if r.outcome == "429"}
    done_while_waiting = [r for r in server.records if r.key not in retried and r.end < max(
        x.start for x in server.records if x.key in retried)]
    assert len(done_while_waiting) == 8  # both slots served the other requests during the 1 s wait


@pytest.mark.parametrize("fault,match", [("401", f"rejected the API key .*\\${KEY_ENV}"),
                                         ("404", "model 'fake-teacher'.*teacher_model")])
def test_permanent_errors_stop_with_one_clear_message(server, fault, match):
    server.faults.append(fault)
    teacher = OpenAITeacher(_api(server, concurrency=1), "fake-teacher")
    with pytest.raises(TeacherStopped, match=match) as info:
        teacher.complete(_chats(3), 32)
    assert isinstance(info.value, UserError) and API_KEY not in str(info.value)
    assert len(server.records) == 1  # nothing more was sent


def test_refusal_and_truncation_are_reported(server):
    server.finish_reason = "length"
    teacher = OpenAITeacher(_api(server), "fake-teacher")
    assert teacher.complete(_chats(1), 32)[0].finish_reason == "length"
    server.finish_reason = "content_filter"
    assert teacher.complete(_chats(1), 32)[0].finish_reason == "content_filter"


def test_api_key_sources(tmp_path, monkeypatch):
    secret = tmp_path / "key"
    secret.write_text(" from-file \n")
    assert read_api_key(TeacherAPIConfig(api_key_file=str(secret), api_key_env=KEY_ENV)) == "from-file"
    assert read_api_key(TeacherAPIConfig(api_key_env=KEY_ENV)) == API_KEY
    assert read_api_key(TeacherAPIConfig(api_key_env=None)) is None
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(UserError, match=f"set \\${KEY_ENV}"):
        read_api_key(TeacherAPIConfig(api_key_env=KEY_ENV))
    with pytest.raises(UserError, match="cannot read"):
        read_api_key(TeacherAPIConfig(api_key_file=str(tmp_path / "missing")))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UserError, match="is empty"):
        read_api_key(TeacherAPIConfig(api_key_file=str(tmp_path / "empty")))


def test_key_file_is_sent_and_no_key_means_no_header(server, tmp_path):
    secret = tmp_path / "key"
    secret.write_text(API_KEY)
    teacher = OpenAITeacher(_api(server, api_key_file=str(secret), api_key_env=None), "fake-teacher")
    assert teacher.complete(_chats(1), 8)[0].error is None
    assert API_KEY not in repr(teacher)
    teacher = OpenAITeacher(_api(server, api_key_env=None), "fake-teacher")
    with pytest.raises(TeacherStopped, match="no key configured"):
        teacher.complete(_chats(1), 8)
    assert server.records[-1].authorization == ""


def test_truncation_keeps_both_ends_within_the_estimated_budget(server):
    teacher = OpenAITeacher(_api(server, chars_per_token=4.0), "fake-teacher")
    text = " ".join(f"word{i}" for i in range(2000))
    short, cut = teacher.truncate(text, 256)
    assert cut and len(short) <= 256 * 4 + 20
    head, tail = short.split("[...]")
    assert text.startswith(head.strip()) and text.endswith(tail.strip())
    assert teacher.truncate("short", 256) == ("short", False)


def test_config_mistakes_are_one_line_user_errors():
    from longalign.config import parse_section

    with pytest.raises(UserError, match="needs api.base_url"):
        parse_section("generation", {"teacher": "openai"})
    with pytest.raises(UserError, match="must start with http"):
        parse_section("generation", {"teacher": "openai", "api": {"base_url": "vllm:8000/v1"}})
    with pytest.raises(UserError, match="api.concurrency"):
        parse_section("generation", {"api": {"concurrency": 0}})
    with pytest.raises(UserError, match="api.api_key"):
        parse_section("generation", {"api": {"api_key": "sk-never-in-config"}})  # no such option
