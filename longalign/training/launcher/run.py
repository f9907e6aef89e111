"""The launcher end to end: stage the packed data on the shared volume, build and save the job
manifest, submit, wait, and describe the checkpoint it wrote (what the KFP component calls)."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from longalign.errors import UserError
from longalign.formats import PACKED_META, open_packed
from longalign.io import atomic_dir, read_json, write_json
from longalign.results import StageResult, numeric
from longalign.training.launcher.config import LauncherConfig, parse_launcher_config
from longalign.training.launcher.jobs import KubeJobs
from longalign.training.launcher.logs import Sink
from longalign.training.launcher.manifests import RunPaths, build_manifest, run_paths
from longalign.training.launcher.names import check_derived_names, job_name

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


def _pod_namespace(environ: Mapping[str, str], sa_file: str) -> str:
    try:
        return environ.get("LONGALIGN_POD_NAMESPACE") or Path(sa_file).read_text().strip()
    except OSError:
        return ""


def resolve_namespace(config: LauncherConfig, sa_file: str = SA_NAMESPACE,
                      environ: Mapping[str, str] = os.environ) -> str:
    namespace = config.namespace or _pod_namespace(environ, sa_file)
    if not namespace:
        raise UserError("launcher.namespace is not set and the launcher does not run in a "
                        "pod (no service-account namespace file)")
    return namespace


def launcher_owner(config: LauncherConfig, namespace: str, environ: Mapping[str, str],
                   sa_file: str = SA_NAMESPACE) -> dict[str, str] | None:
    """The launcher pod as the job's owner: name and uid from the downward API
    (``LONGALIGN_POD_NAME``/``LONGALIGN_POD_UID``, set by pipelines/platform.py), only when the
    job is in the pod's own namespace (owner references cannot cross namespaces)."""
    name, uid = environ.get("LONGALIGN_POD_NAME"), environ.get("LONGALIGN_POD_UID")
    if not (config.owned_by_launcher_pod and name and uid):
        return None
    if _pod_namespace(environ, sa_file) != namespace:
        return None
    return {"name": name, "uid": uid}


@dataclass(frozen=True)
class LaunchPlan:
    """Everything the launcher will create for one run, decided before touching the cluster."""

    config: LauncherConfig
    name: str
    namespace: str
    run_id: str
    paths: RunPaths
    manifest: dict[str, Any]
    owner: dict[str, str] | None

    @property
    def objects(self) -> list[dict[str, Any]]:
        """Every object the launcher creates (today the job alone)."""
        return [self.manifest]

    def yaml(self) -> str:
        return yaml.safe_dump_all(self.objects, sort_keys=False)


def plan_launch(training: dict[str, Any], launcher: dict[str, Any] | None, base_model: str,
                run_id: str, *, default_image: str, default_gpu_image: str | None = None,
                overrides: dict[str, Any] | None = None, environ: Mapping[str, str] = os.environ,
                sa_file: str = SA_NAMESPACE) -> LaunchPlan:
    """The job for this run: what ``launch_training`` submits and ``longalign launch --dry-run``
    prints. Without ``image`` the job runs ``default_gpu_image`` when it asks for GPUs."""
    from longalign.config import parse_section

    cfg = parse_launcher_config(launcher, overrides)
    section = parse_section("training", training).model_dump(mode="json")
    name = job_name(run_id, cfg.name_prefix)
    try:
        check_derived_names(cfg.kind, name, cfg.num_nodes, cfg.uses_mpi)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    namespace = resolve_namespace(cfg, sa_file, environ)
    owner = launcher_owner(cfg, namespace, environ, sa_file)
    image = (default_gpu_image or default_image) if cfg.gpus_per_node else default_image
    manifest = build_manifest(cfg, name=name, namespace=namespace, run_id=run_id,
                              image=cfg.image or image, training=section,
                              base_model=base_model, owner=owner)
    return LaunchPlan(cfg, name, namespace, run_id, run_paths(cfg, name), manifest, owner)


