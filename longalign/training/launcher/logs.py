"""Streaming the rank-0 pod's log into the launcher's own output while the job runs."""

from __future__ import annotations

import threading
from typing import Any, Callable

Sink = Callable[[str], None]


class LogFollower:
    """Follows the log of each pod matching ``selector``, one pod at a time, in a daemon thread.

    ``poll()`` is called from the wait loop: when no stream is open it looks for a started pod
    it has not streamed yet (a restarted pod has a new name) and follows it. ``finish()`` waits
    briefly for the open stream and reads, without following, any pod that started and ended
    between two polls, so a short failing job still shows its output.
    """

    def __init__(self, core: Any, namespace: str, selector: str, container: str, sink: Sink):
        self.core, self.namespace, self.selector = core, namespace, selector
        self.container, self.sink = container, sink
        self.streamed: list[str] = []
        self.unread: set[str] = set()  # pods whose follow stream ended before any output
        self._thread: threading.Thread | None = None

    def _started_pods(self) -> list[str]:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector,
                                             _request_timeout=30).items
        pods = [p for p in pods if p.status and p.status.phase in ("Running", "Succeeded",
                                                                    "Failed")]
        pods.sort(key=lambda p: (p.metadata.creation_timestamp is None,
                                 p.metadata.creation_timestamp, p.metadata.name))
        return [p.metadata.name for p in pods if p.metadata.name not in self.streamed]

    def poll(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        try:
            fresh = self._started_pods()
        except Exception as exc:  # logs are best effort: the job status decides the outcome
            self.sink(f"[launcher] cannot list pods ({_short(exc)})")
            return
        if fresh:
            pod = fresh[0]
            self.streamed.append(pod)
            self._thread = threading.Thread(target=self._follow, args=(pod,), daemon=True,
                                            name=f"logs-{pod}")
            self._thread.start()

    def finish(self, timeout: float = 10.0) -> None:
        """Wait for the open stream, then read the tail of every pod not shown yet: those that
        started and ended between two polls, and those whose stream failed before any output."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.sink(f"[launcher] the log stream of {self.streamed[-1]} is still open "
                          f"after {timeout:g} s; reading its last lines instead")
                self.unread.add(self.streamed[-1])
        try:
            fresh = self._started_pods()
        except Exception as exc:  # best effort, but say so
            self.sink(f"[launcher] cannot list pods for their logs ({_short(exc)})")
            fresh = []
        for pod in [p for p in self.streamed if p in self.unread] + fresh:
            if pod not in self.streamed:
                self.streamed.append(pod)
            self.unread.discard(pod)
            self._read(pod)

    def _follow(self, pod: str) -> None:
        self.sink(f"[launcher] logs of pod {pod}:")
        shown = False
        try:
            resp = self.core.read_namespaced_pod_log(
                pod, self.namespace, container=self.container, follow=True,
                _preload_content=False, _request_timeout=(30, None))
            pending = b""
            for chunk in resp.stream(64 * 1024):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self.sink(f"[{pod}] {line.decode('utf-8', 'replace')}")
                    shown = True
            if pending:
                self.sink(f"[{pod}] {pending.decode('utf-8', 'replace')}")
                shown = True
            resp.release_conn()
        except Exception as exc:
            self.sink(f"[launcher] log stream of {pod} ended: {_short(exc)}")
            if not shown:  # read its tail when the job ends
                self.unread.add(pod)

    def _read(self, pod: str) -> None:
        try:
            text = self.core.read_namespaced_pod_log(pod, self.namespace,
                                                     container=self.container,
                                                     tail_lines=500, _request_timeout=30)
        except Exception as exc:
            self.sink(f"[launcher] cannot read the log of {pod}: {_short(exc)}")
            return
        self.sink(f"[launcher] last lines of pod {pod}:")
        for line in str(text).splitlines():
            self.sink(f"[{pod}] {line}")


def _short(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status:
        return f"HTTP {status} {reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
