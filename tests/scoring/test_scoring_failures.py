"""The failure rule of longalign.endpoints in scoring, against a real HTTP server on 127.0.0.1: answers
or judge ratings that failed after retries are counted and reported; over the limit the stage fails
and writes nothing, unless partial results are allowed (then stats say so)."""

import json

import pytest
from fake_openai_server import API_KEY, KEY_ENV, FakeOpenAI
from test_scoring_remote import _lbc_data

from longalign.config import EndpointConfig, ScoringConfig
from longalign.endpoints import EndpointFailed
from longalign.scoring import score

pytestmark = pytest.mark.usefixtures("teacher_key")


def _reply(messages):
    return "Rating: [[5]]" if messages[0]["role"] == "system" else "It changed a lot."


@pytest.fixture
def fake():
    with FakeOpenAI(reply=_reply) as server:
        yield server


def _served(fake, model, **kw):
    return EndpointConfig(base_url=fake.url, model=model, api_key_env=KEY_ENV, max_retries=1,
                          backoff_seconds=0.01, backoff_max_seconds=0.02, **kw)


def _needle(fake, **kw):
    return ScoringConfig(suites=["ruler-needle"], lengths=[384], depths=[0.1 * d for d in range(1, 11)],
                         compare_base=False, endpoint=_served(fake, "served", **kw))


def _fail_first(n):
    doomed: list[str] = []

    def fault_for(messages, seen):
        text = messages[-1]["content"]
        if text not in doomed and len(doomed) < n:
            doomed.append(text)
        return "500" if text in doomed else None

    return fault_for


def test_one_failed_answer_in_ten_is_counted_as_wrong_and_reported(fake, tiny_model, tmp_path):
    fake.fault_for = _fail_first(1)
    stats = score(_needle(fake), tiny_model, tmp_path / "out")
    report = stats["endpoint_failures"]["answerer:model"]
    assert (report["failed"], report["attempted"], report["reasons"]) == (1, 10, {"http_500": 1})
    assert stats["endpoint_partial"] and stats["models"]["model"]["answer_usage"]["failed"] == 1
    assert stats["models"]["model"]["cases"]["ruler-needle"] == 10  # the unanswered case stays in the mean


def test_too_many_failed_answers_fail_the_stage_unless_partial_results_are_allowed(fake, tiny_model, tmp_path):
    fake.fault_for = _fail_first(5)
    with pytest.raises(EndpointFailed, match=r"answerer endpoint 127.0.0.1:\d+ failed 5 of 10 requests after "
                                             r"retries \(http_500 5\): over the 10% limit.*scoring.endpoint"
                                             r".allow_partial=true"):
        score(_needle(fake), tiny_model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    stats = score(_needle(fake, allow_partial=True), tiny_model, tmp_path / "out")
    assert stats["endpoint_partial"] and stats["endpoint_failures"]["answerer:model"]["over_limit"]


def test_failed_judge_calls_fail_the_stage_and_are_never_dropped_silently(fake, tiny_model, tmp_path, shared_lbc):
    data = _lbc_data(tmp_path / "lbc", shared_lbc)  # two questions, references "Reference 1." and "... 2."
    # every judge request about question 1 fails: 2 of the 4 judge calls (2 questions x 2 runs)
    fake.fault_for = lambda messages, seen: "500" if "Reference 1." in messages[-1]["content"] else None

    def config(**judge):
        return ScoringConfig(suites=["longbench-chat"], compare_base=False, endpoint=_served(fake, "served"),
                             longbench_chat={"data": str(data), "cache_dir": str(tmp_path / "cache"),
                                             "judge_retries": 0, "judge": _served(fake, "judge", **judge).model_dump()})

    with pytest.raises(EndpointFailed, match=r"judge endpoint 127.0.0.1:\d+ failed 2 of 4 requests"):
        score(config(), tiny_model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    stats = score(config(allow_partial=True), tiny_model, tmp_path / "out")
    judge = stats["endpoint_failures"]["judge"]
    assert stats["endpoint_partial"] and (judge["failed"], judge["attempted"], judge["reasons"]) == (2, 4, {"http_500": 2})
    assert stats["judge_usage"]["cached"] == 2  # question 2's ratings came from the journal of the failed run
    lbc = json.loads((tmp_path / "out" / "scores.json").read_text())["models"]["model"]["suites"]["longbench-chat"]
    assert lbc["unjudged"] == 1 and lbc["statuses"]["call_failed"] == 2
    for path in (tmp_path / "out").iterdir():
        assert API_KEY not in path.read_text(errors="replace")
