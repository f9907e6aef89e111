"""Progress reporting for long work: a rich progress bar on a terminal, plain log lines elsewhere
(KFP pods and CI capture stderr, where a redrawn bar would be noise)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
log = logging.getLogger("longalign")


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Yield ``items`` while showing progress; ``total`` defaults to ``len(items)`` when known."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if sys.stderr.isatty():
        from rich.progress import track as rich_track

        yield from rich_track(items, description=description, total=total, transient=True)
        return
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= 10:
            last = now
            of = f"/{total}" if total else ""
            log.info("%s: %d%s done (%.0f s)", description, done, of, now - start)
    log.info("%s: %d done in %.1f s", description, done, time.monotonic() - start)
