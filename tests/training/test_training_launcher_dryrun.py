"""`longalign launch --dry-run`: what the launcher would create, printed by the launch's own code
path, in a form the upstream schemas accept (so `kubectl apply --dry-run=server` would too)."""

import yaml
from k8s_conformance import TRAINER_VERSIONS, schema_errors

from longalign.cli import main
from longalign.codeid import image_tag
from longalign.components.common import IMAGE, IMAGE_CUDA
from longalign.config import load_run_config
from longalign.pipelines.pipeline import LAUNCHER_DEFAULTS
from longalign.training.launcher.run import plan_launch

RUN_ID = "3f2a1c9b-7d4e-4c1a-9b8e-5d6f7a8b9c0d"


def run(capsys, *args):
    try:
        code = main(["launch", *args])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dry_run_prints_what_the_launch_would_create(capsys, tmp_path, monkeypatch):
    for name in ("LONGALIGN_POD_NAME", "LONGALIGN_POD_UID", "LONGALIGN_POD_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump({"base_model": "Qwen/Qwen2.5-7B-Instruct",
                                      "training": {"epochs": 2},
                                      "launcher": {"namespace": "team-a", "num_nodes": 8}}))
    code, out, err = run(capsys, "--dry-run", "--run-id", RUN_ID, "--config", str(config),
                         "--set", "launcher.gpus_per_node=8", "--set", "launcher.node_selector.pool=h100",
                         "--set", "training.learning_rate=1e-5")
    assert code == 0, err
    (job,) = list(yaml.safe_load_all(out))
    cfg = load_run_config("default", {"base_model": "Qwen/Qwen2.5-7B-Instruct", "training": {"epochs": 2}},
                          ["training.learning_rate=1e-5"])
    launcher = {**LAUNCHER_DEFAULTS, "namespace": "team-a", "num_nodes": 8, "gpus_per_node": 8,
                "node_selector": {"pool": "h100"}}
    expected = plan_launch(cfg.training.model_dump(mode="json"), launcher, cfg.base_model, RUN_ID,
                           default_image=IMAGE, default_gpu_image=IMAGE_CUDA, environ={})
    assert job == expected.manifest
    assert job["spec"]["runtimeRef"]["name"] == LAUNCHER_DEFAULTS["runtime"]  # the pipeline's default
    assert job["spec"]["trainer"]["image"] == IMAGE_CUDA and IMAGE_CUDA.endswith(image_tag())
    assert job["spec"]["trainer"]["numNodes"] == 8
    for version in TRAINER_VERSIONS:
        assert schema_errors(job, version) == []


def test_dry_run_errors_are_one_line(capsys):
    code, out, err = run(capsys, "--run-id", RUN_ID)
    assert code == 2 and err.strip() == ("error: launch only supports --dry-run; the multi-node "
                                         "pipeline's training task submits the job")
    code, out, err = run(capsys, "--dry-run", "--run-id", RUN_ID, "--set", "launcher.namespace=a",
                         "--set", "launcher.num_nodes=0")
    assert code == 2 and err.startswith("error: invalid config: launcher.num_nodes") and "Traceback" not in err


def test_dry_run_leaves_the_pipeline_defaults_alone(capsys):
    before = yaml.safe_dump(LAUNCHER_DEFAULTS)
    code, _, err = run(capsys, "--dry-run", "--run-id", RUN_ID, "--set", "launcher.namespace=a",
                       "--set", "launcher.node_selector.pool=h100")
    assert code == 0, err
    assert yaml.safe_dump(LAUNCHER_DEFAULTS) == before
