"""What ``longalign run`` prints while the DAG runs: one line per stage, everything else in a log file.

kfp.local prints each task's executor input, its streamed output and its outputs on stdout, and
the stages' libraries add their own warnings and progress bars. All of that goes to a per-run log
file (shown live with ``verbose``); the terminal gets one line per stage -- ran or served from
the cache, how long it took, the stage's headline numbers -- and the run summary.

The per-task hook wraps kfp.local's task executor (``kfp.local.orchestrator.task_executor``,
kfp 2.17): the task's start, its end, and whether its command ran (else: a cache hit).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from longalign.config import STAGES

# The numbers each stage's line shows: (stats.json metrics key, label, format).
HEADLINES: dict[str, list[tuple[str, str, str]]] = {
    "sourcing": [("documents_kept", "documents", "{:,}"), ("tokens_kept", "tokens", "{:,}")],
    "generation": [("samples", "samples", "{:,}"), ("teacher_calls", "teacher calls", "{:,}")],
    "packing": [("rows", "rows", "{:,}"), ("samples_packed", "samples", "{:,}"),
                ("efficiency", "full", "{:.1%}")],
    "training": [("steps", "steps", "{:,}"), ("final_loss", "final loss", "{:.3f}"),
                 ("tokens_per_second", "tokens/s", "{:,.0f}"), ("peak_memory_gb", "peak GB", "{:.2f}")],
}


@dataclass
class StageRecord:
    stage: str
    status: str = "running"  # ran, cached, failed
    seconds: float = 0.0
    headline: str = ""
    outputs: dict[str, str] = field(default_factory=dict)


def stage_of(task_name: str) -> str:
    """The stage a kfp.local task belongs to (task names are the stage names, maybe suffixed)."""
    for stage in STAGES:
        if task_name == stage or task_name.startswith(f"{stage}-"):
            return stage
    return task_name


def headline(stage: str, outputs: dict[str, str]) -> str:
    """The stage's headline numbers from the stats.json in its output folder(s), '' if none."""
    for path in outputs.values():
        stats_file = Path(path) / "stats.json"
        if not stats_file.is_file():
            continue
        try:
            stats = json.loads(stats_file.read_text())
        except (OSError, ValueError):
            return ""
        if stage == "scoring":
            numbers = {k: v for k, v in (stats.get("headline") or {}).items()
                       if not k.startswith("base_") and not k.endswith("_delta")}  # in the summary
            return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in sorted(numbers.items()))
        metrics = stats.get("metrics") or {}
        return ", ".join(f"{fmt.format(metrics[key])} {label}" for key, label, fmt in HEADLINES.get(stage, [])
                         if isinstance(metrics.get(key), (int, float)))
    return ""


class _Tee(io.TextIOBase):
    """A text stream writing to the log file and, when verbose, to the terminal too."""

    def __init__(self, *streams: TextIO) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()

    def isatty(self) -> bool:
        return False


class Transcript:
    """Collects the stage records of one run and prints the stage lines to ``out``."""

    def __init__(self, log_path: Path, *, verbose: bool = False, out: TextIO | None = None) -> None:
        self.log_path = log_path
        self.verbose = verbose
        self.out = out or sys.stdout
        self.stages: list[StageRecord] = []
        self._ran = False

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _execute(self, original: Callable, task_name: str, **kwargs: Any):
        record = StageRecord(stage_of(task_name))
        self.stages.append(record)
        if self.verbose:
            self.say(f"{record.stage}: started")
        self._ran = False
        start = time.monotonic()
        outputs, status = original(task_name=task_name, **kwargs)
        record.seconds = time.monotonic() - start
        record.outputs = {name: getattr(a, "path", None) or str(a) for name, a in (outputs or {}).items()
                          if hasattr(a, "path")}
        if getattr(status, "name", str(status)) == "SUCCESS":
            record.status = "ran" if self._ran else "cached"
            record.headline = headline(record.stage, record.outputs)
            details = f"; {record.headline}" if record.headline else ""
            self.say(f"{record.stage:<11} {record.status:<7} {record.seconds:6.1f} s{details}")
        else:
            record.status = "failed"
            self.say(f"{record.stage:<11} failed  {record.seconds:6.1f} s; its log: {self.log_path}")
        return outputs, status

    def _dispatch(self, original: Callable, *args: Any, **kwargs: Any):
        self._ran = True
        return original(*args, **kwargs)

    @contextlib.contextmanager
    def capture(self) -> Iterator["Transcript"]:
        """Route stdout, stderr, warnings and logging to the log file (and the terminal when verbose)
        while kfp.local runs the DAG, and hook its task executor for the stage lines."""
        from unittest import mock

        from kfp.local import task_dispatcher
        from kfp.local.orchestrator import task_executor

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        execute, dispatch = task_executor.execute_single_task, task_dispatcher.run_single_task_implementation
        with open(self.log_path, "a", encoding="utf-8", buffering=1) as log_file, contextlib.ExitStack() as stack:
            terminal = [sys.__stderr__] if self.verbose and sys.__stderr__ else []
            tee = _Tee(log_file, *terminal)
            stack.enter_context(contextlib.redirect_stdout(tee))
            stack.enter_context(contextlib.redirect_stderr(tee))
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("default")
            root = logging.getLogger()
            handler = logging.StreamHandler(tee)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            saved_level = root.level
            root.addHandler(handler)
            root.setLevel(logging.INFO)
            ours = logging.getLogger("longalign")
            saved_handlers, ours.handlers = ours.handlers, []  # ours propagate to the root's file handler
            stack.callback(setattr, ours, "handlers", saved_handlers)
            stack.callback(root.setLevel, saved_level)
            stack.callback(root.removeHandler, handler)
            stack.enter_context(mock.patch.object(
                task_executor, "execute_single_task",
                lambda task_name, **kw: self._execute(execute, task_name, **kw)))
            stack.enter_context(mock.patch.object(
                task_dispatcher, "run_single_task_implementation",
                lambda *a, **kw: self._dispatch(dispatch, *a, **kw)))
            yield self
