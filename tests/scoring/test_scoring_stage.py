"""The scoring stage end to end: outputs, report, corpus haystack, user errors."""

import base64
import json
import shutil
from html.parser import HTMLParser

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longalign.results import StageResult
from longalign.config import ScoringConfig, load_run_config
from longalign.errors import UserError
from longalign.formats import CORPUS, write_rows
from longalign.scoring import score
from longalign.scoring.evaluate import metrics
from longalign.scoring.haystack import load_source
from longalign.scoring.stage import score_answerer, write_outputs

FILES = {"scores.json", "stats.json", "result.json", "report.html", "report.md", "needle.png",
         "ruler-needle.png"}


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables, self.open = [], 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag == "table":
            self.tables += 1
        if tag not in ("img", "meta"):
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, (tag, self.open[-3:])
        self.open.pop()


def _check_html(path):
    parser = _Collect()
    parser.feed(path.read_text())
    parser.close()
    assert not parser.open
    assert parser.tables >= 2
    assert len(parser.images) == 2  # LongAlign's needle and the RULER-style one
    for image in parser.images:
        assert image.startswith("data:image/png;base64,")
        assert base64.b64decode(image.split(",", 1)[1]).startswith(b"\x89PNG")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real run: a fine-tuned checkpoint directory (a copy of embedded:tiny) against its base."""
    from longalign.models import resolve_model

    root = tmp_path_factory.mktemp("scoring")
    checkpoint = root / "checkpoint"
    shutil.copytree(resolve_model("embedded:tiny"), checkpoint)
    config = load_run_config("tiny").scoring
    stats = score(config, checkpoint, root / "out", base_model="embedded:tiny")
    return config, stats, root / "out"


def test_real_run_writes_everything(tiny_run):
    config, stats, out = tiny_run
    assert {p.name for p in out.iterdir()} == FILES
    assert json.loads((out / "stats.json").read_text()) == stats
    stored = StageResult.load(out)
    assert stored.headline == stats["headline"] and stored.metrics == stats["metrics"]
    assert (stored.summary_path, stored.report_path) == (out / "report.md", out / "report.html")
    m = stats["metrics"]
    for suite in ("needle", "ruler_needle", "recall"):
        assert 0.0 <= m[f"{suite}_accuracy"] <= 1.0 and 0.0 <= m[f"base_{suite}_accuracy"] <= 1.0
    assert m["needle_delta"] == pytest.approx(m["needle_accuracy"] - m["base_needle_accuracy"])
    scores = json.loads((out / "scores.json").read_text())
    model = scores["models"]["model"]["suites"]
    assert len(model["ruler-needle"]["cells"]) == len(config.lengths) * len(config.depths)
    assert {(c["length"], c["depth"]) for c in model["needle"]["cells"]} == {
        (n, d) for n in config.needle_lengths for d in config.needle_depths}
    assert {(c["task"], c["length"]) for c in model["recall"]["cells"]} == {
        (t, 512) for t in ("kv", "multikey", "vartrack")}
    assert all(a["prompt_tokens"] <= 512 for a in model["needle"]["answers"])
    assert all(isinstance(a["answer"], str) for a in model["recall"]["answers"])
    assert scores["models"]["base"]["spec"] == "embedded:tiny"
    _check_html(out / "report.html")
    assert "| needle |" in (out / "report.md").read_text()


def test_missing_model_dir_is_a_user_error_and_writes_nothing(tmp_path):
    with pytest.raises(UserError, match="not found"):
        score(ScoringConfig(lengths=[512]), tmp_path / "nope", tmp_path / "out")
    with pytest.raises(UserError):
        score(ScoringConfig(lengths=[512]), "embedded:tiny", tmp_path / "out", base_model="embedded:nope")
    assert not (tmp_path / "out").exists()


def test_missing_corpus_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="corpus"):
        score(ScoringConfig(lengths=[512]), "embedded:tiny", tmp_path / "out", corpus=tmp_path / "missing")
    assert not (tmp_path / "out").exists()


def test_corpus_text_becomes_the_haystack_and_empty_rows_are_counted(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    texts = ["Alpha line one.\nAlpha line two.", "", None, "Beta paragraph.\nMore beta."]
    write_rows(CORPUS, corpus, [{"id": str(i), "text": t} for i, t in enumerate(texts)])
    source = load_source(corpus, 256)
    assert source.info["skipped"] == {"empty_text": 2}
    assert source.info["documents_used"] == 2
    assert source.text.startswith("Alpha line one.")
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pa.table({"body": ["x"]}), bad / "documents-00000.parquet")
    with pytest.raises(UserError, match="lacks column"):
        load_source(bad, 256)


def test_report_from_an_injected_answerer(tmp_path):
    """Oracle for the model, silence for the base: the report shows both and the deltas."""
    from longalign.models import load_tokenizer

    tokenizer = load_tokenizer("embedded:tiny")
    config = ScoringConfig(lengths=[400, 800], depths=[0.2, 0.8], recall_samples=1,
                           needle_lengths=[600], needle_depths=[0.3, 0.6])
    source = load_source(None, 800)

    class Oracle:
        def answer(self, prompts):
            out = []
            for p in prompts:
                text = p[0]["content"]
                case = next(c for c in cases if c.user_text == text)
                out.append(", ".join(case.expected))
            return out

    from longalign.scoring.stage import build_cases

    cases = build_cases(config, tokenizer, source)
    results = {
        "model": score_answerer(config, "oracle", tokenizer, Oracle(), source),
        "base": score_answerer(config, "silent", tokenizer,
                               type("S", (), {"answer": lambda self, p: [""] * len(p)})(), source),
    }
    stats = write_outputs(tmp_path, config, results, source.info, 1.0)
    assert stats["metrics"] == metrics(results)
    assert stats["metrics"]["needle_delta"] == 1.0 and stats["metrics"]["recall_delta"] == 1.0
    assert stats["metrics"]["ruler_needle_delta"] == 1.0
    # the run summary's numbers: one per suite and model, and the difference
    assert stats["headline"] == {"needle_accuracy": 1.0, "recall_accuracy": 1.0, "base_needle_accuracy": 0.0,
                                 "base_recall_accuracy": 0.0, "needle_delta": 1.0, "recall_delta": 1.0,
                                 "ruler_needle_accuracy": 1.0, "base_ruler_needle_accuracy": 0.0,
                                 "ruler_needle_delta": 1.0, "short_accuracy": 1.0,
                                 "base_short_accuracy": 0.0, "short_delta": 1.0}
    assert stats["verdict"]["word"] == "better" and stats["verdict"]["against"] == "base"
    assert stats["verdict"]["line"] in (tmp_path / "report.md").read_text()
    _check_html(tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    assert "+1.00" in html and "oracle" in html and "silent" in html
    # the silent base sits at the floor of every suite: both reports say so, with the option
    floored = {e["suite"] for e in stats.stats["without_signal"]}
    assert floored == {"needle", "ruler-needle", "recall", "short"}
    for text in ((tmp_path / "report.md").read_text(), html):
        assert "No signal" in text and "shorter scoring.recall_lengths" in text


def test_contamination_guard_refuses_or_marks_a_suite_sharing_a_training_format(tmp_path):
    from longalign.models import resolve_model
    from longalign.scoring.contamination import guard

    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(resolve_model("embedded:tiny"), checkpoint)
    (checkpoint / "stats.json").write_text(json.dumps({"data_tasks": {"general": 5, "kv_retrieval": 3}}))
    config = ScoringConfig(suites=["recall"], lengths=[384], recall_samples=1, compare_base=False,
                           contamination="refuse")
    with pytest.raises(UserError, match=r"recall/kv shares the format of 3 kv_retrieval training sample"):
        score(config, checkpoint, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # refused before any work
    stats = score(config.model_copy(update={"contamination": "mark"}), checkpoint, tmp_path / "marked")
    assert stats["contamination"]["shared"] == [
        {"suite": "recall", "task": "kv", "training_task": "kv_retrieval", "samples": 3}]
    for name in ("report.html", "report.md"):
        assert "recall/kv shares the format of 3 kv_retrieval" in (tmp_path / "marked" / name).read_text()
    # without such data (or without stats, e.g. a hub model) nothing is marked
    (checkpoint / "stats.json").write_text(json.dumps({"data_tasks": {"general": 5, "needle": 0}}))
    assert guard(["recall", "needle"], str(checkpoint), "refuse")["shared"] == []
    assert guard(["recall"], "embedded:tiny", "refuse") == {"data_tasks": None, "shared": [], "mode": "refuse"}


def test_only_the_lengths_a_suite_uses_are_checked_against_the_window():
    """The window check counts ruler-needle's `lengths` only when that suite runs, and recall's own
    `recall_lengths` when given, and names the option to lower."""
    from longalign.scoring.stage import check_fits

    source = load_source(None, 1200)
    unused = ScoringConfig(suites=["recall"], lengths=[100000], recall_lengths=[700], recall_samples=1)
    check_fits(unused, "model", "embedded:tiny", source)  # 100,000 > the tiny model's 16,384: unused
    cases = [(ScoringConfig(suites=["ruler-needle", "recall"], lengths=[100000], recall_lengths=[700]),
              "scoring.lengths"),
             (ScoringConfig(suites=["recall"], recall_lengths=[100000]), "scoring.recall_lengths"),
             (ScoringConfig(suites=["recall"], lengths=[100000]), "scoring.lengths")]
    for config, key in cases:
        with pytest.raises(UserError, match=rf"^{key}: .* lower {key}$"):
            check_fits(config, "model", "embedded:tiny", source)
