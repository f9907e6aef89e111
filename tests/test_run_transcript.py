"""What `longalign run` prints: one line per stage, a short summary, the rest in the run's log."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from longalign.config import load_run_config
from longalign.orchestrate import run_local
from longalign.orchestrate.transcript import Transcript

STAGES = ("sourcing", "generation", "packing", "training", "scoring")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("kfp")
    lines = io.StringIO()
    summary = run_local(load_run_config("tiny"), root, transcript=Transcript(root / "first.log", out=lines))
    summary["transcript"] = lines.getvalue().splitlines()
    return summary


def test_first_run_prints_one_line_per_stage_and_logs_the_rest(first_run):
    ran = {line.split()[0]: line.split()[1] for line in first_run["transcript"]}
    assert all(ran[stage] == "ran" for stage in STAGES), first_run["transcript"]
    log = (Path(first_run["root"]) / "first.log").read_text()
    assert "Executing task" in log and "executor_input" in log  # kfp.local's own output went there


def test_cli_run_is_short_and_a_cached_rerun_says_so(first_run):
    root = first_run["root"]
    result = subprocess.run([sys.executable, "-m", "longalign.cli", "run", "--preset", "tiny", "--root", root],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) <= 40 and not any(c in result.stdout for c in ("{", "}", "\x1b"))
    status = {line.split()[0]: line.split()[1] for line in lines if line.split() and line.split()[0] in STAGES}
    assert status == {stage: "cached" for stage in STAGES}
    assert "finished in" in result.stdout and "report: longalign-" in result.stdout
    (log,) = [line.split("log: ")[1] for line in lines if "log: " in line]
    assert Path(root, Path(log).relative_to(Path(log).parents[1])).is_file() or Path(log).is_file()


def test_cli_run_failure_is_one_line_with_the_task_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "longalign.cli", "run", "--preset", "tiny", "--root",
                             str(tmp_path), "--set", f'sourcing.sources=["dir:{tmp_path}/missing"]'],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "path not found" in line and "its log:" in line and "\x1b" not in line
