"""LongBench-Chat: judge prompt from the benchmark's files, rating parser, and the two-run protocol
against a fake judge served over HTTP on 127.0.0.1."""

import json
import logging
import re
import shutil
from statistics import mean

import pytest

from longalign.config import EndpointConfig, LongBenchChatConfig
from longalign.errors import UserError
from longalign.scoring.judge import example_order, flatten, judge_messages, judge_prompt, parse_rating
from longalign.scoring.longbench import judge_endpoint, run_suite
from longalign.scoring.longbench_data import SYSTEM_PROMPT, load_benchmark

QUERIES = {1: "What is the shuttle schedule?", 2: "这份文件的主要结论是什么？", 3: "列出所有的日期。",
           4: "Who signed the contract?", 5: "Summarise section 2.", 6: "What is the total?",
           7: "Name the author."}


def write_cases(folder, idxs, shared=None):
    """A test_cases.json (the real file is not shipped) plus copies of the shared judge files."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = [{"idx": i, "prompt": f"Long document number {i}. " * 20 + QUERIES[i], "query": QUERIES[i],
              "answer": f"Reference answer {{with braces}} for question {i}."} for i in idxs]
    (folder / "test_cases.json").write_text(json.dumps(cases, ensure_ascii=False), encoding="utf-8")
    if shared:
        for name in ("few_shots.json", "prompt_fs.txt"):
            shutil.copy(shared / name, folder / name)
    return folder


def test_judge_prompt_matches_the_template_slot_by_slot(tmp_path, real_lbc):
    shared_lbc = real_lbc
    bench = load_benchmark(LongBenchChatConfig(data=str(shared_lbc),
                                               test_cases=str(write_cases(tmp_path, [1, 2, 3]) / "test_cases.json")))
    template = (shared_lbc / "prompt_fs.txt").read_text(encoding="utf-8")
    few_shots = json.loads((shared_lbc / "few_shots.json").read_text(encoding="utf-8"))
    pieces = template.split("{}")
    assert len(pieces) == 10
    assert bench.info["modified_files"] == [] and bench.info["partial"] is True
    prediction = "The answer {0} with braces and [[7]] inside."
    for question in bench.questions:
        shots = few_shots[question.idx - 1]
        for order in ([0, 1, 2], [2, 0, 1]):
            built = judge_prompt(bench, question, prediction, order)
            slots = [question.query, question.answer]
            for k in order:
                slots += [shots[k]["answer"], str(shots[k]["score"])]
            slots.append(prediction)
            pos = 0
            for piece, value in zip(pieces, slots):  # fixed text, then the slot's value, in order
                assert built.startswith(piece, pos)
                pos += len(piece)
                assert built.startswith(value, pos), (question.idx, order, value[:40])
                pos += len(value)
            assert built[pos:] == pieces[-1] and pieces[-1].endswith("Rating: ")
            assert built == template.format(*slots)  # what the reference script's str.format gives
        messages = judge_messages(bench, question, prediction, [0, 1, 2])
        assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
        assert SYSTEM_PROMPT == "You're a good assistant at evaluating the quality of texts."
    assert [q.language for q in bench.questions] == ["en", "zh", "zh"]


def eval_py_rating(response):
    """THUDM/LongAlign LongBench_Chat/eval.py (commit 450ecc8), get_score: the three lines that turn a
    judge reply into a score, as the oracle. None where eval.py's try fails and it asks again."""
    try:
        score = re.findall(r"\[\[([^\]]+)\]\]", response)[-1]
        matches = re.findall(r"\d+\.\d+|\d+", score)
        return float(matches[0])
    except (IndexError, TypeError):
        return None


