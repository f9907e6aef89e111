"""The retry policy: Retry-After parsing and exponential backoff with jitter."""

import random
import time
from email.utils import formatdate

from longalign.endpoints.retry import FATAL_STATUSES, RETRY_STATUSES, RetryPolicy, parse_retry_after


def test_retry_after_forms():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "-4"}) is None
    now = 1_700_000_000.0
    assert parse_retry_after({"retry-after": formatdate(now + 30, usegmt=True)}, now=now) == 30.0
    assert parse_retry_after({"retry-after": formatdate(now - 30, usegmt=True)}, now=now) == 0.0


def test_backoff_doubles_with_jitter_and_is_capped():
    policy = RetryPolicy(backoff=1.0, backoff_max=10.0, rng=random.Random(0))
    for attempt, ceiling in [(0, 1), (1, 2), (2, 4), (3, 8), (4, 10), (9, 10)]:
        waits = [policy.delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert max(waits) - min(waits) > ceiling / 4  # jittered, not constant


def test_server_wait_wins_but_is_capped():
    policy = RetryPolicy(backoff=1.0, backoff_max=2.0, max_retry_after=30.0, rng=random.Random(0))
    assert all(5.0 <= policy.delay(0, retry_after=5.0) <= 5.5 for _ in range(100))
    assert all(30.0 <= policy.delay(0, retry_after=3600) <= 33.0 for _ in range(100))


def test_status_classes():
    assert {429, 500, 502, 503, 504, 408} <= RETRY_STATUSES
    assert not {400, 401, 403, 404, 422} & RETRY_STATUSES
    assert FATAL_STATUSES == {401, 403, 404}


def test_retry_after_edges():
    assert parse_retry_after({"retry-after": "0"}) == 0.0 and parse_retry_after({"retry-after-ms": "0"}) == 0.0
    assert parse_retry_after({"retry-after": "-5"}) is None and parse_retry_after({"retry-after-ms": "-5"}) is None
    # an HTTP date in the future, against the clock when no "now" is given
    future = formatdate(time.time() + 120, usegmt=True)
    assert 100 < parse_retry_after({"retry-after": future}) <= 120


def test_the_jitter_of_a_server_given_wait_is_at_most_a_tenth():
    policy = RetryPolicy(rng=random.Random(0))
    waits = [policy.delay(0, retry_after=100.0) for _ in range(200)]
    assert all(100.0 <= w <= 110.0 for w in waits) and max(waits) > 105.0
