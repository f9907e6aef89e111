"""Submitting a job, watching it to a terminal condition, and cleaning up.

Talks to the API server through the ``kubernetes`` client's CustomObjectsApi (create, get,
delete TrainJob/PyTorchJob objects) and CoreV1Api (find pods by label, read their logs).
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from longalign.training.launcher.config import LauncherConfig
from longalign.training.launcher.logs import LogFollower, Sink, _short
from longalign.training.launcher.manifests import KINDS, RUN_ID_ANNOTATION, main_pod_selector
from longalign.training.launcher.watch import JOBSET, Observation, observe, pod_selector


class JobFailed(RuntimeError):
    """The training job reached its Failed condition."""


class JobTimeout(TimeoutError):
    """The training job did not finish within the launcher's timeout."""


class JobStartFailed(JobFailed):
    """The training job cannot start: its resources were refused, its image cannot be pulled,
    or none of its pods ran within ``start_timeout_seconds``."""


class KubeApiError(RuntimeError):
    """An API call failed; ``status`` is the HTTP status (None when the server was not reached)."""

    def __init__(self, message: str, status: int | None):
        super().__init__(message)
        self.status = status


# Errors that retrying cannot fix; anything else (5xx, 429, connection resets) is retried
# while waiting, up to MAX_API_ERRORS in a row, so a blip of the API server during a
# days-long training does not fail the task.
PERMANENT = (400, 401, 403, 404, 422)
MAX_API_ERRORS = 10


class LaunchCancelled(BaseException):
    """The launcher was asked to stop (SIGTERM) while the job ran.

    A BaseException, like KeyboardInterrupt: raised from the signal handler in the middle of an
    API call, it must pass through every ``except Exception`` (ours, urllib3's, the client's).
    """


@dataclass(frozen=True)
class JobStatus:
    state: str  # pending, running, suspended, succeeded, failed
    reason: str = ""
    message: str = ""

    @property
    def terminal(self) -> bool:
        return self.state in ("succeeded", "failed")


# The condition types that end a job: TrainJob (metav1.Condition) uses Complete/Failed,
# PyTorchJob (JobCondition) uses Succeeded/Failed; both mark them with status "True".
_DONE = {"trainjob": "Complete", "pytorchjob": "Succeeded"}


def job_status(kind: str, obj: dict[str, Any]) -> JobStatus:
    """The state of a TrainJob or PyTorchJob object from its status conditions."""
    conditions = [c for c in (obj.get("status") or {}).get("conditions") or []
                  if str(c.get("status")) == "True"]
    by_type = {c.get("type"): c for c in conditions}
    for ctype, state in (("Failed", "failed"), (_DONE[kind], "succeeded")):
        if ctype in by_type:
            c = by_type[ctype]
            return JobStatus(state, c.get("reason") or "", c.get("message") or "")
    if "Suspended" in by_type:
        c = by_type["Suspended"]
        return JobStatus("suspended", c.get("reason") or "", c.get("message") or "")
    # any other true condition (Created, JobSet's, PyTorchJob's Running or Restarting): running
    return JobStatus("pending" if not conditions else "running")


