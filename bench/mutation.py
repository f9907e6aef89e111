"""Mutation testing of the core modules (``make mutation``; not part of ``make test`` or CI).

Each group below names the modules (and optionally only some of their functions) that carry a
core rule, and the test files that check that rule. mutmut 3 (the ``mutation`` extra) is run once
per group in a scratch copy of the repository (``.mutation/<group>``) whose pyproject.toml holds
that group's mutmut settings: only the group's modules are mutated, only its tests are collected,
and for each mutant mutmut runs just the tests that executed the mutated function. A mutant is
*killed* when one of them fails (or it times out), *survived* when all pass. The score of a group
is killed / (killed + survived); the report (docs/mutation.md by default) gives the score per
group with the date and commit, and every survivor with its diff.

    python bench/mutation.py                    # every group, report to docs/mutation.md
    python bench/mutation.py --group io         # one group (the report keeps the others' rows)
    python bench/mutation.py --jobs 1           # one test process at a time
    python bench/mutation.py --groups-at-once 2 # two groups at a time (make mutation: their waits
                                                # and serial phases overlap)

Mutants are run in forked children of one pytest process (mutmut's default), ``--jobs`` at once
(default 2). Tests that start subprocesses (torchrun, the CLI) run the unmutated installed code
there, so the groups name in-process tests only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / ".mutation"
REPORT = ROOT / "docs" / "mutation.md"
KILLED = ("killed", "timeout", "segfault")  # segfault: mutmut's name for a child killed by a signal


@dataclass(frozen=True)
class Group:
    name: str
    what: str
    sources: tuple[str, ...]
    tests: tuple[str, ...]
    functions: tuple[str, ...] = ()  # mutant name globs (module.function); empty: every function
    extra: tuple[str, ...] = field(default=())  # further files the tests read (copied along)


GROUPS = (
    Group("packing", "packing plan and encode", ("longalign/packing/plan.py", "longalign/packing/encode.py",
                                                 "longalign/packing/offsets.py"),
          ("tests/packing/test_packing_plan.py", "tests/packing/test_packing_encode.py",
           "tests/packing/test_packing_templates.py", "tests/packing/test_packing_properties.py",
           "tests/packing/test_packing_offsets.py")),
    Group("loss", "training loss (LongAlign's weighted packed loss)", ("longalign/training/loss.py",),
          ("tests/training/test_training_loss.py",)),
    Group("schedule-attention", "learning-rate schedule and packed attention",
          ("longalign/training/schedule.py", "longalign/training/attention.py"),
          ("tests/training/test_training_schedule.py", "tests/training/test_training_attention.py")),
    Group("io", "atomic outputs and file helpers", ("longalign/io.py",), ("tests/test_io.py",)),
    Group("endpoints", "endpoint client: retry, journal, redaction, failure rule",
          ("longalign/endpoints/client.py", "longalign/endpoints/retry.py", "longalign/endpoints/journal.py",
           "longalign/endpoints/failures.py"),
          ("tests/endpoints/test_endpoints_client.py", "tests/endpoints/test_endpoints_retry.py",
           "tests/endpoints/test_endpoints_client_batches.py", "tests/endpoints/test_endpoints_journal.py",
           "tests/endpoints/test_endpoints_failures.py")),
    Group("judge", "LongBench-Chat judge: rating parse and means", ("longalign/scoring/judge.py",),
          ("tests/scoring/test_scoring_longbench.py",)),
    Group("dedup", "sourcing: exact and near-duplicate removal",
          ("longalign/sourcing/neardup.py", "longalign/sourcing/stage.py"),
          # the tests that check exact and near-duplicate removal (the other sourcing tests, and the
          # stage's near-duplicate count, run the same code on the way to checking something else,
          # at 7 to 25 s each)
          ("tests/sourcing/test_sourcing_filters.py::test_word_hashes_are_case_insensitive_and_split_on_punctuation",
           "tests/sourcing/test_sourcing_filters.py::test_word_characters_are_ascii_letters_digits_underscore_and_non_ascii",
           "tests/sourcing/test_sourcing_filters.py::test_long_documents_are_signed_in_chunks_like_in_one_batch",
           "tests/sourcing/test_sourcing_filters.py::test_shingles_are_distinct_per_word_sequence_and_sampled_at_the_given_rate",
           "tests/sourcing/test_sourcing_filters.py::test_a_signature_computed_by_a_map_worker_decides_like_the_text",
           "tests/sourcing/test_sourcing_filters.py::test_minhash_lsh_finds_edited_copies_only",
           "tests/sourcing/test_sourcing_stage.py::test_bad_inputs_are_counted_and_the_run_continues"),
          functions=("longalign.sourcing.neardup.*", "longalign.sourcing.stage.xǁ_Runǁ_new_digest__mutmut_*")),
    Group("launcher", "training launcher: job status and what a job is doing",
          ("longalign/training/launcher/jobs.py", "longalign/training/launcher/watch.py"),
          ("tests/training/test_training_launcher_watch.py", "tests/training/test_training_launcher_api.py"),
          functions=("longalign.training.launcher.jobs.x_job_status__mutmut_*",
                     "longalign.training.launcher.watch.*")),
)


def _toml_list(items) -> str:
    return "[" + ", ".join(json.dumps(str(i)) for i in items) + "]"


def prepare(group: Group) -> Path:
    """A fresh scratch copy for ``group`` with its mutmut settings."""
    work = SCRATCH / group.name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "longalign", work / "longalign", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    shutil.copy2(ROOT / "setup.cfg", work / "setup.cfg")  # the pytest settings
    for extra in group.extra:
        target = work / extra
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (ROOT / extra).is_dir() else shutil.copy2)(ROOT / extra, target)
    (work / "pyproject.toml").write_text(
        "[tool.mutmut]\n"
        'source_paths = ["longalign"]\n'
        f"only_mutate = {_toml_list(group.sources)}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(group.tests)}\n"
        'pytest_add_cli_args = ["-p", "no:xdist", "-p", "no:cacheprovider"]\n'
        # a mutant whose tests use over (their measured time + 5 s) x 6 CPU seconds counts as a
        # timeout (killed); see MUTMUT for the wall-clock limit (x 12). Tests that wait in a loop
        # have deadlines of their own (kube_fake.make: 30 s), so a mutant that breaks them fails.
        "timeout_multiplier = 3.0\n"
        "timeout_constant = 5.0\n"
        "use_git_change_detection = false\n")
    return work


def results(work: Path, env: dict) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work, env=env,
                         capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            found[name] = status
    return found


def selected(group: Group, name: str) -> bool:
    import fnmatch

    return not group.functions or any(fnmatch.fnmatch(name, p) for p in group.functions)


SHOW = """
import json, sys
from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant
names = json.load(sys.stdin)
json.dump({n: get_diff_for_mutant(n, path=find_mutant(n).path) for n in names}, sys.stdout)
"""


def diffs_of(work: Path, env: dict, names: list[str]) -> dict[str, str]:
    """The changed lines of each mutant (what ``mutmut show`` prints), in one process for all."""
    done = subprocess.run([sys.executable, "-c", SHOW], cwd=work, env=env, input=json.dumps(names),
                          capture_output=True, text=True, check=True)
    return {name: "\n".join(ln for ln in diff.splitlines()
                            if ln.startswith(("+", "-")) and not ln.startswith(("+++", "---")))
            for name, diff in json.loads(done.stdout).items()}


def run_group(group: Group, jobs: int, log, minutes: float | None = None) -> dict:
    work = prepare(group)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.monotonic()
    args = [sys.executable, "-c", MUTMUT, "run", "--max-children", str(jobs), *group.functions]
    with open(work / "mutmut-run.log", "w") as out:
        # its own session: at the budget, mutmut and its forked test processes are stopped together
        proc = subprocess.Popen(args, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        stopped = _wait(proc, minutes * 60 if minutes else None)
    seconds = time.monotonic() - start
    statuses = {n: s for n, s in results(work, env).items() if selected(group, n)}
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    killed = sum(counts.get(s, 0) for s in KILLED)
    survived = counts.get("survived", 0)
    row = {"group": group.name, "what": group.what, "modules": list(group.sources), "tests": list(group.tests),
           "mutants": len(statuses), "killed": killed, "survived": survived, "counts": counts,
           "score": round(killed / (killed + survived), 4) if killed + survived else None,
           "seconds": round(seconds), "exit_code": proc.returncode, "stopped_at_minutes": minutes if stopped else None,
           "survivors": diffs_of(work, env, [n for n, s in sorted(statuses.items()) if s == "survived"]),
           "other": {n: s for n, s in sorted(statuses.items()) if s not in KILLED + ("survived", "not checked")}}
    if not stopped and (proc.returncode != 0 or not statuses):
        row["error"] = f"mutmut exited {proc.returncode}; see .mutation/{group.name}/mutmut-run.log"
    score = "-" if row["score"] is None else f"{row['score']:.1%}"
    log(f"{group.name}: {row['mutants']} mutants, {killed} killed, {survived} survived, score {score} "
        f"in {row['seconds']} s" + (f" (stopped at the {minutes} min budget)" if stopped else "")
        + (f" ({row['error']})" if "error" in row else ""))
    for name, diff in row["survivors"].items():
        log(f"  survived: {name}\n" + "\n".join("    " + ln for ln in diff.splitlines()))
    other: dict[tuple[str, str], int] = {}
    for name, status in row["other"].items():
        function = name.rsplit("__mutmut_", 1)[0]
        other[status, function] = other.get((status, function), 0) + 1
    for (status, function), n in sorted(other.items()):
        log(f"  {status}: {function} ({n} mutants)")
    return row


# mutmut 3.8.1 forks each mutant's test run from its own process (which ran the tests once for
# coverage, so imports are warm and the tests run fastest first) and stops it at a CPU-time limit
# (setrlimit: robust) and at a wall-clock limit of half of it (not robust: on a shared machine a
# niced run can get a few percent of a core, and a timeout is counted as a kill). This runs mutmut with the wall-clock limit WALL_FACTOR times
# longer: a mutant that spins is still stopped by the CPU limit, one that sleeps in a loop by its
# test's own deadline, and the wall limit is only the last resort.
WALL_FACTOR = 4
MUTMUT = f"""
import sys
import mutmut.workers.isolation as isolation
_register = isolation.register_timeout
def _longer(pid, timeout_s):
    return _register(pid, timeout_s * {WALL_FACTOR})
