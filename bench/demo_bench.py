"""Where the time and memory of the default run (`make demo`) go: each stage's wall time and peak
memory, measured on the same library functions the KFP components call, one process per stage.

    python bench/demo_bench.py                       # the default preset, all five stages
    python bench/demo_bench.py --compare gradient_checkpointing=false
        # ...then the training stage again with that override, side by side (time and memory ratio)

Each stage runs as `longalign <stage>` in its own process (scoring with the preset's base model
too, as the pipeline's scoring task does); its peak resident memory comes from
wait4's rusage of that process, so it is the whole process's high-water mark (weights, optimizer,
activations, allocator caches), which is what a pod's memory limit sees. Wall times depend on the
machine's load (shared machines: compare ratios inside one run); peak memory does not.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = [
    ("sourcing", ["source", "-o", "{work}/corpus"]),
    ("generation", ["generate", "--corpus", "{work}/corpus", "-o", "{work}/chats"]),
    ("packing", ["pack", "--chats", "{work}/chats", "-o", "{work}/packed"]),
    ("training", ["train", "--packed", "{work}/packed", "-o", "{work}/model"]),
    # with the base model too, as the pipeline's scoring task does
    ("scoring", ["score", "--model", "{work}/model", "--corpus", "{work}/corpus", "-o", "{work}/scores",
                 "--base-model", "{base}"]),
]


def run_stage(argv: list[str], log: Path) -> tuple[float, float, int]:
    """(seconds, peak resident GB, exit code) of one `longalign` process."""
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "longalign.cli", *argv], stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.monotonic() - start, usage.ru_maxrss / 1024 ** 2, proc.returncode  # KiB -> GiB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--work", type=Path, help="keep the outputs here (default: a temporary folder)")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="a --set override for every stage, e.g. training.max_steps=2")
    parser.add_argument("--compare", action="append", default=[],
                        help="rerun training with this training override (KEY=VALUE) and print the ratios")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="demo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    from longalign.config import load_run_config

    base = load_run_config(args.preset, overrides=args.sets).base_model
    common = ["--preset", args.preset] + [x for s in args.sets for x in ("--set", s)]
    print(f"demo bench: preset {args.preset}, {os.cpu_count()} CPUs, load average at start "
          f"{os.getloadavg()[0]:.1f}; outputs in {work}")
    print(f"{'stage':<12}{'seconds':>9}{'peak GB':>9}")
    rows, total = {}, 0.0
    for stage, argv in STAGES:
        argv = [a.format(work=work, base=base) for a in argv] + common + ["--overwrite"]
        seconds, peak, code = run_stage(argv, work / f"{stage}.log")
        if code != 0:
            print(f"{stage} failed (exit {code}); see {work / (stage + '.log')}")
            return 1
        rows[stage] = (seconds, peak)
        total += seconds
        print(f"{stage:<12}{seconds:9.1f}{peak:9.2f}", flush=True)
    print(f"{'total':<12}{total:9.1f}{max(p for _, p in rows.values()):9.2f}   "
          f"(load average at end {os.getloadavg()[0]:.1f})")
    base_seconds, base_peak = rows["training"]
    for override in args.compare:
        argv = [a.format(work=work) for a in STAGES[3][1]]
        argv[-1] = f"{work}/model-compare"
        seconds, peak, code = run_stage(argv + common + ["--overwrite", "--set", f"training.{override}"],
                                        work / "training-compare.log")
        if code != 0:
            print(f"training with {override} failed (exit {code})")
            return 1
        print(f"training with {override}: {seconds:.1f} s, peak {peak:.2f} GB; this run's default / that: "
              f"time x{base_seconds / seconds:.2f}, peak memory x{base_peak / peak:.2f}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
