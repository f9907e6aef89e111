"""The retrain comparison's verdict line."""

from longalign.scoring.verdict import references, verdict, without_signal


def _result(**scores):
    return {"suites": {suite.replace("_", "-"): {"accuracy": value} for suite, value in scores.items()}}


def test_verdict_against_base_and_previous_run():
    results = {"model": _result(needle=0.6, recall=0.5, short=0.7), "base": _result(needle=0.4, recall=0.5, short=0.8)}
    refs = references(results, None)
    assert refs == {"base": {"needle": 0.6 - 0.4, "recall": 0.0, "short": 0.7 - 0.8}}
    got = verdict(refs)
    assert got["word"] == "mixed" and got["against"] == "base"
    assert got["line"].startswith("verdict: mixed than the base (down: short); vs base: needle +0.200")
    comparison = {"suites": [{"suite": "needle", "delta": 0.1}, {"suite": "recall", "delta": -0.25},
                             {"suite": "short", "delta": 0.0}]}
    refs = references(results, comparison)
    assert list(refs) == ["base", "previous run"]
    got = verdict(refs)
    assert (got["word"], got["against"]) == ("mixed", "previous run")
    assert "vs previous run: needle +0.100, recall -0.250, short +0.000" in got["line"]
    # a contaminated suite is shown but does not count
    clean = verdict(refs, {"recall"})
    assert clean["word"] == "better" and clean["line"].endswith("not counted (contaminated): recall")
    assert verdict({"previous run": {"needle": 0.0}})["line"].startswith("verdict: same as the previous run")
    assert verdict({"base": {"needle": -0.5}})["word"] == "worse"
    assert verdict({})["word"] is None


def test_suites_whose_base_sits_at_the_ceiling_or_the_floor_are_named_with_the_option():
    results = {"model": _result(needle=1.0, recall=0.1, short=0.99, ruler_needle=0.5),
               "base": _result(needle=1.0, recall=0.0, short=0.96, ruler_needle=0.95)}
    found = {e["suite"]: e for e in without_signal(results)}
    assert set(found) == {"needle", "recall", "short"}  # 0.95 itself still leaves room
    assert found["needle"]["at"] == "ceiling" and "gain cannot show" in found["needle"]["line"]
    assert "longer scoring.needle_lengths" in found["needle"]["line"]
    assert found["recall"]["at"] == "floor" and "shorter scoring.recall_lengths" in found["recall"]["line"]
    assert "would give it room" not in found["short"]["line"]  # no length option for short chats
    # LongBench-Chat's 1-10 rating is not an accuracy; without a base nothing is judged
    assert without_signal({"model": _result(needle=1.0)}) == []
    assert without_signal({"model": {"suites": {}}, "base": {"suites": {"longbench-chat": {"score": 9.9}}}}) == []
