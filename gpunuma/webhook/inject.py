"""``gpunuma inject -f FILE|-``: the webhook's mutation applied to manifests offline.

Like ``istioctl kube-inject``: for clusters without the webhook, for reviewing what it would do, and
for GitOps repositories that keep the final manifests. Pods and the pod templates of the built-in
workload kinds are mutated with the same pure function as the webhook; every other document passes
through unchanged, byte for byte. The YAML is read as Kubernetes reads it and a changed document is
edited in place (``gpunuma.webhook.kubeyaml``): what the output means to ``kubectl`` is the input
plus the mutation, and comments, key order and quoting survive. The user named the file, so no
opt-in annotation is needed (an explicit opt-out, ``gpunuma.io/inject: "false"``, is still
respected). The injected template carries the policy and container list as annotations, so a pod
made from it gets no further patch from the webhook.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpunuma import names
from gpunuma.settings import MutationSettings
from gpunuma.webhook.kubeyaml import KubeYAMLError, read
from gpunuma.webhook.mutation import mutate
from gpunuma.webhook.podshape import InvalidPod
from gpunuma.webhook.uninject import remove_mutation

__all__ = [
    "SUPPORTED_KINDS", "InjectResult", "inject_documents", "inject_text", "main", "transform_documents",
    "uninject_documents",
]

EXIT_DENIED = 1
EXIT_USAGE = 2

# Where each kind keeps its pod templates, keyed by (apiVersion, kind): a custom resource may reuse
# a kind name (Volcano's batch.volcano.sh Job) with another shape, and an old apiVersion
# (extensions/v1beta1) is no longer served. ``*`` stands for every entry of a map (a training job's
# replica types) or of a list (Ray's worker groups). A kind with several templates needs at least one.
_TEMPLATE_PATHS: dict[tuple[str, str], tuple[tuple[str, ...], ...]] = {
    ("v1", "Pod"): ((),),
    ("v1", "ReplicationController"): (("spec", "template"),),
    ("apps/v1", "Deployment"): (("spec", "template"),),
    ("apps/v1", "StatefulSet"): (("spec", "template"),),
    ("apps/v1", "DaemonSet"): (("spec", "template"),),
    ("apps/v1", "ReplicaSet"): (("spec", "template"),),
    ("batch/v1", "Job"): (("spec", "template"),),
    ("batch/v1", "CronJob"): (("spec", "jobTemplate", "spec", "template"),),
    # Kubeflow training operator
    ("kubeflow.org/v1", "PyTorchJob"): (("spec", "pytorchReplicaSpecs", "*", "template"),),
    ("kubeflow.org/v1", "TFJob"): (("spec", "tfReplicaSpecs", "*", "template"),),
    ("kubeflow.org/v1", "XGBoostJob"): (("spec", "xgbReplicaSpecs", "*", "template"),),
    ("kubeflow.org/v1", "PaddleJob"): (("spec", "paddleReplicaSpecs", "*", "template"),),
    ("kubeflow.org/v1", "JAXJob"): (("spec", "jaxReplicaSpecs", "*", "template"),),
    ("kubeflow.org/v2beta1", "MPIJob"): (("spec", "mpiReplicaSpecs", "*", "template"),),
    # KubeRay
    ("ray.io/v1", "RayCluster"): (("spec", "headGroupSpec", "template"),
                                  ("spec", "workerGroupSpecs", "*", "template")),
    ("ray.io/v1", "RayJob"): (("spec", "rayClusterSpec", "headGroupSpec", "template"),
                              ("spec", "rayClusterSpec", "workerGroupSpecs", "*", "template")),
    ("ray.io/v1", "RayService"): (("spec", "rayClusterConfig", "headGroupSpec", "template"),
                                  ("spec", "rayClusterConfig", "workerGroupSpecs", "*", "template")),
    # Kubernetes SIGs
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): (
        ("spec", "leaderWorkerTemplate", "leaderTemplate"),
        ("spec", "leaderWorkerTemplate", "workerTemplate")),
    ("jobset.x-k8s.io/v1alpha2", "JobSet"): (
        ("spec", "replicatedJobs", "*", "template", "spec", "template"),),
}

# KServe's components are pod specs inline (containers, volumes… beside the component's own fields),
# with the pod's labels and annotations in the component's ``labels`` and ``annotations``.
_INLINE_POD_SPECS: dict[tuple[str, str], tuple[str, ...]] = {
    ("serving.kserve.io/v1beta1", "InferenceService"): ("predictor", "transformer", "explainer"),
}

# Kinds that hold no pod: passed through without a warning.
_NO_PODS = frozenset({
    "ConfigMap", "Secret", "Service", "ServiceAccount", "Namespace", "PersistentVolumeClaim",
    "PersistentVolume", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Ingress",
    "NetworkPolicy", "PodDisruptionBudget", "HorizontalPodAutoscaler", "StorageClass", "LimitRange",
    "ResourceQuota", "PriorityClass", "CustomResourceDefinition", "ServiceMonitor", "PodMonitor",
    "ResourceClaim", "ResourceClaimTemplate", "DeviceClass", "Endpoints", "EndpointSlice",
})

# Old apiVersions of the kinds above, which no supported Kubernetes serves any more.
_RETIRED = {("extensions/v1beta1", "Deployment"), ("extensions/v1beta1", "DaemonSet"),
            ("extensions/v1beta1", "ReplicaSet"), ("apps/v1beta1", "Deployment"),
            ("apps/v1beta1", "StatefulSet"), ("apps/v1beta2", "Deployment"),
            ("apps/v1beta2", "StatefulSet"), ("apps/v1beta2", "DaemonSet"),
            ("apps/v1beta2", "ReplicaSet"), ("batch/v1beta1", "CronJob"),
            ("batch/v2alpha1", "CronJob")}

# (kind, apiVersion, where its pod templates are) for the docs' table of supported kinds.
SUPPORTED_KINDS: tuple[tuple[str, str, str], ...] = (
    *((kind, api, ", ".join(".".join(path) or "(the pod)" for path in paths))
      for (api, kind), paths in _TEMPLATE_PATHS.items()),
    *((kind, api, ", ".join(f"spec.{c}" for c in components) + " (pod spec inline)")
      for (api, kind), components in _INLINE_POD_SPECS.items()),
)


@dataclass
class InjectResult:
    documents: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Warnings and decisions, one line each, for standard error."""
    errors: list[str] = field(default_factory=list)
    """Denials and malformed documents; with any, nothing is written."""
    report: list[str] = field(default_factory=list)
    """One line per resource: what was done to it, or why nothing was."""
    container_names: set[str] = field(default_factory=set)
    """The containers of every pod read, to check ``--containers`` against."""


