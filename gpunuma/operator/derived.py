"""What the operator derives from a layout's spec — Node labels, pod placements — once per version.

A layout is read again on every event and on every periodic round (staleness is re-judged each
time), but its spec changes only when the agent writes it. Parsing a spec is bounded (the CRD bounds
its strings and arrays, a cpulist names at most 8,192 CPUs) but not free, so the result is kept
per layout and recomputed only when ``metadata.generation`` (which the API server bumps on every
spec change) — or, for a view without one, ``resourceVersion`` — differs. An operator that
restarts parses each layout once, not once per round.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpunuma.operator.placement import AllocationError, placements
from gpunuma.topology import Layout, LayoutDocumentError, node_labels

__all__ = ["Derivations", "Derived"]


@dataclass
class Derived:
    """One layout spec, read."""

    spec: Mapping[str, Any]
    labels: dict[str, str] | None = None
    """The Node labels, or ``None`` when the spec is not a valid layout (see ``invalid``)."""
    invalid: str | None = None
    _placements: dict[tuple[str, str], dict[str, str] | AllocationError] | None = field(
        default=None, repr=False)
    _placements_error: AllocationError | None = field(default=None, repr=False)

    def placement(self, namespace: str, pod: str) -> dict[str, str] | None:
        """The pod's placement annotations, ``None`` when it has no allocation; raises
        ``AllocationError`` when its entries (or the allocations as a whole) are malformed."""
        if self._placements is None and self._placements_error is None:
            try:
                self._placements = placements(self.spec.get("allocations"))
            except AllocationError as exc:
                self._placements_error = exc
        if self._placements_error is not None:
            raise self._placements_error
        assert self._placements is not None
        found = self._placements.get((namespace, pod))
        if isinstance(found, AllocationError):
            raise found
        return found


class Derivations:
    """``Derived`` per layout name, replaced when the layout's version changes."""

    def __init__(self) -> None:
        self._by_name: dict[str, tuple[object, Derived]] = {}
        self.parses = 0
        """How many specs were parsed (for tests: once per version, not per reconcile)."""

    def of(self, name: str, generation: int | None, resource_version: str | None,
           spec: Mapping[str, Any]) -> Derived:
        version = generation if generation is not None else resource_version
        cached = self._by_name.get(name)
        if version is not None and cached is not None and cached[0] == version:
            return cached[1]
        derived = self._derive(spec)
        if version is not None:
            self._by_name[name] = (version, derived)
        return derived

    def forget(self, name: str) -> None:
        self._by_name.pop(name, None)

    def _derive(self, spec: Mapping[str, Any]) -> Derived:
        self.parses += 1
        try:
            return Derived(spec, labels=node_labels(Layout.from_document(spec)))
        except LayoutDocumentError as exc:
            return Derived(spec, invalid=f"spec is not a valid layout document: {exc}")
