"""Heartbeat staleness (DESIGN §8): is a layout's ``heartbeatTime`` older than N heartbeats? Pure."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from gpunuma.rfc3339 import format_rfc3339, parse_rfc3339

__all__ = ["FUTURE_TOLERANCE", "Heartbeat", "judge_heartbeat"]

# How far ahead of the operator's clock a heartbeat may be (clock skew between nodes). Beyond it
# the heartbeat proves nothing: a layout written with heartbeatTime in year 2999 would otherwise
# stay fresh forever, whatever happens to its agent.
FUTURE_TOLERANCE = dt.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What a layout's heartbeat says: ``stale`` is None when it cannot be judged."""

    stale: bool | None
    reason: str
    message: str


def judge_heartbeat(
    heartbeat_time: object, now: dt.datetime, *, interval_s: float, missed: int,
) -> Heartbeat:
    """Stale when the last heartbeat is older than ``missed`` × ``interval_s``."""
    limit = dt.timedelta(seconds=interval_s * missed)
    if heartbeat_time is None:
        return Heartbeat(None, "NoHeartbeat", "spec.heartbeatTime is not set; is the agent running?")
    if not isinstance(heartbeat_time, str):
        return Heartbeat(None, "InvalidHeartbeat",
                         f"spec.heartbeatTime must be an RFC 3339 string, got {heartbeat_time!r}")
    try:
        beat = parse_rfc3339(heartbeat_time)
    except ValueError as exc:
        return Heartbeat(None, "InvalidHeartbeat", f"spec.heartbeatTime: {exc}")
    age = now - beat
    if -age > FUTURE_TOLERANCE:
        return Heartbeat(
            True, "HeartbeatFromTheFuture",
            f"last heartbeat {format_rfc3339(beat)} is {int(-age.total_seconds())} s ahead of the "
            f"operator's clock (more than {int(FUTURE_TOLERANCE.total_seconds())} s): the node's "
            "clock is wrong or the layout was not written by its agent",
        )
    if age > limit:
        return Heartbeat(
            True, "HeartbeatMissed",
            f"last heartbeat {format_rfc3339(beat)} is {int(age.total_seconds())} s old, more than "
            f"{missed} heartbeats of {interval_s:g} s; is the agent on this node running?",
        )
    # No timestamp in the message: it would change the status (one more write) on every heartbeat.
    return Heartbeat(False, "HeartbeatFresh",
                     f"heartbeats arrive within {missed} × {interval_s:g} s")
