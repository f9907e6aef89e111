"""Counting, ``stats.json`` content, ``summary.md`` and ``lengths.png`` for the sourcing stage."""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from longalign.io import markdown_table

MAX_EXAMPLES = 50  # rejection examples kept in stats.json (all rejections are counted)
PERCENTILES = (0, 10, 25, 50, 75, 90, 100)
HISTOGRAM_BINS = 20


@dataclass
class SourceCounts:
    """Counts for one source spec."""

    candidates: Optional[int] = 0  # items the reader listed (None: a stream of unknown length)
    read: int = 0  # records and reader-level rejections seen
    kept: int = 0  # documents written (a split record counts once per kept piece)
    tokens: int = 0
    split: int = 0  # records longer than max_tokens that were split
    pieces: int = 0  # pieces those splits produced (kept or not)
    pieces_kept: int = 0  # of those, pieces written (included in ``kept``)
    unused: int = 0  # usable documents not written because max_documents was reached
    rejected: Counter = field(default_factory=Counter)
    parts_skipped: Counter = field(default_factory=Counter)  # files left out of repository documents

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates, "read": self.read, "kept": self.kept,
            "tokens_kept": self.tokens, "split_documents": self.split, "pieces": self.pieces,
            "pieces_kept": self.pieces_kept,
            "unused_after_cap": self.unused, "rejected": dict(sorted(self.rejected.items())),
            "parts_skipped": dict(sorted(self.parts_skipped.items())),
        }


class Tally:
    """Everything the stage counts while it streams."""

    def __init__(self, specs: list[str]) -> None:
        self.sources = {spec: SourceCounts() for spec in specs}
        self.examples: list[dict[str, str]] = []
        self.lengths = array("q")  # tokens of every kept document (8 bytes each)

    def add_candidates(self, spec: str, n: Optional[int]) -> None:
        counts = self.sources[spec]
        counts.candidates = None if n is None or counts.candidates is None else counts.candidates + n

    def reject(self, spec: str, uri: str, reason: str, detail: str = "", part: bool = False) -> None:
        (self.sources[spec].parts_skipped if part else self.sources[spec].rejected)[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            example = {"source": spec, "uri": uri, "reason": reason, "detail": detail}
            if part:
                example["part"] = "file left out of a repository document"
            self.examples.append(example)

    def keep(self, spec: str, n_tokens: int, piece: bool = False) -> None:
        self.sources[spec].kept += 1
        self.sources[spec].pieces_kept += int(piece)
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


def length_summary(lengths, low: int, high: int) -> dict[str, Any]:
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


def build_stats(tally: Tally, config: Any, model: str, selection: dict, shards: list[str],
                length_range: Optional[tuple[int, int]] = None) -> dict:
    """The content of ``stats.json`` (also the stage's return value)."""
    sources = {spec: c.as_dict() for spec, c in tally.sources.items()}
    rejected = tally.rejected_total()
    parts: Counter = Counter()
    for counts in tally.sources.values():
        parts.update(counts.parts_skipped)
    read = sum(c.read for c in tally.sources.values())
    tokens = sum(c.tokens for c in tally.sources.values())
    low, high = length_range or (config.min_tokens, config.max_tokens)
    lengths = length_summary(tally.lengths, low, high)
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
        "pieces": sum(c.pieces for c in tally.sources.values()),
        "pieces_kept": sum(c.pieces_kept for c in tally.sources.values()),
        "unused_after_cap": sum(c.unused for c in tally.sources.values()),
        "rejected": dict(sorted(rejected.items())),
        "parts_skipped": dict(sorted(parts.items())),
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
    kept, pieces_kept = stats["documents_kept"], stats.get("pieces_kept", 0)
    out = [
        "# Sourcing summary\n",
        f"Read {stats['documents_read']} records and kept **{kept}** documents "
        f"({stats['tokens_kept']:,} tokens, tokenizer of `{stats['model']}`): "
        f"{kept - pieces_kept} whole records and {pieces_kept} pieces of "
        f"{stats['split_documents']} over-long records split at paragraph boundaries "
        f"(into {stats.get('pieces', 0)} pieces in all); "
        f"{stats.get('unused_after_cap', 0)} usable documents or pieces left out by max_documents. "
        f"Length range [{cfg['min_tokens']}, {cfg['max_tokens']}] tokens, "
        f"split_long={cfg['split_long']}, max_documents={cfg['max_documents']}, seed={cfg['seed']}.\n",
    ]
    sel = stats["selection"]
    if sel.get("stopped_early"):
        total = "?" if sel["candidates"] is None else sel["candidates"]
        out.append(
            f"Stopped ({sel.get('stopped_by') or 'max_documents'}) after visiting "
            f"{sel['candidates_visited']} of {total} candidates ({sel['order']}).\n"
        )
    rows = [
        (f"`{spec}`", "?" if s["candidates"] is None else s["candidates"], s["read"], s["kept"],
         s["split_documents"], s.get("pieces_kept", 0), s.get("unused_after_cap", 0),
         f"{s['tokens_kept']:,}", sum(s["rejected"].values()))
        for spec, s in stats["sources"].items()
    ]
    out += ["## Sources\n", markdown_table(rows, ("source", "candidates", "read", "kept", "split",
                                                 "pieces kept", "left out by cap", "tokens kept",
                                                 "rejected"))]
    reasons = [(f"`{spec}`", reason, n) for spec, s in stats["sources"].items()
               for reason, n in s["rejected"].items()]
    out.append("## Rejections\n")
    out.append(markdown_table(reasons, ("source", "reason", "count")) if reasons else "None.\n")
    parts = [(f"`{spec}`", reason, n) for spec, s in stats["sources"].items()
             for reason, n in s.get("parts_skipped", {}).items()]
    if parts:
        out += ["## Files left out of repository documents\n",
                markdown_table(parts, ("source", "reason", "files"))]
    mix = sel.get("mix")
    if mix:
        out += [f"## Mix ({mix['unit']})\n", markdown_table(
            [(g, f"{mix['target'][g]:.1%}", f"{mix['actual'][g]:.1%}", f"{mix['kept'][g]:,}")
             for g in mix["target"]], ("group", "target", "actual", mix["unit"]))]
    lengths = stats["lengths"]
    if lengths.get("count"):
        pct = lengths["percentiles"]
        out += ["## Token lengths of kept documents\n",
                markdown_table([tuple(f"{v:.0f}" for v in pct.values())], tuple(pct))]
    fp = stats.get("data_fingerprint")
    if fp:
        out += ["## Data fingerprint\n", f"`{fp['digest']}` ({fp['mode']}): the sourcing task re-runs "
                "when it changes.\n"]
    examples = stats["rejection_examples"][:10]
    if examples:
        out.append("## First rejections\n")
        out.append(markdown_table(
            [(e["reason"], f"`{e['uri']}`", e["detail"].replace("|", "/")) for e in examples],
            ("reason", "where", "detail")))
    return "\n".join(out)


def plot_lengths(path: Path, lengths, low: int, high: int) -> None:
    """Histogram of kept document lengths (Agg canvas, no global pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.hist(np.asarray(lengths), bins=HISTOGRAM_BINS, range=(low, high), color="#3b6ea8", edgecolor="white")
    ax.set_xlabel("tokens per document")
    ax.set_ylabel("documents")
    ax.set_title(f"Kept documents: {len(lengths)}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