isolation.register_timeout = _longer
from mutmut.__main__ import cli
sys.argv[0] = "mutmut"
cli()
"""


def _wait(proc: subprocess.Popen, budget: float | None) -> bool:
    """Wait for mutmut; at ``budget`` seconds stop its session (every finished mutant's result is
    already saved; the rest stay "not checked"). Returns whether it was stopped."""
    stopped = threading.Event()

    def stop() -> None:
        stopped.set()
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + grace
            while proc.returncode is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if proc.returncode is not None:
                return

    timer = threading.Timer(budget, stop) if budget else None
    if timer:
        timer.daemon = True
        timer.start()
    proc.wait()
    if timer:
        timer.cancel()
    return stopped.is_set()


def _busy_cpu() -> float:
    """CPU seconds the whole machine has been busy (every process: user, nice, system, interrupts)
    since boot, from /proc/stat. A process's own accounting misses mutmut's forked test runs (its
    fork server is not waited for), so the run is measured on the machine instead."""
    fields = open("/proc/stat").readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "longalign", "tests"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class LoadSampler:
    """The machine's 1-minute load average, sampled every ``every`` seconds while a run lasts (what
    else competed for the cores; the run's own test processes count too)."""

    def __init__(self, every: float = 15.0):
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])


TESTING = ROOT / "docs" / "testing.md"


