"""Needle and recall suites: oracle/empty scoring, length calibration, needle depth, determinism."""

import pytest

from longalign.config import ScoringConfig
from longalign.errors import UserError
from longalign.scoring.cases import Case
from longalign.scoring.chat import count_tokens
from longalign.scoring.evaluate import evaluate, metrics
from longalign.scoring.haystack import Haystack, load_source
from longalign.scoring.needle import needle_cases
from longalign.scoring.stage import build_cases

CONFIG = ScoringConfig(lengths=[600, 1200], depths=[0.0, 0.3, 0.7, 1.0], recall_samples=2, seed=3)


@pytest.fixture(scope="module")
def tokenizer():
    from longalign.models import load_tokenizer

    return load_tokenizer("embedded:tiny")


@pytest.fixture(scope="module")
def source():
    return load_source(None, 1200)


@pytest.fixture(scope="module")
def cases(tokenizer, source):
    return build_cases(CONFIG, tokenizer, source)


class Oracle:
    """Answers from the gold answer of the case whose prompt it is given (chatty, like a real model)."""

    def __init__(self, cases: list[Case]):
        self.gold = {c.user_text: c for c in cases}

    def answer(self, prompts):
        out = []
        for messages in prompts:
            case = self.gold[next(m["content"] for m in messages if m["role"] == "user")]
            if case.kind == "set":
                out.append("The variables are: " + ", ".join(case.expected) + ".")
            else:
                out.append(f"Sure! The answer is **{case.expected[0]}**.")
        return out


class Silent:
    def answer(self, prompts):
        return [""] * len(prompts)


def test_suite_composition(cases):
    needle = [c for c in cases if c.suite == "needle"]
    recall = [c for c in cases if c.suite == "recall"]
    assert len(needle) == len(CONFIG.lengths) * len(CONFIG.depths)
    assert {(c.length, c.depth) for c in needle} == {(n, d) for n in CONFIG.lengths for d in CONFIG.depths}
    assert sorted((c.task, c.length) for c in recall) == sorted(
        (t, 1200) for t in ("kv", "multikey", "vartrack") for _ in range(CONFIG.recall_samples))


def test_oracle_scores_one_and_silence_scores_zero(cases):
    good = evaluate(cases, Oracle(cases))
    assert good["needle"]["accuracy"] == 1.0
    assert good["recall"]["accuracy"] == 1.0
    assert all(cell["score"] == 1.0 for s in good.values() for cell in s["cells"])
    bad = evaluate(cases, Silent())
    assert bad["needle"]["accuracy"] == 0.0 and bad["recall"]["accuracy"] == 0.0
    flat = metrics({"model": {"suites": good}, "base": {"suites": bad}})
    assert flat["needle_delta"] == 1.0 and flat["base_recall_accuracy"] == 0.0
    assert flat["recall_vartrack_accuracy"] == 1.0


def test_distractor_answers_score_zero(cases):
    """Answering another needle's number (multikey) or the other chain (vartrack) is wrong."""
    import re

    class Fixed:
        def __init__(self, text):
            self.text = text

        def answer(self, prompts):
            return [self.text] * len(prompts)

    checked = 0
    for case in cases:
        if case.task == "multikey":
            values = re.findall(r"special magic numbers for \S+ is: (\d+)\.", case.user_text)
            assert len(values) == CONFIG.recall_samples + 1 and case.expected[0] in values
            wrong = [v for v in values if v != case.expected[0]]
            assert evaluate([case], Fixed(" ".join(wrong)))["recall"]["accuracy"] == 0.0
            assert evaluate([case], Fixed(case.expected[0]))["recall"]["accuracy"] == 1.0
            checked += 1
        if case.task == "vartrack":
            other = [v for v in case.universe if v not in case.expected]
            assert evaluate([case], Fixed(", ".join(other)))["recall"]["accuracy"] == 0.0
            checked += 1
    assert checked == 2 * CONFIG.recall_samples


def test_prompt_lengths_are_calibrated(cases, tokenizer):
    for case in cases:
        real = count_tokens(tokenizer, case.messages)
        assert real == case.prompt_tokens <= case.length
        slack = 0.03 if case.suite == "needle" else 0.15  # a kv pair (two UUIDs) is ~75 tokens
        assert real >= case.length * (1 - slack), (case.task, case.length, real)


def test_needle_sits_at_its_depth(cases, tokenizer):
    for case in (c for c in cases if c.suite == "needle"):
        text = case.user_text.split("<text>\n", 1)[1].rsplit("\n</text>", 1)[0]
        needle = case.extra["needle"]
        assert text.count(needle) == 1
        before = text[: text.index(needle)]
        assert before == "" or before.endswith("\n")  # on a line boundary
        total = len(tokenizer(text.replace(needle + "\n", "").replace("\n" + needle, ""),
                              add_special_tokens=False)["input_ids"])
        got = len(tokenizer(before, add_special_tokens=False)["input_ids"]) / total
        assert got == pytest.approx(case.depth, abs=0.04), (case.length, case.depth, got)


def test_cases_are_deterministic_and_seeded(tokenizer, source):
    first = build_cases(CONFIG, tokenizer, source)
    again = build_cases(CONFIG, tokenizer, source)
    assert [(c.messages, c.expected) for c in first] == [(c.messages, c.expected) for c in again]
    other = build_cases(CONFIG.model_copy(update={"seed": 4}), tokenizer, source)
    assert [c.expected for c in first] != [c.expected for c in other]


def test_secrets_differ_between_cells(cases):
    secrets = [c.expected[0] for c in cases if c.suite == "needle"]
    assert len(set(secrets)) == len(secrets)


def test_too_short_length_is_a_user_error(tokenizer, source):
    hay = Haystack(source.text, tokenizer, 64)
    with pytest.raises(UserError, match="too short"):
        needle_cases(hay, tokenizer, [40], [0.5], 0)
    with pytest.raises(UserError, match="depths"):
        build_cases(ScoringConfig(lengths=[512], depths=[1.5]), tokenizer, source)


def test_short_source_is_repeated(tokenizer):
    hay = Haystack("def f():\n    return 1\n", tokenizer, 500)
    assert hay.repeats > 1
    assert hay.tokens(len(hay)) >= 500
    case = needle_cases(hay, tokenizer, [400], [0.5], 0)[0]
    assert 0.97 * 400 <= case.prompt_tokens <= 400