# (reply, eval.py's number or None where it retries, our status)
JUDGE_REPLIES = [
    ("[[7]]", 7, "ok"),
    ("Rating: [[ 8 ]]", 8, "ok"),
    ("[[Rating: 8]]", 8, "ok"),
    ("[[8 out of 10]]", 8, "ok"),
    ("Example two deserved [[3]]. This answer: [[9]]", 9, "ok"),  # the last [[...]] wins
    ("[[7]] ... on reflection [[4]]", 4, "ok"),
    ("**[[10]]**", 10, "ok"),
    ("[[10/10]]", 10, "ok"),  # the first number of the bracket
    ("[[7.5]]", 7.5, "ok"),
    ("[[7.5/10]]", 7.5, "ok"),
    ("[[8.0]]", 8, "ok"),
    ("[[Score: 6, good]]", 6, "ok"),
    ("[[３]]", 3, "ok"),  # full-width digit: Python's \d matches it and float() reads it
    ("[[\n6\n]]", 6, "ok"),  # the bracket may span lines
    ("[[[9]]]", 9, "ok"),
    ("Score [[6]] then the required format \"[[rating]]\"", None, "no_rating"),  # last bracket: no number
    ("[[0]]", 0, "out_of_scale"),  # counted as the reference counts it
    ("[[11]]", 11, "out_of_scale"),
    ("[[-3]]", 3, "ok"),  # the sign is not part of \d+: eval.py reads 3
    ("[[85]]", 85, "out_of_scale"),
    ("[[1,000]]", 1, "ok"),
    ("", None, "no_rating"),
    (None, None, "no_rating"),
    ("I would give it a 7.", None, "no_rating"),
    ("[7]", None, "no_rating"),
    ("[[7]", None, "no_rating"),
    ("[[seven]]", None, "no_rating"),
    ("评分：【【6】】", None, "no_rating"),  # full-width brackets are not eval.py's [[ ]]
    ("［［８］］", None, "no_rating"),
    ("[[]]", None, "no_rating"),
]


@pytest.mark.parametrize("reply,number,status", JUDGE_REPLIES)
def test_rating_parser_gives_eval_pys_number(reply, number, status):
    assert eval_py_rating(reply) == number  # the table is what the reference script computes
    rating, got = parse_rating(reply)
    assert got == status
    assert rating == number and (rating is None or isinstance(rating, float))


def test_the_reply_table_covers_the_edges():
    assert len(JUDGE_REPLIES) >= 20
    assert {status for _, _, status in JUDGE_REPLIES} == {"ok", "out_of_scale", "no_rating"}


def test_every_run_is_shuffled_seeded_and_runs_differ():
    assert all(example_order(0, 0, idx) != example_order(0, 1, idx) for idx in range(1, 51))
    assert all(len({tuple(example_order(5, run, 9)) for run in range(6)}) == 6 for _ in range(2))
    orders = {run: [example_order(0, run, idx) for idx in range(1, 51)] for run in (0, 1)}
    for run, found in orders.items():
        assert all(sorted(o) == [0, 1, 2] for o in found)
        assert len({tuple(o) for o in found}) >= 4  # shuffled, not the file's order each time
        assert found == [example_order(0, run, idx) for idx in range(1, 51)]
    assert orders[0] != orders[1] and orders[0] != [example_order(1, 0, i) for i in range(1, 51)]


class Scripted:
    """Answers each LongBench-Chat prompt with a fixed reply chosen by the question's idx."""

    def __init__(self, replies):
        self.replies = replies
        self.calls = []

    def with_generation(self, max_new_tokens, temperature, seed=0):
        self.calls.append((max_new_tokens, temperature))
        return self

    def answer(self, prompts):
        out = []
        for messages in prompts:
            idx = int(messages[0]["content"].split("Long document number ", 1)[1].split(".")[0])
            out.append(self.replies[idx])
        return out


def judge_config(fake, tmp_path, **extra):
    judge = EndpointConfig(base_url=fake.url, model="judge", api_key_env="LONGALIGN_TEST_KEY",
                           concurrency=3, max_retries=2, price_prompt_per_million=10.0,
                           price_completion_per_million=30.0)
    return LongBenchChatConfig(data=str(tmp_path / "data"), judge=judge, cache_dir=str(tmp_path / "cache"),
                               **extra)


