"""The one client for OpenAI-compatible chat-completions endpoints (teacher, answerer, judge).

- HTTP through the ``openai`` SDK's async client with its own retries switched off
  (``max_retries=0``): ``POST {base_url}/chat/completions`` with the body the caller built, the raw
  response read back (``with_raw_response``, never parsed into the SDK's types) so that status,
  headers and body are ours to judge.
- At most ``concurrency`` requests on the wire (a semaphore held only while a request is in flight,
  never while a retry waits), over the SDK's pool of keep-alive connections.
- One retry policy (``retry.py``) on 408/409/429/5xx, timeouts, dropped or refused connections and
  malformed replies (not JSON, JSON that is not a chat completion, no choice), honouring
  Retry-After. 401/403/404 stop the batch at once (``EndpointStopped``): every reply that already
  arrived was handed to ``on_result`` (and so to the journal). Other 4xx fail that request only,
  without retry.
- Requests that fail for good come back as a :class:`Reply` with ``error`` set and are counted
  (``usage.failures``); whether the run may go on is ``failures.check_failures``' decision.
- The API key (longalign.secrets) lives in the SDK client only: never in ``repr``, log lines,
  exception texts, stats or outputs. Server error texts are redacted before they are logged or
  raised, since a provider may echo the key (``Incorrect API key provided: sk-abc***xyz``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from longalign.endpoints.journal import Journal, request_key, through_journal
from longalign.endpoints.reply import Reply, Usage
from longalign.endpoints.retry import FATAL_STATUSES, RETRY_STATUSES, RetryPolicy, parse_retry_after
from longalign.errors import UserError
from longalign.secrets import read_api_key

log = logging.getLogger("longalign")
PROGRESS_SECONDS = 10.0
_KEYLIKE = re.compile(r"\bsk-[A-Za-z0-9_\-*.]{3,}")  # OpenAI-style keys, even partly masked
OnResult = Callable[[int, Reply], None] | None


class EndpointStopped(UserError):
    """The endpoint refused in a way no retry can fix (bad key, no access, unknown model or URL)."""


class _Ok:
    """A 200 reply's body (the SDK hands it over as text, untouched)."""

    status_code = 200

    def __init__(self, text: str):
        self.text = text

    def json(self):
        return json.loads(self.text)


def host_of(url: str) -> str:
    """``host:port`` of an endpoint URL (what messages name)."""
    return urlsplit(url).netloc or url


