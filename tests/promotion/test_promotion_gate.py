"""The gate's verdict per suite, against the last promoted version."""

from longalign.promotion.gate import gate, table

MARGINS = {"needle": 0.02, "recall": 0.02, "longbench-chat": 0.25}


def verdicts(result):
    return {r["suite"]: r["verdict"] for r in result["suites"]}


def test_first_model_passes_with_nothing_to_compare():
    result = gate({"needle": 0.1}, None, MARGINS)
    assert result["passed"] and result["reason"] == "no promoted version yet"
    assert verdicts(result) == {"needle": "not compared"}


def test_a_drop_beyond_the_margin_blocks_and_says_which_suite():
    result = gate({"needle": 0.5, "recall": 0.70}, {"needle": 0.5, "recall": 0.75}, MARGINS)
    assert not result["passed"]
    assert verdicts(result) == {"needle": "same", "recall": "regressed"}
    assert result["reason"] == "recall 0.75 -> 0.7 (fell 0.05, margin 0.02)"


def test_a_drop_within_the_margin_passes_and_is_reported_as_worse():
    result = gate({"needle": 0.49}, {"needle": 0.5}, MARGINS)
    assert result["passed"] and verdicts(result) == {"needle": "worse"}
    assert abs(result["suites"][0]["delta"] + 0.01) < 1e-12


def test_ungated_suites_are_reported_but_never_block():
    result = gate({"needle": 0.0, "extra": 0.0}, {"needle": 1.0, "extra": 1.0}, {"extra": 0.5})
    assert not result["passed"] and verdicts(result) == {"needle": "worse", "extra": "regressed"}
    assert gate({"needle": 0.0}, {"needle": 1.0}, {})["passed"]


def test_longbench_chat_is_gated_only_when_both_runs_scored_it():
    without_judge = gate({"needle": 0.5}, {"needle": 0.5, "longbench-chat": 6.2}, MARGINS)
    assert without_judge["passed"] and verdicts(without_judge)["longbench-chat"] == "not compared"
    judged = gate({"longbench-chat": 5.9}, {"longbench-chat": 6.2}, MARGINS)
    assert not judged["passed"] and "longbench-chat 6.2 -> 5.9" in judged["reason"]
    assert gate({"longbench-chat": 6.0}, {"longbench-chat": 6.2}, MARGINS)["passed"]


def test_table_lists_every_suite():
    text = table(gate({"needle": 0.6}, {"needle": 0.5}, MARGINS)["suites"])
    assert "| needle | 0.5 | 0.6 | +0.1 | 0.02 | better |" in text
