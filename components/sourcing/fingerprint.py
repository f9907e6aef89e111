"""KFP component: the data fingerprint in front of sourcing (never cached).

It reads no text, only what identifies the data (file lists with sizes and modification times or
hashes, git commits, dataset revisions), and returns the fingerprint as a parameter. The cached
sourcing task takes it as an input parameter: KFP caches parameters by value (artifacts only by
URI and metadata), so the sourcing task's cache key changes exactly when the data changed.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Markdown, Metrics, Output

from longalign.components.common import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def fingerprint(
    config: dict, summary: Output[Markdown], metrics: Output[Metrics]
) -> NamedTuple("Outputs", [("fingerprint", dict)]):
    """Fingerprint the sources of a sourcing config (see longalign.sourcing.fingerprint).

    Args:
        config: the `sourcing` config section (see longalign.config.SourcingConfig).
        summary: Markdown table of every source's fingerprint.
        metrics: sources, files and bytes fingerprinted.

    Returns:
        fingerprint: {"digest", "mode", "sources": [...]}, the sourcing task's `data_fingerprint`.
    """
    import tempfile
    from collections import namedtuple

    from longalign.components.common import publish
    from longalign.config import parse_section
    from longalign.sourcing.fingerprint import fingerprint_result

    with tempfile.TemporaryDirectory() as scratch:
        result = fingerprint_result(parse_section("sourcing", config), scratch)
        publish(result, metrics, summary)
    return namedtuple("Outputs", ["fingerprint"])(result.stats)
