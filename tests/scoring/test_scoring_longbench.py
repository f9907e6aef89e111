"""LongBench-Chat: judge prompt from the benchmark's files, rating parser, and the two-run protocol
against a fake judge served over HTTP on 127.0.0.1."""

import json
import logging
import shutil
from statistics import mean

import pytest
from longalign.config import EndpointConfig, LongBenchChatConfig
from longalign.errors import UserError
from longalign.scoring.endpoint import CallCache, Endpoint
from longalign.scoring.judge import example_order, judge_messages, judge_prompt, parse_rating
from longalign.scoring.longbench import run_suite
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


@pytest.mark.parametrize("reply,rating,status", [
    ("[[7]]", 7, "ok"),
    ("Rating: [[ 8 ]]", 8, "ok"),
    ("Example two deserved [[3]]. This answer: [[9]]", 9, "ok"),  # the last rating wins
    ("[[7]] ... on reflection [[4]]", 4, "ok"),
    ("**[[10]]**", 10, "ok"),
    ("[[7/10]]", 7, "ok"),
    ("[[7.5]]", 7.5, "ok"),
    ("评分：【【6】】", 6, "ok"),  # full-width brackets
    ("［［８］］", 8, "ok"),  # full-width brackets and digit
    ("Score [[6]] then the required format \"[[rating]]\"", 6, "ok"),  # a non-number is not a rating
    ("[[0]]", 0, "out_of_range"),
    ("[[11]]", 11, "out_of_range"),
    ("[[-3]]", -3, "out_of_range"),
    ("[[85]]", 85, "out_of_range"),
    ("", None, "no_rating"),
    (None, None, "no_rating"),
    ("I would give it a 7.", None, "no_rating"),
    ("[7]", None, "no_rating"),
    ("[[7]", None, "no_rating"),
    ("[[seven]]", None, "no_rating"),
    ("[[rating]]", None, "no_rating"),
])
def test_rating_parser(reply, rating, status):
    assert parse_rating(reply) == (rating, status)


def test_shuffled_orders_differ_from_the_file_order_and_are_seeded():
    assert example_order(0, 0, 5) == [0, 1, 2]
    orders = [example_order(0, 1, idx) for idx in range(1, 51)]
    assert all(sorted(o) == [0, 1, 2] and o != [0, 1, 2] for o in orders)
    assert len({tuple(o) for o in orders}) > 1
    assert orders == [example_order(0, 1, idx) for idx in range(1, 51)]


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
    bench = load_benchmark(config)
    answers = {1: "ANSWER 8", 2: "ANSWER 5", 3: "MIRROR", 4: "FLAKY", 5: "NORATING", 6: "  \n", 7: "RANGE"}
    answerer = Scripted(answers)
    endpoint = Endpoint(config.judge, cache=CallCache(tmp_path / "cache"))
    out = run_suite(bench, answerer, endpoint, config, seed=0)
    assert answerer.calls == [(1024, 1.0)]  # the benchmark's answer budget and temperature
    rows = {r["idx"]: r for r in out["answers"]}
    few = json.loads((shared_lbc / "few_shots.json").read_text())
    order = rows[3]["orders"][1]
    assert rows[3]["orders"][0] == [0, 1, 2] and order != [0, 1, 2]
    mirror = [few[2][0]["score"], few[2][order[0]]["score"]]
    assert rows[1]["ratings"] == [8, 8] and rows[2]["ratings"] == [5, 5]
    assert rows[3]["ratings"] == mirror
    assert rows[4]["ratings"] == [6, 6] and rows[4]["attempts"] == [2, 2]  # retried once each
    assert rows[5]["ratings"] == [None, None] and rows[5]["statuses"] == ["no_rating"] * 2
    assert rows[5]["attempts"] == [3, 3] and rows[5]["score"] is None  # 1 + judge_retries, never 0
    assert rows[6]["ratings"] == [1, 1] and rows[6]["statuses"] == ["empty_answer"] * 2
    assert rows[7]["statuses"] == ["out_of_range"] * 2 and rows[7]["invalid_values"] == [11, 11]
    per_question = {1: 8, 2: 5, 3: mean(mirror), 4: 6, 6: 1}
    assert out["score"] == pytest.approx(mean(per_question.values()))
    assert (out["scored"], out["unscored"], out["complete"]) == (5, 2, False)
    assert out["reference_sum"] is None  # run 0 has unrated questions: no sum to compare
    assert out["runs"][0]["mean"] == pytest.approx(mean([8, 5, mirror[0], 6, 1]))
    assert out["runs"][1]["sum"] == 8 + 5 + mirror[1] + 6 + 1
    assert out["languages"]["zh"]["score"] == pytest.approx(mean([5, mean(mirror)]))
    assert out["languages"]["en"]["questions"] == 3
    assert out["empty_answers"] == 1
    # the judge saw run 1's examples in the recorded shuffled order, at temperature 0
    sent = {r["messages"][1]["content"] for r in fake_openai.judge_requests()}
    question3 = bench.questions[2]
    assert judge_prompt(bench, question3, "MIRROR", order) in sent
    assert all(r["temperature"] == 0.0 and r["messages"][0]["content"] == SYSTEM_PROMPT
               for r in fake_openai.judge_requests())
    calls = 2 + 2 + 2 + 4 + 6 + 6  # no call for the empty answer
    assert len(fake_openai.judge_requests()) == calls
    assert out["judge_usage"]["calls"] == calls and out["judge_usage"]["cost_usd"] > 0
    assert set(fake_openai.auth) == {f"Bearer {key}"}
    assert key not in caplog.text and key not in json.dumps(out)
    for path in (tmp_path / "cache").rglob("*"):
        assert not path.is_file() or key not in path.read_text()

    # a re-run is served from the cache, even with the judge gone: same result, no new call
    fake_openai.close()
    again = Endpoint(config.judge, cache=CallCache(tmp_path / "cache"))
    second = run_suite(bench, Scripted(answers), again, config, seed=0)
    assert second["answers"] == out["answers"] and second["score"] == out["score"]
    assert second["judge_usage"]["calls"] == 0 and second["judge_usage"]["cached_calls"] == calls
    assert second["judge_usage"]["cost_usd"] == 0


