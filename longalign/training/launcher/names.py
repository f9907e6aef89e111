"""Job names: unique per pipeline run, valid Kubernetes object names.

A TrainJob's name must be an RFC 1035 label (``^[a-z]([-a-z0-9]*[a-z0-9])?$``, at most 63
characters; the Trainer CRD enforces both), and its JobSet and pods derive their names and DNS
entries from it. The readable part comes from the run id; because lower-casing, replacing
characters and truncating can map two run ids to the same text, a short hash of the untouched
run id (and the attempt) is appended, so distinct runs never share a name.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63
_HASH_LEN = 8
_RFC1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def is_valid_name(name: str) -> bool:
    """Whether ``name`` is an RFC 1035 label of at most 63 characters."""
    return len(name) <= MAX_NAME and bool(_RFC1035.match(name))


def job_name(run_id: str, prefix: str = "longalign", attempt: str = "") -> str:
    """``<prefix>-<readable run id>-<8 hex of sha256(run id, attempt)>``, at most 63 characters.

    The same run id (and attempt) always gives the same name, so a restarted launcher finds the
    job it created; ``attempt`` distinguishes deliberate re-launches within one run.
    """
    if not run_id:
        raise ValueError("run_id must not be empty")
    digest = hashlib.sha256(f"{run_id}\0{attempt}".encode()).hexdigest()[:_HASH_LEN]
    slug = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")
    room = MAX_NAME - len(prefix) - len(digest) - 2
    slug = slug[:max(room, 0)].strip("-")
    name = "-".join(part for part in (prefix, slug, digest) if part)
    if not is_valid_name(name):
        raise ValueError(f"cannot make a valid job name from prefix {prefix!r}")
    return name
