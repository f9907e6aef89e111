"""KFP component: the promotion gate, the pipeline's last step (never cached: it reads and
writes the registry, whose state is not part of any cache key)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from longalign.components.common import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def promotion(
    config: dict,
    base_model: str,
    run_id: str,
    model: Input[Model],
    scores: Input[Dataset],
    corpus: Input[Dataset],
    decision: Output[Dataset],
    summary: Output[Markdown],
    metrics: Output[Metrics],
):
    """Compare the model with the last promoted version; register it when the gate passes.

    Args:
        config: the `promotion` config section (see longalign.config.PromotionConfig).
        base_model: model spec of the base model (recorded with the version).
        run_id: the pipeline run id (recorded with the version).
        model: the trained model (its URI, or pointer.json's, is what gets registered).
        scores: the scoring stage's output (each suite's headline number).
        corpus: the sourcing stage's output (its stats carry the data fingerprint).
        decision: output directory (decision.json, report.md): promoted, blocked or unchanged.
    """
    from longalign.components.common import publish
    from longalign.config import parse_section
    from longalign.promotion import promote

    result = promote(parse_section("promotion", config), model.path, scores.path, decision.path,
                     corpus_dir=corpus.path, uri=model.uri, run_id=run_id, base_model=base_model)
    decision.metadata.update(status=result["status"], version=result["version"] or "")
    publish(result, metrics, summary)
