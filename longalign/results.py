"""What every stage returns: a :class:`StageResult`.

The KFP components publish it (Metrics, Markdown and HTML artifacts), the CLI prints its metrics
and the run summary shows its headline numbers. Each stage also stores it in its output as
``result.json`` (next to ``stats.json``), so a later reader, such as the run summary after a
kfp.local run, gets the same object back with :meth:`StageResult.load` instead of reading
another stage's files by hand.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longalign.errors import UserError
from longalign.io import read_json, write_json

RESULT_FILE = "result.json"
STATS_FILE = "stats.json"


@dataclass(frozen=True, eq=False)  # equality is the Mapping's: the stats
class StageResult(Mapping[str, Any]):
    """One stage's outcome.

    ``stats`` is everything the stage counted (also in ``stats.json``); ``metrics`` the numbers
    logged as KFP Metrics; ``headline`` the few numbers a run summary shows; ``summary`` and
    ``report`` the Markdown and HTML files inside ``output`` (names relative to it, or None).
    Indexing reads ``stats`` (``result["tokens"]``).
    """

    stage: str
    output: Path
    stats: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    headline: dict[str, float] = field(default_factory=dict)
    summary: str | None = None
    report: str | None = None

    def __getitem__(self, key: str) -> Any:
        return self.stats[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.stats)

    def __len__(self) -> int:
        return len(self.stats)

    @property
    def summary_path(self) -> Path | None:
        return self.output / self.summary if self.summary else None

    @property
    def report_path(self) -> Path | None:
        return self.output / self.report if self.report else None

    def write(self, directory: str | os.PathLike) -> None:
        """Store ``stats.json`` and ``result.json`` in ``directory`` (the output's temporary
        folder while it is written; ``output`` is where it ends up)."""
        directory = Path(directory)
        write_json(directory / STATS_FILE, self.stats)
        write_json(directory / RESULT_FILE, {
            "stage": self.stage, "metrics": self.metrics, "headline": self.headline,
            "summary": self.summary, "report": self.report})

    @classmethod
    def load(cls, output: str | os.PathLike) -> "StageResult":
        """The result a stage stored in ``output``."""
        output = Path(output)
        if not (output / RESULT_FILE).is_file():
            raise UserError(f"{output} holds no {RESULT_FILE}: is it a finished stage output?")
        data = read_json(output / RESULT_FILE)
        stats = read_json(output / STATS_FILE) if (output / STATS_FILE).is_file() else {}
        return cls(stage=data["stage"], output=output, stats=stats, metrics=data.get("metrics") or {},
                   headline=data.get("headline") or {}, summary=data.get("summary"),
                   report=data.get("report"))


def numeric(values: Mapping[str, Any]) -> dict[str, float]:
    """The entries of ``values`` that are numbers (booleans as 0/1; None and others dropped)."""
    out: dict[str, float] = {}
    for name, value in values.items():
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, (int, float)):
            out[name] = value
    return out
