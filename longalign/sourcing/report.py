"""Counting, ``stats.json`` content, ``summary.md`` and ``lengths.png`` for the sourcing stage."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from longalign.io import markdown_table

MAX_EXAMPLES = 50  # rejection examples kept in stats.json (all rejections are counted)
PERCENTILES = (0, 10, 25, 50, 75, 90, 100)
HISTOGRAM_BINS = 20


@dataclass
class SourceCounts:
    """Counts for one source spec."""

    candidates: int = 0  # items the reader listed
    read: int = 0  # records and reader-level rejections seen
    kept: int = 0  # documents written (a split record counts once per kept piece)
    tokens: int = 0
    split: int = 0  # records longer than max_tokens that were split
    pieces: int = 0  # pieces those splits produced (kept or not)
    unused: int = 0  # usable documents not written because max_documents was reached
    rejected: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates, "read": self.read, "kept": self.kept,
            "tokens_kept": self.tokens, "split_documents": self.split, "pieces": self.pieces,
            "unused_after_cap": self.unused, "rejected": dict(sorted(self.rejected.items())),
        }


class Tally:
    """Everything the stage counts while it streams."""

    def __init__(self, specs: list[str]) -> None:
        self.sources = {spec: SourceCounts() for spec in specs}
        self.examples: list[dict[str, str]] = []
        self.lengths: list[int] = []

    def reject(self, spec: str, uri: str, reason: str, detail: str = "") -> None:
        self.sources[spec].rejected[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"source": spec, "uri": uri, "reason": reason, "detail": detail})

    def keep(self, spec: str, n_tokens: int) -> None:
        self.sources[spec].kept += 1
        self.sources[spec].tokens += n_tokens
        self.lengths.append(n_tokens)

    @property
    def kept(self) -> int:
        return len(self.lengths)

    def rejected_total(self) -> Counter:
        total: Counter = Counter()
        for counts in self.sources.values():
            total.update(counts.rejected)
        return total

    def reasons_line(self) -> str:
        total = self.rejected_total()
        ordered = sorted(total.items(), key=lambda rn: (-rn[1], rn[0]))
        return ", ".join(f"{r} {n}" for r, n in ordered) or "none"


def length_summary(lengths: list[int], low: int, high: int) -> dict[str, Any]:
    if not lengths:
        return {"count": 0}
    arr = np.asarray(lengths)
    counts, edges = np.histogram(arr, bins=HISTOGRAM_BINS, range=(low, high))
    return {
        "count": int(arr.size), "min": int(arr.min()), "max": int(arr.max()),
        "mean": float(arr.mean()),
        "percentiles": {f"p{p}": float(np.percentile(arr, p)) for p in PERCENTILES},
        "histogram": {"bin_edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    }


def build_stats(tally: Tally, config: Any, model: str, selection: dict, shards: list[str]) -> dict:
    """The content of ``stats.json`` (also the stage's return value)."""
    sources = {spec: c.as_dict() for spec, c in tally.sources.items()}
    rejected = tally.rejected_total()
    read = sum(c.read for c in tally.sources.values())
    tokens = sum(c.tokens for c in tally.sources.values())
    lengths = length_summary(tally.lengths, config.min_tokens, config.max_tokens)
    metrics: dict[str, float | int] = {
        "documents_read": read,
        "documents_kept": tally.kept,
        "tokens_kept": tokens,
        "rejected_total": sum(rejected.values()),
        "split_documents": sum(c.split for c in tally.sources.values()),
        "shards": len(shards),
        "mean_tokens": lengths.get("mean", 0.0),
        "median_tokens": lengths.get("percentiles", {}).get("p50", 0.0),
    }
    metrics.update({f"rejected_{reason}": n for reason, n in sorted(rejected.items())})
    return {
        "stage": "sourcing",
        "model": model,
        "config": config.model_dump(),
        "documents_read": read,
        "documents_kept": tally.kept,
        "tokens_kept": tokens,
        "split_documents": metrics["split_documents"],
        "rejected": dict(sorted(rejected.items())),
        "sources": sources,
        "selection": selection,
        "lengths": lengths,
        "rejection_examples": tally.examples,
        "shards": shards,
        "metrics": metrics,
    }


def summary_markdown(stats: dict) -> str:
    """The Markdown summary shown in the KFP UI."""
    cfg = stats["config"]
    out = [
        "# Sourcing summary\n",
        f"Kept **{stats['documents_kept']}** documents ({stats['tokens_kept']:,} tokens, "
        f"tokenizer of `{stats['model']}`) out of {stats['documents_read']} read; "
        f"length range [{cfg['min_tokens']}, {cfg['max_tokens']}] tokens, "
        f"split_long={cfg['split_long']}, max_documents={cfg['max_documents']}, seed={cfg['seed']}.\n",
    ]
    sel = stats["selection"]
    if sel.get("stopped_early"):
        out.append(
            f"Stopped at max_documents after visiting {sel['candidates_visited']} of "
            f"{sel['candidates']} candidates in seeded shuffled order.\n"
        )
    rows = [
        (f"`{spec}`", s["candidates"], s["read"], s["kept"], s["split_documents"], f"{s['tokens_kept']:,}",
         sum(s["rejected"].values()))
        for spec, s in stats["sources"].items()
    ]
    out += ["## Sources\n", markdown_table(rows, ("source", "candidates", "read", "kept", "split",
                                                 "tokens kept", "rejected"))]
    reasons = [(f"`{spec}`", reason, n) for spec, s in stats["sources"].items()
               for reason, n in s["rejected"].items()]
    out.append("## Rejections\n")
    out.append(markdown_table(reasons, ("source", "reason", "count")) if reasons else "None.\n")
    lengths = stats["lengths"]
    if lengths.get("count"):
        pct = lengths["percentiles"]
        out += ["## Token lengths of kept documents\n",
                markdown_table([tuple(f"{v:.0f}" for v in pct.values())], tuple(pct))]
    examples = stats["rejection_examples"][:10]
    if examples:
        out.append("## First rejections\n")
        out.append(markdown_table(
            [(e["reason"], f"`{e['uri']}`", e["detail"].replace("|", "/")) for e in examples],
            ("reason", "where", "detail")))
    return "\n".join(out)


def plot_lengths(path: Path, lengths: list[int], low: int, high: int) -> None:
    """Histogram of kept document lengths (Agg canvas, no global pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.hist(lengths, bins=HISTOGRAM_BINS, range=(low, high), color="#3b6ea8", edgecolor="white")
    ax.set_xlabel("tokens per document")
    ax.set_ylabel("documents")
    ax.set_title(f"Kept documents: {len(lengths)}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
