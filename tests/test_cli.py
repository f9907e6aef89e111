"""The CLI as users run it: bad input gives one clear line, a non-zero exit code and no output."""

import subprocess
import sys

import pytest


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "longalign.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def assert_user_error(result, fragment):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], result.stderr


@pytest.fixture
def garbage_dir(tmp_path):
    d = tmp_path / "garbage"
    d.mkdir()
    for name in ("documents-00000.parquet", "samples-00000.parquet", "rows-00000.arrow"):
        (d / name).write_bytes(b"this is not a columnar file")
    (d / "meta.json").write_text("{not json")
    return d


@pytest.mark.parametrize("argv, fragment", [
    (["source", "--source", "dir:{tmp}/missing", "--preset", "tiny"], "missing"),
    (["source", "--source", "ftp:somewhere", "--preset", "tiny"], "ftp"),
    (["generate", "--corpus", "{tmp}/missing", "--preset", "tiny"], "missing"),
    (["generate", "--corpus", "{tmp}/empty", "--preset", "tiny"], "empty"),
    (["generate", "--corpus", "{tmp}/garbage", "--preset", "tiny"], "garbage"),
    (["pack", "--chats", "{tmp}/missing", "--preset", "tiny"], "missing"),
    (["pack", "--chats", "{tmp}/garbage", "--preset", "tiny"], "garbage"),
    (["train", "--packed", "{tmp}/missing", "--preset", "tiny"], "missing"),
    (["train", "--packed", "{tmp}/garbage", "--preset", "tiny"], "garbage"),
    (["score", "--model", "{tmp}/missing", "--preset", "tiny"], "missing"),
    (["train", "--packed", "{tmp}/empty", "--set", "epochs=0", "--preset", "tiny"], "training.epochs"),
    # a nested key in a stage command gets the stage's section in front of it
    (["generate", "--corpus", "{tmp}/empty", "--set", "api.concurrency=0", "--preset", "tiny"],
     "generation.api.concurrency"),
    (["run", "--preset", "tiny", "--set", "packing.strategy=best"], "packing.strategy"),
    (["run", "--config", "{tmp}/missing.yaml"], "missing.yaml"),
])
def test_bad_input_is_one_line_error_and_writes_nothing(tmp_path, garbage_dir, argv, fragment):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] != "run":
        argv += ["-o", str(out)]
    result = run_cli(*argv, cwd=tmp_path)
    assert_user_error(result, fragment)
    assert not out.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")]
    assert leftovers == []


def test_unknown_option_is_a_usage_error(tmp_path):
    result = run_cli("pack", "--chats", str(tmp_path), "-o", str(tmp_path / "o"), "--bogus")
    assert result.returncode == 2
    assert "No such option" in result.stderr and "Traceback" not in result.stderr


def test_output_that_exists_is_refused_without_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_cli("source", "--preset", "tiny", "--source", "stdlib:", "-o", str(out))
    assert_user_error(result, "not empty")
    assert (out / "keep.txt").read_text() == "mine"


def test_compile_writes_loadable_pipeline(tmp_path):
    result = run_cli("compile", "-o", str(tmp_path / "p.yaml"))
    assert result.returncode == 0, result.stderr
    from kfp import components

    assert components.load_component_from_file(str(tmp_path / "p.yaml")).name == "longalign"


def test_compile_parallelism_sets_the_sharded_pipelines_pods_at_a_time(tmp_path):
    import yaml

    for name, loops in (("longalign-sharded-packing", 2), ("longalign-sharded-data", 3)):
        result = run_cli("compile", "-o", str(tmp_path / f"{name}.yaml"), "--pipeline", name,
                         "--parallelism", "32")
        assert result.returncode == 0, result.stderr
        ir = next(yaml.safe_load_all((tmp_path / f"{name}.yaml").read_text()))
        limits = [t["iteratorPolicy"]["parallelismLimit"]
                  for t in ir["root"]["dag"]["tasks"].values() if "parameterIterator" in t]
        assert limits == [32] * loops, name
    assert_user_error(run_cli("compile", "-o", str(tmp_path / "x.yaml"), "--parallelism", "4"),
                      "--parallelism applies to longalign-sharded-packing")
    assert_user_error(run_cli("compile", "-o", str(tmp_path / "x.yaml"), "--pipeline",
                              "longalign-sharded-data", "--parallelism", "-1"), "0 (no limit)")
    assert not (tmp_path / "x.yaml").exists()


def test_schedule_rejects_five_field_cron():
    result = run_cli("schedule", "--host", "http://127.0.0.1:9", "--cron", "0 3 * * 0")
    assert_user_error(result, "6 fields")


def test_submit_to_unreachable_host_is_one_line():
    result = run_cli("submit", "--host", "http://127.0.0.1:9")
    assert_user_error(result, "cannot reach")
