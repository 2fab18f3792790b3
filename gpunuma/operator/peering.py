"""Is this replica the one that acts? kopf's peering rule, applied to the operator's own loop. Pure.

kopf (1.45) pauses its watchers in a replica that sees a live peer of higher priority, and pauses
*every* replica, itself included, when a live peer has the same priority. The operator's periodic
loop (staleness re-checks, certificate renewal) is not a kopf watcher, so it reads the same peering
object and applies the same rule. Replicas get distinct random priorities by default, which turns
kopf's peering into a leader election; ``--priority`` set to one value for two replicas would stop
both until one of them goes away.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from gpunuma.rfc3339 import parse_rfc3339

__all__ = ["is_active_peer"]


def is_active_peer(
    peering_status: Mapping[str, Any] | None, identity: str, priority: int, now: dt.datetime,
) -> bool:
    """False while another live peer (``lastseen + lifetime`` in the future) has a priority as
    high or higher: kopf pauses the lower one, and both on a tie."""
    for peer_id, info in (peering_status or {}).items():
        if peer_id == identity or not isinstance(info, Mapping):
            continue
        try:
            peer_priority = int(info.get("priority", 0))
            lifetime = dt.timedelta(seconds=int(info.get("lifetime", 60)))
            lastseen = parse_rfc3339(str(info.get("lastseen")))
        except (TypeError, ValueError):
            continue  # an unreadable entry is no evidence of a live leader
        if peer_priority >= priority and lastseen + lifetime > now:
            return False
    return True
