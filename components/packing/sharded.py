"""KFP components: packing as a map over input parts (one pod each) and a join.

``packing_part`` tokenises part ``index`` of ``len(parts)`` of the input rows; ``packing_join`` takes
every part (``dsl.Collected`` of a ``dsl.ParallelFor``), drops duplicate ids over all of them,
plans the rows over all lengths and writes them: the same rows as the one-pod ``packing``.
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
):
    """Tokenise one part of the chats (the rows split evenly into len(parts) contiguous parts).

    Args:
        config: the `packing` config section (see longalign.config.PackingConfig).
        base_model: the base model spec, whose tokenizer and chat template are used.
        chats: the generation stage's chats directory (or the corpus, for format text).
        index: which part (an entry of parts).
        parts: every part index, [0, 1, ..., n-1] (the ParallelFor's items).
        part: output directory (a sample-store part and tally.json).
    """
    from longalign.components.common import publish
    from longalign.config import parse_section
    from longalign.packing.parallel import encode_shard

    result = encode_shard(parse_section("packing", config), base_model, chats.path, part.path,
                          index, len(parts))
    publish(result, metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def packing_join(
    config: dict,
    base_model: str,
    parts: Input[List[Dataset]],
    packed: Output[Dataset],
    summary: Output[Markdown],
    metrics: Output[Metrics],
):
    """Join the parts, drop duplicate ids, plan the rows over all lengths and write them.

    Args:
        config: the `packing` config section (see longalign.config.PackingConfig).
        base_model: the base model spec (the same as for the parts).
        parts: every packing_part output.
        packed: output directory (rows-*.arrow, meta.json, stats.json, summary.md).
    """
    from longalign.components.common import publish
    from longalign.config import parse_section
    from longalign.packing.stage import pack_parts

    result = pack_parts(parse_section("packing", config), base_model, [p.path for p in parts],
                        packed.path)
    publish(result, metrics, summary)