class KubeJobs:
    """One kind of training job in one namespace."""

    def __init__(self, config: LauncherConfig, api_client: Any, namespace: str,
                 sink: Sink = print, owner: dict[str, str] | None = None):
        from kubernetes import client

        self.config, self.namespace, self.sink = config, namespace, sink
        self.owner = owner  # the launcher pod (name, uid) when it owns the job
        self._jobset_readable = config.kind == "trainjob"
        self.kind = KINDS[config.kind]
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    def _where(self) -> tuple[str, str, str, str]:
        return self.kind.group, self.kind.version, self.namespace, self.kind.plural

    def _explain(self, exc: Any, verb: str, name: str = "") -> KubeApiError:
        what = f"{self.kind.kind} {self.namespace}/{name}" if name else f"{self.kind.plural}"
        status = getattr(exc, "status", None)
        if status == 403:
            hint = (f"the launcher's service account may not {verb} {self.kind.plural}."
                    f"{self.kind.group} in namespace {self.namespace} (see docs/launcher.md, RBAC)")
        elif status == 404 and verb == "create":
            hint = (f"the {self.kind.kind} CRD ({self.kind.api_version}) is not installed; "
                    "install it or choose the other launcher kind")
        else:
            hint = _short(exc)
        return KubeApiError(f"cannot {verb} {what}: {hint}", status)

    def get(self, name: str) -> dict[str, Any]:
        try:
            return self.custom.get_namespaced_custom_object(*self._where(), name,
                                                            _request_timeout=30)
        except Exception as exc:
            raise self._explain(exc, "get", name) from None

    def status(self, name: str) -> JobStatus:
        return job_status(self.config.kind, self.get(name))

    def delete(self, name: str, *, wait_gone: float = 0.0) -> None:
        """Delete the job and its pods; with ``wait_gone`` wait until the object is gone."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        policy = "Foreground" if wait_gone else "Background"
        try:
            self.custom.delete_namespaced_custom_object(
                *self._where(), name, body=client.V1DeleteOptions(propagation_policy=policy),
                _request_timeout=30)
        except ApiException as exc:
            if exc.status != 404:
                raise self._explain(exc, "delete", name) from None
        deadline = time.monotonic() + wait_gone
        while time.monotonic() < deadline:
            try:
                self.custom.get_namespaced_custom_object(*self._where(), name,
                                                         _request_timeout=30)
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise self._explain(exc, "get", name) from None
            time.sleep(min(self.config.poll_seconds, 2.0))
        if wait_gone:
            raise RuntimeError(f"{self.kind.kind} {self.namespace}/{name} was not deleted "
                               f"within {wait_gone:.0f} s")

    def create(self, manifest: dict[str, Any]) -> str:
        """Create the job; if a job of that name exists (a restarted or retried launcher of
        the same run), adopt it unless it failed, in which case it is replaced."""
        from kubernetes.client.exceptions import ApiException

        name = manifest["metadata"]["name"]
        try:
            self.custom.create_namespaced_custom_object(*self._where(), manifest,
                                                        _request_timeout=30)
            self.sink(f"[launcher] created {self.kind.kind} {self.namespace}/{name}")
            return "created"
        except ApiException as exc:
            if exc.status != 409:
                raise self._explain(exc, "create", name) from None
        existing = self.get(name)
        theirs = (existing.get("metadata", {}).get("annotations") or {}).get(RUN_ID_ANNOTATION)
        ours = manifest["metadata"]["annotations"][RUN_ID_ANNOTATION]
        if theirs != ours:
            raise RuntimeError(f"{self.kind.kind} {self.namespace}/{name} exists and belongs "
                               f"to another run ({theirs!r}); not touching it")
        if job_status(self.config.kind, existing).state != "failed":
            self.sink(f"[launcher] adopting existing {self.kind.kind} {self.namespace}/{name}")
            self._take_ownership(name, existing, manifest)
            return "adopted"
        self.sink(f"[launcher] replacing failed {self.kind.kind} {self.namespace}/{name}")
        self.delete(name, wait_gone=300.0)
        try:
            self.custom.create_namespaced_custom_object(*self._where(), manifest,
                                                        _request_timeout=30)
        except ApiException as exc:
            raise self._explain(exc, "create", name) from None
        return "replaced"

    def _take_ownership(self, name: str, existing: dict[str, Any], manifest: dict[str, Any]) -> None:
        """A retried launcher pod adopts the job of its run: it becomes the job's owner, so that
        garbage collection of the previous (finished) launcher pod does not delete the job."""
        ours = manifest["metadata"].get("ownerReferences")
        if not ours or existing["metadata"].get("ownerReferences") == ours:
            return
        try:
            # the client sends custom-object patches as JSON merge patches
            self.custom.patch_namespaced_custom_object(
                *self._where(), name, {"metadata": {"ownerReferences": ours}}, _request_timeout=30)
        except Exception as exc:
            raise self._explain(exc, "patch", name) from None

    def observe(self, name: str, events: bool = True) -> Observation:
        """Phase and start problems from the JobSet, the pods and (with ``events``) the Warning
        events of the job and its pods."""
        from kubernetes.client.exceptions import ApiException

        jobset = None
        if self._jobset_readable:
            try:
                jobset = self.custom.get_namespaced_custom_object(
                    JOBSET[0], JOBSET[1], self.namespace, JOBSET[2], name, _request_timeout=30)
            except ApiException as exc:
                if exc.status == 403:
                    self._jobset_readable = False
                    self.sink("[launcher] may not read jobsets.jobset.x-k8s.io (see the Role "
                              "in k8s/base); phases come from pods only")
                elif exc.status != 404:
                    raise
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector=pod_selector(self.config.kind, name),
            _request_timeout=30).items
        mine = {name} | {p.metadata.name for p in pods}
        warnings = [e for e in self.core.list_namespaced_event(
            self.namespace, field_selector="type=Warning", _request_timeout=30).items
            if e.involved_object is not None and e.involved_object.name in mine] if events else []
        return observe(self.config.kind, name, jobset, pods, warnings)

    def launcher_gone(self) -> str:
        """Why the launcher pod that owns the job is going away ("" while it is not): a run
        cancel deletes it, and a signal may never reach this process through ``sh -ec``."""
        from kubernetes.client.exceptions import ApiException

        if not self.owner:
            return ""
        try:
            pod = self.core.read_namespaced_pod(self.owner["name"], self.namespace,
                                                _request_timeout=30)
        except ApiException as exc:
            return "launcher pod deleted" if exc.status == 404 else ""
        if pod.metadata.deletion_timestamp is not None:
            return "launcher pod is being deleted"
        return ""

    def wait(self, name: str, *, clock: Callable[[], float] = time.monotonic) -> JobStatus:
        """Poll until the job succeeds (returned), fails (JobFailed) or times out (JobTimeout),
        streaming the rank-0 pod's log meanwhile."""
        selector, container = main_pod_selector(self.config, name)
        follower = (LogFollower(self.core, self.namespace, selector, container, self.sink)
                    if self.config.stream_logs else None)
        now = clock()
        deadline = now + self.config.timeout_seconds
        start_deadline = now + min(self.config.start_timeout_seconds, self.config.timeout_seconds)
        last = None
        seen = ""
        started = False
        errors = 0
        while True:
            try:
                status = self.status(name)
                errors = 0
            except KubeApiError as exc:
                errors += 1
                if exc.status in PERMANENT or errors >= MAX_API_ERRORS:
                    if exc.status == 404:
                        raise KubeApiError(f"{self.kind.kind} {self.namespace}/{name} "
                                           "disappeared (deleted outside the launcher?)",
                                           404) from None
                    raise
                self.sink(f"[launcher] {exc} (retrying, {errors}/{MAX_API_ERRORS})")
                if clock() >= deadline:
                    raise JobTimeout(f"{self.kind.kind} {self.namespace}/{name} did not "
                                     f"finish within {self.config.timeout_seconds} s") from None
                time.sleep(self.config.poll_seconds)
                continue
            if status != last:
                self.sink(f"[launcher] {self.kind.kind} {name}: {status.state}"
                          + (f" ({status.reason})" if status.reason else ""))
                last = status
            gone = self.launcher_gone()
            if gone:
                raise LaunchCancelled(gone)
            if not status.terminal:
                seen, started = self._check_start(name, seen, started, clock() >= start_deadline)
            if follower is not None and status.terminal:
                follower.finish()
            elif follower is not None:
                follower.poll()
            if status.state == "succeeded":
                return status
            if status.state == "failed":
                raise JobFailed(f"{self.kind.kind} {self.namespace}/{name} failed: "
                                f"{status.reason or 'no reason given'}"
                                + (f": {status.message}" if status.message else ""))
            if clock() >= deadline:
                raise JobTimeout(f"{self.kind.kind} {self.namespace}/{name} did not finish "
                                 f"within {self.config.timeout_seconds} s (last state: "
                                 f"{status.state})")
            time.sleep(self.config.poll_seconds)

    def _check_start(self, name: str, seen: str, started: bool, late: bool) -> tuple[str, bool]:
        """Log the phase when it changes; raise JobStartFailed when the job cannot start."""
        try:
            obs = self.observe(name, events=not started)  # events matter until a pod ran
        except Exception as exc:  # phases are best effort: the job's status decides
            self.sink(f"[launcher] cannot observe {name} ({_short(exc)})")
            return seen, started
        if obs.line() != seen:
            self.sink(f"[launcher] {name}: {obs.line()}")
        started = started or obs.started
        if obs.fatal and not obs.started:
            raise JobStartFailed(f"{self.kind.kind} {self.namespace}/{name} cannot start: "
                                 f"{obs.fatal}")
        if late and not started:
            why = obs.waiting or f"no pod ran ({obs.line()})"
            limit = min(self.config.start_timeout_seconds, self.config.timeout_seconds)
            raise JobStartFailed(f"{self.kind.kind} {self.namespace}/{name} did not start "
                                 f"within {limit} s: {why}")
        return obs.line(), started

    def run(self, manifest: dict[str, Any]) -> JobStatus:
        """Create (or adopt), wait, and clean up: on SIGTERM or timeout the job is deleted when
        ``delete_on_cancel`` is set, on failure when ``delete_on_failure`` is set."""
        name = manifest["metadata"]["name"]
        installed = threading.current_thread() is threading.main_thread()
        if installed:
            def _cancel(signum: int, frame: Any) -> None:
                raise LaunchCancelled(f"launcher received signal {signum}")

            previous = signal.signal(signal.SIGTERM, _cancel)
        try:
            self.create(manifest)
            status = self.wait(name)
            if self.config.delete_on_success:
                self.sink(f"[launcher] {self.kind.kind} {name} succeeded; deleting it (its "
                          "rank-0 log is above and in the run's launcher.log)")
                self.delete(name)
            return status
        except (LaunchCancelled, KeyboardInterrupt, JobTimeout, JobStartFailed):
            if installed:  # a second SIGTERM must not interrupt the cleanup
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if self.config.delete_on_cancel:
                self.sink(f"[launcher] deleting {self.kind.kind} {self.namespace}/{name}")
                self.delete(name)
            raise
        except JobFailed:
            if self.config.delete_on_failure:
                self.delete(name)
            raise
        finally:
            if installed:
                signal.signal(signal.SIGTERM, previous)
