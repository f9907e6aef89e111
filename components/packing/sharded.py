"""KFP components: packing over many pods, with the sample stores and the rows on the shared volume.

``packing_part`` (one pod per input part) tokenises part ``index`` of ``len(parts)`` of the input
rows into a sample store on the volume; ``packing_plan`` (one pod) joins every part's per-sample
numbers (``dsl.Collected``), drops duplicate ids, plans the rows over all lengths and cuts them
into row files; ``packing_write`` (one pod per row file, a ``dsl.ParallelFor`` over the plan's
file list) writes one file onto the volume; ``packing_join`` checks every file and publishes the
packing output, whose ``meta.json`` points at the rows (``rows_dir``), and deletes the stores.
The rows equal the one-pod ``packing`` component's (longalign.packing.spool). Every pod of the
four must mount the volume at ``shared_dir``'s path, and so must every pod that reads the output.
"""

from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Output

from longalign.components.common import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def packing_part(
    config: dict,
    base_model: str,
    chats: Input[Dataset],
    index: int,
    parts: list,
    part: Output[Dataset],
    metrics: Output[Metrics],
    shared_dir: str = "",
):
    """Tokenise one part of the chats (the rows split evenly into len(parts) contiguous parts).

    Args:
        config: the `packing` config section (see longalign.config.PackingConfig).
        base_model: the base model spec, whose tokenizer and chat template are used.
        chats: the generation stage's chats directory (or the corpus, for format text).
        index: which part (an entry of parts).
        parts: every part index, [0, 1, ..., n-1] (the ParallelFor's items).
        part: output directory (tally.json; the sample store too when shared_dir is empty).
        shared_dir: a directory on the volume every pod of the run mounts; the sample store
            goes there (what packing_plan expects), not into the part artifact.
    """
    from longalign.components.common import publish
    from longalign.config import parse_section
    from longalign.packing.parallel import encode_shard
    from longalign.packing.spool import volume_dir

    # keyed on the part index too: a KFP backend without kubeflow/pipelines#11243 gives every
    # iteration of a ParallelFor the same output URI
    store_dir = volume_dir(shared_dir, "parts", f"{part.uri}#{index}") if shared_dir else None
    result = encode_shard(parse_section("packing", config), base_model, chats.path, part.path,
                          index, len(parts), store_dir=store_dir)
    publish(result, metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def packing_plan(
    config: dict,
    base_model: str,
    parts: Input[List[Dataset]],
    shared_dir: str,
    plan: Output[Dataset],
    summary: Output[Markdown],
    metrics: Output[Metrics],
) -> list:
    """Join the parts' lengths, drop duplicate ids, plan the rows and cut them into row files.

    Args:
        config: the `packing` config section (see longalign.config.PackingConfig).
        base_model: the base model spec (the same as for the parts).
        parts: every packing_part output.
        shared_dir: the shared volume directory (the parts' stores; the rows go below it).
        plan: output directory (the plan, and the packing output's meta.json and reports).

    Returns:
        The row file indices [0, ..., n-1], one packing_write pod each.
    """
    from longalign.components.common import publish
    from longalign.config import parse_section
    from longalign.packing.spool import plan_parts, volume_dir

    result, files = plan_parts(parse_section("packing", config), base_model,
                               [p.path for p in parts], plan.path,
                               volume_dir(shared_dir, "rows", plan.uri), shared_dir=shared_dir)
    publish(result, metrics, summary)
    return files


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def packing_write(
    plan: Input[Dataset],
    index: int,
    written: Output[Dataset],
    metrics: Output[Metrics],
):
    """Write row file `index` of the plan onto the shared volume.

    Args:
        plan: the packing_plan output.
        index: which row file (an entry of packing_plan's list).
        written: output directory (written.json: the file's name, rows, tokens, bytes).
    """
    from longalign.components.common import publish
    from longalign.packing.spool import write_file

    publish(write_file(plan.path, index, written.path), metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def packing_join(
    plan: Input[Dataset],
    written: Input[List[Dataset]],
    packed: Output[Dataset],
    summary: Output[Markdown],
    metrics: Output[Metrics],
):
    """Check that every row file was written, publish the packing output, delete the stores.

    Args:
        plan: the packing_plan output.
        written: every packing_write output.
        packed: output directory (meta.json pointing at the rows on the volume, stats.json,
            summary.md, lengths.png): what the training stage reads.
    """
    from longalign.components.common import publish
    from longalign.packing.spool import join_files

    publish(join_files(plan.path, [w.path for w in written], packed.path), metrics, summary)