def test_protocol_with_bad_replies_against_a_fake_judge(tmp_path, shared_lbc, fake_openai, caplog):
    caplog.set_level(logging.DEBUG)
    key = fake_openai.key
    write_cases(tmp_path / "data", range(1, 8), shared_lbc)
    config = judge_config(fake_openai, tmp_path)
    assert config.judge_retries == 4  # eval.py: up to 5 judge calls for a reply without a rating
    bench = load_benchmark(config)
    answers = {1: "ANSWER 8", 2: "ANSWER 5", 3: "MIRROR", 4: "FLAKY", 5: "NORATING", 6: "  \n", 7: "RANGE"}
    answerer = Scripted(answers)
    endpoint = judge_endpoint(config)
    out = run_suite(bench, answerer, endpoint, config, seed=0)
    assert answerer.calls == [(1024, 1.0)]  # the benchmark's answer budget and temperature
    rows = {r["idx"]: r for r in out["answers"]}
    few = json.loads((shared_lbc / "few_shots.json").read_text())
    orders = rows[3]["orders"]
    assert orders == [example_order(0, 0, 3), example_order(0, 1, 3)]  # both runs shuffled, seeded
    mirror = [few[2][order[0]]["score"] for order in orders]
    assert rows[1]["ratings"] == [8, 8] and rows[2]["ratings"] == [5, 5]
    assert rows[3]["ratings"] == mirror
    assert rows[4]["ratings"] == [6, 6] and rows[4]["attempts"] == [2, 2]  # retried once each
    assert rows[5]["ratings"] == [None, None] and rows[5]["statuses"] == ["no_rating"] * 2
    assert rows[5]["attempts"] == [5, 5] and rows[5]["score"] is None  # eval.py's 5 calls, never 0
    # an empty answer goes to the judge like any other (eval.py sends it), and is counted
    assert rows[6]["ratings"] == [5, 5] and rows[6]["empty"] and rows[6]["attempts"] == [1, 1]
    assert rows[7]["statuses"] == ["out_of_scale"] * 2 and rows[7]["ratings"] == [11, 11]  # counted
    per_question = {1: 8, 2: 5, 3: mean(mirror), 4: 6, 6: 5, 7: 11}
    assert out["score"] == pytest.approx(mean(per_question.values()))
    assert (out["scored"], out["unjudged"], out["complete"]) == (6, 1, False)
    assert out["unjudged_runs"] == 2 and out["out_of_scale"] == 2
    assert out["reference_sum"] is None  # eval.py prints "none" when a question has no rating
    assert out["runs"][0]["mean"] == pytest.approx(mean([8, 5, mirror[0], 6, 5, 11]))
    assert out["runs"][1]["sum"] == 8 + 5 + mirror[1] + 6 + 5 + 11
    assert out["languages"]["zh"]["score"] == pytest.approx(mean([5, mean(mirror)]))
    assert out["languages"]["en"]["questions"] == 4
    assert out["empty_answers"] == 1
    # the judge saw each run's examples in the recorded order, at temperature 0
    sent = {r["messages"][1]["content"] for r in fake_openai.judge_requests()}
    question3 = bench.questions[2]
    assert all(judge_prompt(bench, question3, "MIRROR", order) in sent for order in orders)
    assert all(r["temperature"] == 0.0 and r["messages"][0]["content"] == SYSTEM_PROMPT
               for r in fake_openai.judge_requests())
    calls = 2 + 2 + 2 + 4 + 10 + 2 + 2
    assert len(fake_openai.judge_requests()) == calls
    assert out["judge_usage"]["calls"] == calls and out["judge_usage"]["cost"] > 0
    assert set(fake_openai.auth) == {f"Bearer {key}"}
    assert key not in caplog.text and key not in json.dumps(out)
    for path in (tmp_path / "cache").rglob("*"):
        assert not path.is_file() or key not in path.read_text()

    # a re-run is served from the cache, even with the judge gone: same result, no new call
    fake_openai.close()
    again = judge_endpoint(config)
    second = run_suite(bench, Scripted(answers), again, config, seed=0)
    assert second["answers"] == out["answers"] and second["score"] == out["score"]
    assert second["judge_usage"]["calls"] == 0 and second["judge_usage"]["cached"] == calls
    assert second["judge_usage"]["cost"] == 0


