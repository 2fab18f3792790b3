"""Reading a pod defensively: each part the mutation reads, checked for the shape it must have.

The API server only sends well-formed pods; ``gpunuma inject`` can be given anything, so a part of
the wrong shape raises ``InvalidPod`` with what is wrong. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["InvalidPod", "is_string_list", "mapping_at", "named_list", "string_map"]


_NONE: Mapping[str, Any] = MappingProxyType({})


class InvalidPod(ValueError):
    """The object is not shaped like a pod (a list where a mapping belongs, a command not a list…).

    The API server never sends such a pod; ``gpunuma inject`` can be given one.
    """


def mapping_at(parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    value = parent.get(key)
    if value is not None and not isinstance(value, dict):
        raise InvalidPod(f"{where} must be a map, not {type(value).__name__}")
    return value


def string_map(metadata: Mapping[str, Any] | None, key: str) -> Mapping[str, str]:
    """The pod's own map at ``metadata[key]`` (not a copy), empty when there is none."""
    value = mapping_at(metadata or _NONE, key, f"metadata.{key}")
    if not value:
        return _NONE
    for item in value.values():
        if not isinstance(item, str):
            raise InvalidPod(f"metadata.{key} values must be strings (quote them in YAML)")
    return value


def named_list(parent: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = parent.get(key) or []
    if not isinstance(value, list):
        raise InvalidPod(f"{key} must be a list of maps, each with a name")
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidPod(f"{key} must be a list of maps, each with a name")
    return value


def is_string_list(value: object) -> bool:
    if not isinstance(value, list):
        return False
    for item in value:  # noqa: SIM110 - a loop: twice as fast as all() over a generator
        if not isinstance(item, str):
            return False
    return True
