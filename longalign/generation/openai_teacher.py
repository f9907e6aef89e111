"""The ``openai`` teacher: any OpenAI-compatible chat-completions endpoint (vLLM, TGI, KServe, a
hosted API), a thin user of the shared endpoint client (longalign.endpoints: the openai SDK, one
retry policy honouring Retry-After, bounded concurrency, the key reader and redaction).

What is the teacher's own: the model name and temperature in each request, and fitting a document
into the window by an estimated ``api.chars_per_token`` (we do not have the served tokenizer).
"""

from __future__ import annotations

from typing import Any, Sequence

from longalign.endpoints import Client
from longalign.generation.interface import TRUNCATION_MARK, Chat, Completion, OnResult


class OpenAITeacher:
    """The teacher interface (see ``teachers.py``) over an OpenAI-compatible endpoint."""

    def __init__(self, api, model: str, policy=None):
        self.api = api
        self.model = model
        self.client = Client(api, model, role="teacher", what="generation.api", policy=policy)
        self.name = f"openai:{model}"
        self.fingerprint = f"{self.name}|temperature={api.temperature}"
        self.load_seconds = 0.0

    def __repr__(self) -> str:
        return f"OpenAITeacher(model={self.model!r}, base_url={self.client.base_url!r})"

    @property
    def batches(self) -> int:
        return self.client.batches

    def usage_stats(self) -> dict[str, Any]:
        usage = self.client.usage
        return {"http_requests": usage.http_requests, "retries": dict(sorted(usage.retries.items())),
                "usage_estimated": usage.usage_estimated, "max_in_flight": usage.max_in_flight,
                "concurrency": self.api.concurrency, "host": self.client.host}

    def window(self, configured: int) -> tuple[int, str]:
        return configured, "config"

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """Middle-truncate to an estimated ``max_tokens`` (``api.chars_per_token``), cutting at spaces."""
        budget = int(max_tokens * self.api.chars_per_token)
        if len(text) <= budget:
            return text, False
        head, tail = budget // 2, budget - budget // 2
        head_end = max(text.rfind(" ", 0, head), text.rfind("\n", 0, head))
        tail_start = text.find(" ", len(text) - tail)
        head_end = head_end if head_end > head // 2 else head
        tail_start = tail_start + 1 if 0 <= tail_start < len(text) - tail // 2 else len(text) - tail
        return text[:head_end] + TRUNCATION_MARK + text[tail_start:], True

    def complete(self, prompts: Sequence[Chat], max_new_tokens: int, on_result: OnResult = None) -> list[Completion]:
        bodies = [self.client.body(list(chat), max_tokens=max_new_tokens, temperature=self.api.temperature)
                  for chat in prompts]
        return self.client.complete_many(bodies, on_result=on_result)