def test_a_question_with_one_judged_run_scores_that_rating(tmp_path, shared_lbc, fake_openai):
    """Issue 21: the second run stays unjudged; the question's score is the one rating (not half of
    it), and the headline mean and the per-run numbers follow."""
    write_cases(tmp_path / "data", [1, 2, 3], shared_lbc)
    config = judge_config(fake_openai, tmp_path, judge_retries=1)
    bench = load_benchmark(config)
    assert example_order(0, 0, 2) != example_order(0, 1, 2)  # two different judge prompts for idx 2
    endpoint = judge_endpoint(config)
    out = run_suite(bench, Scripted({1: "ANSWER 4", 2: "ONE-RUN 9", 3: "ANSWER 2"}), endpoint, config, seed=0)
    row = out["answers"][1]
    assert sorted(row["statuses"]) == ["no_rating", "ok"] and sorted(row["attempts"]) == [1, 2]
    assert [r for r in row["ratings"] if r is not None] == [9]
    assert row["score"] == 9
    assert out["score"] == pytest.approx((4 + 9 + 2) / 3)
    assert (out["scored"], out["unjudged"], out["unjudged_runs"], out["complete"]) == (3, 0, 1, False)
    assert out["reference_sum"] is None  # one run lacks a rating: eval.py would print "none"
    judged = row["statuses"].index("ok")
    assert out["runs"][judged]["mean"] == pytest.approx(5) and out["runs"][1 - judged]["mean"] == 3
    assert out["runs"][1 - judged]["unjudged"] == 1
    assert out["runs"][1 - judged] == {"run": 1 - judged, "order": "shuffled", "mean": 3, "sum": 6, "judged": 2,
                                       "unjudged": 1}
    assert out["runs"][judged]["sum"] == 15 and out["runs"][judged]["judged"] == 3
    assert out["out_of_scale"] == 0
    assert len(row["replies"]) == 2 and all(row["replies"])  # the judge's last reply of each run is kept
    assert all([m["role"] for m in r["messages"]] == ["system", "user"] for r in fake_openai.judge_requests())


def test_complete_run_reports_mean_and_reference_sum(tmp_path, shared_lbc, fake_openai):
    write_cases(tmp_path / "data", [1, 2, 3, 4], shared_lbc)
    config = judge_config(fake_openai, tmp_path, judge_runs=2, flatten_newlines=True)
    bench = load_benchmark(config)
    answers = {1: "ANSWER 9", 2: "ANSWER 3", 3: "RATE429", 4: "ANSWER\n7"}  # newlines judged as spaces
    endpoint = judge_endpoint(config)
    out = run_suite(bench, Scripted(answers), endpoint, config, seed=1)
    assert [r["ratings"] for r in out["answers"]] == [[9, 9], [3, 3], [4, 4], [7, 7]]
    assert out["complete"] and out["unjudged"] == 0
    assert out["score"] == pytest.approx(23 / 4)
    assert out["reference_sum"] == 23 and [r["sum"] for r in out["runs"]] == [23, 23]
    assert any(s.endswith("ANSWER 7\n[Assistant's answer ends]\n\nRating: ") for s in
               (r["messages"][1]["content"] for r in fake_openai.judge_requests()))


