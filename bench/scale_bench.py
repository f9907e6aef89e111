"""Scale benchmark: the data stages in N worker processes next to one process, in one run.

1. Packing throughput (tokens/s of ``longalign.packing.pack``, whole stage: read chats, render
   the chat template, tokenise, label, plan, write Arrow; worker start-up and tokenizer loads
   included) with ``workers=1`` and ``workers=N``, next to the raw tokenizer (the Rust
   tokenizer's batched encode, all cores, tokenizer load excluded) on the same rendered text,
   both with character offsets (``encode_batch``) and ids only (``encode_batch_fast``, its
   fastest call), as the median of interleaved repeats (the machine may be shared), with CPU
   seconds. Each of these runs is a fresh Python process (imports done before its clock starts),
   as a pod or a worker is. The stage's fixed costs (tokenizer load, byte table, plot, metadata)
   are measured by the stage on 4 short chats and shown subtracted too: the rate on a large input.
   The issue's target: the stage at >= 0.8 x the raw tokenizer with the same cores.
2. The sharded packing steps of a cluster run (``encode_shard`` per part, ``pack_parts``),
   one after another: each part's map rate and the join's rate, i.e. at how many map pods the
   join (which starts after the last of them) takes as long as the map (docs/scale.md). Then the
   shared-volume reduce the sharded pipelines run (``longalign.packing.spool``: plan, one write
   per row file, join) over the same parts, each step timed, and its time with the writes in
   parallel pods (plan + slowest write + join) next to the one-pod join's.
3. Sourcing throughput (MB/s of input text through ``longalign.sourcing.source`` with the
   default config: near-dup on) with ``workers=1`` and ``workers=N`` on the sourcing benchmark's
   synthetic corpus (JSONL files, streamed by this process, plus a directory, read by the
   workers), with the per-worker rate the cost model in docs/scale.md uses; then the cluster's
   sourcing steps (``source_shard`` per part, the reduce over the parts): the reduce's own rate,
   which bounds how many map pods pay off.
4. Equality: N workers and the sharded join write byte-identical packed rows (the shared-volume
   reduce the same rows, cut into more files) (and N workers
   byte-identical corpus shards) to one process.

Chats are the packing benchmark's synthetic ones (slices of Python's standard library sources);
the tokenizer is the embedded model's (``embedded:tiny``: SmolLM2's).

    python bench/scale_bench.py                      # N = all cores; about 2 minutes on 2 cores
    python bench/scale_bench.py --source-mb 0        # packing only
    python bench/scale_bench.py --workers 4 --chats 800
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from packing_bench import write_chats  # noqa: E402  (sibling scripts)
from sourcing_bench import generate  # noqa: E402


def cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of its finished child processes."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def raw_tokenizer(chats: Path, model: str, fast: bool = False) -> tuple[int, float, float]:
    """(tokens, seconds, CPU seconds) of the raw batched encode over the rendered chats, in
    stage-sized chunks: ``encode_batch`` (with character offsets) or, with ``fast``,
    ``encode_batch_fast`` (ids only: the Rust tokenizer's fastest call)."""
    import pyarrow.parquet as pq

    from longalign.models import load_tokenizer
    from longalign.packing.encode import TOKENIZE_CHARS, ChatEncoder

    tokenizer = load_tokenizer(model)
    backend = ChatEncoder(tokenizer, 1 << 20).backend
    texts = [tokenizer.apply_chat_template(m, tokenize=False)
             for path in sorted(chats.glob("samples-*.parquet"))
             for m in pq.read_table(path).column("messages").to_pylist()]
    encode = backend.encode_batch_fast if fast else backend.encode_batch
    start, cpu = time.perf_counter(), cpu_seconds()
    tokens, i = 0, 0
    while i < len(texts):
        j, chars = i, 0
        while j < len(texts) and chars < TOKENIZE_CHARS:
            chars += len(texts[j])
            j += 1
        tokens += sum(len(e.ids) for e in encode(texts[i:j], add_special_tokens=False))
        i = j
    return tokens, time.perf_counter() - start, cpu_seconds() - cpu


def stage(chats: Path, out: Path, model: str, max_len: int, workers: int) -> tuple[int, float, float]:
    """(tokens, seconds, CPU seconds) of the whole pack stage, tokenizer loads included."""
    from longalign.config import PackingConfig
    from longalign.packing import pack

    start, cpu = time.perf_counter(), cpu_seconds()
    stats = pack(PackingConfig(max_len=max_len, truncation="middle", workers=workers), model,
                 chats, out, overwrite=True)
    return stats["tokens"], time.perf_counter() - start, cpu_seconds() - cpu


def sharded(chats: Path, work: Path, model: str, max_len: int,
            parts: int) -> tuple[list[tuple[int, float]], tuple[int, float]]:
    """The cluster's packing steps run one after another here: ``encode_shard`` for each part
    (each loads its tokenizer, as a pod does), then ``pack_parts``; ((tokens, seconds) per
    part, (tokens, seconds) of the join)."""
    import numpy as np

    from longalign.config import PackingConfig
    from longalign.packing.parallel import encode_shard
    from longalign.packing.stage import pack_parts

    config = PackingConfig(max_len=max_len, truncation="middle")
    maps = []
    for k in range(parts):
        start = time.perf_counter()
        encode_shard(config, model, chats, work / f"part-{k}", k, parts, overwrite=True)
        took = time.perf_counter() - start
        tokens = int(np.load(work / f"part-{k}" / "part.index.npy")[0].sum())
        maps.append((tokens, took))
    start = time.perf_counter()
    stats = pack_parts(config, model, [work / f"part-{k}" for k in range(parts)],
                       work / "packed-join", overwrite=True).stats
    return maps, (stats["tokens"], time.perf_counter() - start)


def spooled(work: Path, model: str, max_len: int, parts: int, tokens: int,
            writers: int) -> tuple[float, list[float], float]:
    """The shared-volume reduce of a cluster run (``longalign.packing.spool``) over the parts
    ``sharded`` left: the plan step, one write step per row file (``tokens_per_file`` cut so
    there are about ``writers`` files), the join; (plan s, each write's s, join s)."""
    from longalign.config import PackingConfig
    from longalign.packing.spool import join_files, plan_parts, write_file

    config = PackingConfig(max_len=max_len, truncation="middle",
                           tokens_per_file=max(1, -(-tokens // writers)))
    start = time.perf_counter()
    _, files = plan_parts(config, model, [work / f"part-{k}" for k in range(parts)],
                          work / "plan", work / "volume-rows", overwrite=True)
    plan_s = time.perf_counter() - start
    writes = []
    for k in files:
        start = time.perf_counter()
        write_file(work / "plan", k, work / f"written-{k}", overwrite=True)
        writes.append(time.perf_counter() - start)
    start = time.perf_counter()
    join_files(work / "plan", [work / f"written-{k}" for k in files], work / "packed-spool",
               overwrite=True)
    return plan_s, writes, time.perf_counter() - start


def same_rows(a: Path, b: Path) -> bool:
    """Two packing outputs hold the same rows in the same order (files may be cut differently)."""
    import pyarrow as pa

    from longalign.formats import read_packed

    return pa.concat_tables(read_packed(a)[1]).equals(pa.concat_tables(read_packed(b)[1]))


def sourcing(corpus: Path, out: Path, model: str, workers: int) -> tuple[dict, float]:
    from longalign.config import SourcingConfig
    from longalign.sourcing import source

    cfg = SourcingConfig(sources=[f"jsonl:{corpus / 'jsonl'}", f"dir:{corpus / 'dir'}"],
                         workers=workers)
    start = time.perf_counter()
    stats = source(cfg, model, out)
    return stats.stats, time.perf_counter() - start


def sharded_sourcing(corpus: Path, work: Path, model: str, parts: int) -> tuple[list[float], float]:
    """The cluster's sourcing steps run one after another here: ``source_shard`` for each part
    (each loads its tokenizer, as a pod does), then the reduce (``source`` over the parts:
    exact dedup, the LSH, token bounds, splitting, writing); (seconds per part, seconds of the
    reduce)."""
    from longalign.config import SourcingConfig
    from longalign.sourcing import source
    from longalign.sourcing.shards import source_shard

    cfg = SourcingConfig(sources=[f"jsonl:{corpus / 'jsonl'}", f"dir:{corpus / 'dir'}"])
    maps = []
    for k in range(parts):
        start = time.perf_counter()
        source_shard(cfg, model, work / f"source-part-{k}", k, parts, overwrite=True)
        maps.append(time.perf_counter() - start)
    start = time.perf_counter()
    source(cfg, model, work / "corpus-join", overwrite=True,
           parts=[work / f"source-part-{k}" for k in range(parts)])
    return maps, time.perf_counter() - start


def same_files(a: Path, b: Path, pattern: str) -> bool:
    names = sorted(p.name for p in a.glob(pattern))
    return bool(names) and names == sorted(p.name for p in b.glob(pattern)) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def isolated(kind: str, chats: Path, out: Path, model: str, max_len: int) -> tuple[int, float, float]:
    """One packing-throughput run in a fresh Python process, as a pod or a worker is: ``kind``
    is ``raw``, ``raw-fast`` or ``stage-N``. Each run in a process of its own, so no run
    inherits another's heap, tokenizers or threads: raw encodes in one process that loaded a
    fresh tokenizer for each of several runs slowed down run by run (by up to a third,
    docs/scale.md). Imports are done before the clock starts; (tokens, seconds, CPU seconds)
    as measured inside the child."""
    argv = [sys.executable, __file__, "--measure", kind, "--measure-chats", str(chats),
            "--measure-out", str(out), "--model", model, "--max-len", str(max_len)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{kind} run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["tokens"], result["seconds"], result["cpu"]


def measure(kind: str, chats: Path, out: Path, model: str, max_len: int) -> None:
    """The child side of ``isolated``: one run, its result as the last line of stdout."""
    import longalign.packing  # noqa: F401  (imports before the clock)
    from longalign.models import load_tokenizer

    load_tokenizer(model)  # the tokenizer files in the page cache, transformers imported
    if kind.startswith("stage-"):
        tokens, seconds, cpu = stage(chats, out, model, max_len, int(kind.split("-")[1]))
    else:
        tokens, seconds, cpu = raw_tokenizer(chats, model, fast=kind == "raw-fast")
    print(json.dumps({"tokens": tokens, "seconds": seconds, "cpu": cpu}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="N")
    parser.add_argument("--chats", type=int, default=300, help="synthetic chats per copy")
    parser.add_argument("--copies", type=int, default=2, help="Parquet shards of the chats")
    parser.add_argument("--doc-tokens", type=int, default=2_500, help="median document tokens")
    parser.add_argument("--max-len", type=int, default=16_384)
    parser.add_argument("--source-mb", type=float, default=24, help="synthetic corpus size (0: no sourcing runs)")
    parser.add_argument("--model", default="embedded:tiny")
    parser.add_argument("--parts", type=int, default=3, help="parts of the sharded packing run")
    parser.add_argument("--writers", type=int, default=4,
                        help="row files (one writer pod each) of the shared-volume reduce")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved repeats of the packing runs (medians are shown)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the child of an isolated run
    parser.add_argument("--measure-chats", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--measure-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.measure_chats, args.measure_out, args.model, args.max_len)
        return
    from longalign.models import resolve_model

    resolve_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_chats(work / "chats", args.chats, args.doc_tokens, args.max_len, args.copies)
        # The stage's fixed costs (tokenizer load, byte table, plot, metadata): the stage on 4
        # short chats. Subtracted, the rest is its rate on a large input, where they vanish.
        write_chats(work / "tiny", 4, 200, args.max_len, 1)
        # this process's first imports and tokenizer load, before the in-process sections 2-3
        stage(work / "tiny", work / "warm-out", args.model, args.max_len, 1)
        load_before = os.getloadavg()
        # Repeats interleave the runs, so a burst of load from other jobs hits all of them; the
        # table shows each run's median (the ratios are of medians). Every run is a fresh process.
        runs: dict[str | int, list[tuple[int, float, float]]] = {}
        for _ in range(args.repeats):
            for kind in ("raw", "raw-fast"):
                runs.setdefault(kind, []).append(
                    isolated(kind, work / "chats", work / "unused", args.model, args.max_len))
            for n in sorted({1, args.workers}):
                runs.setdefault(n, []).append(isolated(f"stage-{n}", work / "chats",
                                                       work / f"packed-{n}", args.model,
                                                       args.max_len))
            runs.setdefault("fixed", []).append(isolated("stage-1", work / "tiny", work / "packed-tiny",
                                                         args.model, args.max_len))
        median = {k: tuple(statistics.median(r[i] for r in v) for i in range(3))
                  for k, v in runs.items()}
        cores = os.cpu_count()
        raw_tokens, raw_s, raw_cpu = median["raw"]
        raw = raw_tokens / raw_s
        fast = median["raw-fast"][0] / median["raw-fast"][1]
        print(f"\n## 1. Packing throughput: {args.chats * args.copies:,} chats, {raw_tokens:,.0f} "
              f"tokens, {cores} cores (RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'unset')}), "
              f"median of {args.repeats} interleaved repeats; load average before "
              f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
        print(f"{'run':<36}{'tokens/s':>12}{'seconds':>9}{'x raw':>8}{'x ids only':>12}"
              f"{'x 1 worker':>12}{'CPU s':>8}{'tokens/CPU s':>14}")
        one = median[1][0] / median[1][1]
        rows = [("raw", "raw tokenizer (encode_batch)"), ("raw-fast", "raw, ids only (encode_batch_fast)")]
        rows += [(n, f"pack stage, workers={n}") for n in sorted({1, args.workers})]
        fixed = median["fixed"]
        # (a run too small to outlast its fixed costs has no rate without them)
        median["marginal"] = (median[1][0], max(median[1][1] - fixed[1], 1e-3),
                              max(median[1][2] - fixed[2], 1e-3))
        if median[1][1] > 2 * fixed[1]:
            rows.append(("marginal", "  workers=1 less fixed costs"))
        for key, label in rows:
            tokens, seconds, cpu = median[key]
            rate = tokens / seconds
            print(f"{label:<36}{rate:>12,.0f}{seconds:>9.2f}{rate / raw:>8.2f}{rate / fast:>12.2f}"
                  f"{f'{rate / one:.2f}' if isinstance(key, int) else '-':>12}{cpu:>8.2f}"
                  f"{tokens / cpu:>14,.0f}")
        print(f"fixed costs (the stage on 4 short chats, a fresh process): {fixed[1]:.2f} s, "
              f"{fixed[2]:.2f} CPU s")
        for key, label in (("raw", "raw tokenizer"), ("raw-fast", "ids-only tokenizer")):
            per_repeat = [s[0] / s[1] / (r[0] / r[1]) for r, s in zip(runs[key], runs[1])]
            print(f"pack stage (workers=1) / {label}, each repeat: "
                  + ", ".join(f"{x:.2f}" for x in per_repeat))
        best = max(median[n][0] / median[n][1] for n in runs if isinstance(n, int))
        at_scale = median["marginal"][0] / median["marginal"][1]
        for base, label in ((raw, "raw tokenizer"), (fast, "ids-only tokenizer")):
            without = (f"; less its fixed costs {at_scale / base:.2f} x"
                       if median[1][1] > 2 * fixed[1] else "")
            print(f"target: the stage at >= 0.80 x the {label}: "
                  f"{'met' if best / base >= 0.8 else 'NOT met'} ({best / base:.2f} x{without})")

        maps, (join_tokens, join_s) = sharded(work / "chats", work, args.model, args.max_len,
                                              args.parts)
        print(f"\n## 2. Sharded packing (the cluster's steps, run one after another here): "
              f"{args.parts} parts, then the join")
        print(f"{'step':<32}{'tokens/s':>12}{'seconds':>9}")
        for k, (tokens, seconds) in enumerate(maps):
            print(f"{f'packing part {k} (map)':<32}{tokens / seconds:>12,.0f}{seconds:>9.2f}")
        map_rate = statistics.median(t / s for t, s in maps)
        print(f"{'packing join (reduce)':<32}{join_tokens / join_s:>12,.0f}{join_s:>9.2f}")
        print(f"the join takes as long as the map at {join_tokens / join_s / map_rate:.1f} map pods "
              f"of this rate (the join's fixed costs, tokenizer load and plot, included)")
        plan_s, writes, finish_s = spooled(work, args.model, args.max_len, args.parts,
                                           join_tokens, args.writers)
        print(f"\nthe same reduce with the stores and rows on a shared volume (plan, one writer "
              f"pod per row file, join; {len(writes)} row files):")
        print(f"{'packing plan':<32}{'':>12}{plan_s:>9.2f}")
        for k, seconds in enumerate(writes):
            print(f"{f'packing write {k}':<32}{join_tokens / len(writes) / seconds:>12,.0f}"
                  f"{seconds:>9.2f}")
        print(f"{'packing join (checks, cleanup)':<32}{'':>12}{finish_s:>9.2f}")
        critical = plan_s + max(writes) + finish_s
        print(f"with {len(writes)} writer pods at once the reduce takes {critical:.2f} s "
              f"(plan + slowest write + join) against {join_s:.2f} s in one pod: "
              f"speed-up {join_s / critical:.2f} x; all writes one after another: "
              f"{plan_s + sum(writes) + finish_s:.2f} s")

        if args.source_mb > 0:
            made = generate(work / "corpus", int(args.source_mb * 2**20), seed=0)
            mb = made["bytes"] / 2**20
            print(f"\n## 3. Sourcing throughput: {mb:.1f} MB of text, {made['documents']:,} documents "
                  f"(JSONL + a directory; duplicates, near duplicates, short and over-long ones)")
            print(f"{'run':<40}{'MB/s':>10}{'seconds':>10}{'kept':>8}{'x 1 worker':>12}")
            source_runs = {n: sourcing(work / "corpus", work / f"corpus-{n}", args.model, n)
                           for n in (1, args.workers)}
            base = mb / source_runs[1][1]
            for n, (stats, seconds) in source_runs.items():
                print(f"{f'sourcing, workers={n}':<40}{mb / seconds:>10.2f}{seconds:>10.1f}"
                      f"{stats['documents_kept']:>8}{mb / seconds / base:>12.2f}")
            per_worker = mb / source_runs[args.workers][1] / args.workers
            print(f"per worker at N={args.workers}: {per_worker:.2f} MB/s; 100 GB at that rate: "
                  f"{100 * 1024 / per_worker / 3600:.1f} worker-hours")
            maps, join_s = sharded_sourcing(work / "corpus", work, args.model, args.parts)
            print(f"sharded (the cluster's steps, one after another): {args.parts} parts in "
                  + ", ".join(f"{t:.1f}" for t in maps) + f" s (map rate {mb / sum(maps):.2f} MB/s "
                  f"per pod, start-up included), reduce {join_s:.1f} s ({mb / join_s:.2f} MB/s): "
                  f"the reduce takes as long as the map at {sum(maps) / join_s:.1f} map pods")

        n = args.workers
        corpus = (f"; corpus shards byte-identical with workers={n}: "
                  f"{same_files(work / 'corpus-1', work / f'corpus-{n}', '*.parquet')}, "
                  f"after the sharded reduce: "
                  f"{same_files(work / 'corpus-1', work / 'corpus-join', '*.parquet')}"
                  if args.source_mb > 0 else "")
        print(f"\n## 4. Equality: packed rows byte-identical with workers={n}: "
              f"{same_files(work / 'packed-1', work / f'packed-{n}', 'rows-*.arrow')}, "
              f"after the sharded join: "
              f"{same_files(work / 'packed-1', work / 'packed-join', 'rows-*.arrow')}; "
              f"the same rows after the shared-volume reduce: "
              f"{same_rows(work / 'packed-1', work / 'packed-spool')}{corpus}")


if __name__ == "__main__":
    main()
