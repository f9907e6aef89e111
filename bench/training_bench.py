"""Training throughput of naive / sort / pack batching, and of the two attention paths.

Part 1 trains the tiny embedded model for one epoch on the same synthetic LongAlign-like length
mix (long documents with questions, plus short chats, scaled down by --max-len / 65536) packed
three ways, in one process one after the other, and prints real (non-padding) tokens per second
and the ratios to naive, by wall time and by
CPU time (steadier when other jobs share the machine). Part 2 times forward + backward of one packed row through the per-sample
SDPA attention (``longalign_sdpa``) and through transformers' built-in sdpa, which builds a dense
L x L block mask from the packed position ids, and prints the ratio. Part 3 (planning only, no
model) packs the full-size LongAlign mix (10k samples of 8k-64k tokens, 60k of 20-8k) into 64k
rows and prints the per-step max/mean attention cost over 8 ranks when each step's rows are
dealt in shuffled order and when they are balanced by cost (``training.rank_balance``).

    python bench/training_bench.py                      # small default, about a minute or two
    python bench/training_bench.py --samples 2000 --max-len 65536 --attn-lengths 16384,65536

Naive and sort put --batch-size samples (default 8) in a micro-batch, padded to the longest;
pack fills rows of --max-len tokens. The model is tiny, so the time is dominated by the padded
token count (MLP, LM head); at full size attention adds to naive's cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longalign.config import TrainingConfig  # noqa: E402
from longalign.models import resolve_model  # noqa: E402
from longalign.packing.plan import plan_naive, plan_packs, plan_sorted  # noqa: E402
from longalign.formats import IGNORE, PACKED, write_packed_meta, write_rows  # noqa: E402
from longalign.training import train  # noqa: E402
from longalign.training.data import MicroBatch  # noqa: E402
from longalign.training.schedule import DEFAULT_LINEAR, plan_training  # noqa: E402


def length_mix(n: int, max_len: int, seed: int) -> list[int]:
    """LongAlign-like: 40% long samples (1/8 to all of max_len, log-uniform: 8k-64k at full
    size) and 60% short chats (1/256 to 1/16 of max_len: about 250-4k tokens at full size)."""
    rng = np.random.default_rng(seed)
    long = rng.random(n) < 0.4
    lo = np.where(long, max_len / 8, max_len / 256)
    hi = np.where(long, max_len, max_len / 16)
    lengths = np.exp(rng.uniform(np.log(lo), np.log(hi)))
    return [max(8, int(x)) for x in lengths]


def write_dir(out: Path, lengths: list[int], groups: list[list[list[int]]], strategy: str,
              vocab: int, max_len: int, seed: int) -> Path:
    """A packing-stage output directory: ``groups`` are micro-batches of rows of sample indices;
    each sample's last 15% of tokens are its targets (an answer after a long prompt)."""
    rng = np.random.default_rng(seed)
    samples = []
    for n in lengths:
        ids = rng.integers(3, vocab, n).tolist()
        prompt = max(1, int(n * 0.85))
        samples.append((ids, [IGNORE] * prompt + ids[prompt:]))
    records = []
    for b, rows in enumerate(groups):
        for members in rows:
            records.append({
                "input_ids": [t for i in members for t in samples[i][0]],
                "labels": [t for i in members for t in samples[i][1]],
                "seq_lens": [lengths[i] for i in members],
                "n_targets": [sum(1 for t in samples[i][1] if t != IGNORE) for i in members],
                "sample_ids": [f"s{i}" for i in members], "batch": b})
    out.mkdir(parents=True)
    write_rows(PACKED, out, records)
    write_packed_meta(out, strategy=strategy, max_len=max_len, model="embedded:tiny",
                      pad_token_id=2, rows=len(records), batches=len(groups),
                      samples=len(lengths), tokens=sum(len(r["input_ids"]) for r in records))
    return out


