"""longalign-sharded-packing: packing over many pods, the same rows as the one-pod packing step.

importer(chats) -> ParallelFor over parts: packing_part -> packing_join

The chats (or, with format text, a sourcing corpus) already stored at ``chats_uri`` are cut into
``len(parts)`` contiguous row ranges; one pod per range tokenises it (``parallelism`` pods at a time);
the join step collects every part (``dsl.Collected``), drops duplicate ids across them, plans
the rows over all lengths and writes them (docs/scale.md).
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Metrics

from longalign.components.packing.sharded import packing_join, packing_part
from longalign.pipelines.pipeline import DEFAULTS

SHARDED_PACKING_PIPELINE_NAME = "longalign-sharded-packing"
PARALLELISM = 8  # part pods at a time (a compile-time setting of dsl.ParallelFor)


class ShardedPackingOutputs(NamedTuple):
    packed: Dataset
    metrics: Metrics


@dsl.pipeline(name=SHARDED_PACKING_PIPELINE_NAME,
              description="Pack stored chats into Arrow rows with one pod per part of the input "
              "and a join step; the rows equal those of the one-pod packing step.")
def sharded_packing_pipeline(
    chats_uri: str,
    base_model: str = DEFAULTS["base_model"],
    packing_config: dict = DEFAULTS["packing"],
    parts: list = [0, 1, 2],
) -> ShardedPackingOutputs:
    """`chats_uri`: where the chats (or, for format text, the corpus) are stored; `parts`: the
    part indices [0, 1, ..., n-1], one pod each (the rows are cut into n contiguous parts; a
    list that is not 0..n-1 fails in the join, which checks the parts cover the rows)."""
    chats = dsl.importer(artifact_uri=chats_uri, artifact_class=Dataset, reimport=False)
    with dsl.ParallelFor(parts, parallelism=PARALLELISM) as index:
        part = packing_part(config=packing_config, base_model=base_model,
                            chats=chats.output, index=index, parts=parts)
        part.set_display_name("packing part")
    join = packing_join(config=packing_config, base_model=base_model,
                        parts=dsl.Collected(part.outputs["part"])).set_display_name("packing join")
    return ShardedPackingOutputs(packed=join.outputs["packed"], metrics=join.outputs["metrics"])
