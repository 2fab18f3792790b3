"""Heartbeat staleness (DESIGN §8): is a layout's ``heartbeatTime`` older than N heartbeats? Pure."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

__all__ = ["Heartbeat", "format_rfc3339", "judge_heartbeat", "parse_rfc3339"]


def parse_rfc3339(text: str) -> dt.datetime:
    """An RFC 3339 timestamp as Kubernetes writes it (``2024-05-01T12:00:00Z``), timezone-aware.

    Raises ``ValueError`` naming the bad value; a timestamp without an offset is refused rather
    than guessed, since guessing the zone wrong would mark every node stale (or none).
    """
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(candidate)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an RFC 3339 timestamp; expected e.g. '2024-05-01T12:00:00Z'"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no timezone; expected e.g. '2024-05-01T12:00:00Z'")
    return moment


def format_rfc3339(moment: dt.datetime) -> str:
    """UTC, whole seconds, ``Z`` suffix: the form Kubernetes uses for condition timestamps."""
    return moment.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    if age > limit:
        return Heartbeat(
            True, "HeartbeatMissed",
            f"last heartbeat {format_rfc3339(beat)} is {int(age.total_seconds())} s old, more than "
            f"{missed} heartbeats of {interval_s:g} s; is the agent on this node running?",
        )
    # No timestamp in the message: it would change the status (one more write) on every heartbeat.
    return Heartbeat(False, "HeartbeatFresh",
                     f"heartbeats arrive within {missed} × {interval_s:g} s")
