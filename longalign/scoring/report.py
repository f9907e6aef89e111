"""The scoring stage's human-facing outputs: needle.png and ruler-needle.png, report.html
(self-contained) and report.md."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from longalign.io import markdown_table
from longalign.scoring.contamination import contamination_notes
from longalign.scoring.evaluate import GRID_SUITES, headline

CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:70em}
table{border-collapse:collapse;margin:0.6em 0 1.4em}th,td{border:1px solid #ccc;padding:3px 9px;
text-align:right}th{background:#f2f2f2}td.l{text-align:left}.pos{color:#1a7f37}.neg{color:#c62828}
img{max-width:100%;border:1px solid #ddd}details{margin:0.8em 0}code{font-size:90%}"""
GRID_TITLES = {"needle": "Needle in a haystack (LongAlign's test: the San Francisco sentence, exact phrase)",
               "ruler-needle": "RULER-style needle (a 7-digit magic number, exact match)"}


def heatmap_png(results: dict[str, dict], suite: str = "needle") -> bytes | None:
    """Depth x length heatmap of a grid suite, one panel per model, as PNG bytes (None without
    results of that suite)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(label, r["suites"][suite]) for label, r in _ordered(results) if suite in r["suites"]]
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


def _compare_rows(results: dict[str, dict], suite: str, key: str, value: str = "score") -> list[list[str]]:
    """One row per cell of ``suite``: label(s), each model's ``value``, and the delta."""
    labels = [label for label, r in results.items() if suite in r["suites"]]
    cells: dict[tuple, dict[str, float]] = {}
    names = ("length", "depth") if suite in GRID_SUITES else ("task", "length")
    for label in labels:
        for c in results[label]["suites"][suite][key]:
            if c.get(value) is not None:
                cells.setdefault((c[names[0]], c[names[1]]), {})[label] = c[value]
    rows = []
    for (a, b), scores in sorted(cells.items()):
        row = [html.escape(str(a)), html.escape(str(b))] + [f"{scores[l]:.2f}" if l in scores else ""
                                                            for l in labels]
        if len(labels) == 2 and all(l in scores for l in labels):
            row.append(_delta(scores[labels[0]] - scores[labels[1]]))
        rows.append(row)
    return rows


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _longbench_html(results: dict[str, dict], stats: dict) -> str:
    """LongBench-Chat: headline, per run, per language, rating statuses, judge usage."""
    labels = [l for l, r in results.items() if "longbench-chat" in r["suites"]]
    info = stats.get("longbench_chat", {})
    parts = ["<h2>LongBench-Chat (LLM judge, ratings 1-10)</h2>"]
    note = f"{info.get('questions', '?')} question(s), data {html.escape(str(info.get('source', '?')))}"
    if info.get("source") == "pinned":
        note += f" (THUDM/LongAlign {html.escape(str(info.get('commit', ''))[:10])})"
    if info.get("partial"):
        note += "; <b>partial benchmark: not comparable with published scores</b>"
    if info.get("modified_files"):
        note += f"; modified files: {html.escape(', '.join(info['modified_files']))}"
    parts.append(f"<p>{note}. Score: mean over questions of the mean of the judged runs (every run "
                 "shows the examples in a seeded shuffled order), the paper's number; the reference sum "
                 "is what the benchmark's script prints for one run (here the runs' mean sum). A reply "
                 "without a rating is retried; a run still without one is unjudged, never 0.</p>")
    trunc = [f"{html.escape(l)}: {t['truncated']} prompt(s) middle-truncated to {t['budget']} tokens "
             f"(limited by the {t['limited_by']})" for l in labels
             for t in [results[l]["suites"]["longbench-chat"].get("truncation", {})] if "budget" in t]
    if trunc:
        parts.append("<p>Truncation: " + "; ".join(trunc) + ".</p>")
    rows = []
    for label in labels:
        s = results[label]["suites"]["longbench-chat"]
        runs = " / ".join(_fmt(r["mean"], 2) for r in s["runs"])
        langs = ", ".join(f"{html.escape(k)} {v['score']:.2f} ({v['questions']})"
                          for k, v in s["languages"].items())
        status = ", ".join(f"{html.escape(k)}: {v}" for k, v in s["statuses"].items())
        rows.append([html.escape(label), _fmt(s["score"], 2), runs, _fmt(s["reference_sum"], 1), langs,
                     f"{s['scored']}/{s['questions']}", str(s["empty_answers"]), status])
    parts.append(_table(["model", "score", "runs", "reference sum", "languages", "scored", "empty answers",
                         "judge replies"], rows))
    usage = stats.get("judge_usage")
    if usage:
        parts.append(f"<p>Judge: {usage['calls']} call(s), {usage['cached']} from the journal, "
                     f"{usage['failed']} failed; {usage['prompt_tokens']} prompt + "
                     f"{usage['completion_tokens']} completion tokens; estimated cost "
                     f"{usage['cost']:.4f} (at the configured prices).</p>")
    return "".join(parts)


