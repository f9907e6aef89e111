"""An Answerer backed by any OpenAI-compatible endpoint (e.g. vLLM serving the trained checkpoint)."""

from __future__ import annotations

import copy
import logging

from longalign.config import EndpointConfig
from longalign.scoring.chat import count_tokens, truncate_messages
from longalign.endpoints import Client

log = logging.getLogger("longalign")


class OpenAIAnswerer:
    """Answers chats through ``/chat/completions`` of an OpenAI-compatible server.

    The served model's tokenizer (``tokenizer``, loaded locally from the checkpoint or hub id) measures
    prompts: a chat longer than ``context - max_new_tokens`` tokens has the middle of its longest user
    message cut (first and last halves kept). A final assistant message (an answer prefix) is dropped:
    a generic endpoint cannot continue it, and exact-match scoring does not need it echoed.

    Greedy (temperature 0) unless ``with_generation`` asks for sampling. Model answers are never
    journaled (a new checkpoint may be served under the same name). A call that fails after retries
    yields an empty answer and is counted in ``endpoint.usage.failed``; the scoring stage fails when
    there are too many (longalign.endpoints.failures).
    """

    def __init__(self, config: EndpointConfig, tokenizer, max_new_tokens: int, *,
                 context: int | None = None, temperature: float = 0.0, what: str = "scoring.endpoint"):
        self.config = config
        self.endpoint = Client(config, config.model, role="answerer", what=what)
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.window = config.context or context or getattr(tokenizer, "model_max_length", None) or 4096
        self.window = min(self.window, 1 << 24)  # tokenizers without a limit report a huge number
        self.temperature = temperature
        self.seed = 0
        self.truncated = 0
        self.prompt_tokens: list[int] = []

    @property
    def limit(self) -> int:
        return max(16, self.window - self.max_new_tokens)

    def with_budget(self, max_new_tokens: int) -> "OpenAIAnswerer":
        return self.with_generation(max(self.max_new_tokens, max_new_tokens), self.temperature, self.seed)

    def with_generation(self, max_new_tokens: int, temperature: float, seed: int = 0) -> "OpenAIAnswerer":
        """The same endpoint (sharing its usage) with another budget and temperature; sampled
        requests carry ``seed`` (servers such as vLLM then sample reproducibly)."""
        other = copy.copy(self)
        other.max_new_tokens = max_new_tokens
        other.temperature = temperature
        other.seed = seed
        return other

    def answer(self, prompts: list[list[dict]]) -> list[str]:
        chats, fed = [], []
        self.truncated = 0
        for messages in prompts:
            full = count_tokens(self.tokenizer, messages)
            if messages and messages[-1]["role"] == "assistant":
                messages = messages[:-1]
            messages, cut = truncate_messages(self.tokenizer, messages, self.limit)
            self.truncated += cut
            chats.append(messages)
            fed.append(count_tokens(self.tokenizer, messages) if cut else full)  # tokens of the case kept
        if self.truncated:
            log.warning("%d prompt(s) longer than the %d-token limit were middle-truncated",
                        self.truncated, self.limit)
        self.prompt_tokens = fed
        bodies = [self.endpoint.body(m, temperature=self.temperature, max_tokens=self.max_new_tokens)
                  for m in chats]
        if self.temperature > 0:
            for body in bodies:
                body["seed"] = self.seed
        return [r.text.strip() for r in self.endpoint.complete_many(bodies)]
