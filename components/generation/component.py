"""KFP component: the generation stage (Self-Instruct chats over long documents)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Output

from longalign.components.common import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def generation(
    config: dict,
    corpus: Input[Dataset],
    chats: Output[Dataset],
    preview: Output[Markdown],
    metrics: Output[Metrics],
):
    """Generate long-context instruction data with a teacher (and synthetic recall tasks).

    Args:
        config: the `generation` config section (see longalign.config.GenerationConfig).
        corpus: the sourcing stage's corpus directory.
        chats: output chats directory (samples-*.parquet, stats.json, preview.md).
    """
    from longalign.components.common import publish
    from longalign.config import parse_section
    from longalign.generation import generate

    result = generate(parse_section("generation", config), corpus.path, chats.path)
    publish(result, metrics, preview)