# What is done to one pod (metadata + spec): returns the new pod, or None to leave it.
PodEdit = Callable[[dict[str, Any], str, "InjectResult"], "dict[str, Any] | None"]


def inject_documents(
    documents: Iterable[Any],
    settings: MutationSettings,
    *,
    policy: str | None = None,
    containers: Sequence[str] | None = None,
) -> InjectResult:
    """Mutate the pods and pod templates among ``documents`` (pure; the inputs are not changed).

    ``result.documents`` has one entry per input document, in order (an empty one stays None).
    """
    def edit(pod: dict[str, Any], label: str, result: InjectResult) -> dict[str, Any] | None:
        return _mutate_pod(pod, label, settings, policy, containers, result)

    result = transform_documents(documents, edit, verb="injected")
    missing = [name for name in containers or () if name not in result.container_names]
    if missing:
        known = ", ".join(sorted(result.container_names)) or "none"
        result.errors.append(f"--containers names {', '.join(map(repr, missing))}, which no pod "
                             f"in the input has (its containers: {known})")
    return result


def uninject_documents(documents: Iterable[Any]) -> InjectResult:
    """Remove gpunuma's mutation from the pods and pod templates among ``documents`` (pure)."""
    def edit(pod: dict[str, Any], label: str, result: InjectResult) -> dict[str, Any] | None:
        restored = remove_mutation(pod)
        return None if restored == pod else restored

    return transform_documents(documents, edit, verb="uninjected")


