"""Statistics, Markdown summary and length histogram of a packing run."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from longalign.io import markdown_table
from longalign.packing.plan import lower_bound_rows

log = logging.getLogger("longalign")
MAX_EXAMPLES = 20  # skipped samples listed by id in stats.json


class Tally:
    """Counts of what happened to the input samples."""

    def __init__(self) -> None:
        self.samples_in = 0
        self.skipped: Counter[str] = Counter()
        self.examples: list[dict[str, str]] = []
        self.truncated = 0
        # chats read per ``task`` column value (the data's task formats, carried on to training and
        # scoring, whose contamination guard compares them with its suites)
        self.tasks: Counter[str] = Counter()

    def skip(self, sample_id: str, reason: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"id": sample_id, "reason": reason, "detail": detail})

    def as_dict(self) -> dict[str, Any]:
        """The counts as plain JSON-able values (what a map worker hands back)."""
        return {"samples_in": self.samples_in, "skipped": dict(self.skipped),
                "examples": self.examples, "truncated": self.truncated, "tasks": dict(self.tasks)}

    def merge(self, part: dict[str, Any]) -> None:
        """Add the counts of a later part of the input (``as_dict`` of its tally); the kept
        examples stay the first ``MAX_EXAMPLES`` in input order."""
        self.samples_in += part["samples_in"]
        self.skipped.update(part["skipped"])
        self.examples.extend(part["examples"][:MAX_EXAMPLES - len(self.examples)])
        self.truncated += part["truncated"]
        self.tasks.update(part["tasks"])


def length_histogram(lengths: np.ndarray, max_len: int) -> dict[str, list[int]]:
    """Counts of sample lengths in power-of-two bins [0, 16), [16, 32), ... up to max_len."""
    edges = [0, 16]
    while edges[-1] < max_len:
        edges.append(min(edges[-1] * 2, max_len))
    edges[-1] = max_len + 1  # the last bin includes max_len itself
    counts, _ = np.histogram(lengths, bins=edges)
    return {"edges": edges, "counts": counts.tolist()}


def build_stats(*, tally: Tally, strategy: str, max_len: int, batch_size: int, lengths: np.ndarray,
                targets: np.ndarray, batches: list[list[list[int]]], efficiency: float,
                files: list[str]) -> dict[str, Any]:
    """The stats.json content (and the stage's return value)."""
    rows = [row for b in batches for row in b]
    tokens = int(lengths.sum())
    bound = lower_bound_rows(tokens, max_len)
    per_row = Counter(len(r) for r in rows)
    stats: dict[str, Any] = {
        "strategy": strategy,
        "max_len": max_len,
        "batch_size": 1 if strategy == "pack" else batch_size,
        "samples_in": tally.samples_in,
        "samples_packed": int(len(lengths)),
        "skipped": dict(sorted(tally.skipped.items())),
        "skipped_total": int(sum(tally.skipped.values())),
        "skipped_examples": tally.examples,
        "truncated": tally.truncated,
        "dropped_too_long": int(tally.skipped.get("too_long", 0)),
        "tokens": tokens,
        "target_tokens": int(targets.sum()),
        "rows": len(rows),
        "batches": len(batches),
        "efficiency": round(efficiency, 6),
        "lower_bound_rows": bound,
        "rows_over_lower_bound": round(len(rows) / bound, 6) if bound else 0.0,
        "length_histogram": length_histogram(lengths, max_len),
        "samples_per_row": {str(k): v for k, v in sorted(per_row.items())},
        "files": files,
        "data_tasks": dict(sorted(tally.tasks.items())),
    }
    stats["metrics"] = {
        "samples_in": stats["samples_in"],
        "samples_packed": stats["samples_packed"],
        "skipped": stats["skipped_total"],
        "dropped_too_long": stats["dropped_too_long"],
        "truncated": stats["truncated"],
        "tokens": tokens,
        "target_tokens": stats["target_tokens"],
        "rows": stats["rows"],
        "batches": stats["batches"],
        "efficiency": stats["efficiency"],
        "lower_bound_rows": bound,
        "rows_over_lower_bound": stats["rows_over_lower_bound"],
        "mean_samples_per_row": round(len(lengths) / len(rows), 4) if rows else 0.0,
        "max_sample_tokens": int(lengths.max()) if len(lengths) else 0,
    }
    return stats


def summary_markdown(stats: dict[str, Any], model: str) -> str:
    """The summary.md shown in the KFP UI."""
    s = stats
    eff_def = ("real tokens / (rows x max_len)" if s["strategy"] == "pack"
               else "real tokens / sum over batches of (samples x longest sample)")
    lines = [f"# Packing: {s['strategy']}, max_len {s['max_len']}, model `{model}`\n"]
    lines.append(markdown_table([
        ("samples in", s["samples_in"]),
        ("samples packed", s["samples_packed"]),
        ("skipped", s["skipped_total"]),
        ("dropped (longer than max_len)", s["dropped_too_long"]),
        ("truncated (middle)", s["truncated"]),
        ("tokens", s["tokens"]),
        ("target tokens", s["target_tokens"]),
        ("rows", s["rows"]),
        ("micro-batches", s["batches"]),
        ("efficiency", f"{s['efficiency']:.4%} ({eff_def})"),
        ("lower bound of rows", s["lower_bound_rows"]),
        ("rows / lower bound", f"{s['rows_over_lower_bound']:.4f}"),
        ("mean samples per row", s["metrics"]["mean_samples_per_row"]),
    ], ("", "value")))
    if s["skipped"]:
        lines.append("\n## Skipped samples\n")
        lines.append(markdown_table(sorted(s["skipped"].items()), ("reason", "samples")))
    lines.append("\n## Samples per row\n")
    lines.append(markdown_table(list(s["samples_per_row"].items()), ("samples in row", "rows")))
    hist = s["length_histogram"]
    bins = [(f"{a}-{b - 1}", c) for a, b, c in zip(hist["edges"], hist["edges"][1:], hist["counts"]) if c]
    lines.append("\n## Sample lengths (tokens)\n")
    lines.append(markdown_table(bins, ("tokens", "samples")))
    return "\n".join(lines)


def plot_lengths(stats: dict[str, Any], path: Path) -> None:
    """Histogram of sample lengths and of samples per row (matplotlib's Agg canvas; a figure of
    its own, not pyplot's global state; fixed margins, since fitting them to the labels
    (``tight_layout``) cost about as much as drawing, 0.1 s a run)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a dependency; the plot is optional
        log.warning("matplotlib missing: no lengths.png")
        return
    hist = stats["length_histogram"]
    fig = Figure(figsize=(10, 3.6))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.08, right=0.985, bottom=0.21, top=0.9, wspace=0.2)
    edges = hist["edges"]
    ax1.bar(range(len(hist["counts"])), hist["counts"], color="#4c72b0")
    ax1.set_xticks(range(len(hist["counts"])))
    ax1.set_xticklabels([str(e) for e in edges[:-1]], rotation=60, fontsize=7)
    ax1.set_xlabel("sample length (tokens, bin start)")
    ax1.set_ylabel("samples")
    ax1.set_title(f"{stats['samples_packed']} samples, max_len {stats['max_len']}")
    per_row = stats["samples_per_row"]
    ax2.bar([int(k) for k in per_row], list(per_row.values()), color="#55a868")
    ax2.set_xticks([int(k) for k in per_row])
    ax2.set_xlabel("samples per row")
    ax2.set_ylabel("rows")
    ax2.set_title(f"{stats['strategy']}: {stats['rows']} rows, efficiency {stats['efficiency']:.2%}")
    fig.savefig(path, dpi=100)
