"""Multi-node training on Kubernetes: a Kubeflow Trainer v2 TrainJob or a Training Operator v1
PyTorchJob running ``longalign train`` on every node, data and checkpoints on a shared PVC.

Modules: ``config`` (LauncherConfig), ``names`` (unique, valid job names), ``manifests`` (the
job objects), ``jobs`` (submit, wait, fail loudly, clean up), ``logs`` (rank-0 log streaming),
``rank_env`` (torch.distributed variables under mpirun) and ``run`` (:func:`launch_training`,
what the KFP ``training_launcher`` component calls). No kfp import here.
"""

from longalign.training.launcher.config import LauncherConfig, parse_launcher_config
from longalign.training.launcher.jobs import JobFailed, JobTimeout, KubeJobs, LaunchCancelled
from longalign.training.launcher.manifests import build_manifest
from longalign.training.launcher.names import is_valid_name, job_name
from longalign.training.launcher.run import launch_training

__all__ = ["LauncherConfig", "parse_launcher_config", "JobFailed", "JobTimeout", "KubeJobs",
           "LaunchCancelled", "build_manifest", "is_valid_name", "job_name", "launch_training"]
