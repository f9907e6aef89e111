"""The packing stage (LongAlign section 3): chat template tokenisation with assistant-only labels,
then global best-fit-decreasing packing (``pack``), sorted batching (``sort``) or the padded
baseline (``naive``), written as memory-mappable Arrow rows. See docs/packing.md.

Public API:
- ``pack(config, model, chats, output, overwrite=False) -> stats``: the stage itself.
- ``plan_packs(lengths, max_len, *, seed=0) -> rows``: row planning on lengths alone (the exact
  contract is in its docstring); ``plan_sorted``, ``plan_naive`` and ``plan_next_fit`` (LongAlign's
  own packing, for comparison) likewise.
- ``read_packed(path) -> (meta, tables)``: meta.json and the zero-copy memory-mapped row tables.
- ``ROW_SCHEMA``: the exact Arrow schema of ``rows-*.arrow``.
"""

from longalign.packing.plan import plan_naive, plan_next_fit, plan_packs, plan_sorted
from longalign.packing.stage import SCHEMA_VERSION, pack
from longalign.packing.store import ROW_SCHEMA, read_packed

__all__ = ["pack", "plan_packs", "plan_sorted", "plan_naive", "plan_next_fit", "read_packed",
           "ROW_SCHEMA", "SCHEMA_VERSION"]
