"""stats.json, result.json, summary.md and loss.png of the training stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longalign.io import markdown_table
from longalign.results import StageResult
from longalign.training.loop import StepResult
from longalign.training.metrics import loss_by_length, peak_memory_gb


def build_stats(results: list[StepResult], samples: list[tuple[int, float]],
                info: dict[str, Any]) -> dict[str, Any]:
    """The stage's stats: per-step series, totals, per-length losses and flat KFP metrics."""
    losses = [r.loss for r in results]
    tokens = sum(r.tokens for r in results)
    seconds = sum(r.seconds for r in results)
    tps = tokens / seconds if seconds > 0 else 0.0
    stats = dict(info)
    stats.update({
        "steps": len(results),
        "loss": losses,
        "lr": [r.lr for r in results],
        "step_tokens": [r.tokens for r in results],
        "step_seconds": [round(r.seconds, 4) for r in results],
        "epoch_of_step": [r.epoch for r in results],
        "final_loss": losses[-1] if losses else None,
        "mean_loss": sum(losses) / len(losses) if losses else None,
        "tokens": tokens,
        "train_seconds": seconds,
        "train_cpu_seconds": sum(r.cpu_seconds for r in results),
        "tokens_per_second": tps,
        "loss_by_length": loss_by_length(samples),
        "grad_norm": [r.grad_norm for r in results],
        "rank_cost_ratio": [r.rank_cost_ratio for r in results],
    })
    flops = sum(r.flops for r in results)
    world = max(int(info.get("world_size") or 1), 1)
    tflops = flops / seconds / world / 1e12 if seconds > 0 else 0.0
    peak = info.get("peak_tflops")
    stats.update({
        "step_flops": [r.flops for r in results],
        "tflops_per_device": tflops,
        "mfu": tflops / peak if peak else None,
        "peak_memory_gb": peak_memory_gb(),
    })
    metrics = {
        "final_loss": stats["final_loss"], "mean_loss": stats["mean_loss"],
        "first_loss": losses[0] if losses else None, "steps": len(results), "tokens": tokens,
        "tokens_per_second": tps, "train_seconds": seconds,
        "seconds_per_step": seconds / len(results) if results else None,
        "tflops_per_device": tflops, "mfu": stats["mfu"],
        "peak_memory_gb": stats["peak_memory_gb"],
        "global_batch": info.get("global_batch"),
        "gradient_accumulation_steps": info.get("gradient_accumulation_steps"),
        "max_grad_norm": info.get("max_grad_norm"),
        "rank_cost_ratio_mean": _mean([r.rank_cost_ratio for r in results]),
        "rank_cost_ratio_max": max((r.rank_cost_ratio for r in results), default=None),
        "grad_norm_mean": _mean([r.grad_norm for r in results if r.grad_norm is not None]),
        "grad_norm_max": max((r.grad_norm for r in results if r.grad_norm is not None),
                             default=None),
        "clipped_steps": (sum(1 for r in results if r.grad_norm is not None
                              and r.grad_norm > info["max_grad_norm"])
                          if info.get("max_grad_norm") else None),
    }
    for bucket, v in stats["loss_by_length"].items():
        metrics[f"loss_length_{bucket}"] = v["mean_loss"]
    stats["metrics"] = {k: v for k, v in metrics.items() if v is not None}
    return stats


def write_summary(path: Path, stats: dict[str, Any]) -> None:
    """A short Markdown report for the KFP UI."""
    lines = [
        "# Training",
        "",
        f"Model `{stats['model']}` on {stats['samples']} samples in {stats['micro_batches']} "
        f"micro-batches (strategy `{stats['strategy']}`), loss `{stats['loss_mode']}`, "
        f"{stats['world_size']} process(es), {stats['steps']} optimizer steps.",
        "",
        markdown_table([
            ("first loss", _fmt(stats["loss"][0] if stats["loss"] else None)),
            ("final loss", _fmt(stats["final_loss"])),
            ("mean loss", _fmt(stats["mean_loss"])),
            ("real tokens", stats["tokens"]),
            ("tokens / s (real tokens)", f"{stats['tokens_per_second']:.1f}"),
            ("TFLOP/s per device", f"{stats.get('tflops_per_device', 0.0):.3f}"),
            ("MFU", "-" if stats.get("mfu") is None else f"{stats['mfu']:.1%}"),
            ("peak memory GB", f"{stats.get('peak_memory_gb', 0.0):.2f}"),
            ("seconds", f"{stats['train_seconds']:.1f}"),
            ("global batch", f"{stats.get('global_batch')} {stats.get('global_batch_unit', '')} "
                             f"(accumulation {stats.get('gradient_accumulation_steps')})"),
            ("max gradient norm (before clipping)", _fmt(stats["metrics"].get("grad_norm_max"))),
            ("rank cost max/mean (mean over steps)",
             _fmt(stats["metrics"].get("rank_cost_ratio_mean"))),
        ], ("", "value")),
    ]
    if stats["loss_by_length"]:
        lines += ["", "Mean token loss per sample, by sample length (as trained, all epochs):", "",
                  markdown_table([(k, v["samples"], _fmt(v["mean_loss"]))
                                  for k, v in stats["loss_by_length"].items()],
                                 ("tokens", "samples", "mean loss"))]
    if stats.get("warnings"):
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in stats["warnings"]]
    path.write_text("\n".join(lines) + "\n")


def plot_loss(path: Path, stats: dict[str, Any]) -> None:
    """Loss per optimizer step (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    steps = list(range(1, len(stats["loss"]) + 1))
    ax.plot(steps, stats["loss"], marker="o" if len(steps) < 50 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"loss ({stats['loss_mode']})")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(out: Path, result: StageResult) -> None:
    """The stage's files: stats.json and result.json, summary.md and loss.png."""
    result.write(out)
    write_summary(out / "summary.md", result.stats)
    plot_loss(out / "loss.png", result.stats)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"
