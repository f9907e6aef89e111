"""The failure rule's report and messages, exactly (longalign.endpoints.failures)."""

from collections import Counter

import pytest

from longalign.config import TeacherAPIConfig
from longalign.endpoints import EndpointFailed, Usage, check_failures
from longalign.endpoints.failures import reasons_text


def _usage(calls, **failures):
    return Usage(calls=calls, failed=sum(failures.values()), failures=Counter(failures))


def _config(**kw):
    return TeacherAPIConfig(base_url="http://h:1/v1", api_key_env=None, **kw)


def test_the_report_of_a_run_within_the_limit():
    report = check_failures(_usage(57, http_500=2, timeout=1), _config(), role="teacher", host="h:1",
                            what="generation.api")
    assert report == {"host": "h:1", "attempted": 60, "failed": 3, "rate": 0.05, "limit": 0.1,
                      "reasons": {"http_500": 2, "timeout": 1}, "partial": True, "over_limit": False}
    third = check_failures(_usage(2, timeout=1), _config(max_failure_rate=0.5), role="t", host="h", what="w")
    assert third["rate"] == 0.3333  # four decimals
    clean = check_failures(Usage(), _config(), role="t", host="h", what="w")
    assert clean["rate"] == 0.0 and clean["attempted"] == 0 and not clean["partial"]


def test_the_messages_say_what_failed_what_is_kept_and_what_to_do():
    over = _usage(5, http_500=3, connection=3, http_429=1)
    with pytest.raises(EndpointFailed) as info:
        check_failures(over, _config(), role="judge", host="h:1", what="scoring.judge",
                       kept="the request journal")
    assert str(info.value) == (
        "the judge endpoint h:1 failed 7 of 12 requests after retries (connection 3, http_500 3, http_429 1): "
        "over the 10% limit; 5 successful replies are kept in the request journal and a rerun sends only "
        "the failed requests, or set scoring.judge.allow_partial=true to keep partial data")
    with pytest.raises(EndpointFailed) as info:
        check_failures(_usage(0, timeout=4), _config(allow_partial=True), role="teacher", host="h:1",
                       what="generation.api")
    assert str(info.value) == (
        "the teacher endpoint h:1 failed 4 of 4 requests after retries (timeout 4): no request succeeded; "
        "0 successful replies are kept and a rerun sends only the failed requests")


def test_reasons_are_listed_most_frequent_first_then_by_name():
    assert reasons_text({"timeout": 1, "http_500": 4, "connection": 4}) == "connection 4, http_500 4, timeout 1"
    assert reasons_text({}) == ""
