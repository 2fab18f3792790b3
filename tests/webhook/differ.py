"""An RFC 6902 JSON patch computed by diffing two JSON documents: the tests' independent check of
the patch the mutation records as it writes (``json_patch``).

Two documents that share most of their objects (the mutated pod reuses every part of the admitted
pod it did not change) are compared by identity first, so the shared parts are skipped without
being walked. Lists are diffed the way the mutation changes them (items added at the front or the
end, or changed in place); lists of named items (containers, volumes) can be aligned by name first,
so that an item inserted in the middle is one ``add``, not a replacement of every item after it.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

from gpunuma.webhook.jsonvalue import escape, same_json

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


def _join(path: str, key: str) -> str:
    """``path`` and one more JSON pointer segment."""
    return f"{path}/{escape(key)}"


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


def json_patch(original: Mapping[str, Any], mutated: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The RFC 6902 patch that turns ``original`` into ``mutated`` (empty when they are equal).

    Computed by diffing (this module): the same change ``mutate`` records as it
    writes, found independently (the tests compare the two). Only the fields the mutation writes
    are compared; the pod's named lists are aligned by name first.
    """
    return diff(_patched_view(original), _patched_view(mutated), _NAMED_LISTS)


# What json_patch compares: the only fields the mutation writes.
_PATCHED_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("metadata", ("annotations", "labels")),
    ("spec", ("initContainers", "containers", "volumes")),
)
# Lists whose items have a ``name`` the mutation may insert before (the launcher init container).
_NAMED_LISTS: tuple[tuple[str, str], ...] = (
    ("spec", "initContainers"), ("spec", "containers"), ("spec", "volumes"),
)


def _patched_view(pod: Mapping[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for section, keys in _PATCHED_FIELDS:
        part = pod.get(section)
        if isinstance(part, dict):
            view[section] = {key: part[key] for key in keys if key in part}
    return view
