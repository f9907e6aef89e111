"""The retrain comparison's one verdict line: each suite's change against every reference (the base
model, the previous run, ...) and one word for the whole run.

References are named deltas per suite, so another one (e.g. the last promoted model) is one more
entry of ``references``. The word compares against the last reference given (the previous run when
there is one, else the base): ``better`` (some suite up, none down), ``worse`` (some down, none up),
``mixed`` or ``same``. Suites marked by the contamination guard are shown but left out of the word.
"""

from __future__ import annotations

from longalign.scoring.baseline import EPSILON
from longalign.scoring.evaluate import headline

# A base accuracy outside [LOW, HIGH] leaves a suite little room to show a change: the option that
# moves its difficulty, per suite (longer contexts are harder; shorter ones easier)
LOW, HIGH = 0.05, 0.95
DIFFICULTY = {"needle": "scoring.needle_lengths", "ruler-needle": "scoring.lengths",
              "recall": "scoring.recall_lengths"}


def without_signal(results: dict[str, dict]) -> list[dict]:
    """The exact-match suites on which the base model scored at the ceiling or the floor, each with
    the option that makes it harder or easier (docs/scoring.md, "Default settings")."""
    if "base" not in results:
        return []
    found = []
    for suite, summary in sorted(results["base"]["suites"].items()):
        value = summary.get("accuracy")
        if value is None or LOW <= value <= HIGH:
            continue
        where, hidden, change = (("ceiling", "gain", "longer") if value > HIGH
                                 else ("floor", "loss", "shorter"))
        option = DIFFICULTY.get(suite)
        hint = f"; {change} {option} would give it room" if option else ""
        found.append({"suite": suite, "base": value, "at": where,
                      "line": f"{suite}: the base scored {value:.3f}, at the {where}: a {hidden} "
                              f"cannot show{hint}"})
    return found


def base_deltas(results: dict[str, dict]) -> dict[str, float]:
    """Model minus base per suite (both scored)."""
    if "base" not in results:
        return {}
    out = {}
    for suite, summary in results["model"]["suites"].items():
        other = results["base"]["suites"].get(suite)
        mine, theirs = headline(summary), headline(other) if other else None
        if mine is not None and theirs is not None:
            out[suite] = mine - theirs
    return out


def references(results: dict[str, dict], comparison: dict | None) -> dict[str, dict[str, float]]:
    """``{reference name: {suite: delta}}`` in order: the base, then the previous run."""
    refs = {}
    if "base" in results:
        refs["base"] = base_deltas(results)
    if comparison:
        refs["previous run"] = {r["suite"]: r["delta"] for r in comparison["suites"]}
    return refs


def verdict(refs: dict[str, dict[str, float]], contaminated: set[str] = frozenset()) -> dict:
    """``{"word", "against", "line"}`` for named per-suite deltas (see the module docstring)."""
    if not refs:
        return {"word": None, "against": None, "line": "verdict: nothing to compare with"}
    against = list(refs)[-1]
    counted = {s: d for s, d in refs[against].items() if s not in contaminated}
    up = sorted(s for s, d in counted.items() if d > EPSILON)
    down = sorted(s for s, d in counted.items() if d < -EPSILON)
    word = "mixed" if up and down else "better" if up else "worse" if down else "same"
    parts = []
    for name, deltas in refs.items():
        shown = ", ".join(f"{s} {d:+.3f}" for s, d in sorted(deltas.items())) or "-"
        parts.append(f"vs {name}: {shown}")
    line = f"verdict: {word} than the {against}" if word != "same" else f"verdict: same as the {against}"
    if down:
        line += f" (down: {', '.join(down)})"
    line += "; " + "; ".join(parts)
    if contaminated:
        line += f"; not counted (contaminated): {', '.join(sorted(contaminated))}"
    return {"word": word, "against": against, "line": line}
