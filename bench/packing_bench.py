"""Packing benchmark: row efficiency, planning speed, throughput and peak memory, in one run.

1. Efficiency on one LongAlign-like length mix (default: the issue's 10k samples of 8k-64k
   tokens, log-normal around 16k, plus 60k of 20-8,192 tokens, log-normal around 900, at
   max_len 65,536, in shuffled file order) of ``pack`` (global best-fit-decreasing), ``sort``
   (LongAlign's sorted batching), ``naive`` (shuffled, padded to the longest in the batch) and
   LongAlign's original next-fit packing in file order. Target: pack >= 99.9%, rows <= 1.001 x
   the lower bound + 1.
2. Planning time of ``plan_packs`` for 1M lengths (same mix) on one core. Target: < 10 s.
3. Throughput of the whole stage (``longalign.packing.pack``: read chats, render the chat
   template, tokenise, label, plan, write Arrow) in tokens/s, next to the tokenizer's own raw
   batch-encode throughput on the same rendered text: the limit the stage can approach.
4. Peak memory (ru_maxrss of a child process) of the stage on synthetic chats at 1x and 10x the
   data size, next to a child that only loads the tokenizer: streaming keeps it flat.

Chats are synthetic: slices of Python's standard library sources as documents (no download),
with a question and an answer; the tokenizer is the embedded model's (``embedded:tiny``: SmolLM2's).

    python bench/packing_bench.py                          # default: about 1-2 minutes
    python bench/packing_bench.py --chats 600 --chunk-chars 0 --rows-per-batch 0   # stage buffers, 21M tokens at 10x
    python bench/packing_bench.py --chats 300 --doc-tokens 16000 --max-len 65536   # LongAlign-sized chats
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

CHARS_PER_TOKEN = 3.9  # Python source with SmolLM2's tokenizer (measured)


def longalign_mix(n_long: int, n_short: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    long = np.clip(rng.lognormal(math.log(16384), 0.5, n_long), 8192, 65536)
    short = np.clip(rng.lognormal(math.log(900), 1.0, n_short), 20, 8192)
    lengths = np.concatenate([long, short]).astype(np.int64)
    return lengths[rng.permutation(len(lengths))]  # file order: long and short interleaved


def efficiency_table(lengths: np.ndarray, max_len: int, batch_size: int, seed: int) -> None:
    from longalign.packing.plan import (lower_bound_rows, packed_efficiency, padded_efficiency,
                                        plan_naive, plan_next_fit, plan_packs, plan_sorted)

    bound = lower_bound_rows(int(lengths.sum()), max_len)
    print(f"\n## 1. Efficiency: {len(lengths):,} samples, {int(lengths.sum()):,} tokens, "
          f"max_len {max_len:,}, lower bound {bound:,} rows; sort/naive batch size {batch_size}")
    print(f"{'strategy':<26}{'rows':>9}{'rows/bound':>12}{'efficiency':>12}")
    start = time.perf_counter()
    rows = plan_packs(lengths, max_len, seed=seed)
    took = time.perf_counter() - start
    for name, r in (("pack (best-fit-decr.)", rows),
                    ("LongAlign next-fit", plan_next_fit(lengths, max_len))):
        print(f"{name:<26}{len(r):>9,}{len(r) / bound:>12.5f}{packed_efficiency(lengths, r, max_len):>12.4%}")
    for name, groups in (("sort (sorted batching)", plan_sorted(lengths, batch_size, seed=seed)),
                         ("naive (padded)", plan_naive(len(lengths), batch_size, seed=seed))):
        print(f"{name:<26}{len(lengths):>9,}{'-':>12}{padded_efficiency(lengths, groups):>12.4%}")
    eff = packed_efficiency(lengths, rows, max_len)
    ok = (eff >= 0.999 or len(rows) == bound) and len(rows) <= 1.001 * bound + 1
    print(f"pack planning took {took:.2f} s; target (>= 99.9% unless rows == bound, rows <= "
          f"1.001 x bound + 1): {'met' if ok else 'NOT met'}")


def planning_time(n: int, max_len: int) -> None:
    from longalign.packing.plan import plan_packs

    lengths = longalign_mix(n // 7, n - n // 7, seed=1)
    start, cpu = time.perf_counter(), time.process_time()
    rows = plan_packs(lengths, max_len, seed=0)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"\n## 2. Planning {n:,} lengths (one core): {wall:.2f} s wall, {cpu:.2f} s CPU, "
          f"{len(rows):,} rows; target < 10 s of CPU on one core: {'met' if cpu < 10 else 'NOT met'}"
          " (wall time includes waiting for a core on a shared machine)")


# --- synthetic chats --------------------------------------------------------------------------

def corpus_text(max_chars: int = 6_000_000) -> str:
    parts, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(errors="replace")
        parts.append(text)
        size += len(text)
        if size >= max_chars:
            break
    return "".join(parts)


def write_chats(directory: Path, n: int, doc_tokens: int, max_tokens: int, copies: int,
                seed: int = 0) -> None:
    """``copies`` Parquet shards of ``n`` chats each (distinct ids, the same texts)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = corpus_text()
    rng = np.random.default_rng(seed)
    tokens = np.clip(rng.lognormal(math.log(doc_tokens), 0.8, n), 64, max_tokens * 0.9)
    rows = []
    for i, t in enumerate(tokens):
        chars = int(t * CHARS_PER_TOKEN)
        start = int(rng.integers(0, max(1, len(text) - chars)))
        doc = text[start:start + chars]
        messages = [{"role": "user", "content": f"{doc}\n\nWhat does function number {i} do?"},
                    {"role": "assistant", "content": f"It handles case {i}: " + "it parses. " * (5 + i % 40)}]
        if i % 4 == 0:
            messages += [{"role": "user", "content": "And briefly?"},
                         {"role": "assistant", "content": f"Case {i}, parsed."}]
        rows.append({"id": f"c{i:07d}", "messages": messages})
    table = pa.Table.from_pylist(rows)
    directory.mkdir(parents=True, exist_ok=True)
    for c in range(copies):
        ids = pa.array([f"{c}-{r['id']}" for r in rows])
        pq.write_table(table.set_column(0, "id", ids), directory / f"samples-{c:05d}.parquet")


