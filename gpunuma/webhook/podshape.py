"""Reading a pod defensively: each part the mutation reads, checked for the shape it must have.

The API server only sends well-formed pods; ``gpunuma inject`` can be given anything, so a part of
the wrong shape raises ``InvalidPod`` with what is wrong. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["InvalidPod", "is_string_list", "mapping_at", "named_list", "string_map"]


class InvalidPod(ValueError):
    """The object is not shaped like a pod (a list where a mapping belongs, a command not a list…).

    The API server never sends such a pod; ``gpunuma inject`` can be given one.
    """


def mapping_at(parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    value = parent.get(key)
    if value is not None and not isinstance(value, dict):
        raise InvalidPod(f"{where} must be a map, not {type(value).__name__}")
    return value


def string_map(metadata: Mapping[str, Any] | None, key: str) -> dict[str, str]:
    value = mapping_at(metadata or {}, key, f"metadata.{key}") or {}
    if not all(isinstance(item, str) for item in value.values()):
        raise InvalidPod(f"metadata.{key} values must be strings (quote them in YAML)")
    return dict(value)


def named_list(parent: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = parent.get(key) or []
    if not isinstance(value, list):
        raise InvalidPod(f"{key} must be a list of maps, each with a name")
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidPod(f"{key} must be a list of maps, each with a name")
    return value


def is_string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