def transform_documents(documents: Iterable[Any], edit: PodEdit, *, verb: str) -> InjectResult:
    result = InjectResult()
    for document in documents:
        result.documents.append(_transform(document, edit, verb, result))
    return result


def _transform(document: Any, edit: PodEdit, verb: str, result: InjectResult) -> Any:
    if not isinstance(document, dict):
        return document
    if document.get("kind") == "List" and isinstance(document.get("items"), list):
        return {**document, "items": [_transform(item, edit, verb, result) for item in document["items"]]}
    label = _describe(document)
    key = (str(document.get("apiVersion")), str(document.get("kind")))
    if key in _INLINE_POD_SPECS:
        return _transform_inline(document, _INLINE_POD_SPECS[key], edit, verb, label, result)
    paths = _TEMPLATE_PATHS.get(key)
    if paths is None:
        _pass_through(document, key, label, result)
        return document
    new_document = copy.deepcopy(document)
    found, changed, errors_before = 0, 0, len(result.errors)
    for path in paths:
        for where, parent, slot, template in _templates(new_document, path):
            found += 1
            if not isinstance(template, dict):
                result.errors.append(f"{label}: the pod template at {where} is not a map")
                continue
            if not isinstance(template.get("metadata") or {}, dict):
                result.errors.append(f"{label}: the pod's metadata is not a map")
                continue
            shown = label if not where or (len(paths) == 1 and "*" not in path) else f"{label} {where}"
            new = edit(template, shown, result)
            if new is not None:
                changed += 1
                if parent is None:
                    new_document = new
                else:
                    parent[slot] = new
    if not found:
        result.errors.append(f"{label}: has no pod template at {' or '.join('.'.join(p) for p in paths)}")
    if len(result.errors) > errors_before:
        return document
    result.report.append(f"{label}: {verb}" if changed else f"{label}: unchanged")
    return new_document if changed else document


def _transform_inline(document: dict[str, Any], components: Sequence[str], edit: PodEdit, verb: str,
                      label: str, result: InjectResult) -> Any:
    new_document = copy.deepcopy(document)
    spec = new_document.get("spec")
    if not isinstance(spec, dict):
        result.errors.append(f"{label}: has no spec")
        return document
    changed = 0
    for name in components:
        component = spec.get(name)
        if not isinstance(component, dict):
            continue
        metadata = {key: component[key] for key in ("labels", "annotations") if component.get(key)}
        pod_spec = {key: value for key, value in component.items() if key not in ("labels", "annotations")}
        new = edit({"metadata": metadata, "spec": pod_spec}, f"{label} spec.{name}", result)
        if new is None:
            continue
        changed += 1
        spec[name] = {**new["spec"], **{key: value for key, value in (new.get("metadata") or {}).items()
                                          if key in ("labels", "annotations") and value}}
    result.report.append(f"{label}: {verb}" if changed else f"{label}: unchanged")
    return new_document if changed else document


def _templates(document: dict[str, Any], path: Sequence[str]) -> Iterator[tuple[str, Any, Any, Any]]:
    """(where, parent, key or index, template) for every template at ``path`` (``*``: each entry)."""
    if not path:
        yield "", None, None, document
        return

    def walk(node: Any, rest: Sequence[str], where: str) -> Iterator[tuple[str, Any, Any, Any]]:
        key, *more = rest
        if key == "*":
            entries: Iterable[tuple[Any, Any]] = (
                node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ())
            for index, child in entries:
                shown = f"{where}[{index}]" if isinstance(node, list) else f"{where}.{index}"
                if more:
                    yield from walk(child, more, shown)
                else:
                    yield shown, node, index, child
            return
        if not isinstance(node, dict) or node.get(key) is None:
            return
        shown = f"{where}.{key}" if where else key
        if more:
            yield from walk(node[key], more, shown)
        else:
            yield shown, node, key, node[key]

    yield from walk(document, path, "")


