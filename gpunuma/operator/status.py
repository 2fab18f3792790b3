"""The GPUNumaLayout status the operator owns: conditions, ``appliedLabels``, ``observedGeneration``.

Pure. Conditions follow the Kubernetes convention (``metav1.Condition``): ``lastTransitionTime``
moves only when ``status`` changes, so that a condition tells how long a node has been stale. The
status is written with one merge patch, and only when something in it differs, so that the
operator's own status write (which the layout watch sees as a new event) converges at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gpunuma.rfc3339 import format_rfc3339

__all__ = [
    "CONDITION_CGROUP_BINDING",
    "CONDITION_LABELED",
    "CONDITION_STALE",
    "Condition",
    "cgroup_binding_condition",
    "desired_status",
    "find_condition",
    "merge_patch",
]

CONDITION_LABELED = "Labeled"
CONDITION_STALE = "Stale"
# Present only on nodes whose agent runs the cgroup mechanism.
CONDITION_CGROUP_BINDING = "CgroupBinding"

ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: ConditionStatus
    reason: str
    message: str


def find_condition(conditions: object, kind: str) -> Mapping[str, Any] | None:
    if not isinstance(conditions, list):
        return None
    return next(
        (c for c in conditions if isinstance(c, Mapping) and c.get("type") == kind), None
    )


def _condition_dict(
    wanted: Condition, previous: Mapping[str, Any] | None, now: dt.datetime,
    generation: int | None,
) -> dict[str, Any]:
    unchanged = previous is not None and previous.get("status") == wanted.status
    moment = previous.get("lastTransitionTime") if unchanged and previous else None
    result: dict[str, Any] = {
        "type": wanted.type,
        "status": wanted.status,
        "reason": wanted.reason,
        "message": wanted.message,
        "lastTransitionTime": moment or format_rfc3339(now),
    }
    if generation is not None:
        result["observedGeneration"] = generation
    return result


def desired_status(
    current: Mapping[str, Any] | None,
    conditions: Sequence[Condition],
    applied_labels: Mapping[str, str] | None,
    generation: int | None,
    now: dt.datetime,
) -> dict[str, Any]:
    """The full status we want; conditions of other types (someone else's) are kept as they are.

    ``applied_labels`` None keeps the recorded value (e.g. while the Node is missing: the labels
    we last applied are still the best record of what the Node carries).
    """
    status = dict(current or {})
    old_conditions = status.get("conditions")
    kept = [
        dict(c) for c in (old_conditions if isinstance(old_conditions, list) else [])
        if isinstance(c, Mapping) and c.get("type") not in {w.type for w in conditions}
    ]
    status["conditions"] = kept + [
        _condition_dict(wanted, find_condition(old_conditions, wanted.type), now, generation)
        for wanted in conditions
    ]
    if applied_labels is not None:
        status["appliedLabels"] = dict(sorted(applied_labels.items()))
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def merge_patch(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge patch from ``current`` to ``desired`` (empty when equal; lists replaced)."""
    old = current or {}
    patch: dict[str, Any] = {}
    for key in old.keys() - desired.keys():
        patch[key] = None
    for key, value in desired.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif before != value or key not in old:
            patch[key] = value
    return patch


_CGROUP_REASONS: dict[str, tuple[ConditionStatus, str]] = {
    "active": ("True", "Active"), "static-cpu-manager": ("False", "StaticCPUManager"),
    "unavailable": ("False", "Unavailable"),
}


def cgroup_binding_condition(state: object) -> Condition | None:
    """The ``CgroupBinding`` condition from the agent's ``spec.cgroupBinding``; None without one."""
    if not isinstance(state, Mapping) or state.get("state") not in _CGROUP_REASONS:
        return None
    status, reason = _CGROUP_REASONS[str(state["state"])]
    return Condition(CONDITION_CGROUP_BINDING, status, reason, str(state.get("message") or ""))
