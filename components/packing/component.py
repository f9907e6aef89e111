"""KFP component: the packing stage (chats -> tokenised, packed Arrow rows)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Output

from longalign.components.common import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def packing(
    config: dict,
    base_model: str,
    chats: Input[Dataset],
    packed: Output[Dataset],
    summary: Output[Markdown],
    metrics: Output[Metrics],
):
    """Tokenise chats with the model's chat template and pack them into Arrow rows.

    Args:
        config: the `packing` config section (see longalign.config.PackingConfig).
        base_model: the base model spec, whose tokenizer and chat template are used.
        chats: the generation stage's chats directory.
        packed: output directory (rows-*.arrow, meta.json, stats.json, summary.md).
    """
    from longalign.components.common import publish
    from longalign.config import parse_section
    from longalign.packing import pack

    result = pack(parse_section("packing", config), base_model, chats.path, packed.path)
    publish(result, metrics, summary)
