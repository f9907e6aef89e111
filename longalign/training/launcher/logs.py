"""Streaming the rank-0 pod's log into the launcher's own output while the job runs.

A follow stream does not always last as long as the pod: API server and proxy timeouts, a
kubelet restart or a dropped connection end it while training goes on for hours. Logs are
requested with timestamps, the last line shown is remembered, and a stream that ends while its
pod still runs is followed again from there (``sinceSeconds`` with a margin for clock skew; the
lines already shown are skipped by their timestamps), so the run's log in the KFP UI keeps going
without gaps or repeats.
"""

from __future__ import annotations

import math
import re
import threading
import time
from datetime import datetime
from typing import Any, Callable, Iterable

Sink = Callable[[str], None]

RESUMES = 1000  # times one pod's log is followed again (at most once per poll of the job)
MARGIN_SECONDS = 60  # asked for beyond the last line shown (clock skew); duplicates are skipped
TAIL_LINES = 500  # of a pod whose stream showed nothing
# "2026-12-02T07:00:00.123456789Z text" (RFC3339Nano: trailing zeros of the fraction dropped)
STAMPED = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) ?(.*)$",
                     re.DOTALL)


def stamp_key(line: str) -> tuple[tuple[int, int] | None, str]:
    """((epoch seconds, nanoseconds), text) of a timestamped log line; (None, line) without one."""
    m = STAMPED.match(line)
    if m is None:
        return None, line
    base, fraction, zone, text = m.groups()
    seconds = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone)).timestamp()
    return (int(seconds), int((fraction or "0").ljust(9, "0"))), text


