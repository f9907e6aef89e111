"""The launcher end to end: stage the packed data on the shared volume, build and save the job
manifest, submit, wait, and describe the checkpoint it wrote (what the KFP component calls)."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from longalign.errors import UserError
from longalign.io import atomic_dir, read_json, write_json
from longalign.results import StageResult, numeric
from longalign.training.launcher.config import LauncherConfig, parse_launcher_config
from longalign.training.launcher.jobs import KubeJobs
from longalign.training.launcher.logs import Sink
from longalign.training.launcher.manifests import build_manifest, run_paths
from longalign.training.launcher.names import job_name

SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def kube_api_client(host: str | None = None) -> Any:
    """An API client: for ``host`` as given (tests, proxies), else in-cluster credentials (the
    pod's service account), else the local kubeconfig."""
    from kubernetes import client, config

    if host:
        return client.ApiClient(client.Configuration(host=host))
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise UserError(f"no Kubernetes credentials: not in a cluster and no kubeconfig "
                            f"({exc})") from None
    return client.ApiClient()


def resolve_namespace(config: LauncherConfig, sa_file: str = SA_NAMESPACE) -> str:
    if config.namespace:
        return config.namespace
    try:
        return Path(sa_file).read_text().strip()
    except OSError:
        raise UserError("launcher.namespace is not set and the launcher does not run in a "
                        "pod (no service-account namespace file)") from None


def _stage(src: Path, dest: Path) -> None:
    """Copy the packed data onto the volume once (atomically: a half copy is never used)."""
    if dest.is_dir() and any(dest.iterdir()):
        return
    with atomic_dir(dest, overwrite=True) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def launch_training(training: dict[str, Any], launcher: dict[str, Any], base_model: str,
                    packed: str | os.PathLike, run_id: str, model_dir: str | os.PathLike,
                    manifest_file: str | os.PathLike, *, default_image: str,
                    default_gpu_image: str | None = None, overrides: dict[str, Any] | None = None,
                    api_client: Any = None, volume_root: str | os.PathLike | None = None,
                    sink: Sink = print) -> StageResult:
    """Train on the cluster and return the StageResult (its stats hold the Model artifact's
    ``model_metadata``).

    ``overrides`` are pipeline parameters that replace launcher fields when given (see
    :func:`parse_launcher_config`). Without ``image`` the job runs ``default_gpu_image`` when it
    asks for GPUs, else ``default_image``. ``volume_root`` is where the shared PVC is mounted in
    this process (default: the config's ``mount_path``, as in the launcher pod); the job's pods
    see it at ``mount_path``.
    ``model_dir`` receives ``pointer.json`` (where the checkpoint is on the volume) and the
    trained run's ``stats.json`` and ``summary.md`` (with ``copy_model``, the whole checkpoint);
    ``manifest_file`` the job as YAML.
    """
    from longalign.config import parse_section

    cfg = parse_launcher_config(launcher, overrides)
    section = parse_section("training", training).model_dump(mode="json")
    run_id = run_id or uuid.uuid4().hex
    name = job_name(run_id, cfg.name_prefix)
    namespace = resolve_namespace(cfg)
    paths = run_paths(cfg, name)
    local = Path(volume_root or cfg.mount_path) / Path(paths.root).relative_to(cfg.mount_path)
    image = (default_gpu_image or default_image) if cfg.gpus_per_node else default_image
    manifest = build_manifest(cfg, name=name, namespace=namespace, run_id=run_id,
                              image=cfg.image or image, training=section,
                              base_model=base_model)
    text = yaml.safe_dump(manifest, sort_keys=False)
    _write_text(Path(manifest_file), text)
    _stage(Path(packed), local / "packed")
    _write_text(local / "job.yaml", text)

    started = time.perf_counter()
    jobs = KubeJobs(cfg, api_client if api_client is not None else kube_api_client(),
                    namespace, sink)
    jobs.run(manifest)
    seconds = time.perf_counter() - started

    trained = local / "model"
    stats_file = trained / "stats.json"
    if not stats_file.is_file():
        raise RuntimeError(f"{manifest['kind']} {namespace}/{name} succeeded but wrote no "
                           f"{paths.model}/stats.json on volume {cfg.pvc}")
    run_stats = read_json(stats_file)
    on_volume = Path(paths.model).relative_to(cfg.mount_path)
    pointer = {
        "pvc": cfg.pvc, "path": paths.model, "uri": f"pvc://{cfg.pvc}/{on_volume}",
        "job_kind": manifest["kind"], "job_name": name, "namespace": namespace,
        "run_id": run_id, "num_nodes": cfg.num_nodes, "procs_per_node": cfg.procs,
    }
    metrics = dict(run_stats.get("metrics") or {})
    metrics.update({"launcher_seconds": round(seconds, 3), "num_nodes": cfg.num_nodes,
                    "procs_per_node": cfg.procs})
    stats = {**run_stats, "metrics": metrics, "model_metadata": pointer, "job_name": name}
    result = StageResult("training", Path(model_dir), stats, metrics=numeric(metrics),
                         headline={k: metrics[k] for k in ("final_loss",) if k in metrics},
                         summary="summary.md")
    with atomic_dir(model_dir, overwrite=True) as tmp:
        if cfg.copy_model:  # the whole checkpoint, for consumers without the volume
            shutil.copytree(trained, tmp, dirs_exist_ok=True)
        write_json(tmp / "pointer.json", pointer)
        result.write(tmp)
        if (trained / "summary.md").is_file():
            shutil.copyfile(trained / "summary.md", tmp / "summary.md")
        else:
            (tmp / "summary.md").write_text(f"# training job {name}\n\nno summary written\n")
    return result
