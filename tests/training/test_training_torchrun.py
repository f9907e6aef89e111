"""`longalign train` under torchrun with 2 processes (gloo on CPU): one run, one output."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from training_helpers import make_samples, write_packed


def test_cli_train_under_torchrun_with_two_processes(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun is installed with torch"
    packed = write_packed(tmp_path / "packed", make_samples(10, 500, seed=4, max_len=30),
                          max_len=64)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "longalign.cli", "train",
         "--packed", str(packed), "-o", str(tmp_path / "out"), "--base-model", "embedded:tiny",
         "--set", "epochs=2", "--set", "learning_rate=0.01"],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["world_size"] == 2 and stats["steps"] == 2 * -(-stats["micro_batches"] // 2)
    assert stats["loss"][-1] < stats["loss"][0]
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert proc.stdout.count("wrote ") == 1  # only rank 0 reports
