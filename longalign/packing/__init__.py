"""The packing stage (LongAlign section 3): chat template tokenisation with assistant-only labels,
then global best-fit-decreasing packing (``pack``), sorted batching (``sort``) or the padded
baseline (``naive``), written as memory-mappable Arrow rows.

Public API:
- ``pack(config, model, chats, output, overwrite=False) -> stats``: the stage itself.
- ``plan_packs(lengths, max_len, seed=0) -> rows``: best-fit-decreasing row planning on lengths.
- ``read_packed(path) -> (meta, tables)``: meta.json and the zero-copy memory-mapped row tables.
- ``ROW_SCHEMA``: the exact Arrow schema of ``rows-*.arrow``.
"""

from longalign.packing.plan import plan_naive, plan_packs, plan_sorted
from longalign.packing.stage import SCHEMA_VERSION, pack
from longalign.packing.store import ROW_SCHEMA, read_packed

__all__ = ["pack", "plan_packs", "plan_sorted", "plan_naive", "read_packed", "ROW_SCHEMA",
           "SCHEMA_VERSION"]
