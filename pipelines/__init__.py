"""The KFP pipelines (installed as ``longalign.pipelines``; source and compiled YAML in pipelines/)."""

from longalign.pipelines.pipeline import (
    MULTINODE_PIPELINE_NAME,
    PIPELINE_NAME,
    PIPELINES,
    longalign_multinode_pipeline,
    longalign_pipeline,
)
from longalign.pipelines.extend import EXTEND_PIPELINE_NAME, longalign_extend_pipeline
from longalign.pipelines.sharded import (SHARDED_PACKING_PIPELINE_NAME, sharded_packing,
                                         sharded_packing_pipeline)
from longalign.pipelines.sharded_data import (SHARDED_DATA_PIPELINE_NAME, sharded_data,
                                              sharded_data_pipeline)

PIPELINES = {**PIPELINES, EXTEND_PIPELINE_NAME: longalign_extend_pipeline,
             SHARDED_PACKING_PIPELINE_NAME: sharded_packing_pipeline,
             SHARDED_DATA_PIPELINE_NAME: sharded_data_pipeline}
# pipelines built with another number of pods at a time per ParallelFor (`compile --parallelism`)
WITH_PARALLELISM = {SHARDED_PACKING_PIPELINE_NAME: sharded_packing,
                    SHARDED_DATA_PIPELINE_NAME: sharded_data}

__all__ = ["WITH_PARALLELISM", "sharded_data", "sharded_packing",
           "SHARDED_DATA_PIPELINE_NAME", "sharded_data_pipeline", "SHARDED_PACKING_PIPELINE_NAME",
           "sharded_packing_pipeline", "EXTEND_PIPELINE_NAME", "longalign_extend_pipeline", "MULTINODE_PIPELINE_NAME", "PIPELINE_NAME", "PIPELINES", "longalign_multinode_pipeline",
           "longalign_pipeline"]