class LogFollower:
    """Follows the log of each pod matching ``selector``, one pod at a time, in a daemon thread.

    ``poll()`` is called from the wait loop: when no stream is open it follows the last pod
    again if its stream ended while the pod still runs, else looks for a started pod it has not
    streamed yet (a restarted pod has a new name) and follows it. ``finish()`` waits briefly for
    the open stream, reads what the streams missed, and reads, without following, any pod that
    started and ended between two polls, so a short failing job still shows its output.
    """

    def __init__(self, core: Any, namespace: str, selector: str, container: str, sink: Sink,
                 *, clock: Callable[[], float] = time.time):
        self.core, self.namespace, self.selector = core, namespace, selector
        self.container, self.sink, self.clock = container, sink, clock
        self.streamed: list[str] = []
        self.unread: set[str] = set()  # pods whose streams showed no line yet
        self.ended: set[str] = set()  # pods whose last stream has ended
        self.failed: set[str] = set()  # ... with an error
        self.resumes: dict[str, int] = {}
        self.last: dict[str, tuple[tuple[int, int], int]] = {}  # pod -> (last stamp, lines at it)
        self._thread: threading.Thread | None = None

    def _started_pods(self) -> list[tuple[str, str]]:
        """(name, phase) of the pods that have started, oldest first."""
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector,
                                             _request_timeout=30).items
        pods = [p for p in pods if p.status and p.status.phase in ("Running", "Succeeded",
                                                                    "Failed")]
        pods.sort(key=lambda p: (p.metadata.creation_timestamp is None,
                                 p.metadata.creation_timestamp, p.metadata.name))
        return [(p.metadata.name, p.status.phase) for p in pods]

    def _start(self, pod: str, resume: bool) -> None:
        self.ended.discard(pod)
        self.failed.discard(pod)
        self._thread = threading.Thread(target=self._follow, args=(pod, resume), daemon=True,
                                        name=f"logs-{pod}")
        self._thread.start()

    def poll(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        try:
            pods = self._started_pods()
        except Exception as exc:  # logs are best effort: the job status decides the outcome
            self.sink(f"[launcher] cannot list pods ({_short(exc)})")
            return
        phase = dict(pods)
        current = self.streamed[-1] if self.streamed else None
        if (current in self.ended and phase.get(current) == "Running"
                and self.resumes.get(current, 0) < RESUMES):
            self.resumes[current] = self.resumes.get(current, 0) + 1
            if current in self.failed:  # a clean end while the pod runs is resumed quietly
                self.sink(f"[launcher] following the log of {current} again "
                          f"({self.resumes[current]}/{RESUMES})")
            self._start(current, resume=True)
            return
        fresh = [name for name, _ in pods if name not in self.streamed]
        if fresh:
            self.streamed.append(fresh[0])
            self.sink(f"[launcher] logs of pod {fresh[0]}:")
            self._start(fresh[0], resume=False)

    def finish(self, timeout: float = 10.0) -> None:
        """Wait for the open stream, then read what is not shown yet: the rest of every pod's
        log after its last line shown (a stream can end, cleanly or not, shortly before its pod
        does; nothing is printed when nothing is new), the tail of a pod whose stream showed
        nothing, and pods that started and ended between two polls."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.sink(f"[launcher] the log stream of {self.streamed[-1]} is still open "
                          f"after {timeout:g} s; reading the rest instead")
        try:
            fresh = [name for name, _ in self._started_pods() if name not in self.streamed]
        except Exception as exc:  # best effort, but say so
            self.sink(f"[launcher] cannot list pods for their logs ({_short(exc)})")
            fresh = []
        for pod in [p for p in self.streamed if p in self.unread or p in self.last] + fresh:
            if pod not in self.streamed:
                self.streamed.append(pod)
            self.unread.discard(pod)
            self._read(pod)

    def _follow(self, pod: str, resume: bool) -> None:
        try:
            resp = self.core.read_namespaced_pod_log(
                pod, self.namespace, container=self.container, follow=True, timestamps=True,
                _preload_content=False, _request_timeout=(30, None), **self._since(pod, resume))
            self._show(pod, _lines(resp.stream(64 * 1024)))
            resp.release_conn()
        except Exception as exc:
            self.sink(f"[launcher] log stream of {pod} ended: {_short(exc)}")
            self.failed.add(pod)
            if pod not in self.last:
                self.unread.add(pod)  # read its tail when the job ends
        finally:
            self.ended.add(pod)

    def _since(self, pod: str, resume: bool) -> dict[str, int]:
        """``since_seconds`` reaching back to the last line shown of ``pod`` (plus a margin)."""
        if not resume or pod not in self.last:
            return {}
        (seconds, _), _ = self.last[pod]
        return {"since_seconds": max(1, math.ceil(self.clock() - seconds) + MARGIN_SECONDS)}

    def _show(self, pod: str, lines: Iterable[str], header: str = "") -> None:
        """Sink each line not shown before (after ``header``, if there is one): a line stamped
        before the last one shown of this pod is skipped, and of the lines stamped exactly at
        it, as many as were shown."""
        last_key, shown_at = self.last.get(pod, (None, 0))
        skip = shown_at
        for line in lines:
            key, text = stamp_key(line)
            if key is not None and last_key is not None:
                if key < last_key:
                    continue
                if key == last_key and skip:
                    skip -= 1
                    continue
            if key is not None:
                shown_at = shown_at + 1 if key == last_key else 1
                last_key = key
                self.last[pod] = (key, shown_at)
            self.unread.discard(pod)
            if header:
                self.sink(header)
                header = ""
            self.sink(f"[{pod}] {text}")

    def _read(self, pod: str) -> None:
        """The rest of ``pod``'s log after the last line shown, or its last lines."""
        since = self._since(pod, resume=True)
        try:
            text = self.core.read_namespaced_pod_log(
                pod, self.namespace, container=self.container, timestamps=True,
                _request_timeout=30, **(since or {"tail_lines": TAIL_LINES}))
        except Exception as exc:
            self.sink(f"[launcher] cannot read the log of {pod}: {_short(exc)}")
            return
        self._show(pod, str(text).splitlines(),
                   f"[launcher] {'the rest of the log' if since else 'last lines'} of pod {pod}:")


def _lines(chunks: Iterable[bytes]) -> Iterable[str]:
    """Decoded lines of a byte stream (the last one even without a newline)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace")
    if pending:
        yield pending.decode("utf-8", "replace")


def _short(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status:
        return f"HTTP {status} {reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
