"""Sourcing stage: collect long documents, clean, deduplicate, filter by token length, write shards.

``source(config, model, output)`` is the entry point used by the CLI and the KFP component.
Sources are given as specs (``stdlib:``, ``dir:PATH``, ``jsonl:PATH[#field]``,
``parquet:PATH[#field]``, ``hf:NAME[:config][:split]``, ``git:PATH``, each with optional
``?key=value`` options); see ``longalign.sourcing.readers`` and docs/sourcing.md. The output directory holds ``documents-*.parquet`` (``longalign.formats.CORPUS``), ``stats.json``,
``summary.md`` and ``lengths.png``.
"""

from longalign.config import SourcingConfig
from longalign.sourcing.readers import SCHEMES, open_reader
from longalign.sourcing.stage import source

__all__ = ["SCHEMES", "SourcingConfig", "open_reader", "source"]
