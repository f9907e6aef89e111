"""Exact-match normalisation and set scoring on tricky answers."""

import pytest

from longalign.scoring.matching import exact_match, normalize, set_score


@pytest.mark.parametrize("answer", [
    "1234567",
    "**1234567**.",
    "The special magic number for Oslo is 1234567.",
    "The number is 1,234,567!",
    "`1234567`\n",
    "１２３４５６７",  # full-width digits (NFKC)
    "Answer:1234567;",
])
def test_exact_match_accepts(answer):
    assert exact_match("1234567", answer)


@pytest.mark.parametrize("answer", [
    "",
    "12345678",  # a longer number is not the secret
    "x1234567",
    "123456",
    "1234 567",
    "The number is 7654321.",
])
def test_exact_match_rejects(answer):
    assert not exact_match("1234567", answer)


def test_uuid_matches_whatever_quoting_and_case():
    value = "2d25162c-fe00-4666-b7dc-4e599b1c7b45"
    assert exact_match(value, f'The value is "{value.upper()}".')
    assert exact_match(value, f"value: {value}\n")
    assert not exact_match(value, "The value is 2d25162c-fe00-4666-b7dc")  # cut short
    assert not exact_match(value, value.replace("-", ""))  # groups glued together differ


def test_empty_expected_never_matches():
    assert not exact_match("", "anything")
    assert not exact_match("...", "...")


def test_normalize_rules():
    assert normalize("  Hello,   WORLD!! ") == "hello world"
    assert normalize("1,000,000 and a,b") == "1000000 and a b"
    assert normalize("snake_case-word") == "snake case word"


def test_set_score_is_jaccard_over_named_candidates():
    gold = ["ABCDE", "FGHIJ", "KLMNO", "PQRST"]
    universe = gold + ["UVWXY", "ZABCD"]
    assert set_score(gold, universe, "ABCDE, FGHIJ, KLMNO, PQRST") == 1.0
    assert set_score(gold, universe, "abcde fghij") == 0.5
    assert set_score(gold, universe, "ABCDE, FGHIJ, KLMNO, PQRST, UVWXY") == pytest.approx(4 / 5)
    assert set_score(gold, universe, "") == 0.0
    assert set_score(gold, universe, "ABCDEF") == 0.0  # not a whole-word mention
