"""A real OpenAI-compatible chat-completions server on 127.0.0.1 for the endpoint-client tests
(teacher, judge and answerer all go through longalign.endpoints).

It serves canned replies (a function of the request's messages), checks the bearer token, and can
inject faults into chosen requests: 429 with Retry-After, 500, a slow reply (for client timeouts),
a dropped connection, a malformed body, an empty choice list, well-formed JSON that is not a
chat completion (a list, a string, null, an object without ``choices``, a choice whose message is
not an object or whose content is not text, JSON nested too deep to parse), a refusal, a reply
without finish reason, without usage or with prompt tokens only, 400, 401, 403 and 404. A request
to any path but ``/v1/chat/completions`` gets a 404. Like real
providers, its 401 body repeats the key it got partly masked ("sk-tes***cret"), and the faults
``400_echo`` / ``403_echo`` repeat it in full and partly masked. It records every request it
received (time, outcome, body size in bytes) and the largest number of requests in flight at once.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

API_KEY = "sk-test-0123456789abcdef-secret"
KEY_ENV = "LONGALIGN_TEST_TEACHER_KEY"  # the variable the tests name in api_key_env


# 200 replies whose body is valid JSON but not a chat completion, by fault name
NOT_COMPLETIONS = {
    "json_list": [{"message": {"role": "assistant", "content": "a list, not an object"}}],
    "json_string": "the reply as a bare JSON string",
    "json_null": None,
    "no_choices": {"id": "chatcmpl-x", "object": "chat.completion", "created": 0,
                   "usage": {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}},
    "message_not_object": {"id": "chatcmpl-x", "object": "chat.completion", "created": 0,
                           "choices": [{"index": 0, "message": "plain text where an object belongs",
                                        "finish_reason": "stop"}]},
    "content_not_text": {"id": "chatcmpl-x", "object": "chat.completion", "created": 0,
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": [{"n": 1}]},
                                      "finish_reason": "stop"}]},
}
PATH = "/v1/chat/completions"  # what it serves; any other path is answered 404, as real servers do


def body_key(messages: list[dict]) -> str:
    """A short stable id of a request's messages (also appended to canned replies as a tag)."""
    return hashlib.sha1(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:12]


def canned_reply(messages: list[dict]) -> str:
    """Five numbered questions for a question prompt, a short answer for an answer prompt; both
    end with the request's tag so a reply can be traced back to its request."""
    prompt = messages[-1]["content"]
    tag = body_key(messages)
    if "Question:" in prompt:
        return f"The text describes the council, its bridges and its taxes. [ref {tag}]"
    first = prompt.split(".", 1)[0][-40:].strip()
    return ("Here are the questions:\n"
            f"1. What does the passage starting with '{first}' describe?\n"
            "2. Which goods did the merchants trade?\n"
            "3. When did the council meet?\n"
            "4. Why did the town grow around the mill?\n"
            "5. What happened in the harvest year?\n"
            f"[ref {tag}]")


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default 5 resets connections when many clients connect at once
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that timed out or was killed closed its connection: expected here


@dataclass
class Record:
    """One request as the server saw it."""

    key: str
    start: float
    end: float = 0.0
    outcome: str = ""  # "ok" or the injected fault
    authorization: str = ""
    size: int = 0  # bytes of the request body
    prompt: str = ""  # the last message's content
    body: dict = field(default_factory=dict)  # the request body as received
    path: str = ""


