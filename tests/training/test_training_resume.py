"""A run killed by SIGTERM at step k and resumed ends with the same weights as a run never killed.

Each run is a real `longalign train` process. The killed one sends itself SIGTERM right after
optimizer step k (a wrapper around the loop's step function), so the kill lands at a known step.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import make_samples, write_packed

from longalign.config import TrainingConfig
from longalign.errors import UserError
from longalign.training import train
from longalign.training.checkpoint import EXIT_CODE, Preempted, list_checkpoints

SCRIPT = """
import os, signal, sys
from longalign.training import loop
kill_at = int(sys.argv[1])
real_step = loop.run_step
def run_step(*args, **kwargs):
    result = real_step(*args, **kwargs)
    if result.step + 1 == kill_at:
        os.kill(os.getpid(), signal.SIGTERM)
    return result
loop.run_step = run_step
from longalign.cli import main
sys.exit(main(sys.argv[2:]))
"""


# fp32 in both runs (the CLI's default preset would train in bf16 on an AMX CPU): equal to 1e-6
CONFIG = dict(epochs=3, learning_rate=0.01, warmup_ratio=0.2, checkpoint_every=2,
              gradient_accumulation_steps=2, cpu_bf16=False)


def _train(script, packed, out, kill_at=0, *extra):
    cmd = [sys.executable, str(script), str(kill_at), "train", "--packed", str(packed),
           "-o", str(out), "--base-model", "embedded:tiny",
           *[a for k, v in CONFIG.items() for a in ("--set", f"{k}={v}")], *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path):
    # 6 micro-batches of uneven lengths, accumulation 2: 3 steps per epoch, 9 steps in all
    packed = write_packed(tmp_path / "packed", make_samples(14, 500, seed=7, max_len=30),
                          max_len=48)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)

    # the uninterrupted reference runs in this process (same config, one thread)
    torch.set_num_threads(1)
    train(TrainingConfig(**CONFIG), "embedded:tiny", packed, tmp_path / "full")

    killed = _train(script, packed, tmp_path / "resumed", 5)
    assert killed.returncode == EXIT_CODE, killed.stderr[-2000:]
    assert "preempted" in killed.stderr and "--resume" in killed.stderr
    assert not (tmp_path / "resumed").exists()  # nothing half-written
    ckpts = list_checkpoints(tmp_path / "resumed.checkpoints")
    assert [p.name for p in ckpts] == ["step-00000004", "step-00000005"]  # every 2 + SIGTERM
    progress = json.loads((ckpts[-1] / "progress-0.json").read_text())
    assert progress["step"] == 5 and len(progress["results"]) == 5

    resumed = _train(script, packed, tmp_path / "resumed", 0, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr

    a = json.loads((tmp_path / "full" / "stats.json").read_text())
    b = json.loads((tmp_path / "resumed" / "stats.json").read_text())
    assert a["steps"] == b["steps"] == 9
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=0)
    assert b["lr"] == a["lr"]
    wa = load_file(tmp_path / "full" / "model.safetensors")
    wb = load_file(tmp_path / "resumed" / "model.safetensors")
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-6


def test_resume_refuses_a_checkpoint_of_another_plan(tmp_path, monkeypatch):
    from longalign.training import loop

    torch.set_num_threads(1)
    packed = write_packed(tmp_path / "packed", make_samples(6, 500, seed=3), max_len=48)
    real_step = loop.run_step

    def run_step(*args, **kwargs):  # SIGTERM to this process after the first step
        result = real_step(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(loop, "run_step", run_step)
    with pytest.raises(Preempted) as info:
        train(TrainingConfig(**CONFIG), "embedded:tiny", packed, tmp_path / "out")
    assert info.value.step == 1 and not (tmp_path / "out").exists()
    monkeypatch.setattr(loop, "run_step", real_step)
    other = dict(CONFIG, gradient_accumulation_steps=1, resume=True)
    with pytest.raises(UserError, match="accumulation=2"):
        train(TrainingConfig(**other), "embedded:tiny", packed, tmp_path / "out")
    # resuming with nothing to resume from starts at step 0
    fresh = train(TrainingConfig(**other, checkpoint_dir=str(tmp_path / "none")),
                  "embedded:tiny", packed, tmp_path / "out")
    assert fresh["steps"] == 3 * 3