def _stage(src: Path, dest: Path, volume_root: Path, mount_path: str) -> None:
    """Copy the packed data onto the volume once (atomically: a half copy is never used).

    Packed data whose rows are on a volume already (``rows_dir`` in its meta.json: the sharded
    pipelines' output) is staged without its rows when they are on this volume (``volume_root``
    here, ``mount_path`` in the job's pods): the staged meta.json points the job at them. Rows
    elsewhere (another claim, a local directory) are copied in."""
    if dest.is_dir() and any(dest.iterdir()):
        return
    meta = read_json(src / PACKED_META) if (src / PACKED_META).is_file() else {}
    with atomic_dir(dest, overwrite=True) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        if meta.get("rows_dir"):
            _, shards = open_packed(src)  # every listed row file is there
            rows = Path(meta["rows_dir"]).resolve()
            root = volume_root.resolve()
            if rows.is_relative_to(root):
                meta["rows_dir"] = str(Path(mount_path) / rows.relative_to(root))
            else:
                for path in shards.paths:
                    shutil.copyfile(path, tmp / path.name)
                del meta["rows_dir"]
            write_json(tmp / PACKED_META, meta)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def plan_from_config(run_id: str, preset: str, files: list[Any], sets: list[str], *,
                     default_image: str, default_gpu_image: str | None = None,
                     launcher_defaults: dict[str, Any] | None = None) -> LaunchPlan:
    """``longalign launch --dry-run``: the plan from the run config (the one loader: preset,
    config ``files``, ``--set`` overrides), whose ``launcher`` section updates
    ``launcher_defaults`` (the pipeline's)."""
    from longalign.config import load_run_config

    cfg = load_run_config(preset, overrides=sets, files=files)
    launcher = {**(launcher_defaults or {}), **cfg.launcher.model_dump(mode="json", exclude_unset=True)}
    return plan_launch(cfg.training.model_dump(mode="json"), launcher, cfg.base_model, run_id,
                       default_image=default_image, default_gpu_image=default_gpu_image)


def launch_training(training: dict[str, Any], launcher: dict[str, Any], base_model: str,
                    packed: str | os.PathLike, run_id: str, model_dir: str | os.PathLike,
                    manifest_file: str | os.PathLike, *, default_image: str,
                    default_gpu_image: str | None = None, overrides: dict[str, Any] | None = None,
                    api_client: Any = None, volume_root: str | os.PathLike | None = None,
                    sink: Sink = print, environ: Mapping[str, str] = os.environ) -> StageResult:
    """Train on the cluster and return the StageResult (its stats hold the Model artifact's
    ``model_metadata``).

    ``overrides`` are pipeline parameters that replace launcher fields when given (see
    :func:`parse_launcher_config`). ``volume_root`` is where the shared PVC is mounted in this
    process (default: the config's ``mount_path``, as in the launcher pod); the job's pods see it
    at ``mount_path``. ``model_dir`` receives ``pointer.json`` (where the checkpoint is on the
    volume) and the trained run's ``stats.json`` and ``summary.md`` (with ``copy_model``, the
    whole checkpoint); ``manifest_file`` the job as YAML. Everything the launcher prints is also
    kept in ``runs/<job>/launcher.log`` on the volume (the rank-0 log survives the job's cleanup).
    """
    plan = plan_launch(training, launcher, base_model, run_id or uuid.uuid4().hex,
                       default_image=default_image, default_gpu_image=default_gpu_image,
                       overrides=overrides, environ=environ)
    cfg, name, namespace, paths, manifest = (plan.config, plan.name, plan.namespace, plan.paths,
                                             plan.manifest)
    local = Path(volume_root or cfg.mount_path) / Path(paths.root).relative_to(cfg.mount_path)
    text = yaml.safe_dump(manifest, sort_keys=False)
    _write_text(Path(manifest_file), text)
    _stage(Path(packed), local / "packed", Path(volume_root or cfg.mount_path), cfg.mount_path)
    _write_text(local / "job.yaml", text)

    started = time.perf_counter()
    with open(local / "launcher.log", "a", encoding="utf-8") as log:
        def tee(line: str) -> None:
            sink(line)
            log.write(line + "\n")
            log.flush()

        jobs = KubeJobs(cfg, api_client if api_client is not None else kube_api_client(),
                        namespace, tee, owner=plan.owner)
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
        "run_id": plan.run_id, "num_nodes": cfg.num_nodes, "procs_per_node": cfg.procs,
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