class Client:
    """Chat completions from one endpoint. ``config`` has the shared endpoint fields
    (longalign.config: base_url, api_key_*, concurrency, timeout_seconds, max_retries, backoff_*);
    ``role`` names it in messages (``teacher``, ``judge``, ``answerer``); ``what`` is its config
    section (``generation.api``, ...), used in hints."""

    def __init__(self, config, model: str, *, role: str = "endpoint", what: str = "the endpoint",
                 policy: RetryPolicy | None = None, journal_path: str | os.PathLike | None = None):
        self.config = config
        self.journal_path = journal_path  # a journal opened for each batch (keys: body and attempt)
        self.model = model
        self.role = role
        self.what = what
        self.base_url = config.base_url.rstrip("/") + "/"
        self.host = host_of(config.base_url)
        self._key = read_api_key(config.api_key_file, config.api_key_env, what)
        self.policy = policy or RetryPolicy(config.max_retries, config.backoff_seconds,
                                            config.backoff_max_seconds, config.max_retry_after_seconds)
        self.usage = Usage(prices=config)
        self.batches = 0
        self._in_flight = 0
        self._stopped = False  # set by a permanent error: nothing more is sent

    def __repr__(self) -> str:
        return f"Client(role={self.role!r}, model={self.model!r}, base_url={self.base_url!r})"

    def redact(self, text: str) -> str:
        """``text`` without the API key or anything shaped like one (also partly masked keys)."""
        if self._key:
            text = text.replace(self._key, "***")
        return _KEYLIKE.sub("sk-***", text)

    def body(self, messages: list[dict], *, max_tokens: int | None = None, temperature: float = 0.0,
             seed: int | None = None) -> dict[str, Any]:
        """The request body for ``messages`` (also what journal keys are made of)."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": temperature}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if seed is not None:
            body["seed"] = seed
        return body

    # -- the batch interface ----------------------------------------------------------------
    def complete_many(self, bodies: Sequence[dict], attempts: Sequence[int] | None = None, *,
                      on_result: OnResult = None, journal: Journal | None = None,
                      keys: Sequence[str] | None = None, meta: Sequence[dict] | None = None) -> list[Reply]:
        """Replies for ``bodies`` in order. With a ``journal`` (and one key per body), journaled
        requests are served without sending and new successful replies are appended as they arrive;
        a client made with ``journal_path`` does that by itself, keyed by each body and its number
        in ``attempts`` (a deliberate repeat of a request is a new attempt number). ``on_result(i,
        reply)`` sees each new reply as it finishes. Every reply is counted in ``usage``."""
        bodies = list(bodies)
        if journal is None and self.journal_path is not None:
            attempts = list(attempts) if attempts is not None else [0] * len(bodies)
            with Journal(self.journal_path, wait=True) as own:
                return self.complete_many(bodies, journal=own, on_result=on_result,
                                          keys=[request_key(b, a) for b, a in zip(bodies, attempts)])
        if journal is not None:
            if keys is None or len(keys) != len(bodies):
                raise ValueError("a journal needs one key per body")

            def send(idx: list[int], journal_cb) -> list[Reply]:
                def both(j: int, reply: Reply) -> None:  # the journal's, then the caller's (by body index)
                    journal_cb(j, reply)
                    if on_result is not None:
                        on_result(idx[j], reply)
                return self._send([bodies[i] for i in idx], both)

            results = through_journal(journal, keys, send, meta)
        else:
            results = self._send(bodies, on_result)
        for reply in results:
            self.usage.add(reply)
        return results

    def _send(self, bodies: list[dict], on_result: OnResult) -> list[Reply]:
        if not bodies:
            return []
        self.batches += 1
        work = self._send_all(bodies, on_result)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(work)
        with ThreadPoolExecutor(1) as pool:  # called from inside an event loop (e.g. a notebook)
            return pool.submit(asyncio.run, work).result()

    # -- the async machinery ----------------------------------------------------------------
    def _sdk_client(self):
        import openai

        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self._key or "unused", max_retries=0,
                                  timeout=self.config.timeout_seconds)

    async def _send_all(self, bodies: list[dict], on_result: OnResult) -> list[Reply]:
        results: list[Reply | None] = [None] * len(bodies)
        done = 0
        self._stopped = False
        semaphore = asyncio.Semaphore(self.config.concurrency)
        async with self._sdk_client() as client:

            async def run(i: int) -> None:
                nonlocal done
                reply = await self._request(client, semaphore, bodies[i])
                results[i] = reply
                done += 1
                if on_result is not None:
                    on_result(i, reply)

            async def progress() -> None:
                start = time.monotonic()
                while True:
                    await asyncio.sleep(PROGRESS_SECONDS)
                    log.info("%s requests: %d/%d done, %d in flight, %d retries (%.0f s)", self.role, done,
                             len(bodies), self._in_flight, sum(self.usage.retries.values()),
                             time.monotonic() - start)

            reporter = asyncio.create_task(progress())
            tasks = [asyncio.create_task(run(i)) for i in range(len(bodies))]
            try:
                await asyncio.gather(*tasks)
            finally:
                reporter.cancel()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(reporter, *tasks, return_exceptions=True)
        return results  # type: ignore[return-value]

    async def _post(self, client, semaphore: asyncio.Semaphore, body: dict):
        """One HTTP request: ``(response or None, failure reason, Retry-After seconds)``."""
        import openai

        async with semaphore:
            if self._stopped:
                raise asyncio.CancelledError
            self._in_flight += 1
            self.usage.max_in_flight = max(self.usage.max_in_flight, self._in_flight)
            self.usage.http_requests += 1
            try:
                # no key: the Authorization header is left out altogether
                options = {} if self._key else {"headers": {"Authorization": openai.Omit()}}
                text = await client.post("/chat/completions", body=body, cast_to=str, options=options)
                return _Ok(text), "", None
            except openai.APITimeoutError:
                return None, "timeout", None
            except openai.APIConnectionError:  # refused, reset or dropped connection, protocol error
                return None, "connection", None
            except openai.APIStatusError as exc:
                return exc.response, f"http_{exc.status_code}", parse_retry_after(exc.response.headers)
            finally:
                self._in_flight -= 1

    async def _request(self, client, semaphore: asyncio.Semaphore, body: dict) -> Reply:
        reason = "unknown"
        attempt = 0
        for attempt in range(self.policy.max_retries + 1):
            response, reason, retry_after = await self._post(client, semaphore, body)
            if response is not None:
                status = response.status_code
                if status == 200:
                    reply, reason = self._parse(response, body)
                    if reply is not None:
                        return reply
                elif status in FATAL_STATUSES:
                    self._stopped = True
                    raise EndpointStopped(self._fatal_message(response))
                elif status not in RETRY_STATUSES:  # another 4xx: this request is wrong; retrying cannot help
                    log.warning("%s request refused with HTTP %d: %s", self.role, status, self._server_message(response))
                    break
            if attempt == self.policy.max_retries:
                break
            wait = self.policy.delay(attempt, retry_after)
            self.usage.retries[reason] += 1
            log.info("%s request failed (%s); retry %d/%d in %.2f s", self.role, reason, attempt + 1,
                     self.policy.max_retries, wait)
            await asyncio.sleep(wait)
        log.warning("%s request given up (%s) after %d attempt(s)", self.role, reason, attempt + 1)
        return Reply("", finish_reason="error", error=reason)

    def _parse(self, response, body: dict) -> tuple[Reply | None, str]:
        """The reply in a 200 response, or None and the reason it is unusable."""
        try:
            data = response.json()
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            return None, "malformed"
        # valid JSON that is not a chat completion (a list, a string, null, no choice list)
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list):
            return None, "malformed"
        if not choices or not isinstance(choices[0], dict):
            return None, "no_choice"
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):  # missing or not an object: nothing to read the text from
            return None, "malformed"
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
            self.usage.usage_estimated += 1
            chars = getattr(self.config, "chars_per_token", 3.5)
            prompt_tokens = int(sum(len(str(m.get("content", ""))) for m in body["messages"]) / chars)
            completion_tokens = int(len(text) / chars)
        return Reply(text.strip(), prompt_tokens, completion_tokens, str(finish)), ""

    def _server_message(self, response) -> str:
        try:
            error = response.json().get("error")
            message = error.get("message") if isinstance(error, dict) else str(error)
        except (ValueError, AttributeError):
            message = response.text
        return self.redact(" ".join(str(message or "").split())[:300])

    def _fatal_message(self, response) -> str:
        status = response.status_code
        where = f"the {self.role} endpoint {self.base_url}"
        if status == 401:
            source = (f"the file {self.config.api_key_file}" if self.config.api_key_file
                      else f"${self.config.api_key_env}" if self.config.api_key_env else "no key configured")
            return f"{where} rejected the API key (HTTP 401; key from {source})"
        if status == 403:
            return f"{where} denied access (HTTP 403): {self._server_message(response)}"
        return (f"{where} answered HTTP 404 for model {self.model!r}: {self._server_message(response)} "
                f"(check the model name and {self.what}.base_url)")
