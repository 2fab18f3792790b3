"""The periodic loop acts only where kopf's peering would let the replica run."""

from __future__ import annotations

import datetime as dt

from gpunuma.operator.peering import is_active_peer
from gpunuma.rfc3339 import format_rfc3339

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def peer(priority: int, seen_ago_s: float, lifetime: int = 60) -> dict[str, object]:
    return {"priority": priority, "lifetime": lifetime,
            "lastseen": format_rfc3339(NOW - dt.timedelta(seconds=seen_ago_s))}


def test_a_replica_alone_is_active() -> None:
    assert is_active_peer({"me": peer(5, 0)}, "me", 5, NOW)
    assert is_active_peer(None, "me", 5, NOW)


def test_a_live_peer_of_higher_priority_pauses_the_loop() -> None:
    assert not is_active_peer({"me": peer(5, 0), "other": peer(9, 10)}, "me", 5, NOW)


def test_a_dead_or_lower_peer_does_not() -> None:
    assert is_active_peer({"other": peer(9, 120)}, "me", 5, NOW)
    assert is_active_peer({"other": peer(1, 0)}, "me", 5, NOW)


def test_an_unreadable_peer_entry_is_ignored() -> None:
    assert is_active_peer({"other": {"priority": "high", "lastseen": "?"}, "x": 3}, "me", 5, NOW)


def test_a_live_peer_of_the_same_priority_pauses_the_loop_as_kopf_pauses_both() -> None:
    assert not is_active_peer({"me": peer(5, 0), "twin": peer(5, 10)}, "me", 5, NOW)
    assert is_active_peer({"me": peer(5, 0), "twin": peer(5, 120)}, "me", 5, NOW)