# --- throughput ---------------------------------------------------------------------------------

def throughput(chats: Path, out: Path, model: str, max_len: int) -> None:
    import pyarrow.parquet as pq

    from longalign.config import PackingConfig
    from longalign.models import load_tokenizer
    from longalign.packing import pack
    from longalign.packing import stage as stage_module
    from longalign.packing.encode import TOKENIZE_CHARS, ChatEncoder

    start = time.perf_counter()
    tokenizer = load_tokenizer(model)
    loading = time.perf_counter() - start
    stage_module.load_tokenizer = lambda spec: tokenizer  # load it once, as for the raw run
    plotting = [0.0]
    plot = stage_module.plot_lengths

    def timed_plot(*a, **kw):  # a fixed cost per run (matplotlib), shown apart
        t = time.perf_counter()
        plot(*a, **kw)
        plotting[0] += time.perf_counter() - t

    stage_module.plot_lengths = timed_plot
    # Warm-up on a few chats: first-time imports (jinja, matplotlib, ...) are not throughput.
    write_chats(out.parent / "warm-chats", 3, 200, max_len, 1)
    pack(PackingConfig(max_len=max_len), model, out.parent / "warm-chats", out.parent / "warm-out")
    plotting[0] = 0.0
    start = time.perf_counter()
    stats = pack(PackingConfig(max_len=max_len, truncation="middle"), model, chats, out)
    stage = time.perf_counter() - start
    # The limit: the tokenizer alone, batched over the same rendered texts in the same chunks.
    encoder = ChatEncoder(tokenizer, max_len)
    texts = []
    for path in sorted(chats.glob("samples-*.parquet")):
        for messages in pq.read_table(path).column("messages").to_pylist():
            texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    backend = encoder.backend
    start = time.perf_counter()
    raw_tokens, i = 0, 0
    while i < len(texts):
        j, chars = i, 0
        while j < len(texts) and chars < TOKENIZE_CHARS:
            chars += len(texts[j])
            j += 1
        raw_tokens += sum(len(e.ids) for e in backend.encode_batch(texts[i:j], add_special_tokens=False))
        i = j
    raw = time.perf_counter() - start
    threads = os.environ.get("RAYON_NUM_THREADS") or f"all {os.cpu_count()}"
    print(f"\n## 3. Throughput ({len(texts):,} chats, {raw_tokens:,} tokens; tokenizer threads: "
          f"{threads}; TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', 'unset')})")
    print(f"tokeniser alone (raw batch encode): {raw_tokens / raw:>12,.0f} tokens/s ({raw:.1f} s)")
    print(f"stage: tokenise+pack+write:         {stats['tokens'] / stage:>12,.0f} tokens/s ({stage:.1f} s)"
          f"  = {stats['tokens'] / stage / (raw_tokens / raw):.2f} x the tokeniser alone")
    steady = stage - plotting[0]
    print(f"  without the PNG plot ({plotting[0]:.1f} s, fixed per run): {stats['tokens'] / steady:>12,.0f} "
          f"tokens/s  = {stats['tokens'] / steady / (raw_tokens / raw):.2f} x the tokeniser alone")
    print(f"(the tokenizer load, {loading:.1f} s, and first-time imports (a warm-up run) are left out)")
    print(f"stage efficiency {stats['efficiency']:.4%}, {stats['rows']} rows "
          f"(lower bound {stats['lower_bound_rows']}), {stats['truncated']} truncated")


# --- peak memory in child processes -------------------------------------------------------------

