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
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpunuma import names
from gpunuma.settings import MutationSettings
from gpunuma.webhook.kubeyaml import KubeYAMLError, read
from gpunuma.webhook.mutation import InvalidPod, mutate

__all__ = ["InjectResult", "inject_documents", "inject_text", "main"]

EXIT_DENIED = 1
EXIT_USAGE = 2

# Where each built-in kind keeps its pod template, keyed by (apiVersion, kind): a custom resource
# may reuse a kind name (Volcano's batch.volcano.sh Job) with a different shape.
_TEMPLATE_PATHS: dict[tuple[str, str], tuple[str, ...]] = {
    ("v1", "Pod"): (),
    ("v1", "ReplicationController"): ("spec", "template"),
    ("apps/v1", "Deployment"): ("spec", "template"),
    ("apps/v1", "StatefulSet"): ("spec", "template"),
    ("apps/v1", "DaemonSet"): ("spec", "template"),
    ("apps/v1", "ReplicaSet"): ("spec", "template"),
    ("batch/v1", "Job"): ("spec", "template"),
    ("batch/v1", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
}


@dataclass
class InjectResult:
    documents: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Warnings and decisions, one line each, for standard error."""
    errors: list[str] = field(default_factory=list)
    """Denials and malformed documents; with any, nothing is written."""


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
    result = InjectResult()
    for document in documents:
        result.documents.append(_inject(document, settings, policy, containers, result))
    return result


def _inject(document: Any, settings: MutationSettings, policy: str | None,
            containers: Sequence[str] | None, result: InjectResult) -> Any:
    if not isinstance(document, dict):
        return document
    if document.get("kind") == "List" and isinstance(document.get("items"), list):
        return {**document, "items": [_inject(item, settings, policy, containers, result)
                                      for item in document["items"]]}
    path = _TEMPLATE_PATHS.get((str(document.get("apiVersion")), str(document.get("kind"))))
    if path is None:
        return document
    label = _describe(document)
    new_document = copy.deepcopy(document)
    parent: Any = None
    template: Any = new_document
    for key in path:
        parent, template = template, template.get(key) if isinstance(template, dict) else None
    if not isinstance(template, dict):
        result.errors.append(f"{label}: has no pod template at {'.'.join(path)}")
        return document
    if template.get("metadata") is None:
        template["metadata"] = {}
    metadata = template["metadata"]
    if not isinstance(metadata, dict):
        result.errors.append(f"{label}: the pod's metadata is not a map")
        return document
    if policy is not None or containers:
        if metadata.get("annotations") is None:
            metadata["annotations"] = {}
        annotations = metadata["annotations"]
        if not isinstance(annotations, dict):
            result.errors.append(f"{label}: the pod's annotations are not a map")
            return document
        if policy is not None:
            annotations[names.ANNOTATION_POLICY] = policy
        if containers:
            annotations[names.ANNOTATION_CONTAINERS] = ",".join(containers)
    try:
        mutation = mutate(template, settings, explicit=True)
    except InvalidPod as exc:
        result.errors.append(f"{label}: {exc}")
        return document
    result.notes.extend(f"{label}: {warning.removeprefix('gpunuma: ')}"
                        for warning in mutation.warnings)
    if mutation.denial is not None:
        result.errors.append(f"{label}: {mutation.denial}")
        return document
    if not mutation.changed:
        if mutation.reason == "opted out":
            result.notes.append(f"{label}: left unchanged, it has {names.ANNOTATION_INJECT}: "
                                "\"false\"")
        elif mutation.reason == "no GPU containers":
            result.notes.append(f"{label}: left unchanged, no container requests a GPU "
                                "(name containers with --containers)")
        return document
    if parent is None:
        return mutation.pod
    parent[path[-1]] = mutation.pod
    return new_document


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
    prefix, documents = read(text)
    result = inject_documents([document.value for document in documents], settings,
                              policy=policy, containers=containers)
    if result.errors:
        return "", result
    return prefix + "".join(document.render(value) for document, value
                            in zip(documents, result.documents, strict=True)), result


def main(settings: MutationSettings, filename: str, *, policy: str | None = None,
         containers: Sequence[str] | None = None) -> int:
    """Entry of ``gpunuma inject`` (flags and their conversion in ``gpunuma.cli``)."""
    source = "standard input" if filename == "-" else filename
    try:
        text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
        output, result = inject_text(text, settings, policy=policy, containers=containers)
    except OSError as exc:
        print(f"gpunuma inject: cannot read {source}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except UnicodeDecodeError as exc:
        print(f"gpunuma inject: {source} is not UTF-8 text: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KubeYAMLError as exc:
        print(f"gpunuma inject: {source} is not valid YAML: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for note in result.notes:
        print(f"gpunuma inject: {note}", file=sys.stderr)
    if result.errors:
        for error in result.errors:
            print(f"gpunuma inject: error: {error}", file=sys.stderr)
        print("gpunuma inject: nothing written: fix the errors above", file=sys.stderr)
        return EXIT_DENIED
    sys.stdout.write(output)
    return 0
