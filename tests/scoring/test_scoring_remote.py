"""Scoring through OpenAI-compatible endpoints (fake server on 127.0.0.1): middle truncation, empty
answers, every suite end to end with the report, KFP metrics, a baseline comparison, and the CLI."""

import base64
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from longalign.config import EndpointConfig, ScoringConfig
from longalign.errors import UserError
from longalign.scoring import score
from longalign.scoring.chat import count_tokens, truncate_messages
from longalign.scoring.remote import OpenAIAnswerer


@pytest.fixture(scope="module")
def tokenizer():
    from longalign.models import load_tokenizer

    return load_tokenizer("embedded:tiny")


def served(fake, model="served", **extra):
    return EndpointConfig(base_url=fake.url, model=model, api_key_env="LONGALIGN_TEST_KEY", **extra)


def test_truncate_messages_keeps_head_and_tail(tokenizer):
    text = "HEADMARK " + " ".join(f"w{i}" for i in range(400)) + " TAILMARK question?"
    messages = [{"role": "user", "content": text}]
    assert truncate_messages(tokenizer, messages, 10_000) == (messages, False)
    cut, changed = truncate_messages(tokenizer, messages, 100)
    assert changed and count_tokens(tokenizer, cut) <= 100
    assert count_tokens(tokenizer, cut) >= 95  # keeps as much as fits
    content = cut[0]["content"]
    assert content.startswith("HEADMARK w0 w1") and content.endswith("TAILMARK question?")
    assert "w200 " not in content  # the middle is gone
    with pytest.raises(ValueError):
        truncate_messages(tokenizer, messages, 3)


def test_openai_answerer_truncates_to_the_context(tokenizer, fake_openai):
    answerer = OpenAIAnswerer(served(fake_openai, context=128), tokenizer, 8)
    long = [{"role": "user", "content": "HEADMARK " + "lorem ipsum " * 300 + "the end TAILMARK"},
            {"role": "assistant", "content": "The answer is"}]
    short = [{"role": "user", "content": "Just say hi."}]
    quiet = [{"role": "user", "content": "SAY-NOTHING please"}]
    answers = answerer.answer([long, short, quiet])
    assert answers[0] == "tail:" + long[0]["content"][-40:] and answers[2] == ""
    assert answerer.truncated == 1 and answerer.limit == 120
    sent = sorted(fake_openai.requests, key=lambda r: r["messages"][0]["content"])  # sent concurrently
    assert [len(r["messages"]) for r in sent] == [1, 1, 1]  # the answer prefix is not sent
    first = sent[0]["messages"][0]["content"]
    assert first.startswith("HEADMARK") and first.endswith("TAILMARK")
    assert count_tokens(tokenizer, sent[0]["messages"]) <= 120
    assert sent[1]["messages"] == short
    assert all(r["max_tokens"] == 8 and r["temperature"] == 0.0 for r in sent)
    sampled = answerer.with_generation(64, 1.0, seed=7)
    sampled.answer([short])
    assert fake_openai.requests[-1]["temperature"] == 1.0 and fake_openai.requests[-1]["max_tokens"] == 64
    assert fake_openai.requests[-1]["seed"] == 7 and "seed" not in fake_openai.requests[0]
    assert answerer.endpoint.usage.calls == 4  # shared usage


