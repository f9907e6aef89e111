"""The ``openai`` teacher: any OpenAI-compatible chat-completions endpoint (vLLM, TGI, KServe,
a hosted API), called with httpx2 from one asyncio loop.

- ``POST {base_url}/chat/completions`` with ``model``, ``messages``, ``max_tokens``, ``temperature``.
- At most ``concurrency`` requests in flight (a semaphore held only while a request is on the
  wire, never while a retry waits), over as many keep-alive connections.
- Our own retry policy (``retry.py``) on 429/5xx, timeouts, dropped connections and malformed
  replies, honouring Retry-After. 401/403/404 stop the run at once (``TeacherStopped``): every
  finished reply was already handed to ``on_result`` (the checkpoint), so a re-run resumes.
  Other 4xx fail that request only (counted; not checkpointed, so a re-run tries it again).
- The API key comes from the environment variable or the mounted file named in the config. It is
  kept in the client's headers only: never in ``repr``, log lines, errors, stats or outputs.

Why httpx2 and not the ``openai`` client: we need one endpoint, our own retries and full access
to raw status, headers and body (Retry-After, malformed JSON, empty choice lists); the client's
typed layer added measurable CPU per request (on two cores it capped concurrency 32 at about 13x
the throughput of concurrency 1, raw httpx2 at over 20x) and can log request options at debug level.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import httpx2

from longalign.errors import UserError
from longalign.generation.retry import FATAL_STATUSES, RETRY_STATUSES, RetryPolicy, parse_retry_after
from longalign.generation.teachers import TRUNCATION_MARK, Chat, Completion, OnResult
from longalign.secrets import read_api_key as _read_api_key

log = logging.getLogger("longalign")
PROGRESS_SECONDS = 10.0
_KEYLIKE = re.compile(r"\bsk-[A-Za-z0-9_\-*.]{4,}")  # OpenAI-style keys, even partly masked


class TeacherStopped(UserError):
    """The endpoint refused in a way no retry can fix (bad key, no access, unknown model or URL)."""


def read_api_key(api) -> str | None:
    """The teacher's API key (see longalign.secrets); None for an endpoint without authentication."""
    return _read_api_key(api.api_key_file, api.api_key_env, "generation.api")


