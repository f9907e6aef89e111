"""Throughput and peak memory of the sourcing stage at two corpus sizes, side by side.

Generates a synthetic long-document corpus (JSONL files plus a directory of text files, with
exact duplicates, edited near-duplicates, short documents and a few over-long ones), then runs
``longalign.sourcing.source`` on a small and a large corpus, each in a fresh child process, and
prints documents/s, tokens/s, MB/s and the child's peak resident memory (``ru_maxrss``). The
memory ratio large/small shows whether memory grows with corpus size.

    python bench/sourcing_bench.py                 # 4 MB and 32 MB (about a minute or two here)
    python bench/sourcing_bench.py --size-gb 1     # 128 MB and 1 GB (the issue's size)

The large size is ``--size-mb`` (or ``--size-gb``); the small one is ``--ratio`` times smaller.
Throughput is dominated by token counting (the model's fast tokenizer).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "the of and to in is was for that with as on by at from his her they this which be an had not "
    "are but have one all were when there their been more would has will who also can its into time "
    "year people way day man thing woman life child world school state family student group country "
    "problem hand part place case week company system program question work government number night "
    "point home water room mother area money story fact month lot right study book eye job word "
    "business issue side kind head house service friend father power hour game line end member law "
    "car city community name president team minute idea body information back parent face others "
    "level office door health person art war history party result change morning reason research "
    "girl moment air teacher force education river garden letter window bridge mountain silver "
    "ancient quietly between although whatever remember children important without something "
    "government development experience political economic however different following national"
).split()


def sentence_pool(rng, n: int) -> list[str]:
    out = []
    for _ in range(n):
        k = int(rng.integers(8, 20))
        words = [WORDS[int(i)] for i in rng.integers(0, len(WORDS), k)]
        words.append(f"n{int(rng.integers(0, 10**6))}")  # keeps sentences (and shingles) distinct
        rng.shuffle(words)
        out.append(" ".join(words).capitalize() + ".")
    return out


def document(rng, pool: list[str], chars: int) -> str:
    paragraphs, size = [], 0
    while size < chars:
        picks = rng.integers(0, len(pool), int(rng.integers(3, 9)))
        para = " ".join(pool[int(i)] for i in picks)
        paragraphs.append(para)
        size += len(para) + 2
    return "\n\n".join(paragraphs) + "\n"


def generate(root: Path, size_bytes: int, seed: int) -> dict:
    """Write about ``size_bytes`` of documents under ``root``; returns what was written."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pool = sentence_pool(rng, 50_000)
    (root / "jsonl").mkdir(parents=True)
    (root / "dir").mkdir()
    written, docs, part = 0, 0, 0
    handle = open(root / "jsonl" / "part-00000.jsonl", "w", encoding="utf-8")
    previous = ""
    while written < size_bytes:
        kind = rng.random()
        if kind < 0.02 and previous:
            text = previous  # exact duplicate
        elif kind < 0.04 and previous:
            words = previous.split(" ")
            for i in rng.integers(0, len(words), max(1, len(words) // 200)):
                words[int(i)] = "edited"
            text = " ".join(words)  # near duplicate
        elif kind < 0.10:
            text = document(rng, pool, int(rng.integers(2_000, 20_000)))  # too short
        elif kind < 0.12:
            text = document(rng, pool, int(rng.integers(300_000, 400_000)))  # over max_tokens: split
        else:
            text = document(rng, pool, int(rng.integers(40_000, 250_000)))
        previous = text
        if rng.random() < 0.2:
            (root / "dir" / f"doc-{docs:07d}.txt").write_text(text, encoding="utf-8")
        else:
            line = json.dumps({"text": text, "id": docs}) + "\n"
            handle.write(line)
            if handle.tell() > 64 * 1024 * 1024:
                handle.close()
                part += 1
                handle = open(root / "jsonl" / f"part-{part:05d}.jsonl", "w", encoding="utf-8")
        written += len(text.encode("utf-8"))
        docs += 1
    handle.close()
    return {"bytes": written, "documents": docs}


def child(args: argparse.Namespace) -> None:
    """Run the stage once in this (fresh) process and print one JSON line."""
    from longalign.config import SourcingConfig
    from longalign.models import load_tokenizer
    from longalign.sourcing import source

    # Imports and the tokenizer belong to the baseline, not to corpus-dependent memory.
    import datasketch  # noqa: F401
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    datasketch.MinHashLSH(threshold=0.8, num_perm=128)  # its parameter search imports scipy
    load_tokenizer(args.model)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    corpus = Path(args.corpus)
    cfg = SourcingConfig(sources=[f"jsonl:{corpus / 'jsonl'}", f"dir:{corpus / 'dir'}"])
    start = time.perf_counter()
    stats = source(cfg, args.model, Path(args.output))
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"elapsed": elapsed, "read": stats["documents_read"], "kept": stats["documents_kept"],
                      "tokens": stats["tokens_kept"], "rejected": stats["rejected"],
                      "peak_kb": peak, "baseline_kb": baseline}))


def run_size(size_bytes: int, args: argparse.Namespace, work: Path) -> dict:
    corpus = work / f"corpus-{size_bytes}"
    t0 = time.perf_counter()
    made = generate(corpus, size_bytes, args.seed)
    gen_s = time.perf_counter() - t0
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "true")}
    done = subprocess.run(
        [sys.executable, __file__, "--child", "--corpus", str(corpus), "--output", str(work / f"out-{size_bytes}"),
         "--model", args.model], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"child failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(made, generate_s=gen_s)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=32.0, help="large corpus size (MB)")
    parser.add_argument("--size-gb", type=float, default=None, help="large corpus size (GB); overrides --size-mb")
    parser.add_argument("--ratio", type=float, default=8.0, help="large size / small size")
    parser.add_argument("--model", default="embedded:tiny", help="model spec whose tokenizer counts tokens")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where corpora go (default: a temporary folder)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    large = int((args.size_gb * 1024 if args.size_gb else args.size_mb) * 1024 * 1024)
    sizes = [int(large / args.ratio), large]
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="sourcing-bench-") as tmp:
        results = [run_size(s, args, Path(tmp)) for s in sizes]
    mb = 1024 * 1024
    print(f"\nsourcing stage, tokenizer of {args.model}, defaults (8k-64k tokens, MinHash LSH on)")
    header = ("corpus MB", "docs read", "kept", "tokens kept", "seconds", "docs/s", "tokens/s", "MB/s",
              "peak RSS MB", "over baseline MB")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        print(f"| {r['bytes'] / mb:,.0f} | {r['read']:,} | {r['kept']:,} | {r['tokens']:,} | {r['elapsed']:.1f} | "
              f"{r['read'] / r['elapsed']:.1f} | {r['tokens'] / r['elapsed']:,.0f} | "
              f"{r['bytes'] / mb / r['elapsed']:.2f} | {r['peak_kb'] / 1024:.0f} | "
              f"{(r['peak_kb'] - r['baseline_kb']) / 1024:.0f} |")
    small, big = results
    print(f"\ncorpus size ratio {big['bytes'] / small['bytes']:.1f}x; peak memory ratio "
          f"{big['peak_kb'] / small['peak_kb']:.2f}x (over baseline: "
          f"{max(big['peak_kb'] - big['baseline_kb'], 1) / max(small['peak_kb'] - small['baseline_kb'], 1):.2f}x); "
          f"throughput ratio (MB/s) {(big['bytes'] / big['elapsed']) / (small['bytes'] / small['elapsed']):.2f}x")
    print("rejected (large):", json.dumps(big["rejected"], sort_keys=True))


if __name__ == "__main__":
    main()
