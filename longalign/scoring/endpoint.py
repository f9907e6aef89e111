"""Calls to an OpenAI-compatible chat-completions endpoint: API key, concurrency, usage, cache.

The ``openai`` client does the HTTP work (timeouts; retries with backoff on 429/5xx/connection
errors, honouring Retry-After). This module adds what scoring needs around it:

- the API key from a mounted file or an environment variable (never a CLI argument; it is handed to
  the client only and never logged or written);
- bounded concurrency (a thread pool of ``concurrency``);
- token usage and an estimated cost per endpoint (:class:`Usage`);
- an optional on-disk cache keyed by the full request body (:class:`CallCache`), so re-running a
  judged evaluation costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from longalign.config import EndpointConfig
from longalign.errors import UserError
from longalign.secrets import read_api_key

log = logging.getLogger("longalign")
NO_KEY = "no-key"  # sent when auth is switched off (the openai client always sends a bearer token)


def api_key(config: EndpointConfig, what: str = "the endpoint") -> str:
    """The key from ``config.api_key_file`` or ``$config.api_key_env`` (see longalign.secrets); with
    both null the endpoint needs no auth and ``NO_KEY`` is sent. ``what`` names the config section."""
    key = read_api_key(config.api_key_file, config.api_key_env, what)
    return NO_KEY if key is None else key


@dataclass
class Reply:
    """One chat completion: its text, why it ended, its token usage, and whether it came from cache."""

    text: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    error: str | None = None  # set when the call failed after the client's retries


@dataclass
class Usage:
    """Calls and tokens of one endpoint in this run; cached replies cost nothing."""

    calls: int = 0
    cached_calls: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, reply: Reply, config: EndpointConfig) -> None:
        if reply.cached:
            self.cached_calls += 1
            return
        if reply.error:
            self.failed_calls += 1
            return
        self.calls += 1
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        self.cost_usd += config.cost(reply.prompt_tokens, reply.completion_tokens)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["cost_usd"] = round(self.cost_usd, 6)
        return data


class CallCache:
    """Replies on disk, one JSON file per request, keyed by the SHA-256 of the canonical request.

    The key covers the whole request body (model, messages, sampling parameters) plus an attempt
    number, so a retry of an unusable reply is a new entry and a re-run replays every attempt. The
    endpoint URL is not part of the key: the same model name at another URL counts as the same model.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @staticmethod
    def key(body: dict, attempt: int = 0) -> str:
        text = json.dumps({"body": body, "attempt": attempt}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Reply | None:
        path = self._path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Reply(text=data["text"], finish_reason=data.get("finish_reason", "stop"),
                         prompt_tokens=data.get("prompt_tokens", 0),
                         completion_tokens=data.get("completion_tokens", 0), cached=True)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring an unreadable cache entry %s", path)
            return None

    def put(self, key: str, reply: Reply) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"text": reply.text, "finish_reason": reply.finish_reason,
                                   "prompt_tokens": reply.prompt_tokens,
                                   "completion_tokens": reply.completion_tokens}), encoding="utf-8")
        os.replace(tmp, path)


class Endpoint:
    """Chat completions from one OpenAI-compatible endpoint, ``concurrency`` at a time."""

    def __init__(self, config: EndpointConfig, *, cache: CallCache | None = None,
                 what: str = "the endpoint"):
        import openai

        self.config = config
        self.cache = cache
        self.usage = Usage()
        self._lock = threading.Lock()
        self._client = openai.OpenAI(base_url=config.base_url, api_key=api_key(config, what),
                                     timeout=config.timeout_seconds, max_retries=config.max_retries)

    def body(self, messages: list[dict], *, temperature: float, max_tokens: int | None = None) -> dict:
        """The request body sent for ``messages`` (also the cache key's content)."""
        body = {"model": self.config.model, "messages": messages, "temperature": temperature}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return body

    def complete(self, body: dict, attempt: int = 0) -> Reply:
        """One reply for ``body`` (from the cache when possible). Call failures after the client's
        retries come back as a Reply with ``error`` set; a rejected key or unknown model raises."""
        key = CallCache.key(body, attempt) if self.cache else ""
        reply = self.cache.get(key) if self.cache else None
        if reply is None:
            reply = self._call(body)
            if self.cache and reply.error is None:
                self.cache.put(key, reply)
        with self._lock:
            self.usage.add(reply, self.config)
        return reply

    def complete_many(self, bodies: list[dict], attempts: list[int] | None = None) -> list[Reply]:
        """Replies for ``bodies`` in order, at most ``concurrency`` requests in flight."""
        attempts = attempts or [0] * len(bodies)
        if len(bodies) <= 1 or self.config.concurrency == 1:
            return [self.complete(b, a) for b, a in zip(bodies, attempts)]
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            return list(pool.map(self.complete, bodies, attempts))

    def _call(self, body: dict) -> Reply:
        import openai

        try:
            response = self._client.chat.completions.create(**body)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            where = self.config.api_key_file or f"${self.config.api_key_env}"
            raise UserError(f"{self.config.base_url} rejected the API key (HTTP {exc.status_code}); "
                            f"check {where}") from None
        except openai.NotFoundError:
            raise UserError(f"{self.config.base_url} has no model {self.config.model!r} "
                            "(or no chat-completions route)") from None
        except openai.APIError as exc:
            message = " ".join(str(exc).split())[:200]
            log.warning("call to %s failed after retries: %s", self.config.base_url, message)
            return Reply(text="", finish_reason="error", error=f"{type(exc).__name__}: {message}")
        choice = response.choices[0] if response.choices else None
        usage = getattr(response, "usage", None)
        return Reply(text=(choice.message.content or "") if choice else "",
                     finish_reason=(choice.finish_reason or "stop") if choice else "empty",
                     prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                     completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0))
