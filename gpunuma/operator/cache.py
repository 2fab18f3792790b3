"""What the operator remembers of Nodes, layouts and pods between watch events.

Caches hold only what reconciling needs (our labels of a Node, a pod's phase and annotations), not
whole objects: a 1,000-node cluster's Node objects are large and mostly irrelevant here. The cache
is also fed by the operator's own patch responses, so an older watch event still in flight must
not roll it back (:func:`newer`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpunuma import names
from gpunuma.operator.derived import Derivations, Derived

__all__ = ["Cache", "LayoutView", "NodeView", "PodView", "newer"]


@dataclass(frozen=True, slots=True)
class NodeView:
    """What reconciling needs of a Node: its labels, annotations and identity (for Events)."""

    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    uid: str | None = None
    resource_version: str | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> NodeView:
        meta = body.get("metadata") or {}
        return cls(
            name=meta.get("name", ""),
            labels=dict(meta.get("labels") or {}),
            annotations={
                k: v for k, v in (meta.get("annotations") or {}).items()
                if k == names.ANNOTATION_MANAGED_LABELS
            },
            uid=meta.get("uid"),
            resource_version=meta.get("resourceVersion"),
        )


@dataclass(frozen=True, slots=True)
class LayoutView:
    name: str
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    generation: int | None = None
    resource_version: str | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> LayoutView:
        meta = body.get("metadata") or {}
        generation = meta.get("generation")
        return cls(
            name=meta.get("name", ""),
            spec=dict(body.get("spec") or {}),
            status=dict(body.get("status") or {}),
            generation=generation if isinstance(generation, int) else None,
            resource_version=meta.get("resourceVersion"),
        )


@dataclass(frozen=True, slots=True)
class PodView:
    namespace: str
    name: str
    node: str | None
    phase: str | None
    annotations: Mapping[str, str]
    resource_version: str | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PodView:
        meta = body.get("metadata") or {}
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            node=(body.get("spec") or {}).get("nodeName"),
            phase=(body.get("status") or {}).get("phase"),
            annotations={
                k: v for k, v in (meta.get("annotations") or {}).items()
                if k.startswith(names.PREFIX)
            },
            resource_version=meta.get("resourceVersion"),
        )


@dataclass
class Cache:
    """Nodes and layouts by name, pods by node then (namespace, name)."""

    nodes: dict[str, NodeView] = field(default_factory=dict)
    layouts: dict[str, LayoutView] = field(default_factory=dict)
    pods: dict[str, dict[tuple[str, str], PodView]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    _pod_nodes: dict[tuple[str, str], str] = field(default_factory=dict)
    # What layouts' specs say (labels, placements), parsed once per generation.
    derivations: Derivations = field(default_factory=Derivations)

    def observe_node(self, body: Mapping[str, Any], *, deleted: bool = False) -> NodeView:
        view = NodeView.from_body(body)
        if deleted:
            self.nodes.pop(view.name, None)
        elif newer(view.resource_version, self.nodes.get(view.name)):
            self.nodes[view.name] = view
        return view

    def observe_layout(self, body: Mapping[str, Any], *, deleted: bool = False) -> LayoutView:
        view = LayoutView.from_body(body)
        if deleted:
            self.layouts.pop(view.name, None)
            self.derivations.forget(view.name)
        elif newer(view.resource_version, self.layouts.get(view.name)):
            self.layouts[view.name] = view
        return view

    def observe_pod(self, body: Mapping[str, Any], *, deleted: bool = False) -> PodView:
        view = PodView.from_body(body)
        key = (view.namespace, view.name)
        previous_node = self._pod_nodes.pop(key, None)
        if previous_node is not None:
            self.pods[previous_node].pop(key, None)
            if not self.pods[previous_node]:
                del self.pods[previous_node]
        if not deleted and view.node:
            self.pods[view.node][key] = view
            self._pod_nodes[key] = view.node
        return view

    def derived(self, layout: LayoutView) -> Derived:
        """The layout's spec read, once per generation however many rounds and pods ask."""
        return self.derivations.of(layout.name, layout.generation, layout.resource_version,
                                   layout.spec)

    def pod(self, node: str, namespace: str, name: str) -> PodView | None:
        return self.pods.get(node, {}).get((namespace, name))

    def drop_pod(self, node: str, namespace: str, name: str) -> None:
        self.pods.get(node, {}).pop((namespace, name), None)


def newer(version: str | None, cached: NodeView | LayoutView | None) -> bool:
    """Whether an observed object may replace the cached one.

    The cache is also fed by our own patch responses, so a watch event still in flight from
    before the patch would roll it back (and make us send the same patch again). etcd-backed
    resourceVersions are increasing integers; where both are, an older one is ignored. Anything
    else (absent, not numeric) is taken as newer, as Kubernetes asks clients to assume nothing.
    """
    if cached is None or version is None or cached.resource_version is None:
        return True
    if version.isdigit() and cached.resource_version.isdigit():
        return int(version) >= int(cached.resource_version)
    return True
