"""Context extension on a tiny model: a 512-token model continued-pretrained to 2,048 tokens with a
larger RoPE base, its held-out loss at 2k printed side by side with the base model's.

Steps, all in one process with the project's own stages:
1. sourcing: Python's standard library as corpus (documents of --min-tokens or more); a seeded
   --held-out of them are set aside, each cut to its first 2,048 tokens for evaluation;
2. the base model: a tiny Llama (SmolLM2 tokenizer) with a 512-position window and RoPE theta
   10,000, trained from scratch on the training documents packed as text into 512-token rows
   (--base-epochs epochs), so it is a real (if small) 512-token language model;
3. extension: the same documents packed into 2,048-token rows (format text, long documents split)
   and trained with the pretrain objective (token-averaged loss, document masking), rope_theta
   --theta and max_position_embeddings 2,048, for --steps steps; separate runs of a quarter, half
   and all of the steps show the held-out loss as training proceeds;
4. evaluation: token-mean cross-entropy of the held-out documents (2,048 tokens each) for the base
   model, the base model with only its RoPE base changed (no training), and each extended model;
   the base model also on the first 512 tokens (its own window) for reference.

    python bench/extend_bench.py                 # a few minutes on 2 cores
    python bench/extend_bench.py --steps 120 --theta 160000

Prints a table and one JSON line; ratios are to the base model's loss at 2k in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longalign.config import PackingConfig, SourcingConfig, TrainingConfig  # noqa: E402
from longalign.models import load_tokenizer, resolve_model, tiny_config  # noqa: E402
from longalign.packing import pack  # noqa: E402
from longalign.sourcing import source  # noqa: E402

BASE_LEN, LONG_LEN, BASE_THETA = 512, 2048, 10000.0
T0 = time.perf_counter()


def note(what: str) -> None:
    print(f"[{time.perf_counter() - T0:6.0f} s] {what}", file=sys.stderr, flush=True)


def build_base(directory: Path, seed: int) -> Path:
    """A randomly initialised tiny Llama with a 512-token window (SmolLM2's tokenizer)."""
    from transformers import LlamaForCausalLM

    tokenizer = load_tokenizer("embedded:tiny")
    cfg = tiny_config(len(tokenizer))
    cfg.max_position_embeddings = BASE_LEN
    cfg.rope_parameters = {"rope_type": "default", "rope_theta": BASE_THETA}
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def split_corpus(corpus: Path, train_dir: Path, held_out: int, seed: int) -> list[str]:
    table = pa.concat_tables([pq.read_table(p) for p in sorted(corpus.glob("documents-*.parquet"))])
    order = np.random.default_rng(seed).permutation(table.num_rows)
    evaluation = table.take(order[:held_out])
    train_dir.mkdir(parents=True)
    pq.write_table(table.take(order[held_out:]), train_dir / "documents-00000.parquet")
    return evaluation.column("text").to_pylist()


def held_out_loss(model_dir: Path | str, docs: list[torch.Tensor], length: int) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in docs:
            ids = ids[:length]
            logits = model(input_ids=ids[None], use_cache=False).logits[0, :-1]
            total += float(F.cross_entropy(logits.double(), ids[1:], reduction="sum"))
            count += len(ids) - 1
    return total / count


def with_theta(model_dir: Path, out: Path, theta: float) -> Path:
    """The base model with only its RoPE base and window changed (no training)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.config.rope_parameters = {**model.config.rope_parameters, "rope_theta": theta}
    model.config.max_position_embeddings = LONG_LEN
    model.save_pretrained(out, safe_serialization=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--documents", type=int, default=80, help="documents to source")
    ap.add_argument("--min-tokens", type=int, default=2100)
    ap.add_argument("--held-out", type=int, default=8)
    ap.add_argument("--base-epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=80, help="extension optimizer steps")
    ap.add_argument("--theta", type=float, default=1e5, help="RoPE base of the extended model")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    resolve_model("embedded:tiny")  # the tokenizer comes from the embedded model's folder
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source(SourcingConfig(sources=["stdlib:"], min_tokens=args.min_tokens, max_tokens=8192,
                              split_long=False, max_documents=args.documents, seed=args.seed),
               "embedded:tiny", tmp / "corpus")
        note("sourced")
        texts = split_corpus(tmp / "corpus", tmp / "train", args.held_out, args.seed)
        tokenizer = load_tokenizer("embedded:tiny")
        docs = [torch.tensor(tokenizer(t)["input_ids"][:LONG_LEN]) for t in texts]
        docs = [d for d in docs if len(d) == LONG_LEN]
        base = build_base(tmp / "init", args.seed)
        common = dict(objective="pretrain", warmup_ratio=0.05, weight_decay=0.1, bf16=False,
                      seed=args.seed)
        from longalign.training import train

        pack(PackingConfig(format="text", max_len=BASE_LEN), str(base), tmp / "train", tmp / "p512")
        note("packed at 512")
        train(TrainingConfig(learning_rate=args.lr, epochs=args.base_epochs, **common),
              str(base), tmp / "p512", tmp / "base")
        base = tmp / "base"
        note("base trained")
        pack(PackingConfig(format="text", max_len=LONG_LEN), str(base), tmp / "train", tmp / "p2k")
        rows = []
        base_2k = held_out_loss(base, docs, LONG_LEN)
        rows.append(("base (theta 1e4, 512 window)", 0, held_out_loss(base, docs, BASE_LEN), base_2k))
        rows.append((f"base, theta {args.theta:g}, no training", 0, None,
                     held_out_loss(with_theta(base, tmp / "theta-only", args.theta), docs, LONG_LEN)))
        saved = None
        for steps in sorted({max(1, args.steps // 4), max(1, args.steps // 2), args.steps}):
            out = tmp / f"extended-{steps}"
            cfg = TrainingConfig(learning_rate=args.lr / 2, max_steps=steps, epochs=100,
                                 rope_theta=args.theta, max_position_embeddings=LONG_LEN, **common)
            stats = train(cfg, str(base), tmp / "p2k", out)
            note(f"extended {steps} steps")
            saved = json.loads((out / "config.json").read_text())
            rows.append((f"extended (theta {args.theta:g}, 2k window)", stats["steps"], None,
                         held_out_loss(out, docs, LONG_LEN)))
    print(f"\nheld-out: {len(docs)} documents of {LONG_LEN} tokens; base trained at {BASE_LEN}; "
          f"{time.perf_counter() - started:.0f} s in all")
    print(f"saved config of the extended model: rope_theta "
          f"{saved['rope_parameters']['rope_theta']:g}, max_position_embeddings "
          f"{saved['max_position_embeddings']} (base: {BASE_THETA:g}, {BASE_LEN})")
    print(f"{'model':44} {'steps':>5} {'loss@512':>9} {'loss@2k':>8} {'ppl@2k':>9} {'vs base@2k':>10}")
    for name, steps, short, long in rows:
        s = f"{short:9.3f}" if short is not None else f"{'':9}"
        print(f"{name:44} {steps:5d} {s} {long:8.3f} {math.exp(long):9.1f} {long / base_2k:10.3f}")
    print(json.dumps({"held_out_documents": len(docs), "theta": args.theta,
                      "saved_rope_theta": saved["rope_parameters"]["rope_theta"],
                      "saved_max_position_embeddings": saved["max_position_embeddings"],
                      "rows": [{"model": n, "steps": st, "loss_512": s, "loss_2k": lo}
                               for n, st, s, lo in rows]}))


if __name__ == "__main__":
    main()
