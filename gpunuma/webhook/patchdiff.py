"""An RFC 6902 JSON patch computed by diffing two JSON documents.

The webhook's answer is recorded by the mutation as it edits the pod (:mod:`gpunuma.webhook.edits`);
this differ finds the same change independently, from the pod before and after, and the tests hold
the one to the other (``mutation.json_patch``). ``same_json`` serves the edits and ``gpunuma
inject``'s YAML editor too.

Two documents that share most of their objects (the mutated pod reuses every part of the admitted
pod it did not change) are compared by identity first, so the shared parts are skipped without
being walked. ``jsonpatch.make_patch`` computes an equivalent diff at 20–28× the cost (measured on
the webhook's pods). Lists are diffed the way the mutation changes them (items added at the front
or the end, or changed in place); lists of named items (containers, volumes) can be aligned by name
first, so that an item inserted in the middle is one ``add``, not a replacement of every item after
it. Pure: no I/O.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["diff", "escape", "same_json"]

_ABSENT = object()  # a key missing from the old document (None is a JSON value)


def diff(
    before: Mapping[str, Any], after: Mapping[str, Any],
    named_lists: Sequence[tuple[str, str]] = (),
) -> list[dict[str, Any]]:
    """The operations that turn ``before`` into ``after`` (empty when they are equal as JSON).

    ``named_lists`` names ``(section, key)`` lists of ``{"name": …}`` items to align by name.
    Neither document is modified; the operations may share values with ``after``.
    """
    operations, aligned = _align_named_lists(dict(before), after, named_lists)
    _diff(aligned, after, "", operations)
    return operations


def _diff(old: Any, new: Any, path: str, operations: list[dict[str, Any]]) -> None:
    """Append to ``operations`` what turns ``old`` into ``new`` at ``path``.

    Lists are compared as the mutation changes them: items added at the end (env, mounts,
    volumes), items added at the front (the wrapped command), or items changed in place; any other
    change replaces the list whole, which is always correct, if longer. Identity first: the parts
    the mutation did not change are shared, and skipped without being walked.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        if len(old) > len(new) or not new.keys() >= old.keys():
            for key in old:
                if key not in new:
                    operations.append({"op": "remove", "path": _join(path, key)})
        for key, value in new.items():
            previous = old.get(key, _ABSENT)
            if previous is value:  # most of a pod is shared, unchanged: skip it cheaply
                continue
            if previous is _ABSENT:
                operations.append({"op": "add", "path": _join(path, key), "value": value})
            else:
                _diff(previous, value, _join(path, key), operations)
        return
    if isinstance(old, list) and isinstance(new, list):
        kept, total = len(old), len(new)
        if kept == total:
            for index, old_item in enumerate(old):
                if old_item is not new[index]:
                    _diff(old_item, new[index], f"{path}/{index}", operations)
            return
        # The kept items are the very objects of the old list (the mutation only adds around
        # them), so identity decides, and Python's 1 == True cannot hide a change.
        if kept < total:
            if all(map(operator.is_, new[:kept], old)):
                operations.extend({"op": "add", "path": f"{path}/{index}", "value": new[index]}
                                  for index in range(kept, total))
                return
            added = total - kept
            if all(map(operator.is_, new[added:], old)):
                operations.extend({"op": "add", "path": f"{path}/{index}", "value": new[index]}
                                  for index in range(added))
                return
    if not same_json(old, new):
        operations.append({"op": "replace", "path": path, "value": new})


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


def _join(path: str, key: str) -> str:
    """``path`` and one more JSON pointer segment."""
    return f"{path}/{escape(key)}"


def escape(key: str) -> str:
    """A JSON pointer segment: RFC 6901 escapes ``~`` and ``/``."""
    if "~" in key or "/" in key:
        return key.replace("~", "~0").replace("/", "~1")
    return key


def _align_named_lists(
    before: dict[str, Any], after: Mapping[str, Any], named_lists: Sequence[tuple[str, str]],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``add``/``move`` operations that put each named item of ``after``'s lists at its index,
    and ``before`` with those operations applied (items not copied: the differ only reads)."""
    operations: list[dict[str, Any]] = []
    aligned = dict(before)
    for section, key in named_lists:
        part_before, part_after = aligned.get(section), after.get(section)
        if not isinstance(part_before, dict) or not isinstance(part_after, dict):
            continue
        old, new = part_before.get(key), part_after.get(key)
        if not isinstance(old, list) or not isinstance(new, list):
            continue
        if all(map(operator.is_, new[:len(old)], old)):
            continue  # the very same items in the same places, any new ones at the end
        staged = list(old)
        staged_names = _names(staged)
        if _names(new[:len(staged)]) == staged_names:
            continue  # same items in the same places, any new ones at the end: nothing to align
        base = f"/{escape(section)}/{escape(key)}"
        for index, item in enumerate(new):
            name = item.get("name") if isinstance(item, dict) else None
            if name is None or staged_names[index:index + 1] == [name]:
                continue
            path = f"{base}/{index}"
            if name in staged_names[index:]:
                found = staged_names.index(name, index)
                operations.append({"op": "move", "from": f"{base}/{found}", "path": path})
                staged.insert(index, staged.pop(found))
                staged_names.insert(index, staged_names.pop(found))
            elif name not in staged_names:
                operations.append({"op": "add", "path": path, "value": item})
                staged.insert(index, item)
                staged_names.insert(index, name)
        aligned[section] = {**part_before, key: staged}
    return operations, aligned


def _names(items: list[Any]) -> list[object]:
    return [item.get("name") if isinstance(item, dict) else None for item in items]
