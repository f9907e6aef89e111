"""KFP component: the sourcing stage (long texts -> cleaned, deduplicated, length-filtered corpus)."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Metrics, Output

from longalign.components.common import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def sourcing(
    config: dict,
    base_model: str,
    corpus: Output[Dataset],
    summary: Output[Markdown],
    metrics: Output[Metrics],
    data_fingerprint: dict = {},
):
    """Read long texts from the configured sources, clean, deduplicate and length-filter them.

    Args:
        config: the `sourcing` config section (see longalign.config.SourcingConfig).
        base_model: the base model spec, whose tokenizer counts tokens.
        corpus: output corpus directory (documents-*.parquet, stats.json, summary.md, lengths.png).
        data_fingerprint: the sourcing_fingerprint task's output; part of this task's cache key,
            recorded in stats.json and the corpus metadata (computed here when empty).
    """
    from longalign.components.common import publish
    from longalign.config import parse_section
    from longalign.sourcing import source

    result = source(parse_section("sourcing", config), base_model, corpus.path,
                    fingerprint=data_fingerprint or None)
    corpus.metadata["data_fingerprint"] = result["data_fingerprint"]["digest"]
    publish(result, metrics, summary)
