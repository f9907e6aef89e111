"""The openai teacher (a thin user of longalign.endpoints, tested in tests/endpoints): its requests,
key sources, document fitting and config mistakes."""

import pytest
from fake_openai_server import API_KEY, KEY_ENV, canned_reply

from longalign.config import TeacherAPIConfig
from longalign.errors import UserError
from longalign.generation.openai_teacher import OpenAITeacher
from longalign.secrets import read_api_key


pytestmark = pytest.mark.usefixtures("teacher_key")


def _api(server, **kw) -> TeacherAPIConfig:
    base = dict(base_url=server.url, api_key_env=KEY_ENV, concurrency=4, timeout_seconds=5,
                max_retries=6, backoff_seconds=0.01, backoff_max_seconds=0.05)
    return TeacherAPIConfig(**{**base, **kw})


def _chats(n):
    return [[{"role": "user", "content": f"Tell me about item {i}. Question: what is it?"}] for i in range(n)]


def test_teacher_requests_carry_model_temperature_and_limit(server):
    teacher = OpenAITeacher(_api(server, temperature=0.3), "fake-teacher")
    chats = _chats(3)
    out = teacher.complete(chats, 32)
    assert [c.text for c in out] == [canned_reply(chat) for chat in chats]
    assert teacher.name == "openai:fake-teacher" and teacher.fingerprint.endswith("temperature=0.3")
    assert teacher.usage_stats()["http_requests"] == 3 and teacher.batches == 1
    assert API_KEY not in repr(teacher)


def _read(config):
    return read_api_key(config.api_key_file, config.api_key_env, "generation.api")


def test_api_key_sources(tmp_path, monkeypatch):
    secret = tmp_path / "key"
    secret.write_text(" from-file \n")
    assert _read(TeacherAPIConfig(api_key_file=str(secret), api_key_env=KEY_ENV)) == "from-file"
    assert _read(TeacherAPIConfig(api_key_env=KEY_ENV)) == API_KEY
    assert _read(TeacherAPIConfig(api_key_env=None)) is None
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(UserError, match=f"set \\${KEY_ENV}"):
        _read(TeacherAPIConfig(api_key_env=KEY_ENV))
    with pytest.raises(UserError, match="cannot read"):
        _read(TeacherAPIConfig(api_key_file=str(tmp_path / "missing")))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UserError, match="is empty"):
        _read(TeacherAPIConfig(api_key_file=str(tmp_path / "empty")))


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