def test_judge_rejecting_the_key_is_a_user_error(tmp_path, shared_lbc, fake_openai):
    fake_openai.server.faults.append("401")  # its body repeats the key partly masked, as providers do
    write_cases(tmp_path / "data", [1], shared_lbc)
    config = judge_config(fake_openai, tmp_path)
    endpoint = judge_endpoint(config)
    with pytest.raises(UserError, match="rejected the API key") as info:
        run_suite(load_benchmark(config), Scripted({1: "ANSWER 5"}), endpoint, config, seed=0)
    assert fake_openai.key not in str(info.value)
    sent = [r.key for r in fake_openai.server.records]  # the judge runs go out concurrently
    assert len(sent) == len(set(sent)) and fake_openai.server.records[0].outcome == "401"  # no retry


def test_unreachable_judge_leaves_questions_unjudged_and_the_report_says_so(tmp_path, shared_lbc, monkeypatch,
                                                                             caplog):
    import socket

    from longalign.config import ScoringConfig
    from longalign.scoring.stage import write_outputs

    monkeypatch.setenv("LONGALIGN_TEST_KEY", "k")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_cases(tmp_path / "data", [1, 2], shared_lbc)
    judge = EndpointConfig(base_url=f"http://127.0.0.1:{port}/v1", model="judge",
                           api_key_env="LONGALIGN_TEST_KEY", max_retries=0, timeout_seconds=5)
    config = LongBenchChatConfig(data=str(tmp_path / "data"), judge=judge, judge_retries=1,
                                 cache_dir=str(tmp_path / "cache"))
    endpoint = judge_endpoint(config)
    with caplog.at_level(logging.WARNING, logger="longalign"):
        out = run_suite(load_benchmark(config), Scripted({1: "ANSWER 8", 2: "ANSWER 6"}), endpoint, config, seed=0)
    for idx, run in [(1, 0), (1, 1), (2, 0), (2, 1)]:  # each unjudged run is named, with its calls and why
        assert f"LongBench-Chat question {idx} run {run}: unjudged after 2 judge call(s) (call_failed)" in caplog.text
    assert out["score"] is None and out["unjudged"] == 2 and out["reference_sum"] is None
    assert out["statuses"] == {"call_failed": 4} and out["judge_usage"]["failed"] == 8
    assert all(p.stat().st_size == 0 for p in (tmp_path / "cache").rglob("*.jsonl"))  # failures are not journaled
    scoring = ScoringConfig(suites=["longbench-chat"], longbench_chat=config)
    (tmp_path / "out_dir").mkdir()
    results = {"model": {"spec": "m", "suites": {"longbench-chat": out}, "seconds": 1, "truncated_prompts": 0}}
    stats = write_outputs(tmp_path / "out_dir", scoring, results, {}, 1.0)
    assert "longbench_chat_score" not in stats["metrics"] and stats["metrics"]["longbench_chat_unjudged"] == 2
    html = (tmp_path / "out_dir" / "report.html").read_text()
    assert "2 question(s) unjudged" in html


def eval_py_judge_prompt(template, few_shots, case, prediction):
    """eval.py get_score's judge prompt for one case (its statements, in its order)."""
    question, answer = case["query"], case["answer"]
    few_shot_answers = [x["answer"] for x in few_shots[case["idx"] - 1]]
    few_shot_scores = [x["score"] for x in few_shots[case["idx"] - 1]]
    few_shot_ans_scores = []
    for k in range(len(few_shot_answers)):
        few_shot_ans_scores.append(few_shot_answers[k])
        few_shot_ans_scores.append(few_shot_scores[k])
    return template.format(question, answer, *few_shot_ans_scores, prediction)


def eval_py_prediction_line(response):
    """What eval.py judges of a model response: written as ``response.strip().replace('\\n', ' ')``
    plus a newline, read back with ``line.strip()``."""
    return (response.strip().replace("\n", " ") + "\n").strip()