def dispositioned(text: str) -> set[tuple[str, int]]:
    """(function, number) of every mutant named in ``text`` (docs/testing.md), e.g.
    `` `plan.x_plan_sorted__mutmut_6/8/10..12` `` -> (plan.x_plan_sorted, 6), (…, 8), (…, 10..12)."""
    named = set()
    for function, numbers in re.findall(r"([\w.ǁ]+)__mutmut_([\d/.]*\d)", text):
        for part in numbers.split("/"):
            low, _, high = part.partition("..")
            for n in range(int(low), int(high or low) + 1):
                named.add((function, n))
    return named


def undispositioned(rows: list[dict], text: str) -> list[str]:
    """Survivors that docs/testing.md does not name (by their function, possibly shortened to its
    module's last part, and number)."""
    named = dispositioned(text)
    missing = []
    for r in rows:
        for name in r["survivors"]:
            function, _, n = name.rpartition("__mutmut_")
            if not any(function == f or function.endswith("." + f) for f, k in named if k == int(n)):
                missing.append(name)
    return missing


def run_summary(run: dict) -> list[str]:
    """The paragraph about the last complete run (every group, one after the other)."""
    loads = run["load"]
    return ["", f"Last complete run: all {len(run['groups'])} groups, {run['started']} to {run['finished']} UTC, "
                f"commit {run['commit']}: **{run['wall_seconds'] / 60:.1f} min wall** "
                f"(the machine's CPUs were busy {run.get('busy_cpu_seconds', 0) / 60:.1f} CPU min meanwhile, every "
                f"process counted) on {run['cores']} cores, {run.get('groups_at_once', 1)} "
                f"group(s) at a time with {run['jobs']} test processes each, niceness {run['nice']}. Load average (1 min, sampled every {run['load_every']:.0f} s): "
                f"mean {loads['mean']:.2f}, max {loads['max']:.2f}; at the start {loads['start']}, "
                f"at the end {loads['end']} (1, 5, 15 min)."]