def _pass_through(document: dict[str, Any], key: tuple[str, str], label: str, result: InjectResult) -> None:
    api_version, kind = key
    if key in _RETIRED:
        result.notes.append(f"warning: {label}: passed through unchanged: {api_version} {kind} is no longer "
                            "served by Kubernetes; move it to its current apiVersion and inject again")
    elif kind in _NO_PODS:
        result.report.append(f"{label}: passed through (holds no pod)")
        return
    elif any(kind == known_kind for _, known_kind in _TEMPLATE_PATHS) or _has_pod_spec(document):
        result.notes.append(f"warning: {label}: passed through unchanged: gpunuma does not know where "
                            f"{api_version} {kind} keeps its pods (docs/webhook.md lists the kinds)")
    else:
        result.notes.append(f"warning: {label}: passed through unchanged: {api_version} {kind} is not a "
                            "kind gpunuma injects")
    result.report.append(f"{label}: passed through")


def _has_pod_spec(node: Any, depth: int = 0) -> bool:
    """Whether a document looks like it holds pods: a ``containers`` list somewhere below it."""
    if depth > 8:
        return False
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            return True
        return any(_has_pod_spec(value, depth + 1) for value in node.values())
    if isinstance(node, list):
        return any(_has_pod_spec(value, depth + 1) for value in node)
    return False


def _mutate_pod(template: dict[str, Any], label: str, settings: MutationSettings, policy: str | None,
                containers: Sequence[str] | None, result: InjectResult) -> dict[str, Any] | None:
    template = copy.deepcopy(template)
    if template.get("metadata") is None:
        template["metadata"] = {}
    metadata = template["metadata"]
    spec = template.get("spec")
    for key in ("initContainers", "containers"):
        listed = spec.get(key) if isinstance(spec, dict) else None
        result.container_names.update(
            c["name"] for c in (listed if isinstance(listed, list) else ())
            if isinstance(c, dict) and isinstance(c.get("name"), str))
    if policy is not None or containers:
        if metadata.get("annotations") is None:
            metadata["annotations"] = {}
        annotations = metadata["annotations"]
        if not isinstance(annotations, dict):
            result.errors.append(f"{label}: the pod's annotations are not a map")
            return None
        if policy is not None:
            annotations[names.ANNOTATION_POLICY] = policy
        if containers:
            annotations[names.ANNOTATION_CONTAINERS] = ",".join(containers)
    try:
        mutation = mutate(template, settings, explicit=True)
    except InvalidPod as exc:
        result.errors.append(f"{label}: {exc}")
        return None
    result.notes.extend(f"{label}: {warning.removeprefix('gpunuma: ')}"
                        for warning in mutation.warnings)
    if mutation.denial is not None:
        result.errors.append(f"{label}: {mutation.denial}")
        return None
    if not mutation.changed:
        if mutation.reason == "opted out":
            result.notes.append(f"{label}: left unchanged, it has {names.ANNOTATION_INJECT}: "
                                "\"false\"")
        elif mutation.reason == "no GPU containers" and containers:
            result.notes.append(f"{label}: left unchanged, --containers names none of its "
                                "containers")
        elif mutation.reason == "no GPU containers":
            result.notes.append(f"{label}: left unchanged, no container requests a GPU "
                                "(name containers with --containers)")
        return None
    done = f"wrapped {','.join(mutation.wrapped)}" if mutation.wrapped else "nothing wrapped"
    if mutation.skipped:
        done += f"; not wrapped: {','.join(mutation.skipped)}"
    result.notes.append(f"{label}: {done}")
    return dict(mutation.pod)


def _describe(document: dict[str, Any]) -> str:
    metadata = document.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    name = metadata.get("name") or metadata.get("generateName") or "<unnamed>"
    namespace = metadata.get("namespace")
    return f"{document.get('kind')} {namespace + '/' if namespace else ''}{name}"