def test_judge_prompt_equals_eval_pys_for_all_50_questions(tmp_path, shared_lbc):
    folder = tmp_path / "data"
    folder.mkdir()
    cases = [{"idx": i, "prompt": f"Document {i}.", "query": f"Question {i} {{with}} braces?",
              "answer": f"Reference {i}: 50% {{0}} done."} for i in range(1, 51)]
    (folder / "test_cases.json").write_text(json.dumps(cases), encoding="utf-8")
    bench = load_benchmark(LongBenchChatConfig(data=str(shared_lbc), test_cases=str(folder / "test_cases.json")))
    template = (shared_lbc / "prompt_fs.txt").read_text(encoding="utf-8")
    few_shots = json.load(open(shared_lbc / "few_shots.json", encoding="utf-8"))
    response = "  Line one.\nLine {two} with [[8]].\n\n"
    prediction = flatten(response)
    assert prediction == eval_py_prediction_line(response)
    for case, question in zip(cases, bench.questions):
        # the file's order is one of the six a shuffle can give; in it the prompt is eval.py's
        assert judge_prompt(bench, question, prediction, [0, 1, 2]) == \
            eval_py_judge_prompt(template, few_shots, case, prediction)


def eval_py_truncated_prompt(tokenizer, prompt, max_length):
    """eval.py get_predictions: the raw prompt's middle truncation (before any chat template)."""
    tokenized_prompt = tokenizer(prompt, truncation=False, return_tensors="pt",
                                 add_special_tokens=False).input_ids[0]
    if len(tokenized_prompt) > max_length:
        half = int(max_length / 2)
        prompt = (tokenizer.decode(tokenized_prompt[:half], skip_special_tokens=True)
                  + tokenizer.decode(tokenized_prompt[-half:], skip_special_tokens=True))
    return prompt


class Recorder:
    """An answerer with a tokenizer and a window that records the chats it is asked to answer."""

    def __init__(self, tokenizer, window):
        self.tokenizer, self.window, self.seen, self.generation = tokenizer, window, [], None

    def with_generation(self, max_new_tokens, temperature, seed=0):
        self.generation = (max_new_tokens, temperature, seed)
        return self

    def answer(self, prompts):
        self.seen += prompts
        return ["An answer."] * len(prompts)


@pytest.mark.parametrize("context,window,limited_by", [(401, 100_000, "context"), (64000, 700, "window")])
def test_answer_prompt_equals_eval_pys(tmp_path, shared_lbc, context, window, limited_by):
    from longalign.models import load_tokenizer
    from longalign.scoring.chat import count_tokens
    from longalign.scoring.longbench import answer

    tokenizer = load_tokenizer("embedded:tiny")
    write_cases(tmp_path / "data", [1, 2, 3], shared_lbc)
    long = "Ünïcode text, émojis 🙂 and 数字 1234. " * 120 + "Final question: what is it?"
    data = json.loads((tmp_path / "data" / "test_cases.json").read_text())
    data[1]["prompt"] = long
    (tmp_path / "data" / "test_cases.json").write_text(json.dumps(data, ensure_ascii=False))
    config = LongBenchChatConfig(data=str(tmp_path / "data"), context=context, max_new_tokens=200)
    bench = load_benchmark(config)
    recorder = Recorder(tokenizer, window)
    answers, facts = answer(bench, recorder, config)
    assert recorder.generation == (200, 1.0, 42)  # eval.py: temperature 1.0, seed 42 per question
    template = count_tokens(tokenizer, [{"role": "user", "content": ""}])
    budget = context if limited_by == "context" else window - 200 - template
    assert facts["budget"] == budget and facts["limited_by"] == limited_by
    assert facts["truncated"] == 1 and answers == ["An answer."] * 3
    for question, chat in zip(bench.questions, recorder.seen):
        # one user message whose text is eval.py's (truncated) raw prompt, character for character
        assert chat == [{"role": "user", "content": eval_py_truncated_prompt(tokenizer, question.prompt, budget)}]
    assert recorder.seen[1][0]["content"] != long and recorder.seen[0][0]["content"] == bench.questions[0].prompt
