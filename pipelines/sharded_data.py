"""longalign-sharded-data: sourcing and text packing over many pods, the one-pod output.

ParallelFor over parts: sourcing_part -> sourcing_join -> ParallelFor over parts: packing_part
(format text, on the corpus) -> packing_plan -> ParallelFor over row files: packing_write ->
packing_join

Each map step runs one pod per entry of ``parts`` (``PARALLELISM`` at a time); the sourcing join and
the packing plan collect the parts (``dsl.Collected``) and make the decisions that involve more
than one document in the one-pod order, so the corpus and the rows equal those of the one-pod
sourcing and packing steps (docs/scale.md). The packing steps keep their stores and the rows on
the shared volume (``longalign.pipelines.sharded.packing_steps``). The sourcing config must leave ``max_documents`` and ``mix`` unset.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Metrics

from longalign.components.sourcing.sharded import sourcing_join, sourcing_part
from longalign.pipelines import platform
from longalign.pipelines.pipeline import DEFAULTS
from longalign.pipelines.sharded import PARALLELISM, packing_steps

SHARDED_DATA_PIPELINE_NAME = "longalign-sharded-data"
# the default sourcing section without max_documents and mix (a capped or mixed run decides what
# to read next from what it kept so far, which only one pod can)
SOURCE_ORDER_DEFAULTS = {k: v for k, v in DEFAULTS["sourcing"].items()
                         if k not in ("max_documents", "mix")}


class ShardedDataOutputs(NamedTuple):
    corpus: Dataset
    packed: Dataset
    metrics: Metrics


def sharded_data(parallelism: int = PARALLELISM):
    """The pipeline with ``parallelism`` pods at a time per ParallelFor (0: no limit)."""

    @dsl.pipeline(name=SHARDED_DATA_PIPELINE_NAME,
                  description="Source long texts and pack them as plain text with one pod per "
                  "part of the input, a join per stage and one pod per row file; the output "
                  "equals the one-pod steps'.")
    def sharded_data_pipeline(
        base_model: str = DEFAULTS["base_model"],
        sourcing_config: dict = SOURCE_ORDER_DEFAULTS,
        text_packing_config: dict = DEFAULTS["extend"]["packing"],
        parts: list = [0, 1, 2],
        shared_dir: str = platform.SHARED_DIR,
        pvc_name: str = platform.PVC_NAME,
    ) -> ShardedDataOutputs:
        """`sourcing_config` without max_documents and mix; `text_packing_config` a packing section
        with format text; `parts`: the part indices [0, 1, ..., n-1], one pod each per stage;
        `shared_dir`: where packing's sample stores and rows go, on the ReadWriteMany claim
        `pvc_name` (mounted at /mnt/longalign in the packing steps and needed by whatever reads the
        rows)."""
        with dsl.ParallelFor(parts, parallelism=parallelism) as index:
            source_part = sourcing_part(config=sourcing_config, base_model=base_model, index=index,
                                        parts=parts).set_display_name("sourcing part")
        source_join = sourcing_join(config=sourcing_config, base_model=base_model,
                                    parts=dsl.Collected(source_part.outputs["part"]))
        source_join.set_display_name("sourcing join")
        corpus = source_join.outputs["corpus"]
        pack_join = packing_steps(text_packing_config, base_model, corpus, parts, shared_dir,
                                  pvc_name, parallelism)
        return ShardedDataOutputs(corpus=corpus, packed=pack_join.outputs["packed"],
                                  metrics=pack_join.outputs["metrics"])

    return sharded_data_pipeline


sharded_data_pipeline = sharded_data()
