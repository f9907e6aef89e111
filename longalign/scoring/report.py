"""The scoring stage's human-facing outputs: needle.png, report.html (self-contained) and report.md."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from longalign.io import markdown_table

CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:70em}
table{border-collapse:collapse;margin:0.6em 0 1.4em}th,td{border:1px solid #ccc;padding:3px 9px;
text-align:right}th{background:#f2f2f2}td.l{text-align:left}.pos{color:#1a7f37}.neg{color:#c62828}
img{max-width:100%;border:1px solid #ddd}details{margin:0.8em 0}code{font-size:90%}"""


def heatmap_png(results: dict[str, dict]) -> bytes | None:
    """Depth x length needle heatmap, one panel per model, as PNG bytes (None without needle results)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(label, r["suites"]["needle"]) for label, r in _ordered(results) if "needle" in r["suites"]]
    if not panels:
        return None
    fig = Figure(figsize=(1.4 + 3.6 * len(panels), 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    image = None
    for ax, (label, summary) in zip(axes, panels):
        lengths = sorted({c["length"] for c in summary["cells"]})
        depths = sorted({c["depth"] for c in summary["cells"]})
        grid = [[float("nan")] * len(lengths) for _ in depths]
        for c in summary["cells"]:
            grid[depths.index(c["depth"])][lengths.index(c["length"])] = c["score"]
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        for y, row in enumerate(grid):
            for x, value in enumerate(row):
                ax.text(x, y, f"{value:.2f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(lengths)), [str(v) for v in lengths])
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
        ax.set_xlabel("prompt length (tokens)")
        if ax is axes[0]:
            ax.set_ylabel("needle depth")
        ax.set_title(f"{label}: {summary['accuracy']:.0%}")
    fig.colorbar(image, ax=list(axes), fraction=0.05, label="exact match")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _ordered(results: dict[str, dict]) -> list[tuple[str, dict]]:
    """The fine-tuned model first, then the others (the base)."""
    return sorted(results.items(), key=lambda item: item[0] != "model")


def _delta(value: float | None) -> str:
    if value is None:
        return ""
    cls = "pos" if value > 0 else "neg" if value < 0 else ""
    return f'<span class="{cls}">{value:+.2f}</span>'


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="l">{c}</td>' if i == 0 else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _compare_rows(results: dict[str, dict], suite: str, key: str) -> list[list[str]]:
    """One row per cell of ``suite``: label(s), each model's score, and the delta."""
    labels = [label for label, r in results.items() if suite in r["suites"]]
    cells: dict[tuple, dict[str, float]] = {}
    names = ("length", "depth") if suite == "needle" else ("task", "length")
    for label in labels:
        for c in results[label]["suites"][suite][key]:
            cells.setdefault((c[names[0]], c[names[1]]), {})[label] = c["score"]
    rows = []
    for (a, b), scores in sorted(cells.items()):
        row = [html.escape(str(a)), html.escape(str(b))] + [f"{scores[l]:.2f}" if l in scores else ""
                                                            for l in labels]
        if len(labels) == 2 and all(l in scores for l in labels):
            row.append(_delta(scores[labels[0]] - scores[labels[1]]))
        rows.append(row)
    return rows


def write_html(path: Path, results: dict[str, dict], stats: dict, png: bytes | None) -> None:
    """A single self-contained HTML file (inline CSS, heatmap as a data URI)."""
    results = dict(_ordered(results))
    labels = list(results)
    both = len(labels) == 2
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>longalign scores</title>"
             f"<style>{CSS}</style></head><body><h1>Long-context scores</h1>"]
    specs = ", ".join(f"{html.escape(l)}: <code>{html.escape(r['spec'])}</code>" for l, r in results.items())
    hay = stats.get("haystack", {})
    parts.append(f"<p>{specs}. Haystack: {html.escape(str(hay.get('source', '?')))}; prompt lengths "
                 f"are whole chat prompts in the model's tokens.</p>")
    suites = sorted({s for r in results.values() for s in r["suites"]})
    rows = []
    for suite in suites:
        values = [results[l]["suites"].get(suite, {}).get("accuracy") for l in labels]
        row = [html.escape(suite)] + [f"{v:.3f}" if v is not None else "" for v in values]
        if both:
            row.append(_delta(values[0] - values[1]) if None not in values else "")
        rows.append(row)
    parts.append("<h2>Summary</h2>" + _table(["suite", *labels, *(["delta"] if both else [])], rows))
    if "needle" in suites:
        parts.append("<h2>Needle in a haystack</h2>")
        if png:
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<img alt="needle heatmap" src="data:image/png;base64,{data}">')
        header = ["length", "depth", *[l for l in labels if "needle" in results[l]["suites"]]]
        parts.append(_table(header + (["delta"] if both else []), _compare_rows(results, "needle", "cells")))
    if "recall" in suites:
        lengths = ", ".join(str(n) for n in stats.get("recall_lengths", []))
        parts.append("<h2>Recall (exact match)</h2><p>JSON key-value retrieval, multi-key needles and "
                     f"variable tracking at {lengths} tokens; the questions of a task share one "
                     "context. Variable tracking scores the Jaccard overlap of the named variables.</p>")
        header = ["task", "length", *[l for l in labels if "recall" in results[l]["suites"]]]
        parts.append(_table(header + (["delta"] if both else []), _compare_rows(results, "recall", "cells")))
    for label, result in results.items():
        for suite, summary in sorted(result["suites"].items()):
            rows = [[html.escape(a["task"]), str(a["length"]), str(a.get("depth", "")),
                     str(a["prompt_tokens"]), html.escape(str(a["expected"])),
                     f"<code>{html.escape(a['answer'])}</code>", f"{a['score']:.2f}"]
                    for a in summary["answers"]]
            parts.append(f"<details><summary>{html.escape(label)} / {html.escape(suite)}: answers</summary>"
                         + _table(["task", "length", "depth", "tokens", "expected", "answer", "score"], rows)
                         + "</details>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")


def write_markdown(path: Path, results: dict[str, dict], metrics: dict[str, float]) -> None:
    """A short Markdown summary (suite accuracies, and deltas when the base was scored)."""
    results = dict(_ordered(results))
    labels = list(results)
    suites = sorted({s for r in results.values() for s in r["suites"]})
    rows = []
    for suite in suites:
        values = [results[l]["suites"].get(suite, {}).get("accuracy") for l in labels]
        row = [suite] + [f"{v:.3f}" if v is not None else "-" for v in values]
        if len(labels) == 2:
            delta = metrics.get(f"{suite}_delta")
            row.append(f"{delta:+.3f}" if delta is not None else "-")
        rows.append(tuple(row))
    header = ("suite", *labels, *(["delta"] if len(labels) == 2 else []))
    specs = "\n".join(f"- {l}: `{r['spec']}`" for l, r in results.items())
    recall = [(l, t, f"{v:.3f}") for l, r in results.items()
              for t, v in r["suites"].get("recall", {}).get("tasks", {}).items()]
    text = f"# Long-context scores\n\n{specs}\n\n" + markdown_table(rows, header)
    if recall:
        text += "\nRecall per task:\n\n" + markdown_table(recall, ("model", "task", "accuracy"))
    text += "\nSee report.html for the needle heatmap and every answer.\n"
    path.write_text(text, encoding="utf-8")
