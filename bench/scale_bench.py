"""Scale benchmark: the data stages in N worker processes next to one process, in one run.

1. Packing throughput (tokens/s of ``longalign.packing.pack``, whole stage: read chats, render
   the chat template, tokenise, label, plan, write Arrow; worker start-up and tokenizer loads
   included) with ``workers=1`` and ``workers=N``, next to the raw tokenizer (the Rust
   tokenizer's batched encode, all cores, tokenizer load excluded) on the same rendered text.
   The issue's target: the stage at >= 0.8 x the raw tokenizer with the same cores.
2. Sourcing throughput (MB/s of input text through ``longalign.sourcing.source`` with the
   default config: near-dup on) with ``workers=1`` and ``workers=N`` on the sourcing benchmark's
   synthetic corpus (JSONL files, streamed by this process, plus a directory, read by the
   workers), with the per-worker rate the cost model in docs/scale.md uses.
3. Equality: N workers write byte-identical packed rows and corpus shards to one process.

Chats are the packing benchmark's synthetic ones (slices of Python's standard library sources);
the tokenizer is the embedded model's (``embedded:tiny``: SmolLM2's).

    python bench/scale_bench.py                      # N = all cores; about a minute on 2 cores
    python bench/scale_bench.py --workers 4 --chats 800
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from packing_bench import write_chats  # noqa: E402  (sibling scripts)
from sourcing_bench import generate  # noqa: E402


def raw_tokenizer(chats: Path, model: str) -> tuple[int, float]:
    """(tokens, seconds) of the raw batched encode over the rendered chats, in stage-sized chunks."""
    import pyarrow.parquet as pq

    from longalign.models import load_tokenizer
    from longalign.packing.encode import TOKENIZE_CHARS, ChatEncoder

    tokenizer = load_tokenizer(model)
    backend = ChatEncoder(tokenizer, 1 << 20)._backend
    texts = [tokenizer.apply_chat_template(m, tokenize=False)
             for path in sorted(chats.glob("samples-*.parquet"))
             for m in pq.read_table(path).column("messages").to_pylist()]
    start = time.perf_counter()
    tokens, i = 0, 0
    while i < len(texts):
        j, chars = i, 0
        while j < len(texts) and chars < TOKENIZE_CHARS:
            chars += len(texts[j])
            j += 1
        tokens += sum(len(e.ids) for e in backend.encode_batch(texts[i:j], add_special_tokens=False))
        i = j
    return tokens, time.perf_counter() - start


def stage(chats: Path, out: Path, model: str, max_len: int, workers: int) -> tuple[int, float]:
    from longalign.config import PackingConfig
    from longalign.packing import pack

    start = time.perf_counter()
    stats = pack(PackingConfig(max_len=max_len, truncation="middle", workers=workers), model,
                 chats, out)
    return stats["tokens"], time.perf_counter() - start


def sourcing(corpus: Path, out: Path, model: str, workers: int) -> tuple[dict, float]:
    from longalign.config import SourcingConfig
    from longalign.sourcing import source

    cfg = SourcingConfig(sources=[f"jsonl:{corpus / 'jsonl'}", f"dir:{corpus / 'dir'}"],
                         workers=workers)
    start = time.perf_counter()
    stats = source(cfg, model, out)
    return stats.stats, time.perf_counter() - start


def same_files(a: Path, b: Path, pattern: str) -> bool:
    names = sorted(p.name for p in a.glob(pattern))
    return bool(names) and names == sorted(p.name for p in b.glob(pattern)) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="N")
    parser.add_argument("--chats", type=int, default=300, help="synthetic chats per copy")
    parser.add_argument("--copies", type=int, default=2, help="Parquet shards of the chats")
    parser.add_argument("--doc-tokens", type=int, default=2_500, help="median document tokens")
    parser.add_argument("--max-len", type=int, default=16_384)
    parser.add_argument("--source-mb", type=float, default=24, help="synthetic corpus size")
    parser.add_argument("--model", default="embedded:tiny")
    args = parser.parse_args()
    from longalign.models import resolve_model

    resolve_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_chats(work / "chats", args.chats, args.doc_tokens, args.max_len, args.copies)
        write_chats(work / "warm", 4, 200, args.max_len, 1)
        stage(work / "warm", work / "warm-out", args.model, args.max_len, 1)  # first imports
        raw_tokens, raw_s = raw_tokenizer(work / "chats", args.model)
        raw = raw_tokens / raw_s
        runs = {}
        for n in (1, args.workers):
            runs[n] = stage(work / "chats", work / f"packed-{n}", args.model, args.max_len, n)
        cores = os.cpu_count()
        print(f"\n## 1. Packing throughput: {args.chats * args.copies:,} chats, {raw_tokens:,} "
              f"tokens, {cores} cores (RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'unset')})")
        print(f"{'run':<40}{'tokens/s':>12}{'seconds':>10}{'x raw':>8}{'x 1 worker':>12}")
        print(f"{'raw tokenizer (batch encode)':<40}{raw:>12,.0f}{raw_s:>10.1f}{1:>8.2f}{'-':>12}")
        one = runs[1][0] / runs[1][1]
        for n, (tokens, seconds) in runs.items():
            rate = tokens / seconds
            print(f"{f'pack stage, workers={n}':<40}{rate:>12,.0f}{seconds:>10.1f}"
                  f"{rate / raw:>8.2f}{rate / one:>12.2f}")
        best = max(t / s for t, s in runs.values()) / raw
        print(f"target: the stage at >= 0.80 x the raw tokenizer: {'met' if best >= 0.8 else 'NOT met'}"
              f" ({best:.2f} x)")

        made = generate(work / "corpus", int(args.source_mb * 2**20), seed=0)
        mb = made["bytes"] / 2**20
        print(f"\n## 2. Sourcing throughput: {mb:.1f} MB of text, {made['documents']:,} documents "
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

        n = args.workers
        print(f"\n## 3. Equality with workers={n}: packed rows byte-identical: "
              f"{same_files(work / 'packed-1', work / f'packed-{n}', 'rows-*.arrow')}; corpus shards "
              f"byte-identical: {same_files(work / 'corpus-1', work / f'corpus-{n}', '*.parquet')}")


if __name__ == "__main__":
    main()
