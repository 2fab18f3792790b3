"""Pod placement annotations (DESIGN §3) from a layout's ``spec.allocations``. Pure.

The agent reports one allocation entry per (pod, container, resource), with what the container's
processes were observed to have (``observed``). A pod gets ``gpunuma.io/placement`` (JSON, per
container: the devices, their NUMA nodes, the CPUs it really runs on, ``binding`` and ``by``,
``plannedCpus`` where the plan differs and the agent's ``reason``), ``gpunuma.io/numa-nodes``
(union of the GPU nodes of the containers that are bound there, ascending; empty when none is),
``gpunuma.io/cpuset`` (union of the CPUs the containers run on) and ``gpunuma.io/binding`` (the
weakest binding of its containers). An entry without ``observed`` (an agent older than
observation) or whose processes were not found (``binding: unknown``) is taken at its plan, as
before. The JSON is
rendered canonically (sorted keys, no spaces) so that an unchanged placement compares equal to the
annotation already on the pod and is never rewritten.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from gpunuma import names
from gpunuma.quote import short
from gpunuma.topology import CpuListError, format_cpulist, parse_cpulist

__all__ = [
    "AllocationError",
    "annotation_patch",
    "placements",
    "pod_annotations",
    "pods_with_allocations",
    "unbound_containers",
]

# Weakest first: a pod is as bound as its least bound container.
_BINDINGS = ("none", "unknown", "cpu-only", "full")

class AllocationError(ValueError):
    """An ``spec.allocations`` entry that does not have the agent's shape."""


def _entries(allocations: object) -> Iterable[tuple[int, Mapping[str, Any]]]:
    if allocations is None:
        return ()
    if not isinstance(allocations, list):
        raise AllocationError(f"spec.allocations: expected an array, got {type(allocations).__name__}")
    return enumerate(allocations)


def pods_with_allocations(allocations: object) -> frozenset[tuple[str, str]]:
    """(namespace, pod) of every well-formed allocation entry."""
    found: set[tuple[str, str]] = set()
    for _, entry in _entries(allocations):
        if isinstance(entry, Mapping):
            namespace, pod = entry.get("namespace"), entry.get("pod")
            if isinstance(namespace, str) and isinstance(pod, str):
                found.add((namespace, pod))
    return frozenset(found)


def pod_annotations(allocations: object, namespace: str, pod: str) -> dict[str, str] | None:
    """The placement annotations for one pod, or ``None`` when it has no allocation."""
    mine: list[tuple[int, Mapping[str, Any]]] = []
    for index, entry in _entries(allocations):
        if not isinstance(entry, Mapping):
            raise AllocationError(f"spec.allocations[{index}]: expected an object, got "
                                  f"{type(entry).__name__}")
        if entry.get("namespace") == namespace and entry.get("pod") == pod:
            mine.append((index, entry))
    return _annotations(mine) if mine else None


def placements(allocations: object) -> dict[tuple[str, str], dict[str, str] | AllocationError]:
    """Every pod's placement annotations (or what is wrong with its entries) in one pass over the
    allocations: each cpulist is parsed once, not once per pod that the operator looks up."""
    groups: dict[tuple[str, str], list[tuple[int, Mapping[str, Any]]]] = {}
    for index, entry in _entries(allocations):
        if isinstance(entry, Mapping):
            namespace, pod = entry.get("namespace"), entry.get("pod")
            if isinstance(namespace, str) and isinstance(pod, str):
                groups.setdefault((namespace, pod), []).append((index, entry))
    result: dict[tuple[str, str], dict[str, str] | AllocationError] = {}
    for key, entries in groups.items():
        try:
            result[key] = _annotations(entries)
        except AllocationError as exc:
            result[key] = exc
    return result