def _status_mib(field: str) -> float:
    """A field of /proc/self/status (VmRSS: resident now; VmHWM: peak resident) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> None:
    from longalign.config import PackingConfig
    from longalign.models import load_tokenizer
    from longalign.packing import pack
    from longalign.packing.encode import ChatEncoder

    from longalign.packing import encode, store

    if args.chunk_chars:
        encode.TOKENIZE_CHARS = args.chunk_chars
    if args.rows_per_batch:
        store.ROWS_PER_RECORD_BATCH = args.rows_per_batch
    from longalign.packing import stage as stage_module

    tokenizer = load_tokenizer(args.model)
    ChatEncoder(tokenizer, args.max_len)  # imports and tokenizer: the baseline
    stage_module.load_tokenizer = lambda spec: tokenizer
    import tracemalloc

    import pyarrow as pa

    before = _status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak (VmHWM) to the current RSS
    tracemalloc.start()
    start = time.perf_counter()
    tokens = 0
    if args.child != "baseline":
        chats, out = args.child.split(os.pathsep)
        tokens = pack(PackingConfig(max_len=args.max_len, truncation="middle"), args.model,
                      chats, out)["tokens"]
    print(json.dumps({"maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "before_mib": before, "peak_mib": _status_mib("VmHWM"),
                      "python_peak_mib": tracemalloc.get_traced_memory()[1] / 2**20,
                      "arrow_peak_mib": pa.default_memory_pool().max_memory() / 2**20,
                      "tokens": tokens, "seconds": time.perf_counter() - start}))


def run_child(what: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", what, "--model", args.model,
           "--max-len", str(args.max_len), "--chunk-chars", str(args.chunk_chars),
           "--rows-per-batch", str(args.rows_per_batch)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory(work: Path, args: argparse.Namespace) -> None:
    print(f"\n## 4. Peak memory of the stage in child processes (max_len {args.max_len:,})")
    print("ru_maxrss: the whole child's peak; 'stage peak': peak RSS while pack() ran minus the RSS "
          "before it (after imports and a tokenizer load).")
    print(f"Buffers: {args.chunk_chars or 'default'} characters per tokenizer chunk, "
          f"{args.rows_per_batch or 'default'} rows per record batch (the quick run shrinks them so "
          "that the 1x data already spans several; the stage's defaults are 2M and 256)")
    print("Of the stage peak: 'Python' is the peak of Python objects (tracemalloc), 'Arrow' the peak "
          "of Arrow's memory pool; the rest is native (the Rust tokenizer and its threads).")
    print(f"{'run':<26}{'tokens':>12}{'ru_maxrss':>12}{'stage peak':>13}{'Python':>10}{'Arrow':>10}"
          f"{'time':>9}")
    grew = []
    for what, label in (("baseline", "no data (baseline)"), (1, "pack, 1x data"),
                        (args.mult, f"pack, {args.mult}x data")):
        if what != "baseline":
            what = f"{work / f'chats-{what}x'}{os.pathsep}{work / f'packed-{what}x'}"
        got = run_child(str(what), args)
        grew.append(got["peak_mib"] - got["before_mib"])
        print(f"{label:<26}{got['tokens']:>12,}{got['maxrss_mib']:>8.0f} MiB{grew[-1]:>9.0f} MiB"
              f"{got['python_peak_mib']:>6.0f} MiB{got['arrow_peak_mib']:>6.0f} MiB{got['seconds']:>8.1f}s")
    print(f"stage peak at {args.mult}x / at 1x: {grew[2] / max(grew[1], 1):.2f} "
          f"(ids + labels of the {args.mult}x data as int32 would be {got['tokens'] * 8 / 2**20:,.0f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-long", type=int, default=10_000, help="mix: samples of 8k-64k tokens")
    parser.add_argument("--n-short", type=int, default=60_000, help="mix: samples of 20-8,192 tokens")
    parser.add_argument("--mix-max-len", type=int, default=65_536)
    parser.add_argument("--batch-size", type=int, default=8, help="samples per batch for sort/naive")
    parser.add_argument("--plan-n", type=int, default=1_000_000, help="lengths for the planning time")
    parser.add_argument("--chats", type=int, default=100, help="synthetic chats at 1x")
    parser.add_argument("--doc-tokens", type=int, default=2_500, help="median document tokens")
    parser.add_argument("--max-len", type=int, default=16_384, help="max_len of the stage runs")
    parser.add_argument("--mult", type=int, default=10, help="data multiple of the memory run")
    parser.add_argument("--chunk-chars", type=int, default=200_000,
                        help="memory run: characters per tokenizer chunk (0: the stage's default)")
    parser.add_argument("--rows-per-batch", type=int, default=8,
                        help="memory run: rows per Arrow record batch (0: the stage's default)")
    parser.add_argument("--model", default="embedded:tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(f"# packing benchmark (cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f})")
    efficiency_table(longalign_mix(args.n_long, args.n_short, args.seed), args.mix_max_len,
                     args.batch_size, args.seed)
    planning_time(args.plan_n, args.mix_max_len)
    with tempfile.TemporaryDirectory(prefix="packing-bench-") as tmp:
        work = Path(tmp)
        write_chats(work / "chats-1x", args.chats, args.doc_tokens, args.max_len, 1, args.seed)
        write_chats(work / f"chats-{args.mult}x", args.chats, args.doc_tokens, args.max_len,
                    args.mult, args.seed)
        throughput(work / "chats-1x", work / "packed-throughput", args.model, args.max_len)
        memory(work, args)


if __name__ == "__main__":
    main()
