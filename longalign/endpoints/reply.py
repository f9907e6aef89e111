"""One reply of a chat model, and the usage counter of one endpoint in one run."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One chat completion. ``finish_reason`` is ``stop`` (ended on its own), ``length`` (cut by the
    token limit) or ``content_filter``. ``error`` (the failure reason, e.g. ``http_500``) is set and
    the text empty when the request failed for good; such a reply is never journaled. ``cached``:
    served from the request journal, not sent."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    error: str | None = None
    cached: bool = False


@dataclass
class Usage:
    """Requests, tokens and estimated cost of one endpoint (or one local teacher) in this run.

    ``calls`` requests answered by the endpoint, ``cached`` answered from the journal (they cost
    nothing now; their tokens are kept apart), ``failed`` given up after retries (``failures``:
    reason -> count). ``http_requests`` counts every HTTP request, retries included."""

    calls: int = 0
    cached: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0
    http_requests: int = 0
    retries: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    usage_estimated: int = 0  # replies without a usable usage block (tokens estimated from characters)
    max_in_flight: int = 0
    prices: Any = field(default=None, repr=False, compare=False)  # an endpoint config: cost in as_dict

    @property
    def attempted(self) -> int:
        """Requests this run needed, whichever way they were answered (the failure rate's base)."""
        return self.calls + self.cached + self.failed

    def add(self, reply: Reply) -> None:
        if reply.error is not None:
            self.failed += 1
            self.failures[reply.error] += 1
        elif reply.cached:
            self.cached += 1
            self.cached_prompt_tokens += reply.prompt_tokens
            self.cached_completion_tokens += reply.completion_tokens
        else:
            self.calls += 1
            self.prompt_tokens += reply.prompt_tokens
            self.completion_tokens += reply.completion_tokens

    def cost(self, config) -> float:
        """Estimated cost of the requests sent in this run at ``config``'s prices."""
        return round(config.cost(self.prompt_tokens, self.completion_tokens), 6)

    def as_dict(self, config=None) -> dict[str, Any]:
        config = config if config is not None else self.prices
        data: dict[str, Any] = {
            "calls": self.calls, "cached": self.cached, "failed": self.failed,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "cached_completion_tokens": self.cached_completion_tokens,
            "http_requests": self.http_requests, "retries": dict(sorted(self.retries.items())),
            "failures": dict(sorted(self.failures.items())), "usage_estimated": self.usage_estimated,
            "max_in_flight": self.max_in_flight,
        }
        if config is not None:
            data["cost"] = self.cost(config)
        return data