def test_complete_run_reports_mean_and_reference_sum(tmp_path, shared_lbc, fake_openai):
    write_cases(tmp_path / "data", [1, 2, 3, 4], shared_lbc)
    config = judge_config(fake_openai, tmp_path, judge_runs=2, flatten_newlines=True)
    bench = load_benchmark(config)
    answers = {1: "ANSWER 9", 2: "ANSWER 3", 3: "RATE429", 4: "ANSWER\n7"}  # newlines judged as spaces
    endpoint = Endpoint(config.judge, cache=CallCache(tmp_path / "cache"))
    out = run_suite(bench, Scripted(answers), endpoint, config, seed=1)
    assert [r["ratings"] for r in out["answers"]] == [[9, 9], [3, 3], [4, 4], [7, 7]]
    assert out["complete"] and out["unscored"] == 0
    assert out["score"] == pytest.approx(23 / 4)
    assert out["reference_sum"] == 23 and [r["sum"] for r in out["runs"]] == [23, 23]
    assert any(s.endswith("ANSWER 7\n[Assistant's answer ends]\n\nRating: ") for s in
               (r["messages"][1]["content"] for r in fake_openai.judge_requests()))


def test_judge_rejecting_the_key_is_a_user_error(tmp_path, shared_lbc, fake_openai):
    import http.server

    class Deny(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            raw = b'{"error": {"message": "bad key"}}'
            self.send_response(401)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Deny)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        write_cases(tmp_path / "data", [1], shared_lbc)
        config = judge_config(fake_openai, tmp_path)
        config = config.model_copy(update={"judge": config.judge.model_copy(
            update={"base_url": f"http://127.0.0.1:{server.server_address[1]}/v1"})})
        endpoint = Endpoint(config.judge, cache=CallCache(tmp_path / "cache"))
        with pytest.raises(UserError, match="rejected the API key") as info:
            run_suite(load_benchmark(config), Scripted({1: "ANSWER 5"}), endpoint, config, seed=0)
        assert fake_openai.key not in str(info.value)
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_judge_leaves_questions_unscored_and_the_report_says_so(tmp_path, shared_lbc, monkeypatch):
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
    endpoint = Endpoint(judge, cache=CallCache(tmp_path / "cache"))
    out = run_suite(load_benchmark(config), Scripted({1: "ANSWER 8", 2: "ANSWER 6"}), endpoint, config, seed=0)
    assert out["score"] is None and out["unscored"] == 2 and out["reference_sum"] is None
    assert out["statuses"] == {"call_failed": 4} and out["judge_usage"]["failed_calls"] == 8
    assert not list((tmp_path / "cache").rglob("*.json"))  # failures are not cached
    scoring = ScoringConfig(suites=["longbench-chat"], longbench_chat=config)
    (tmp_path / "out_dir").mkdir()
    results = {"model": {"spec": "m", "suites": {"longbench-chat": out}, "seconds": 1, "truncated_prompts": 0}}
    stats = write_outputs(tmp_path / "out_dir", scoring, results, {}, 1.0)
    assert "longbench_chat_score" not in stats["metrics"] and stats["metrics"]["longbench_chat_unscored"] == 2
    html = (tmp_path / "out_dir" / "report.html").read_text()
    assert "2 question(s) without a valid judge rating" in html
