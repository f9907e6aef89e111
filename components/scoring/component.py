"""KFP component: the scoring stage (offline long-context checks of the fine-tuned model and its base)."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from longalign.components.common import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def scoring(
    config: dict,
    base_model: str,
    model: Input[Model],
    corpus: Input[Dataset],
    scores: Output[Dataset],
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
):
    """Score a fine-tuned model (and its base, for comparison) on the needle and recall suites.

    Args:
        config: the `scoring` config section (see longalign.config.ScoringConfig).
        base_model: model spec of the base model, scored alongside for comparison.
        model: the training stage's checkpoint directory.
        corpus: the sourcing stage's corpus (haystack text).
        scores: output directory (scores.json, stats.json, report.html, needle.png, ruler-needle.png, report.md).
    """
    from longalign.components.common import publish
    from longalign.config import parse_section
    from longalign.scoring import score

    result = score(parse_section("scoring", config), model.path, scores.path,
                  base_model=base_model, corpus=corpus.path)
    publish(result, metrics, summary, report)