def write_report(rows: list[dict], path: Path, jobs: int, run: dict | None = None, at_once: int = 1) -> None:
    """docs/mutation.md: a table per group and the survivors; the machine-readable rows are kept in
    a JSON block at the end so that a run of one group updates only its own row. ``run``: the
    timing of the last complete run (kept across runs of single groups)."""
    lines = ["# Mutation testing report", "",
             "Written by `make mutation` (bench/mutation.py, mutmut). Score = killed / (killed + survived)",
             "over the mutants of the listed modules, each run only against the tests named for its group.",
             "Survivors and why each one is acceptable: docs/testing.md.", "",
             "Seconds: wall time of the group (copying, mutant generation, mutmut's traced and clean runs",
             "of the tests, then every mutant), with whatever ran beside it (`--groups-at-once`).", "",
             "| group | modules | mutants | killed | survived | other | score | seconds | commit | date |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        other = sum(v for k, v in r["counts"].items() if k not in KILLED + ("survived",))
        score = "-" if r["score"] is None else f"{r['score']:.1%}"
        modules = ", ".join(m.removeprefix("longalign/") for m in r["modules"])
        if r.get("stopped_at_minutes"):
            score += f" (partial: {r['counts'].get('not checked', 0)} not checked)"
        lines.append(f"| {r['group']} | {modules} | {r['mutants']} | {r['killed']} | {r['survived']} | {other} | "
                     f"{score} | {r['seconds']} | {r['commit']} | {r['date']} |")
    killed = sum(r["killed"] for r in rows)
    survived = sum(r["survived"] for r in rows)
    if killed + survived:
        lines += ["", f"Overall: {killed} killed, {survived} survived, score {killed / (killed + survived):.1%} "
                      f"({len(rows)} of {len(GROUPS)} groups; {at_once} group(s) at a time, {jobs} test process(es) each)."]
    lines += ["", f"The groups' wall times add up to {sum(r['seconds'] for r in rows) / 60:.1f} min (groups run "
                  "at the same time overlap)."]
    if run:
        lines += run_summary(run)
        newer = [r["group"] for r in rows if r.get("run_started", "") != run["started"]]
        if newer:
            lines += ["", f"Rows from a later run of single groups (not the complete run above): {', '.join(newer)}."]
    if TESTING.exists():
        open_ = undispositioned(rows, TESTING.read_text(encoding="utf-8"))
        lines += ["", f"Survivors not named in docs/testing.md: {len(open_)}" + (
            " (" + ", ".join(f"`{n}`" for n in open_) + ")" if open_ else ".")]
    missing = [g.name for g in GROUPS if g.name not in {r["group"] for r in rows}]
    if missing:
        lines += ["", f"Not measured yet: {', '.join(missing)}."]
    for r in rows:
        if r.get("error"):
            lines += ["", f"**{r['group']}**: {r['error']}"]
        if r["survivors"]:
            lines += ["", f"## Survivors: {r['group']}", ""]
            for name, diff in r["survivors"].items():
                lines += [f"`{name}`", "", "```diff", diff, "```", ""]
        if r["other"]:
            other: dict[tuple[str, str], int] = {}
            for name, status in r["other"].items():
                key = (status, name.rsplit("__mutmut_", 1)[0])
                other[key] = other.get(key, 0) + 1
            lines += ["", f"Neither killed nor survived ({r['group']}): "
                      + ", ".join(f"`{f}` {s} ({n})" for (s, f), n in sorted(other.items()))]
    if run:
        lines += ["", "<!-- run", json.dumps(run, indent=1), "-->"]
    lines += ["", "<!-- rows", json.dumps(rows, indent=1, ensure_ascii=False), "-->", ""]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(path)


def previous_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    match = re.search(r"<!-- rows\n(.*?)\n-->", path.read_text(encoding="utf-8"), re.S)
    return json.loads(match.group(1)) if match else []


def previous_run(path: Path) -> dict | None:
    if not path.exists():
        return None
    match = re.search(r"<!-- run\n(.*?)\n-->", path.read_text(encoding="utf-8"), re.S)
    return json.loads(match.group(1)) if match else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", action="append", choices=[g.name for g in GROUPS],
                        help="run only this group (repeatable); default: all")
    parser.add_argument("--jobs", type=int, default=2, help="test processes at once per group (default 2)")
    parser.add_argument("--groups-at-once", type=int, default=1,
                        help="groups run at the same time (default 1), each with --jobs test processes")
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument("--minutes", type=float, default=None,
                        help="stop each group after this many minutes (its unfinished mutants are reported as "
                             "'not checked' and the group as partial); default: no limit")
    args = parser.parse_args(argv)
    by_name = {g.name: g for g in GROUPS}
    chosen = [by_name[n] for n in dict.fromkeys(args.group)] if args.group else list(GROUPS)  # in the order given
    rows = {r["group"]: r for r in previous_rows(args.report)}
    run = previous_run(args.report)
    started = dt.datetime.now(dt.timezone.utc)
    start, busy_before, load_start = time.monotonic(), _busy_cpu(), os.getloadavg()
    run_commit = _commit()  # the code the run starts from (each group records its own as well)
    lock = threading.Lock()

    def one(group: Group) -> None:
        commit = _commit()  # the code each group copies, taken when it starts
        row = run_group(group, args.jobs, lambda s: print(s, flush=True), args.minutes)
        row.update(commit=commit, date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
                   run_started=started.strftime("%Y-%m-%d %H:%M"))
        with lock:
            rows[group.name] = row
            write_report([rows[g.name] for g in GROUPS if g.name in rows], args.report, args.jobs, run,
                         args.groups_at_once)

    if args.groups_at_once > 1:
        # the longest groups (by their last measured wall time, scaled up for a partial run) first,
        # so that the last ones to start are short and the groups end close together
        def expected(g: Group) -> float:
            r = rows.get(g.name, {})
            checked = r.get("mutants", 0) - r.get("counts", {}).get("not checked", 0)
            return r.get("seconds", 0) * r.get("mutants", 0) / max(checked, 1)
        chosen.sort(key=lambda g: -expected(g))
    with LoadSampler() as load, ThreadPoolExecutor(args.groups_at_once) as pool:
        for future in [pool.submit(one, g) for g in chosen]:
            future.result()
    if len(chosen) == len(GROUPS) and not any(rows[g.name].get("stopped_at_minutes") for g in GROUPS):
        run = {"groups": [g.name for g in chosen], "started": started.strftime("%Y-%m-%d %H:%M"),
               "finished": dt.datetime.now(dt.timezone.utc).strftime("%H:%M"),
               "wall_seconds": round(time.monotonic() - start), "busy_cpu_seconds": round(_busy_cpu() - busy_before),
               "cores": os.cpu_count(), "jobs": args.jobs, "groups_at_once": args.groups_at_once, "nice": os.nice(0), "commit": run_commit,
               "load_every": load.every,
               "load": {"mean": round(sum(load.samples) / len(load.samples), 2), "max": max(load.samples),
                        "start": " / ".join(f"{v:.2f}" for v in load_start),
                        "end": " / ".join(f"{v:.2f}" for v in os.getloadavg())}}
        print(run_summary(run)[1], flush=True)
        write_report([rows[g.name] for g in GROUPS if g.name in rows], args.report, args.jobs, run,
                         args.groups_at_once)
    killed = sum(r["killed"] for r in rows.values())
    survived = sum(r["survived"] for r in rows.values())
    if killed + survived:
        print(f"mutation score {killed / (killed + survived):.1%} ({killed} killed, {survived} survived); "
              f"report: {args.report}")
    return 0 if all("error" not in r for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