@dataclass
class FakeOpenAI:
    """Start with ``with FakeOpenAI() as server:``; ``server.url`` is the client's base URL."""

    reply: Callable[[list[dict]], str] = canned_reply
    # Or a function of the whole request body and how often these messages were seen before
    # (the scoring tests' judge answers per model and per repeat).
    respond: Callable[[dict, int], str] | None = None
    latency: float = 0.0
    api_key: str = API_KEY
    slow_seconds: float = 2.0
    finish_reason: str = "stop"
    # Faults for the next requests, in arrival order: "429", "500", "slow", "drop", "malformed",
    # "empty_choices", "too_deep", one of NOT_COMPLETIONS, "refusal", "no_finish", "no_usage",
    # "partial_usage", "400", "401", "404" (None lets a request through).
    faults: deque = field(default_factory=deque)
    # Or a function of the request's messages and how often that request was seen before.
    fault_for: Callable[[list[dict], int], str | None] | None = None
    retry_after: str = "1"
    records: list[Record] = field(default_factory=list)
    max_in_flight: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()
        self._in_flight = 0
        self._seen: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else small replies wait for delayed ACKs (about 40 ms)

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                server._handle(self)

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        # a short poll interval: shutdown() waits for it (the default 0.5 s per test adds up)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- bookkeeping -------------------------------------------------------------------------
    def keys(self, outcome: str | None = "ok") -> list[str]:
        with self._lock:
            return [r.key for r in self.records if outcome is None or r.outcome == outcome]

    def reset(self) -> None:
        with self._lock:
            self.records.clear()
            self._seen.clear()
            self.max_in_flight = 0

    # -- serving -----------------------------------------------------------------------------
    def _send_json(self, handler, status: int, payload: object, headers: dict | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        try:
            handler.wfile.write(data)
            handler.wfile.flush()
        except OSError:  # the client gave up (timeout) and closed the connection
            handler.close_connection = True

    def _handle(self, handler) -> None:
        length = int(handler.headers.get("Content-Length", 0))
        raw = handler.rfile.read(length)
        body = json.loads(raw or b"{}")
        messages = body.get("messages", [])
        key = body_key(messages)
        record = Record(key=key, start=time.monotonic(), authorization=handler.headers.get("Authorization", ""),
                        size=len(raw), prompt=messages[-1]["content"] if messages else "", body=body,
                        path=handler.path)
        with self._lock:
            self.records.append(record)
            seen = self._seen.get(key, 0)
            self._seen[key] = seen + 1
            fault = self.faults.popleft() if self.faults else None
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        if fault is None and self.fault_for is not None:
            fault = self.fault_for(messages, seen)
        try:
            self._respond(handler, body, messages, key, fault, record, seen)
        finally:
            record.end = time.monotonic()
            with self._lock:
                self._in_flight -= 1

    def _respond(self, handler, body, messages, key, fault, record, seen) -> None:
        record.outcome = fault or "ok"
        sent = handler.headers.get("Authorization", "").removeprefix("Bearer ")
        if sent != self.api_key or fault == "401":
            record.outcome = "401"
            masked = f"{sent[:6]}***{sent[-4:]}" if sent else "(none)"
            self._send_json(handler, 401, {"error": {"message": f"Incorrect API key provided: {masked}. You can "
                                                                "find your API key in your account settings.",
                                                     "type": "invalid_request_error", "code": "invalid_api_key"}})
            return
        if handler.path != PATH:
            record.outcome = "404_path"
            self._send_json(handler, 404, {"error": {"message": f"Invalid URL (POST {handler.path})",
                                                     "type": "invalid_request_error"}})
            return
        if fault in ("400_echo", "403_echo"):
            status = int(fault[:3])
            self._send_json(handler, status, {"error": {
                "message": f"Request with key {sent} ({sent[:6]}***{sent[-4:]}) refused: project "
                           "sk-proj-4f9a***b2c1 has no access.",
                "type": "invalid_request_error"}})
            return
        if self.latency:
            time.sleep(self.latency)
        if fault == "429":
            self._send_json(handler, 429, {"error": {"message": "Rate limit reached.", "type": "rate_limit"}},
                            {"Retry-After": self.retry_after})
        elif fault == "500":
            self._send_json(handler, 500, {"error": {"message": "Internal error.", "type": "server_error"}})
        elif fault == "400":
            self._send_json(handler, 400, {"error": {"message": "This model's maximum context length is 8192 tokens.",
                                                     "type": "invalid_request_error"}})
        elif fault == "404":
            self._send_json(handler, 404, {"error": {"message": f"The model {body.get('model')} does not exist.",
                                                     "type": "invalid_request_error", "code": "model_not_found"}})
        elif fault == "drop":
            handler.close_connection = True
            handler.connection.shutdown(2)  # closes the socket without any response
        elif fault == "malformed":
            self._send_json(handler, 200, b'{"id": "x", "choices": [{"message": ')
        elif fault == "too_deep":  # valid JSON nested deeper than any parser's recursion limit
            self._send_json(handler, 200, b"[" * 100_000 + b"]" * 100_000)
        elif fault in NOT_COMPLETIONS:
            self._send_json(handler, 200, json.dumps(NOT_COMPLETIONS[fault]).encode())
        else:
            if fault == "slow":
                time.sleep(self.slow_seconds)
            text = self.respond(body, seen) if self.respond is not None else self.reply(messages)
            message = {"role": "assistant", "content": text}
            if fault == "refusal":  # a model's refusal: no content, the reason in "refusal"
                message = {"role": "assistant", "content": None, "refusal": "I can't help with that request."}
            choices = [] if fault == "empty_choices" else [
                {"index": 0, "message": message, "finish_reason": None if fault == "no_finish" else self.finish_reason}]
            prompt_tokens = sum(len(m["content"].split()) for m in messages)
            reply = {"id": f"chatcmpl-{key}", "object": "chat.completion", "created": 0, "model": body.get("model"),
                     "choices": choices,
                     "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                               "total_tokens": prompt_tokens + len(text.split())}}
            if fault == "no_usage":  # some OpenAI-compatible servers send no token counts
                del reply["usage"]
            elif fault == "partial_usage":  # prompt tokens only
                reply["usage"] = {"prompt_tokens": prompt_tokens}
            self._send_json(handler, 200, reply)
