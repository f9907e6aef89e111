"""What a job is really doing, from its JobSet, its pods and its Warning events.

A TrainJob has no Running condition (Trainer v2.3 sets Suspended, Complete and Failed only), and a
job that cannot start sets no condition at all: Trainer records a Warning event
``TrainJobResourcesCreationFailed`` when the JobSet is refused, the scheduler a ``FailedScheduling``
event per unschedulable pod, the kubelet ``ErrImagePull``/``ImagePullBackOff`` in the container
status. ``observe`` turns these into a phase to log and, when the job cannot start, the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JOBSET = ("jobset.x-k8s.io", "v1alpha2", "jobsets")
# Container waiting reasons that never resolve by waiting.
FATAL_WAITING = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                 "CreateContainerError")
# Warning events on the job itself that mean its pods will never be created.
FATAL_JOB_EVENTS = ("TrainJobResourcesCreationFailed",)


@dataclass(frozen=True)
class Observation:
    phase: str  # created, pods pending, running, succeeded, failed (of the pods)
    detail: str = ""  # e.g. "2/16 pods running"
    started: bool = False  # some pod of the job has run
    fatal: str = ""  # why the job cannot start: fail now
    waiting: str = ""  # the last Warning about not starting: the message at the start deadline

    def line(self) -> str:
        return self.phase + (f" ({self.detail})" if self.detail else "")


def pod_selector(kind: str, name: str) -> str:
    """Labels every pod of the job carries (JobSet's for a TrainJob, the operator's otherwise)."""
    if kind == "pytorchjob":
        return f"training.kubeflow.org/job-name={name}"
    return f"jobset.sigs.k8s.io/jobset-name={name}"


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if obj is None:
            return None
        obj = obj.get(key) if isinstance(obj, dict) else getattr(obj, _snake(key), None)
    return obj


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


def pod_problem(pod: Any) -> str:
    """A fatal container waiting reason of ``pod`` as "pod X: REASON: message", or ""."""
    statuses = (_get(pod, "status", "initContainerStatuses") or []) + \
        (_get(pod, "status", "containerStatuses") or [])
    for status in statuses:
        waiting = _get(status, "state", "waiting")
        reason = _get(waiting, "reason") or ""
        if reason in FATAL_WAITING:
            message = _get(waiting, "message") or ""
            return f"pod {_get(pod, 'metadata', 'name')}: {reason}" + (f": {message}" if message else "")
    return ""


def observe(kind: str, name: str, jobset: dict | None, pods: list[Any], events: list[Any]) -> Observation:
    """The job's phase from its JobSet (None: not created or a PyTorchJob), pods and Warning
    events (already limited to the job, its JobSet and its pods)."""
    phases = [_get(p, "status", "phase") or "Pending" for p in pods]
    running = phases.count("Running")
    done = phases.count("Succeeded") + phases.count("Failed")
    started = running + done > 0
    fatal = next((problem for problem in map(pod_problem, pods) if problem), "")
    waiting = ""
    for event in sorted(events, key=_event_time):
        reason = _get(event, "reason") or ""
        message = f"{reason}: {_get(event, 'message') or ''}".strip()
        involved = _get(event, "involvedObject", "name") or ""
        if reason in FATAL_JOB_EVENTS and not fatal:
            fatal = f"{involved}: {message}"
        elif reason in ("FailedScheduling", "FailedCreate", "FailedMount", "FailedAttachVolume",
                        "BackOff", "Failed"):
            waiting = f"{involved}: {message}"
    if not pods:
        phase = "jobset created" if jobset is not None else "created"
        return Observation(phase, "no pods yet", started, fatal, waiting)
    detail = f"{running}/{len(pods)} pods running" + (f", {done} finished" if done else "")
    if running:
        phase = "running"
    elif done == len(pods):
        phase = "succeeded" if phases.count("Failed") == 0 else "failed"
    else:
        phase = "pods pending"
    return Observation(phase, detail, started, fatal, waiting)


def _event_time(event: Any) -> str:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        if _get(event, key):
            return str(_get(event, key))
    return str(_get(event, "metadata", "creationTimestamp") or "")