def _baseline_html(comparison: dict) -> str:
    parts = [f"<h2>Against the baseline</h2><p>Baseline: <code>{html.escape(str(comparison['spec']))}"
             f"</code> from <code>{html.escape(Path(comparison['path']).name)}</code>.</p>"]
    if comparison["config_changes"]:
        parts.append("<p>Not like-for-like: " + html.escape("; ".join(comparison["config_changes"])) + "</p>")
    rows = [[html.escape(r["suite"]), _fmt(r["baseline"]), _fmt(r["current"]), _delta(r["delta"]),
             html.escape(r["verdict"])] for r in comparison["suites"]]
    parts.append(_table(["suite", "baseline", "this run", "delta", "verdict"], rows))
    cells = [[html.escape(r["suite"]), html.escape(r["cell"]), _fmt(r["baseline"]), _fmt(r["current"]),
              _delta(r["delta"]), html.escape(r["verdict"])] for r in comparison["cells"]]
    if cells:
        parts.append("<details><summary>per cell</summary>"
                     + _table(["suite", "cell", "baseline", "this run", "delta", "verdict"], cells)
                     + "</details>")
    return "".join(parts)


def _answer_rows(suite: str, summary: dict) -> tuple[list[str], list[list[str]]]:
    if suite == "longbench-chat":
        rows = [[str(a["idx"]), html.escape(a["language"]), html.escape(a["query"][:120]),
                 f"<code>{html.escape(a['answer'][:300])}</code>",
                 html.escape(" / ".join("-" if r is None else f"{r:g}" for r in a["ratings"])),
                 html.escape(", ".join(a["statuses"])), _fmt(a["score"], 2)] for a in summary["answers"]]
        return ["idx", "lang", "question", "answer", "ratings", "judge", "score"], rows
    rows = [[html.escape(a["task"]), str(a["length"]), str(a.get("depth", "")),
             str(a["prompt_tokens"]), html.escape(str(a["expected"])),
             f"<code>{html.escape(a['answer'])}</code>", f"{a['score']:.2f}"]
            for a in summary["answers"]]
    return ["task", "length", "depth", "tokens", "expected", "answer", "score"], rows


def write_html(path: Path, results: dict[str, dict], stats: dict, pngs: dict[str, bytes],
               comparison: dict | None = None) -> None:
    """A single self-contained HTML file (inline CSS, heatmaps (``pngs``: suite -> PNG) as data URIs)."""
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
        values = [headline(results[l]["suites"][suite]) if suite in results[l]["suites"] else None
                  for l in labels]
        unit = "score 1-10" if suite == "longbench-chat" else "accuracy"
        row = [f"{html.escape(suite)} ({unit})"] + [_fmt(v) for v in values]
        if both:
            row.append(_delta(values[0] - values[1]) if None not in values else "")
        rows.append(row)
    parts.append("<h2>Summary</h2>" + _table(["suite", *labels, *(["delta"] if both else [])], rows))
    if stats.get("verdict"):
        parts.append(f"<p><b>{html.escape(stats['verdict']['line'])}</b></p>")
    warnings = [f"{html.escape(label)} / {html.escape(suite)}: {n} {what}"
                for label, r in results.items() for suite, summary in sorted(r["suites"].items())
                for n, what in ((summary.get("empty_answers", 0), "empty answer(s)"),
                                (summary.get("truncated", 0), "middle-truncated prompt(s)"),
                                (summary.get("unjudged", 0), "question(s) unjudged (no judge rating in any run)"))
                if n]
    if warnings:
        parts.append("<p><b>Check:</b> " + "; ".join(warnings) + ".</p>")
    if stats.get("without_signal"):
        parts.append("<p><b>No signal (the base model at the ceiling or the floor):</b> "
                     + html.escape("; ".join(e["line"] for e in stats["without_signal"])) + ".</p>")
    shared = contamination_notes(stats.get("contamination"))
    if shared:
        parts.append("<p><b>Contaminated (the fine-tuning data held the same task format; a gain "
                     "there is not evidence of long-context ability):</b> "
                     + html.escape("; ".join(shared)) + ".</p>")
    if comparison:
        parts.append(_baseline_html(comparison))
    for suite in (s for s in GRID_SUITES if s in suites):
        parts.append(f"<h2>{GRID_TITLES[suite]}</h2>")
        if pngs.get(suite):
            data = base64.b64encode(pngs[suite]).decode("ascii")
            parts.append(f'<img alt="{suite} heatmap" src="data:image/png;base64,{data}">')
        header = ["length", "depth", *[l for l in labels if suite in results[l]["suites"]]]
        parts.append(_table(header + (["delta"] if both else []), _compare_rows(results, suite, "cells")))
        judged = _compare_rows(results, suite, "cells", "judge_score")
        if judged:
            parts.append("<p>Judge ratings (1-10, LongAlign's needle judge prompt):</p>"
                         + _table(header + (["delta"] if both else []), judged))
    if "recall" in suites:
        lengths = ", ".join(str(n) for n in stats.get("recall_lengths", []))
        parts.append("<h2>Recall (exact match)</h2><p>JSON key-value retrieval, multi-key needles and "
                     f"variable tracking at {lengths} tokens; the questions of a task share one "
                     "context. Variable tracking scores the Jaccard overlap of the named variables.</p>")
        header = ["task", "length", *[l for l in labels if "recall" in results[l]["suites"]]]
        parts.append(_table(header + (["delta"] if both else []), _compare_rows(results, "recall", "cells")))
    if "longbench-chat" in suites:
        parts.append(_longbench_html(results, stats))
    for label, result in results.items():
        for suite, summary in sorted(result["suites"].items()):
            header, rows = _answer_rows(suite, summary)
            parts.append(f"<details><summary>{html.escape(label)} / {html.escape(suite)}: answers</summary>"
                         + _table(header, rows) + "</details>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")


