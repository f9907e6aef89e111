"""When to retry a teacher request, and how long to wait first.

Transient failures (HTTP 408, 409, 429 and 5xx, timeouts, dropped or refused connections, a reply
that is not valid JSON or holds no choice) are retried up to ``max_retries`` times. The wait
before retry ``n`` (0-based) is drawn uniformly from ``[d/2, d]`` with
``d = min(backoff_max, backoff * 2**n)`` (exponential backoff with jitter, so many clients that
failed together do not come back together). When the server says how long to wait
(``Retry-After`` in seconds or as an HTTP date, or ``retry-after-ms``), that wait is used instead,
capped at ``max_retry_after`` and never shorter than the server asked (plus up to 10% jitter).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Mapping

RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
FATAL_STATUSES = frozenset({401, 403, 404})  # wrong key, no access, wrong model or URL: stop the run


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asks us to wait, or None when it does not say (or says nonsense)."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            seconds = float(value) / 1000
            return seconds if seconds >= 0 else None
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
        return seconds if seconds >= 0 else None
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class RetryPolicy:
    max_retries: int = 6
    backoff: float = 1.0
    backoff_max: float = 60.0
    max_retry_after: float = 600.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        if retry_after is not None:
            wait = min(retry_after, self.max_retry_after)
            return wait + self.rng.uniform(0, 0.1 * wait)
        ceiling = min(self.backoff_max, self.backoff * 2 ** attempt)
        return self.rng.uniform(ceiling / 2, ceiling)
