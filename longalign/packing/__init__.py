"""The packing stage (LongAlign section 3): chat template tokenisation with assistant-only labels,
then global best-fit-decreasing packing (``pack``), sorted batching (``sort``) or the padded
baseline (``naive``), written as memory-mappable Arrow rows. See docs/packing.md.

Public API:
- ``pack(config, model, chats, output, overwrite=False) -> stats``: the stage itself.
- ``plan_packs(lengths, max_len, *, seed=0) -> rows``: row planning on lengths alone (the exact
  contract is in its docstring); ``plan_sorted``, ``plan_naive`` and ``plan_next_fit`` (LongAlign's
  own packing, for comparison) likewise.
The output format (``rows-*.arrow`` and ``meta.json``) and its reader live in ``longalign.formats``
(``PACKED``, ``read_packed``).
"""

from longalign.packing.plan import plan_naive, plan_next_fit, plan_packs, plan_sorted
from longalign.packing.stage import pack

__all__ = ["pack", "plan_packs", "plan_sorted", "plan_naive", "plan_next_fit"]
