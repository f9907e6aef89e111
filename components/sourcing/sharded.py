"""KFP components: sourcing as a map over parts of the candidates (one pod each) and a join.

``sourcing_part`` runs the per-document work (decoding, filters, hashes, MinHash signatures,
token counts) over part ``index`` of ``len(parts)``; ``sourcing_join`` takes every part
(``dsl.Collected`` of a ``dsl.ParallelFor``) and makes the one-pod decisions in the one-pod
order: the same corpus as the one-pod ``sourcing``.
"""

from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Output

from longalign.components.common import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def sourcing_part(
    config: dict,
    base_model: str,
    index: int,
    parts: list,
    part: Output[Dataset],
    metrics: Output[Metrics],
):
    """Run the per-document work of sourcing over one part of the candidates.

    Args:
        config: the `sourcing` config section (see longalign.config.SourcingConfig); without
            max_documents and mix.
        base_model: the base model spec, whose tokenizer counts tokens.
        index: which part (an entry of parts).
        parts: every part index, [0, 1, ..., n-1] (the ParallelFor's items).
        part: output directory (prepared.parquet and part.json).
    """
    from longalign.components.common import publish
    from longalign.config import parse_section
    from longalign.sourcing.shards import source_shard

    result = source_shard(parse_section("sourcing", config), base_model, part.path, index,
                          len(parts))
    publish(result, metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def sourcing_join(
    config: dict,
    base_model: str,
    parts: Input[List[Dataset]],
    corpus: Output[Dataset],
    summary: Output[Markdown],
    metrics: Output[Metrics],
):
    """Deduplicate, length-filter, split and write the corpus from every part, in source order.

    Args:
        config: the `sourcing` config section (the same as for the parts).
        base_model: the base model spec (the same as for the parts).
        parts: every sourcing_part output.
        corpus: output corpus directory (documents-*.parquet, stats.json, summary.md, lengths.png).
    """
    from longalign.components.common import publish
    from longalign.config import parse_section
    from longalign.sourcing import source

    result = source(parse_section("sourcing", config), base_model, corpus.path,
                    parts=[p.path for p in parts])
    corpus.metadata["data_fingerprint"] = result["data_fingerprint"]["digest"]
    publish(result, metrics, summary)
