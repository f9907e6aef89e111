"""The KFP pipelines (installed as ``longalign.pipelines``; source and compiled YAML in pipelines/)."""

from longalign.pipelines.pipeline import (
    MULTINODE_PIPELINE_NAME,
    PIPELINE_NAME,
    PIPELINES,
    longalign_multinode_pipeline,
    longalign_pipeline,
)

__all__ = ["MULTINODE_PIPELINE_NAME", "PIPELINE_NAME", "PIPELINES", "longalign_multinode_pipeline",
           "longalign_pipeline"]
