"""longalign-sharded-packing: packing over many pods, the same rows as the one-pod packing step.

importer(chats) -> ParallelFor over parts: packing_part -> packing_plan -> ParallelFor over row
files: packing_write -> packing_join

The chats (or, with format text, a sourcing corpus) already stored at ``chats_uri`` are cut into
``len(parts)`` contiguous row ranges; one pod per range tokenises it into a sample store on the
shared volume (``parallelism`` pods at a time); the plan step collects every part
(``dsl.Collected``), drops duplicate ids across them, plans the rows over all lengths and cuts
them into row files; one pod per file writes it onto the volume; the join checks them all and
publishes the packing output, whose rows stay on the volume (docs/scale.md).
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Metrics, PipelineTask

from longalign.components.packing.sharded import (packing_join, packing_part, packing_plan,
                                                  packing_write)
from longalign.pipelines import platform
from longalign.pipelines.pipeline import DEFAULTS

SHARDED_PACKING_PIPELINE_NAME = "longalign-sharded-packing"
# pods at a time per ParallelFor: a compile-time setting of dsl.ParallelFor (KFP takes no pipeline
# parameter there), so `longalign compile --parallelism N` builds the pipeline with another value
PARALLELISM = 8


class ShardedPackingOutputs(NamedTuple):
    packed: Dataset
    metrics: Metrics


def packing_steps(config, base_model, chats, parts, shared_dir, pvc_name,
                  parallelism: int = PARALLELISM) -> PipelineTask:
    """The sharded packing steps on ``chats``; returns the join task (outputs packed, metrics)."""
    with dsl.ParallelFor(parts, parallelism=parallelism) as index:
        part = packing_part(config=config, base_model=base_model, chats=chats, index=index,
                            parts=parts, shared_dir=shared_dir)
        platform.volume_pod(part.set_display_name("packing part"), "packing", pvc_name=pvc_name)
    plan = packing_plan(config=config, base_model=base_model,
                        parts=dsl.Collected(part.outputs["part"]), shared_dir=shared_dir)
    platform.volume_pod(plan.set_display_name("packing plan"), "packing", pvc_name=pvc_name)
    with dsl.ParallelFor(plan.outputs["Output"], parallelism=parallelism) as file:
        write = packing_write(plan=plan.outputs["plan"], index=file)
        platform.volume_pod(write.set_display_name("packing write"), "packing",
                            pvc_name=pvc_name)
    join = packing_join(plan=plan.outputs["plan"],
                        written=dsl.Collected(write.outputs["written"]))
    return platform.volume_pod(join.set_display_name("packing join"), "packing",
                               pvc_name=pvc_name)


def sharded_packing(parallelism: int = PARALLELISM):
    """The pipeline with ``parallelism`` pods at a time per ParallelFor (0: no limit)."""

    @dsl.pipeline(name=SHARDED_PACKING_PIPELINE_NAME,
                  description="Pack stored chats into Arrow rows with one pod per part of "
                  "the input, a plan step and one pod per row file; the rows equal those of the "
                  "one-pod packing step and stay on the shared volume.")
    def sharded_packing_pipeline(
        chats_uri: str,
        base_model: str = DEFAULTS["base_model"],
        packing_config: dict = DEFAULTS["packing"],
        parts: list = [0, 1, 2],
        shared_dir: str = platform.SHARED_DIR,
        pvc_name: str = platform.PVC_NAME,
    ) -> ShardedPackingOutputs:
        """`chats_uri`: where the chats (or, for format text, the corpus) are stored; `parts`: the
        part indices [0, 1, ..., n-1], one pod each (the rows are cut into n contiguous parts; a
        list that is not 0..n-1 fails in the plan step, which checks the parts cover the rows);
        `shared_dir`: where the sample stores and the rows go, on the ReadWriteMany claim
        `pvc_name` (mounted at /mnt/longalign in every step, and needed by whatever reads the
        rows)."""
        chats = dsl.importer(artifact_uri=chats_uri, artifact_class=Dataset, reimport=False)
        join = packing_steps(packing_config, base_model, chats.output, parts, shared_dir,
                             pvc_name, parallelism)
        return ShardedPackingOutputs(packed=join.outputs["packed"],
                                     metrics=join.outputs["metrics"])

    return sharded_packing_pipeline


sharded_packing_pipeline = sharded_packing()
