"""The command in the TrainJob manifest, run verbatim as the Trainer's torch plugin would run it on
one node: torchrun reading the PET_* variables the plugin injects (PET_NNODES,
PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT), two CPU processes, the
tiny embedded model, paths on a directory standing in for the shared volume."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from training_helpers import make_samples, write_packed

from longalign.config import TrainingConfig
from longalign.training.launcher import build_manifest, job_name, parse_launcher_config
from longalign.training.launcher.manifests import run_paths


@pytest.mark.slow  # two torch processes training a tiny model: about a minute here
def test_manifest_command_trains_under_torchrun_with_the_trainer_env(tmp_path):
    volume = tmp_path / "volume"
    cfg = parse_launcher_config({"mount_path": str(volume), "gpus_per_node": 0, "procs_per_node": 2,
                                 "namespace": "ns", "env": {"OMP_NUM_THREADS": "1"}})
    name = job_name("run-cmd")
    training = TrainingConfig(epochs=1, max_steps=2, learning_rate=1e-3, warmup_ratio=0.0).model_dump(mode="json")
    manifest = build_manifest(cfg, name=name, namespace="ns", run_id="run-cmd", image="img",
                              training=training, base_model="embedded:tiny")
    paths = run_paths(cfg, name)
    write_packed(Path(paths.packed), make_samples(12, 500, seed=3, max_len=30), max_len=64)
    trainer = manifest["spec"]["trainer"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, **{e["name"]: e["value"] for e in trainer["env"] if "value" in e},
           "PET_NNODES": "1", "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]), "PET_NODE_RANK": "0",
           "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port)}
    env["HF_HOME"] = str(tmp_path / "hf")  # the manifest's points at the volume path in the pod
    command = list(trainer["command"])
    command[0] = str(Path(sys.executable).with_name("torchrun"))  # the venv's torchrun
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    stats = json.loads((Path(paths.model) / "stats.json").read_text())
    assert stats["world_size"] == 2  # torchrun started the processes the manifest asked for
    assert stats["steps"] == 2  # the training section reached the job (max_steps)
    assert (Path(paths.model) / "model.safetensors").is_file()
