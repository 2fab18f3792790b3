"""RFC 3339 timestamps as Kubernetes writes them, parsed and formatted. Pure: no I/O.

Kept apart from the API client: the operator's pure modules (staleness, peering, status) need
the timestamps and nothing of HTTP.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["format_rfc3339", "parse_rfc3339"]


def parse_rfc3339(text: str) -> dt.datetime:
    """An RFC 3339 timestamp as Kubernetes writes it (``2024-05-01T12:00:00Z``), timezone-aware.

    Raises ``ValueError`` naming the bad value; a timestamp without an offset is refused rather
    than guessed, since guessing the zone wrong would shift every age computed from it.
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
    """UTC, whole seconds, ``Z`` suffix: the form Kubernetes uses for its timestamps."""
    return moment.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
