"""Throughput of the openai teacher against a chat-completions server with a fixed latency.

Runs the real OpenAITeacher (the shared endpoint client: the openai SDK, our retry policy, the
concurrency semaphore) against a local
OpenAI-compatible server (in its own process, so it does not compete with the client for the GIL)
that answers every request after exactly ``--latency`` seconds, at several concurrency limits in one
run, and prints requests/s and the ratio to concurrency 1. With 50 ms latency the ideal is
20 requests/s per slot; the target is concurrency 32 >= 20x concurrency 1.

    python bench/generation_bench.py                       # default: ~1 minute
    python bench/generation_bench.py --seconds 10 --levels 1,8,32,64
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY_ENV = "LONGALIGN_BENCH_KEY"


def serve(port_queue, latency: float) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            time.sleep(latency)
            data = json.dumps({
                "id": "bench", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "1. What is measured here?"}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16},
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 512

    httpd = Server(("127.0.0.1", 0), Handler)
    port_queue.put(httpd.server_address[1])
    httpd.serve_forever()


def measure(url: str, concurrency: int, requests: int) -> tuple[float, int]:
    from longalign.config import TeacherAPIConfig
    from longalign.generation.openai_teacher import OpenAITeacher

    api = TeacherAPIConfig(base_url=url, api_key_env=KEY_ENV, concurrency=concurrency, max_retries=0)
    teacher = OpenAITeacher(api, "bench-model")
    chats = [[{"role": "user", "content": f"Document {i}. Write 5 questions."}] for i in range(requests)]
    teacher.complete(chats[: min(concurrency, requests)], 16)  # warm up connections and imports
    start = time.perf_counter()
    out = teacher.complete(chats, 16)
    seconds = time.perf_counter() - start
    failed = sum(c.error is not None for c in out)
    return requests / seconds, teacher.client.usage.max_in_flight if not failed else -failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.05, help="server latency per request (s)")
    parser.add_argument("--levels", default="1,8,32", help="concurrency limits to compare")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="ideal duration per level (requests = seconds * concurrency / latency)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per level (the best is kept)")
    args = parser.parse_args()
    os.environ[KEY_ENV] = "bench-key"
    levels = [int(x) for x in args.levels.split(",")]
    queue: mp.Queue = mp.get_context("spawn").Queue()
    server = mp.get_context("spawn").Process(target=serve, args=(queue, args.latency), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{queue.get(timeout=30)}/v1"
    try:
        results = {}
        print(f"server latency {args.latency * 1000:.0f} ms; ideal {1 / args.latency:.1f} requests/s per slot")
        print(f"{'concurrency':>11} {'requests':>9} {'requests/s':>11} {'x conc. 1':>10} {'max in flight':>14}")
        for level in levels:
            requests = max(level, int(args.seconds * level / args.latency))
            best, in_flight = max(measure(url, level, requests) for _ in range(args.repeats))
            results[level] = best
            ratio = best / results[levels[0]]
            print(f"{level:>11} {requests:>9} {best:>11.1f} {ratio:>10.1f} {in_flight:>14}", flush=True)
        if 1 in results and 32 in results:
            ratio = results[32] / results[1]
            verdict = "met" if ratio >= 20 else "NOT met"
            print(f"concurrency 32 / concurrency 1 = {ratio:.1f}x (target >= 20x): {verdict}")
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
