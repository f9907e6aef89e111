"""Per-group mix ratios: which source the next candidate comes from.

Each source belongs to a group (its ``?group=`` option, else its spec). With a mix such as
``{"code": 0.3, "books": 0.3, "short": 0.4}`` the scheduler always draws the next candidate from
the group furthest behind its share, measured in kept tokens (or documents) plus an estimate for
documents still waiting to be counted. Sources are read in their seeded shuffled order, and the
sources of one group take turns. Rejected documents add nothing, so a group whose documents are
often rejected is simply read further. When the group furthest behind has nothing left, the
shares can no longer be kept and the run stops there (``stopped_by`` in stats); with
``max_documents`` it also stops at the cap. Shares are therefore met to within about one
document per group.
"""

from __future__ import annotations

from typing import Callable, Iterator

from longalign.errors import UserError
from longalign.sourcing.base import Item


def mix_groups(groups: list[str], mix: dict[str, float]) -> dict[str, float]:
    """Normalised shares per group; every group needs a share and every share a group."""
    missing = sorted(set(groups) - set(mix))
    unknown = sorted(set(mix) - set(groups))
    if missing:
        raise UserError(f"mix has no share for source group(s) {missing}; give each source a "
                        f"?group=NAME and every group a share (groups: {sorted(set(groups))})")
    if unknown:
        raise UserError(f"mix names group(s) {unknown} that no source has (groups: {sorted(set(groups))})")
    total = sum(mix.values())
    return {g: mix[g] / total for g in mix}


def mixed(streams: list[Iterator[list[Item]]], groups: list[str], shares: dict[str, float],
          progress: Callable[[str], float], stop: dict) -> Iterator[tuple[int, list[Item]]]:
    """(reader index, candidate) pairs following ``shares``; ``progress(group)`` is the group's
    amount so far. Sets ``stop["stopped_by"]`` when a group runs out."""
    members = {g: [k for k, grp in enumerate(groups) if grp == g] for g in shares}
    turn = {g: 0 for g in shares}
    order = list(shares)
    while True:
        group = min(order, key=lambda g: (progress(g) / shares[g], order.index(g)))
        item = None
        while members[group] and item is None:
            k = members[group][turn[group] % len(members[group])]
            try:
                item = (k, next(streams[k]))
                turn[group] += 1
            except StopIteration:
                members[group].remove(k)
        if item is None:
            stop["stopped_by"] = f"mix: group {group!r} has no documents left"
            return
        yield item
