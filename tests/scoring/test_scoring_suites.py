"""Needle (LongAlign's), RULER-style needle and recall suites: oracle/empty scoring, length
calibration, needle depth, LongAlign's grid and prompt, determinism."""

import pytest

from longalign.config import ScoringConfig
from longalign.errors import UserError
from longalign.scoring.cases import Case
from longalign.scoring.chat import count_tokens
from longalign.scoring.evaluate import evaluate, metrics
from longalign.scoring.haystack import Haystack, load_source
from longalign.scoring import needle as longalign_needle
from longalign.scoring.ruler_needle import needle_cases
from longalign.scoring.stage import build_cases, needle_grid

CONFIG = ScoringConfig(lengths=[600, 1200], depths=[0.0, 0.3, 0.7, 1.0], needle_lengths=[700],
                       needle_depths=[0.1, 0.5, 0.9], recall_samples=2, seed=3)


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
    needle = [c for c in cases if c.suite == "ruler-needle"]
    recall = [c for c in cases if c.suite == "recall"]
    assert len(needle) == len(CONFIG.lengths) * len(CONFIG.depths)
    assert {(c.length, c.depth) for c in needle} == {(n, d) for n in CONFIG.lengths for d in CONFIG.depths}
    longalign = [c for c in cases if c.suite == "needle"]
    assert [(c.length, c.depth) for c in longalign] == [(700, 0.1), (700, 0.5), (700, 0.9)]
    assert sorted((c.task, c.length) for c in recall) == sorted(
        (t, 1200) for t in ("kv", "multikey", "vartrack") for _ in range(CONFIG.recall_samples))


def test_oracle_scores_one_and_silence_scores_zero(cases):
    good = evaluate(cases, Oracle(cases))
    assert good["needle"]["accuracy"] == 1.0 and good["ruler-needle"]["accuracy"] == 1.0
    assert good["recall"]["accuracy"] == 1.0
    assert all(cell["score"] == 1.0 for s in good.values() for cell in s["cells"])
    bad = evaluate(cases, Silent())
    assert bad["needle"]["accuracy"] == 0.0 and bad["recall"]["accuracy"] == 0.0
    flat = metrics({"model": {"suites": good}, "base": {"suites": bad}})
    assert flat["needle_delta"] == 1.0 and flat["base_recall_accuracy"] == 0.0
    assert flat["needle_700_d50"] == 1.0 and flat["ruler_needle_1200_d30"] == 1.0
    assert flat["ruler_needle_delta"] == 1.0
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
    for case in (c for c in cases if c.suite != "short"):  # short chats are not calibrated
        real = count_tokens(tokenizer, case.messages)
        assert real == case.prompt_tokens <= case.length
        slack = 0.03 if "needle" in case.suite else 0.15  # a kv pair (two UUIDs) is ~75 tokens
        assert real >= case.length * (1 - slack), (case.task, case.length, real)


def _haystack(case):
    if case.suite == "needle":  # LongAlign's layout: instruction, text, question
        head = longalign_needle.SYSTEM + "\n"
        tail = "\n\nRead the document and answer: " + longalign_needle.QUESTION
        assert case.user_text.startswith(head) and case.user_text.endswith(tail)
        return case.user_text[len(head):-len(tail)], longalign_needle.NEEDLE
    return case.user_text.split("<text>\n", 1)[1].rsplit("\n</text>", 1)[0], case.extra["needle"]


def test_needle_sits_at_its_depth(cases, tokenizer):
    for case in (c for c in cases if "needle" in c.suite):
        text, needle = _haystack(case)
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
    secrets = [c.expected[0] for c in cases if c.suite == "ruler-needle"]
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


def test_longalign_needle_grid_is_the_references():
    # THUDM/LongAlign Needle_test/config-prompt.yaml through prompt.py's np.linspace + np.round
    lengths = [1000, 7556, 14111, 20667, 27222, 33778, 40333, 46889, 53444, 60000]
    depths = [10, 19, 28, 37, 46, 54, 63, 72, 81, 90]
    assert longalign_needle.longalign_grid() == (lengths, [d / 100 for d in depths])
    assert longalign_needle.longalign_grid(20000) == (lengths[:3] + [20000], [d / 100 for d in depths])
    config = ScoringConfig(max_new_tokens=8)
    # a window of 8192 (SmolLM2) minus the room for a quoted answer
    room = 8192 - longalign_needle.ANSWER_TOKENS
    assert needle_grid(config, 8192) == ([1000, 7556, room], [d / 100 for d in depths])
    assert needle_grid(config.model_copy(update={"needle_lengths": [900, 300]}), 8192)[0] == [300, 900]


def test_longalign_needle_prompt_and_phrase_match(cases):
    case = next(c for c in cases if c.suite == "needle")
    text, needle = _haystack(case)
    # pred.py: system content + "\n" + user content, where the user content is
    # context + "\n\n" + "Read the document and answer: " + retrieval question
    assert case.messages == [{"role": "user", "content": longalign_needle.SYSTEM + "\n" + text + "\n\n"
                              + "Read the document and answer: " + longalign_needle.QUESTION}]
    assert needle == ("The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park "
                      "on a sunny day.")
    assert longalign_needle.QUESTION == ("What is the best thing to do in San Francisco? Here is the most "
                                         "relevant sentence in the context:")

    class Fixed:
        def __init__(self, text):
            self.text = text

        def answer(self, prompts):
            return [self.text] * len(prompts)

    def scored(answer):
        return evaluate([case], Fixed(answer))["needle"]["accuracy"]

    assert scored(needle) == 1.0
    assert scored("The best thing to do in San Francisco is to *eat a sandwich and sit in Dolores "
                  "Park on a sunny day*!") == 1.0
    assert scored("Eat a sandwich in Dolores Park.") == 0.0  # a paraphrase is not the phrase
    assert scored("Visit the Golden Gate Bridge.") == 0.0


def test_short_task_guard_scores_exact_answers(cases):
    from longalign.scoring.short import CHATS

    short = [c for c in cases if c.suite == "short"]
    assert len(short) == len(CHATS) >= 20 and all(c.prompt_tokens < 64 for c in short)

    class Replies:
        def __init__(self, replies):
            self.replies = replies

        def answer(self, prompts):
            return [self.replies.get(p[0]["content"], "I do not know.") for p in prompts]

    paris = next(c for c in short if "France" in c.user_text)
    plants = next(c for c in short if "plants" in c.user_text)
    got = evaluate(short, Replies({paris.user_text: "It is Paris.", plants.user_text: "Plants take in CO2."}))
    assert got["short"]["accuracy"] == pytest.approx(2 / len(short))
    assert got["short"]["tasks"]["facts"] == pytest.approx(2 / sum(c.task == "facts" for c in short))
    loose = evaluate([paris], Replies({paris.user_text: "Lyon, not Paris-Orly."}))["short"]["accuracy"]
    assert loose == 1.0  # whole-word containment: naming the answer counts, as in every exact suite
    assert evaluate([paris], Replies({paris.user_text: "Parisian food."}))["short"]["accuracy"] == 0.0


def test_recall_runs_at_its_own_lengths_when_given(tokenizer, source):
    config = CONFIG.model_copy(update={"recall_lengths": [900, 1500]})
    recall = [c for c in build_cases(config, tokenizer, source) if c.suite == "recall"]
    assert sorted({c.length for c in recall}) == [900, 1500]  # not the largest of lengths (1200)
    assert len(recall) == 2 * 3 * config.recall_samples
    assert all(c.prompt_tokens <= c.length for c in recall)
    with pytest.raises(ValueError, match="positive"):
        ScoringConfig(recall_lengths=[0])
