"""Job names: unique per pipeline run, stable across retries, short enough for every name the
controllers derive from them.

A TrainJob's name must be an RFC 1035 label (the Trainer CRD enforces it), and the controllers
build longer names from it: JobSet (named like the TrainJob) makes Jobs
``<name>-<replicatedJob>-<jobIndex>`` and Pods ``<name>-<replicatedJob>-<jobIndex>-<podIndex>-<5>``,
and its admission webhook rejects the JobSet when the longest of them exceeds 63 characters
(kubernetes-sigs/jobset v0.12.0 pkg/webhooks/jobset_webhook.go); the Training Operator names a Pod
and a Service ``<name>-<replica type>-<index>`` per replica. The longest replicated job in
Trainer's runtimes is ``dataset-initializer`` (19 characters), so names are kept to
``MAX_JOB_NAME`` = 63 - len("-dataset-initializer-0-0-abcde") = 33 characters.

The readable part comes from the run id; because lower-casing, replacing characters and
truncating can map two run ids to the same text, a short hash of the untouched run id (and the
attempt) is appended, so distinct runs never share a name and the same run always gets the same.
"""

from __future__ import annotations

import hashlib
import re

MAX_LABEL = 63
# Longest suffix a controller appends: JobSet pod "-<replicatedJob>-<jobIndex>-<podIndex>-xxxxx"
# of Trainer's dataset-initializer job (one pod).
LONGEST_SUFFIX = len("-dataset-initializer-0-0-abcde")
MAX_JOB_NAME = MAX_LABEL - LONGEST_SUFFIX
_HASH_LEN = 8
_RFC1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def is_valid_name(name: str, limit: int = MAX_LABEL) -> bool:
    """Whether ``name`` is an RFC 1035 label of at most ``limit`` characters."""
    return len(name) <= limit and bool(_RFC1035.match(name))


def job_name(run_id: str, prefix: str = "longalign", attempt: str = "") -> str:
    """``<prefix>-<readable run id>-<8 hex of sha256(run id, attempt)>``, at most 33 characters.

    The same run id (and attempt) always gives the same name, so a retried or restarted launcher
    finds the job it created; ``attempt`` distinguishes deliberate re-launches within one run.
    """
    if not run_id:
        raise ValueError("run_id must not be empty")
    digest = hashlib.sha256(f"{run_id}\0{attempt}".encode()).hexdigest()[:_HASH_LEN]
    slug = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")
    room = MAX_JOB_NAME - len(prefix) - len(digest) - 2
    slug = slug[:max(room, 0)].strip("-")
    name = "-".join(part for part in (prefix, slug, digest) if part)
    if not is_valid_name(name, MAX_JOB_NAME):
        raise ValueError(f"cannot make a valid job name from prefix {prefix!r}")
    return name


def derived_names(kind: str, name: str, num_nodes: int, mpi: bool = False) -> list[str]:
    """The DNS-label names the controllers make from job ``name`` with ``num_nodes`` nodes
    (the trainer's own replicated jobs; initializer jobs are covered by MAX_JOB_NAME)."""
    if kind == "pytorchjob":
        names = [f"{name}-master-0"]
        if num_nodes > 1:
            names.append(f"{name}-worker-{num_nodes - 2}")
        return names
    names = [name, f"{name}-node-0", f"{name}-node-0-{num_nodes - 1}",
             f"{name}-node-0-{num_nodes - 1}-abcde"]
    if mpi:
        names += [f"{name}-launcher-0", f"{name}-launcher-0-0", f"{name}-launcher-0-0-abcde"]
    return names


def check_derived_names(kind: str, name: str, num_nodes: int, mpi: bool = False) -> None:
    """Raise ValueError when a controller-made name would exceed the DNS label limit."""
    bad = [n for n in derived_names(kind, name, num_nodes, mpi) if not is_valid_name(n)]
    if bad:
        raise ValueError(f"job {name!r} with {num_nodes} nodes makes names over {MAX_LABEL} "
                         f"characters: {', '.join(bad)}")