class _Parse(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables, self.text = [], 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self.tables += tag == "table"

    def handle_data(self, data):
        self.text.append(data)


def _lbc_data(folder, shared):
    folder.mkdir()
    for name in ("few_shots.json", "prompt_fs.txt"):
        shutil.copy(shared / name, folder / name)
    cases = [{"idx": i, "prompt": f"A long report {i}. " * 30 + "What changed?", "query": "What changed?",
              "answer": f"Reference {i}."} for i in (1, 2)]
    (folder / "test_cases.json").write_text(json.dumps(cases))
    return folder


def test_all_suites_through_endpoints_with_report_and_baseline(tmp_path, tiny_model, shared_lbc, fake_openai):
    config = ScoringConfig(
        suites=["needle", "ruler-needle", "recall", "longbench-chat"], lengths=[384], depths=[0.5],
        needle_lengths=[384], needle_depths=[0.5], recall_samples=1,
        endpoint=served(fake_openai), base_endpoint=served(fake_openai, model="base-served"),
        longbench_chat={"data": str(_lbc_data(tmp_path / "lbc", shared_lbc)), "cache_dir": str(tmp_path / "c"),
                        "judge": served(fake_openai, model="judge").model_dump()})
    stats = score(config, tiny_model, tmp_path / "first", base_model=tiny_model)
    m = stats["metrics"]
    # the fake served model echoes the prompt's end: wrong for needle and recall, and judged 5
    assert m["needle_accuracy"] == 0.0 and m["needle_384_d50"] == 0.0 and m["ruler_needle_384_d50"] == 0.0
    # LongAlign's needle answers also went to the judge with the reference's needle prompt: [[2]]
    assert m["needle_judge_score"] == 2 and m["base_needle_judge_score"] == 2
    needle_asks = [r for r in fake_openai.judge_requests()
                   if r["messages"][0]["content"] == "You are a helpful assistant."]
    assert len(needle_asks) == 1 and needle_asks[0]["temperature"] == 0.0
    assert "[Ground truth]\n\nThe best thing to do in San Francisco is eat a sandwich and sit in Dolores " \
        "Park on a sunny day.\n\n" in needle_asks[0]["messages"][1]["content"]
    assert "\n[Question]\nWhat is the best thing to do in San Francisco?\n\n[The Start of Assistant's " \
        "Answer]\ntail:" in needle_asks[0]["messages"][1]["content"]
    assert {"recall_kv_384", "recall_multikey_384", "recall_vartrack_384"} <= set(m)
    assert m["longbench_chat_score"] == 5 and m["base_longbench_chat_score"] == 5
    assert m["longbench_chat_reference_sum"] == 10 and m["longbench_chat_run1_mean"] == 5
    assert m["longbench_chat_en_score"] == 5 and m["longbench_chat_delta"] == 0
    served_models = {r["model"] for r in fake_openai.requests}
    assert served_models == {"served", "base-served", "judge"}
    # 2 questions x 2 runs and 1 needle answer per model; both models answered alike, so the base's
    # requests were cached
    assert (stats["judge_usage"]["calls"], stats["judge_usage"]["cached"]) == (5, 5)
    assert stats["models"]["model"]["answer_usage"]["calls"] > 0
    assert stats["longbench_chat"]["partial"] is True

    # a recurring retrain: the same scoring against last time's report
    calls = len(fake_openai.judge_requests())
    again = score(config, tiny_model, tmp_path / "second", base_model=tiny_model, baseline=tmp_path / "first")
    assert len(fake_openai.judge_requests()) == calls  # every judge call came from the cache
    assert again["judge_usage"]["cached"] == 10 and again["judge_usage"]["cost"] == 0
    assert again["metrics"]["longbench_chat_vs_baseline"] == 0 and again["metrics"]["needle_vs_baseline"] == 0
    assert again["headline"]["longbench_chat_score"] == 5 and again["headline"]["longbench_chat_vs_baseline"] == 0
    assert "needle_384_d50" in again["metrics"] and "needle_384_d50" not in again["headline"]
    assert {r["verdict"] for r in again["baseline"]["suites"]} == {"same"}
    out = tmp_path / "second"
    parser = _Parse()
    parser.feed((out / "report.html").read_text())
    text = " ".join(parser.text)
    assert parser.tables >= 5 and "Against the baseline" in text and "LongBench-Chat" in text
    assert base64.b64decode(parser.images[0].split(",", 1)[1]).startswith(b"\x89PNG")
    assert "Against the baseline" in (out / "report.md").read_text()
    for path in out.iterdir():
        assert fake_openai.key not in path.read_text(errors="replace")


def test_bad_baseline_is_a_user_error(tmp_path, tiny_model):
    (tmp_path / "scores.json").write_text(json.dumps({"models": {}}))
    with pytest.raises(UserError, match="not a longalign scores.json"):
        score(ScoringConfig(lengths=[384]), tiny_model, tmp_path / "out", baseline=tmp_path)
    with pytest.raises(UserError, match="missing file"):
        score(ScoringConfig(lengths=[384]), tiny_model, tmp_path / "out", baseline=tmp_path / "none.json")
    assert not (tmp_path / "out").exists()


def test_cli_longbench_chat_needs_a_judge(tmp_path):
    result = subprocess.run([sys.executable, "-m", "longalign.cli", "score", "--model", "embedded:tiny",
                             "-o", str(tmp_path / "out"), "--preset", "tiny",
                             "--suite", "needle,recall,longbench-chat"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "longbench_chat.judge" in errors[0]
    assert not (tmp_path / "out").exists()


def test_longbench_chat_with_the_local_model(tmp_path, tiny_model, shared_lbc, fake_openai):
    """The local transformers answerer samples the benchmark's answers (seeded) for the judge."""
    config = ScoringConfig(
        suites=["longbench-chat"], compare_base=False,
        longbench_chat={"data": str(_lbc_data(tmp_path / "lbc", shared_lbc)), "cache_dir": str(tmp_path / "c"),
                        "judge": served(fake_openai, model="judge").model_dump(), "max_new_tokens": 6,
                        "judge_runs": 1})
    stats = score(config, tiny_model, tmp_path / "out")
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    lbc = scores["models"]["model"]["suites"]["longbench-chat"]
    assert [a["ratings"] for a in lbc["answers"]] == [[5], [5]]  # empty answers are judged too
    assert stats["judge_usage"]["calls"] == 2
    assert lbc["sampling"] == {"temperature": 1.0, "max_new_tokens": 6, "seed": 42, "per_question_seed": True}
    assert lbc["truncation"]["truncated"] == 0 and lbc["truncation"]["limited_by"] == "window"
    assert stats["metrics"]["longbench_chat_score"] == lbc["score"]
    assert "needle.png" not in {p.name for p in (tmp_path / "out").iterdir()}
    again = score(config, tiny_model, tmp_path / "again")  # same seed: same sampled answers, all cached
    assert again["judge_usage"]["calls"] == 0


def test_api_key_from_a_mounted_file_or_the_environment(tmp_path, tokenizer, fake_openai, monkeypatch):
    secret = tmp_path / "key"
    secret.write_text("sk-from-file\n")
    fake_openai.server.api_key = "sk-from-file"  # the server accepts only this key now
    answerer = OpenAIAnswerer(served(fake_openai, api_key_file=str(secret)), tokenizer, 4)
    answerer.answer([[{"role": "user", "content": "hi"}]])
    assert fake_openai.auth[-1] == "Bearer sk-from-file"  # the file wins over the variable
    monkeypatch.delenv("LONGALIGN_TEST_KEY")
    with pytest.raises(UserError, match=r"no API key for scoring.endpoint: set \$LONGALIGN_TEST_KEY"):
        OpenAIAnswerer(served(fake_openai), tokenizer, 4)
    with pytest.raises(UserError, match="cannot read the API key file"):
        OpenAIAnswerer(served(fake_openai, api_key_file=str(tmp_path / "absent")), tokenizer, 4)
    config = ScoringConfig(lengths=[384], endpoint=served(fake_openai))
    with pytest.raises(UserError, match="no API key"):
        score(config, "embedded:tiny", tmp_path / "out")
    assert not (tmp_path / "out").exists()
