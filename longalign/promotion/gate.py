"""The promotion gate: each suite of this run against the last promoted version.

A gated suite (one with a margin) fails when it fell by more than its margin; a suite scored in
only one of the two runs is reported as not compared and never blocks (LongBench-Chat is scored,
and so gated, only when the run has a judge). Without a promoted version there is nothing to
regress from: the gate passes.
"""

from __future__ import annotations

from typing import Any

EPSILON = 1e-9


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def gate(current: dict[str, float], previous: dict[str, float] | None,
         margins: dict[str, float]) -> dict[str, Any]:
    """``{"passed", "reason", "suites": [...]}``; each suite row has current, previous, delta,
    margin (None: not gated) and verdict (better/same/worse/regressed/not compared)."""
    rows = []
    for suite in sorted(set(current) | set(previous or {})):
        now, before = current.get(suite), (previous or {}).get(suite)
        margin = margins.get(suite)
        row: dict[str, Any] = {"suite": suite, "current": now, "previous": before,
                               "delta": None, "margin": margin}
        if now is None or before is None:
            row["verdict"] = "not compared"
        else:
            delta = now - before
            row["delta"] = delta
            if margin is not None and delta < -margin - EPSILON:
                row["verdict"] = "regressed"
            else:
                row["verdict"] = "better" if delta > EPSILON else "worse" if delta < -EPSILON else "same"
        rows.append(row)
    regressed = [r for r in rows if r["verdict"] == "regressed"]
    if previous is None:
        reason = "no promoted version yet"
    elif regressed:
        reason = "; ".join(f"{r['suite']} {_fmt(r['previous'])} -> {_fmt(r['current'])} "
                           f"(fell {-r['delta']:.4g}, margin {r['margin']:.4g})" for r in regressed)
    else:
        gated = [r["suite"] for r in rows if r["margin"] is not None and r["delta"] is not None]
        reason = (f"no gated suite fell by more than its margin ({', '.join(gated)})" if gated
                  else "no gated suite was scored in both runs")
    return {"passed": not regressed, "reason": reason, "suites": rows}


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the suite rows."""
    out = ["| suite | last promoted | this run | change | margin | verdict |", "|---|---|---|---|---|---|"]
    for r in rows:
        delta = "-" if r["delta"] is None else f"{r['delta']:+.4g}"
        margin = "not gated" if r["margin"] is None else f"{r['margin']:.4g}"
        out.append(f"| {r['suite']} | {_fmt(r['previous'])} | {_fmt(r['current'])} | {delta} | {margin} "
                   f"| {r['verdict']} |")
    return "\n".join(out) + "\n"