def build_model(args: argparse.Namespace, root: Path) -> str:
    """The benchmark's model: ``--model`` if given, else a tiny Llama (random weights, the
    tokenizer of embedded:tiny) with --hidden / --layers, wide enough that the dense layers carry
    most of the work as in real models (embedded:tiny's 64-wide layers make a step
    overhead-bound, and padding then costs almost nothing)."""
    if args.model:
        return args.model
    import shutil

    from transformers import LlamaConfig, LlamaForCausalLM

    src = Path(resolve_model("embedded:tiny"))
    out = root / "model"
    out.mkdir()
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("model") and f.name != "config.json":
            shutil.copy(f, out / f.name)
    torch.manual_seed(args.seed)
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                      intermediate_size=3 * args.hidden, num_hidden_layers=args.layers,
                      num_attention_heads=max(args.hidden // 64, 1),
                      num_key_value_heads=max(args.hidden // 128, 1),
                      max_position_embeddings=max(args.max_len, *args.attn_lengths),
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return str(out)


def bench_strategies(args: argparse.Namespace, root: Path) -> dict[str, dict]:
    lengths = length_mix(args.samples, args.max_len, args.seed)
    vocab = args.vocab if not args.model else 49152
    plans = {
        "naive": [[[i] for i in g] for g in plan_naive(len(lengths), args.batch_size,
                                                        seed=args.seed)],
        "sort": [[[i] for i in g] for g in plan_sorted(lengths, args.batch_size,
                                                        seed=args.seed)],
        "pack": [[row] for row in plan_packs(lengths, args.max_len, seed=args.seed)],
    }
    config = TrainingConfig(epochs=1, learning_rate=1e-4, warmup_ratio=0.0)
    warm = write_dir(root / "warm", lengths[:4], [[[0, 1, 2, 3]]], "pack", vocab,
                     args.max_len, 0)
    train(TrainingConfig(max_steps=2), args.model_path, warm, root / "warm-out")
    results = {}
    for strategy, groups in plans.items():
        data = write_dir(root / strategy, lengths, groups, strategy, vocab, args.max_len,
                         args.seed)
        stats = train(config, args.model_path, data, root / f"{strategy}-out")
        padded = sum(max(sum(lengths[i] for i in row) for row in g) * len(g) for g in groups)
        results[strategy] = {"steps": stats["steps"], "real_tokens": stats["tokens"],
                             "padded_tokens": padded, "seconds": stats["train_seconds"],
                             "cpu_seconds": stats["train_cpu_seconds"],
                             "tokens_per_second": stats["tokens_per_second"],
                             "tokens_per_cpu_second": stats["tokens"] / stats["train_cpu_seconds"]}
    return results


def _time_row(model: torch.nn.Module, length: int, samples: int, reps: int,
              seq_lens: bool) -> float:
    base = length // samples
    lens = [base] * (samples - 1) + [length - base * (samples - 1)]
    ids = torch.randint(3, model.config.vocab_size, (1, length))
    pos = torch.cat([torch.arange(n) for n in lens])[None]
    keep = torch.zeros(1, length, dtype=torch.bool)
    keep[0, -8:] = True
    kwargs = {"longalign_seq_lens": [lens]} if seq_lens else {}
    times = []
    for _ in range(reps + 2):
        start = time.process_time()
        out = model(input_ids=ids, position_ids=pos, logits_to_keep=keep, use_cache=False,
                    **kwargs).logits
        out.float().logsumexp(-1).sum().backward()
        times.append(time.process_time() - start)
        model.zero_grad(set_to_none=True)
    return statistics.median(times[2:])  # the first two are warm-ups


def bench_attention(args: argparse.Namespace) -> list[dict]:
    from transformers import AutoModelForCausalLM

    from longalign.training.attention import register

    where = resolve_model(args.model_path)
    ours = AutoModelForCausalLM.from_pretrained(where, attn_implementation=register())
    dense = AutoModelForCausalLM.from_pretrained(where, attn_implementation="sdpa")
    for m in (ours, dense):
        m.config.use_cache = False
        m.train()
    rows = []
    for length in args.attn_lengths:
        t_ours = _time_row(ours, length, args.attn_samples, args.reps, True)
        t_dense = _time_row(dense, length, args.attn_samples, args.reps, False)
        rows.append({"length": length, "per_sample_sdpa_tps": length / t_ours,
                     "dense_mask_sdpa_tps": length / t_dense, "ratio": t_dense / t_ours})
    return rows


def report_strategies(args: argparse.Namespace, res: dict[str, dict]) -> None:
    print(f"\n{args.samples} samples, LongAlign-like mix scaled to max_len {args.max_len}, "
          f"micro-batch {args.batch_size} samples for naive/sort, one epoch each")
    print(f"{'strategy':8} {'steps':>6} {'real tok':>9} {'padded':>9} {'wall s':>7} "
          f"{'cpu s':>7} {'real tok/s':>11} {'vs naive':>9} {'real tok/cpu-s':>15} "
          f"{'vs naive':>9}")
    base = res["naive"]["tokens_per_second"]
    base_cpu = res["naive"]["tokens_per_cpu_second"]
    for name, r in res.items():
        print(f"{name:8} {r['steps']:6d} {r['real_tokens']:9d} {r['padded_tokens']:9d} "
              f"{r['seconds']:7.2f} {r['cpu_seconds']:7.2f} {r['tokens_per_second']:11.0f} "
              f"{r['tokens_per_second'] / base:8.2f}x {r['tokens_per_cpu_second']:15.0f} "
              f"{r['tokens_per_cpu_second'] / base_cpu:8.2f}x")
    print(f"pack / naive real-token throughput: "
          f"{res['pack']['tokens_per_second'] / base:.2f}x wall, "
          f"{res['pack']['tokens_per_cpu_second'] / base_cpu:.2f}x CPU time (target >= 3x)")


def report_attention(args: argparse.Namespace, rows: list[dict]) -> None:
    print(f"\nattention, one packed row of {args.attn_samples} samples, fwd+bwd, "
          "tokens per CPU second")
    print(f"{'length':>7} {'per-sample sdpa tok/s':>22} {'dense-mask sdpa tok/s':>22} "
          f"{'ratio':>6}")
    for r in rows:
        print(f"{r['length']:7d} {r['per_sample_sdpa_tps']:22.0f} "
              f"{r['dense_mask_sdpa_tps']:22.0f} {r['ratio']:5.2f}x")


def bench_balance(args: argparse.Namespace) -> dict[tuple[int, bool], list[float]]:
    """Per-step max/mean rank cost for shuffled and balanced dealing of packed 64k rows."""
    rng = np.random.default_rng(args.seed)
    lengths = np.concatenate([rng.integers(8193, 65537, 10_000), rng.integers(20, 8193, 60_000)])
    rows = plan_packs(lengths, 65536, seed=args.seed)
    batches = [MicroBatch(i, rows=[(0, 0, i)], seq_lens=[lengths[r].tolist()],
                          n_targets=[[1] * len(r)]) for i, r in enumerate(rows)]
    out = {}
    for accumulation in (1, 4):
        for balance in (False, True):
            plans = plan_training(batches, "pack", seed=args.seed, epochs=1, max_steps=None,
                                  world_size=8, accumulation=accumulation, balance=balance,
                                  linear=DEFAULT_LINEAR)
            out[(accumulation, balance)] = [p.rank_cost_ratio for p in plans]
    return out


def report_balance(res: dict[tuple[int, bool], list[float]]) -> None:
    print("\nrank balance, LongAlign mix packed into 64k rows, 8 ranks, cost n^2 + "
          f"{DEFAULT_LINEAR:.0f} n per sample (Llama-3.1-8B), per-step max/mean rank cost:")
    print(f"{'accumulation':>12} {'dealing':>9} {'steps':>6} {'mean':>7} {'p90':>7} {'max':>7}")
    for (accumulation, balance), ratios in res.items():
        print(f"{accumulation:12d} {'balanced' if balance else 'shuffled':>9} {len(ratios):6d} "
              f"{statistics.mean(ratios):7.3f} {float(np.percentile(ratios, 90)):7.3f} "
              f"{max(ratios):7.3f}")
    for accumulation in (1, 4):
        a, b = res[(accumulation, False)], res[(accumulation, True)]
        print(f"accumulation {accumulation}: step time (slowest rank) shuffled / balanced "
              f"about {statistics.mean(a) / statistics.mean(b):.3f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="a model spec instead of the built tiny Llama")
    p.add_argument("--hidden", type=int, default=384, help="width of the built tiny Llama")
    p.add_argument("--layers", type=int, default=2, help="layers of the built tiny Llama")
    p.add_argument("--vocab", type=int, default=4096,
                   help="vocabulary of the built tiny Llama: small next to its width, as in real "
                        "models, so the LM head does not dominate")
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--max-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8,
                   help="samples per micro-batch (naive/sort)")
    p.add_argument("--attn-lengths", default="2048,4096")
    p.add_argument("--attn-samples", type=int, default=4, help="samples per packed row")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-strategies", action="store_true")
    p.add_argument("--balance-only", action="store_true", help="only part 3 (no model, seconds)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: CPU time is a steady measure on a shared machine)")
    args = p.parse_args()
    args.attn_lengths = [int(x) for x in args.attn_lengths.split(",") if x]
    torch.set_num_threads(args.threads)
    if args.balance_only:
        report_balance(bench_balance(args))
        return
    with tempfile.TemporaryDirectory() as tmp:
        args.model_path = build_model(args, Path(tmp))
        what = args.model or f"tiny Llama, hidden {args.hidden}, {args.layers} layers"
        print(f"threads {torch.get_num_threads()}, model {what}")
        if not args.skip_strategies:
            report_strategies(args, bench_strategies(args, Path(tmp)))
        report_attention(args, bench_attention(args))
    report_balance(bench_balance(args))


if __name__ == "__main__":
    main()