def write_markdown(path: Path, results: dict[str, dict], metrics: dict[str, float],
                   comparison: dict | None = None, contamination: dict | None = None,
                   verdict_line: str | None = None, without_signal: list[dict] | None = None) -> None:
    """A short Markdown summary (suite headlines, deltas against the base and the baseline)."""
    results = dict(_ordered(results))
    labels = list(results)
    suites = sorted({s for r in results.values() for s in r["suites"]})
    rows = []
    for suite in suites:
        values = [headline(results[l]["suites"][suite]) if suite in results[l]["suites"] else None
                  for l in labels]
        row = [suite] + [f"{v:.3f}" if v is not None else "-" for v in values]
        if len(labels) == 2:
            delta = metrics.get(f"{suite.replace('-', '_')}_delta")
            row.append(f"{delta:+.3f}" if delta is not None else "-")
        rows.append(tuple(row))
    header = ("suite", *labels, *(["delta"] if len(labels) == 2 else []))
    specs = "\n".join(f"- {l}: `{r['spec']}`" for l, r in results.items())
    recall = [(l, t, f"{v:.3f}") for l, r in results.items()
              for t, v in r["suites"].get("recall", {}).get("tasks", {}).items()]
    text = f"# Long-context scores\n\n{specs}\n\n" + (f"**{verdict_line}**\n\n" if verdict_line else "")
    text += markdown_table(rows, header)
    if recall:
        text += "\nRecall per task:\n\n" + markdown_table(recall, ("model", "task", "accuracy"))
    for label, r in results.items():
        lbc = r["suites"].get("longbench-chat")
        if lbc:
            text += (f"\nLongBench-Chat ({label}): score {_fmt(lbc['score'], 2) or '-'} over {lbc['scored']}/"
                     f"{lbc['questions']} questions; runs " + " / ".join(_fmt(x["mean"], 2) or "-" for x in lbc["runs"])
                     + f"; reference sum {_fmt(lbc['reference_sum'], 1) or '-'}; "
                     f"unjudged {lbc['unjudged']}; empty answers {lbc['empty_answers']}.\n")
    if comparison:
        table = [(x["suite"], f"{x['baseline']:.3f}", f"{x['current']:.3f}", f"{x['delta']:+.3f}", x["verdict"])
                 for x in comparison["suites"]]
        text += ("\nAgainst the baseline:\n\n"
                 + markdown_table(table, ("suite", "baseline", "this run", "delta", "verdict")))
        if comparison["config_changes"]:
            text += "\nNot like-for-like: " + "; ".join(comparison["config_changes"]) + "\n"
    if without_signal:
        text += ("\nNo signal (the base model at the ceiling or the floor): "
                 + "; ".join(e["line"] for e in without_signal) + ".\n")
    shared = contamination_notes(contamination)
    if shared:
        text += "\nContaminated (same task format in the fine-tuning data): " + "; ".join(shared) + ".\n"
    text += "\nSee report.html for the needle heatmap and every answer.\n"
    path.write_text(text, encoding="utf-8")