class OpenAITeacher:
    """The teacher interface (see ``teachers.py``) over an OpenAI-compatible endpoint."""

    def __init__(self, api, model: str, policy: RetryPolicy | None = None):
        self.api = api
        self.model = model
        self.base_url = api.base_url.rstrip("/") + "/"
        self.name = f"openai:{model}"
        self.fingerprint = f"{self.name}|temperature={api.temperature}"
        self._headers = {"Authorization": f"Bearer {key}"} if (key := read_api_key(api)) else {}
        self._secret = key
        self.policy = policy or RetryPolicy(api.max_retries, api.backoff_seconds, api.backoff_max_seconds,
                                            api.max_retry_after_seconds)
        self.load_seconds = 0.0
        self.batches = 0
        self.requests = 0  # HTTP requests sent, retries included
        self.retries: Counter = Counter()  # reason -> retries
        self.failures: Counter = Counter()  # reason -> requests given up
        self.usage_estimated = 0  # replies without a usable usage block
        self.max_in_flight = 0
        self._in_flight = 0
        self._stopped = False  # set by a permanent error: nothing more is sent

    def __repr__(self) -> str:
        return f"OpenAITeacher(model={self.model!r}, base_url={self.base_url!r})"

    def usage_stats(self) -> dict[str, Any]:
        return {"http_requests": self.requests, "retries": dict(sorted(self.retries.items())),
                "failed": dict(sorted(self.failures.items())), "usage_estimated": self.usage_estimated,
                "max_in_flight": self.max_in_flight, "concurrency": self.api.concurrency}

    def _redact(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "***")
        return _KEYLIKE.sub("sk-***", text)

    # -- the Teacher interface ---------------------------------------------------------------
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
        if not prompts:
            return []
        self.batches += 1
        work = self._complete_all(list(prompts), max_new_tokens, on_result)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(work)
        with ThreadPoolExecutor(1) as pool:  # called from inside an event loop (e.g. a notebook)
            return pool.submit(asyncio.run, work).result()

    # -- the async machinery -----------------------------------------------------------------
    async def _complete_all(self, prompts: list[Chat], max_new_tokens: int, on_result: OnResult) -> list[Completion]:
        concurrency = self.api.concurrency
        limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        results: list[Completion | None] = [None] * len(prompts)
        done = 0
        self._stopped = False
        semaphore = asyncio.Semaphore(concurrency)
        async with httpx2.AsyncClient(base_url=self.base_url, headers=self._headers, limits=limits,
                                      timeout=httpx2.Timeout(self.api.timeout_seconds)) as client:

            async def run(i: int) -> None:
                nonlocal done
                completion = await self._request(client, semaphore, prompts[i], max_new_tokens)
                results[i] = completion
                done += 1
                if on_result is not None:
                    on_result(i, completion)

            async def progress() -> None:
                start = time.monotonic()
                while True:
                    await asyncio.sleep(PROGRESS_SECONDS)
                    log.info("teacher requests: %d/%d done, %d in flight, %d retries (%.0f s)", done,
                             len(prompts), self._in_flight, sum(self.retries.values()), time.monotonic() - start)

            reporter = asyncio.create_task(progress())
            tasks = [asyncio.create_task(run(i)) for i in range(len(prompts))]
            try:
                await asyncio.gather(*tasks)
            finally:
                reporter.cancel()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(reporter, *tasks, return_exceptions=True)
        return results  # type: ignore[return-value]

    async def _request(self, client: httpx2.AsyncClient, semaphore: asyncio.Semaphore, chat: Chat,
                       max_new_tokens: int) -> Completion:
        body = {"model": self.model, "messages": chat, "max_tokens": max_new_tokens,
                "temperature": self.api.temperature}
        reason = "unknown"
        for attempt in range(self.policy.max_retries + 1):
            retry_after = None
            response = None
            async with semaphore:
                if self._stopped:
                    raise asyncio.CancelledError
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
                self.requests += 1
                try:
                    response = await client.post("chat/completions", json=body)
                except httpx2.TimeoutException:
                    reason = "timeout"
                except httpx2.TransportError:  # refused, reset or dropped connection, protocol error
                    reason = "connection"
                finally:
                    self._in_flight -= 1
            if response is not None:
                status = response.status_code
                if status == 200:
                    completion, reason = self._parse(response, chat)
                    if completion is not None:
                        return completion
                elif status in FATAL_STATUSES:
                    self._stopped = True
                    raise TeacherStopped(self._fatal_message(response))
                elif status in RETRY_STATUSES:
                    reason = f"http_{status}"
                    retry_after = parse_retry_after(response.headers)
                else:  # another 4xx: this request is wrong (e.g. too long); retrying cannot help
                    reason = f"http_{status}"
                    log.warning("teacher request refused with HTTP %d: %s", status, self._server_message(response))
                    break
            if attempt == self.policy.max_retries:
                break
            wait = self.policy.delay(attempt, retry_after)
            self.retries[reason] += 1
            log.info("teacher request failed (%s); retry %d/%d in %.2f s", reason, attempt + 1,
                     self.policy.max_retries, wait)
            await asyncio.sleep(wait)
        self.failures[reason] += 1
        log.warning("teacher request given up (%s) after %d attempt(s)", reason, attempt + 1)
        return Completion("", 0, 0, "error", error=reason)

    def _parse(self, response: httpx2.Response, chat: Chat) -> tuple[Completion | None, str]:
        """The completion in a 200 reply, or None and the reason it is unusable."""
        try:
            data = response.json()
        except ValueError:
            return None, "malformed"
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list):
            return None, "malformed"
        if not choices or not isinstance(choices[0], dict):
            return None, "no_choice"
        choice = choices[0]
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        text = message.get("content")
        finish = choice.get("finish_reason") or "stop"
        if not text and message.get("refusal"):
            finish = "content_filter"
        if text is None:
            text = ""
        if not isinstance(text, str):
            return None, "malformed"
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        prompt_tokens, completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(prompt_tokens, int) or not isinstance(completion_tokens, int):
            self.usage_estimated += 1
            prompt_tokens = int(sum(len(m["content"]) for m in chat) / self.api.chars_per_token)
            completion_tokens = int(len(text) / self.api.chars_per_token)
        return Completion(text.strip(), prompt_tokens, completion_tokens, str(finish)), ""

    def _server_message(self, response: httpx2.Response) -> str:
        try:
            error = response.json().get("error")
            message = error.get("message") if isinstance(error, dict) else str(error)
        except (ValueError, AttributeError):
            message = response.text
        return self._redact(str(message or "")[:300])

    def _fatal_message(self, response: httpx2.Response) -> str:
        status = response.status_code
        if status == 401:
            where = (f"the file {self.api.api_key_file}" if self.api.api_key_file
                     else f"${self.api.api_key_env}" if self.api.api_key_env else "no key configured")
            return f"the teacher endpoint {self.base_url} rejected the API key (HTTP 401; key from {where})"
        if status == 403:
            return f"the teacher endpoint {self.base_url} denied access (HTTP 403): {self._server_message(response)}"
        return (f"the teacher endpoint {self.base_url} answered HTTP 404 for model {self.model!r}: "
                f"{self._server_message(response)} (check generation.teacher_model and api.base_url)")