def _annotations(entries: Iterable[tuple[int, Mapping[str, Any]]]) -> dict[str, str]:
    containers: dict[str, tuple[list[str], set[int], set[int]]] = {}
    observed: dict[str, Mapping[str, Any]] = {}
    for index, entry in entries:
        path = f"spec.allocations[{index}]"
        container = entry.get("container")
        if not isinstance(container, str) or not container:
            raise AllocationError(f"{path}.container: expected a container name, got "
                                  f"{short(container)}")
        gpus, nodes, cpus = containers.setdefault(container, ([], set(), set()))
        for device in _strings(entry.get("deviceIds"), f"{path}.deviceIds"):
            if device not in gpus:
                gpus.append(device)
        nodes.update(_node_ids(entry.get("numaNodes"), f"{path}.numaNodes"))
        cpus_text = entry.get("cpus") or ""
        if not isinstance(cpus_text, str):
            raise AllocationError(f"{path}.cpus: expected a cpulist string, got {short(cpus_text)}")
        try:
            cpus.update(parse_cpulist(cpus_text))
        except CpuListError as exc:
            raise AllocationError(f"{path}.cpus: {exc}") from None
        seen = entry.get("observed")
        if isinstance(seen, Mapping) and seen.get("binding") in _BINDINGS:
            observed.setdefault(container, seen)
    placement: dict[str, dict[str, Any]] = {}
    bound_nodes: set[int] = set()
    running_cpus: set[int] = set()
    for name, (gpus, nodes, cpus) in containers.items():
        item: dict[str, Any] = {"gpus": gpus, "numaNodes": sorted(nodes),
                                "cpus": format_cpulist(cpus)}
        seen = observed.get(name)
        if seen is None or seen["binding"] == "unknown":
            # Not observed (an agent before observation), or its processes not found yet (not
            # started; no cgroup hierarchy): the plan, with gpunuma.io/binding saying "unknown".
            bound_nodes |= nodes
            running_cpus |= cpus
        if seen is not None:
            item["binding"] = seen["binding"]
            item["by"] = str(seen.get("by", "none"))
            if seen.get("reason"):  # why it differs from the plan, for kubectl gpunuma explain
                item["reason"] = str(seen["reason"])
            if seen["binding"] in ("full", "cpu-only"):
                bound_nodes |= nodes
            actual = _observed_cpus(seen) if seen["binding"] != "unknown" else None
            if actual is not None:
                running_cpus |= actual
                if actual != cpus:
                    item["cpus"], item["plannedCpus"] = format_cpulist(actual), item["cpus"]
        placement[name] = item
    result = {
        names.ANNOTATION_PLACEMENT: json.dumps(placement, sort_keys=True, separators=(",", ":")),
        names.ANNOTATION_NUMA_NODES: ",".join(map(str, sorted(bound_nodes))),
        names.ANNOTATION_CPUSET: format_cpulist(running_cpus),
    }
    if observed:
        result[names.ANNOTATION_BINDING] = min(
            (str(seen["binding"]) for seen in observed.values()), key=_BINDINGS.index)
    return result


def _observed_cpus(observed: Mapping[str, Any]) -> set[int] | None:
    text = observed.get("cpus")
    if not isinstance(text, str):
        return None
    try:
        return set(parse_cpulist(text))
    except CpuListError:
        return None


def unbound_containers(allocations: object, namespace: str, pod: str) -> dict[str, str]:
    """Containers of the pod observed with ``binding: none`` → the agent's reason."""
    found: dict[str, str] = {}
    for _, entry in _entries(allocations):
        if not isinstance(entry, Mapping) or (entry.get("namespace"), entry.get("pod")) != (
                namespace, pod):
            continue
        seen = entry.get("observed")
        if isinstance(seen, Mapping) and seen.get("binding") == "none":
            found[str(entry.get("container"))] = str(seen.get("reason") or "not bound")
    return found


def annotation_patch(
    desired: Mapping[str, str], annotations: Mapping[str, str] | None,
) -> dict[str, Any] | None:
    """Merge patch setting the annotations that differ, or ``None`` when the pod already has them."""
    current = annotations or {}
    changes = {key: value for key, value in desired.items() if current.get(key) != value}
    return {"metadata": {"annotations": changes}} if changes else None


def _strings(value: object, path: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise AllocationError(f"{path}: expected an array of strings, got {short(value)}")
    return list(value)


def _node_ids(value: object, path: str) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(item, int) and not isinstance(item, bool) and item >= 0 for item in value
    ):
        raise AllocationError(
            f"{path}: expected an array of NUMA node ids (integers ≥ 0), got {short(value)}"
        )
    return list(value)

