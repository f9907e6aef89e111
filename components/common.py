"""What every stage component shares: the image and the publishing of stage results as KFP artifacts.

Components are thin: parse the stage's config section, call one library function, publish the
StageResult it returns.
Their bodies import from the installed ``longalign`` package (KFP serialises only the function's source).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from longalign.codeid import image_tag
from longalign.results import StageResult

# The image tag is the package version plus a digest of the sources (longalign/codeid.py), so
# KFP's cache key changes whenever the code does and nodes pull the new image. IMAGE
# (docker/Dockerfile) runs the data stages; IMAGE_CUDA (docker/Dockerfile.cuda) runs training.
# LONGALIGN_IMAGE_REPOSITORY (at compile time; the launcher task gets it too) names the registry.
REPOSITORY_ENV = "LONGALIGN_IMAGE_REPOSITORY"
REPOSITORY = os.environ.get(REPOSITORY_ENV, "ghcr.io/longalign").rstrip("/")
IMAGE = f"{REPOSITORY}/longalign:{image_tag()}"
IMAGE_CUDA = f"{REPOSITORY}/longalign-cuda:{image_tag()}"


def publish(result: StageResult, metrics=None, markdown=None, html=None) -> None:
    """Log the result's metrics to a KFP Metrics artifact and copy its summary and report files
    into the Markdown and HTML artifacts.

    The Metrics artifact's file is written too: KFP's local cache treats an artifact whose file is
    missing as stale, and on a cluster the file is harmless.
    """
    if metrics is not None:
        for name, value in sorted(result.metrics.items()):
            metrics.log_metric(name, value)
        Path(metrics.path).parent.mkdir(parents=True, exist_ok=True)
        Path(metrics.path).write_text(json.dumps(metrics.metadata, indent=2, sort_keys=True))
    for artifact, source in ((markdown, result.summary_path), (html, result.report_path)):
        if artifact is not None and source is not None:
            Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, artifact.path)