def inject_text(
    text: str,
    settings: MutationSettings,
    *,
    policy: str | None = None,
    containers: Sequence[str] | None = None,
) -> tuple[str, InjectResult]:
    """``text`` (a YAML stream) with its pods injected, and what was decided.

    Documents that do not change come out byte for byte. Raises ``KubeYAMLError`` when ``text``
    is not YAML. The text is meaningful only when ``result.errors`` is empty.
    """
    output, _, result = _edit_text(
        text, lambda values: inject_documents(values, settings, policy=policy, containers=containers))
    return output, result


def _edit_text(text: str, edit: Callable[[list[Any]], InjectResult]) -> tuple[str, list[Any], InjectResult]:
    """(the YAML stream edited, its documents' values after the edit, what was decided)."""
    prefix, documents = read(text)
    result = edit([document.value for document in documents])
    if result.errors:
        return "", [], result
    rendered = prefix + "".join(document.render(value) for document, value
                                in zip(documents, result.documents, strict=True))
    return rendered, result.documents, result


def _sources(filenames: Sequence[str]) -> list[str]:
    """The files named, a folder's ``*.yaml``, ``*.yml`` and ``*.json`` files in name order, ``-``."""
    found: list[str] = []
    for name in filenames:
        path = Path(name)
        if name != "-" and path.is_dir():
            found.extend(str(child) for child in sorted(path.iterdir())
                         if child.suffix in (".yaml", ".yml", ".json") and child.is_file())
        else:
            found.append(name)
    return found


def _as_json(values: Sequence[Any]) -> str:
    """One object as itself, several as a v1 List (as ``kubectl get -o json`` prints them)."""
    objects = [value for value in values if value is not None]
    document = objects[0] if len(objects) == 1 else {"apiVersion": "v1", "kind": "List", "items": objects}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(
    settings: MutationSettings | None,
    filenames: Sequence[str],
    *,
    policy: str | None = None,
    containers: Sequence[str] | None = None,
    output: str = "yaml",
) -> int:
    """Entry of ``gpunuma inject`` and, with no settings, ``gpunuma uninject`` (flags and their
    conversion in ``gpunuma.cli``). Every file is read and edited before anything is written."""
    command = "gpunuma inject" if settings is not None else "gpunuma uninject"

    def edit(values: list[Any]) -> InjectResult:
        if settings is None:
            return uninject_documents(values)
        return inject_documents(values, settings, policy=policy, containers=containers)

    texts: list[str] = []
    values: list[Any] = []
    result = InjectResult()
    for filename in _sources(filenames):
        source = "standard input" if filename == "-" else filename
        try:
            text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
            edited, file_values, file_result = _edit_text(text, edit)
        except OSError as exc:
            print(f"{command}: cannot read {source}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
        except UnicodeDecodeError as exc:
            print(f"{command}: {source} is not UTF-8 text: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KubeYAMLError as exc:
            print(f"{command}: {source} is not valid YAML: {exc}", file=sys.stderr)
            return EXIT_USAGE
        texts.append(edited)
        values.extend(file_values)
        for kept, new in ((result.notes, file_result.notes), (result.errors, file_result.errors),
                          (result.report, file_result.report)):
            kept.extend(f"{source}: {line}" if len(filenames) > 1 or Path(filename).is_dir() else line
                        for line in new)
    for note in result.notes:
        print(f"{command}: {note}", file=sys.stderr)
    if result.errors:
        for error in result.errors:
            print(f"{command}: error: {error}", file=sys.stderr)
        print(f"{command}: nothing written: fix the errors above", file=sys.stderr)
        return EXIT_DENIED
    for line in result.report:
        print(f"{command}: {line}", file=sys.stderr)
    if output == "json":
        sys.stdout.write(_as_json(values))
    else:
        sys.stdout.write(_join_streams(texts))
    return 0


def _join_streams(texts: Sequence[str]) -> str:
    """Several YAML streams as one: each ends with a newline, a ``---`` between them."""
    parts = [text if text.endswith("\n") or not text else text + "\n" for text in texts if text.strip()]
    return "".join(part if index == 0 or part.startswith("---") else "---\n" + part
                   for index, part in enumerate(parts))
