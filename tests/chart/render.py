"""Render the chart the way `helm install` would, offline, and index the manifests for assertions.

helm-python-sdk renders with the real Helm engine (schema validation included), so a template or
schema error here is the error a user would get.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "gpunuma"
# crds/: the kopf peering CRDs Helm installs once; files/crds/: gpunuma's own, templated (crd.yaml).
CRD_DIRECTORIES = (CHART / "crds", CHART / "files" / "crds")
# APIs of optional operators a render may use (cert-manager, Prometheus Operator): a cluster that
# serves them, as `helm install` sees one; render(..., api_versions=()) is a cluster without them.
OPTIONAL_APIS = ("cert-manager.io/v1", "monitoring.coreos.com/v1")
RELEASE = "gpunuma"
NAMESPACE = "gpu-system"

# Kubernetes versions the manifests must be valid for: the oldest with matchConditions GA, and
# the newest kubernetes-validate ships.
KUBE_VERSIONS = ("1.30.0", "latest")


@dataclass(frozen=True)
class Rendered:
    """Every manifest of one render, and NOTES.txt."""

    documents: tuple[dict[str, Any], ...]
    notes: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.documents if doc["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [doc for doc in self.of_kind(kind) if name is None or doc["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def workload(self, component: str) -> dict[str, Any]:
        """The DaemonSet or Deployment of a component (agent, operator, webhook)."""
        found = [
            doc for doc in self.documents
            if doc["kind"] in ("DaemonSet", "Deployment")
            and doc["metadata"]["labels"]["app.kubernetes.io/component"] == component
        ]
        assert len(found) == 1, f"expected one workload for {component}, found {len(found)}"
        return found[0]

    def pod_spec(self, component: str) -> dict[str, Any]:
        spec: dict[str, Any] = self.workload(component)["spec"]["template"]["spec"]
        return spec

    def env(self, component: str) -> dict[str, Any]:
        """The first container's env as name → value (or the valueFrom mapping)."""
        container = self.pod_spec(component)["containers"][0]
        return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}


def load_chart() -> Any:
    import helm_python

    return helm_python.Chart.load(CHART)


def render(chart: Any, values: Mapping[str, Any] | None = None, *, namespace: str = NAMESPACE,
           api_versions: tuple[str, ...] = OPTIONAL_APIS, is_upgrade: bool = False) -> Rendered:
    """Render as `helm install` (or upgrade) would, on a cluster serving ``api_versions``.

    helm-python's ``Chart.render`` does not expose the API versions, which the chart's
    ``.Capabilities.APIVersions.Has`` checks read; the engine underneath takes them.
    """
    import json

    from helm_python import _native

    options = {"name": RELEASE, "namespace": namespace, "is_install": not is_upgrade,
               "is_upgrade": is_upgrade, "api_versions": list(api_versions)}
    rendered = _native.call_string("helm_render", chart._raw(), json.dumps(dict(values or {})),
                                   json.dumps(options))
    files: dict[str, str] = json.loads(rendered)
    documents: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        documents.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return Rendered(tuple(documents), notes)


def crds() -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every CustomResourceDefinition the chart ships, in crds/ or files/crds/."""
    for path in sorted(p for directory in CRD_DIRECTORIES for p in directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc

