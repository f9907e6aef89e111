"""The KFP pipeline (installed as ``longalign.pipelines``; source and compiled YAML in pipelines/)."""

from longalign.pipelines.pipeline import PIPELINE_NAME, longalign_pipeline

__all__ = ["PIPELINE_NAME", "longalign_pipeline"]
