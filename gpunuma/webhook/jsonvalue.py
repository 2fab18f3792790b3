"""JSON values as the API server compares and addresses them: equality, and JSON-pointer segments.

Used where the mutation records its patch (:mod:`gpunuma.webhook.edits`) and by ``gpunuma
inject``'s YAML editor. Pure: no I/O.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["escape", "same_json"]


def same_json(old: Any, new: Any) -> bool:
    """Equal as JSON: Python's ``True == 1`` and ``1 == 1.0`` are not equal JSON documents; a NaN
    (which YAML, unlike JSON, can hold: ``gpunuma inject``) equals a NaN."""
    if old is new:
        return True
    if type(old) is not type(new):
        return False
    if isinstance(old, dict):
        return old.keys() == new.keys() and all(same_json(old[k], new[k]) for k in old)
    if isinstance(old, list):
        return len(old) == len(new) and all(same_json(a, b) for a, b in zip(old, new, strict=True))
    # NaN != NaN: only compared when the values differ, off the common path.
    return bool(old == new) or (isinstance(old, float) and math.isnan(old) and math.isnan(new))


def escape(key: str) -> str:
    """A JSON pointer segment: RFC 6901 escapes ``~`` and ``/``."""
    if "~" in key or "/" in key:
        return key.replace("~", "~0").replace("/", "~1")
    return key
