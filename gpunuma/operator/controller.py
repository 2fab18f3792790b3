"""The operator's reconcilers: layouts → Node labels and status, allocations → pod annotations,
the periodic staleness and certificate checks.

The kopf handlers (``handlers.py``) only feed these caches and call these methods; everything that
decides is a pure function of the operator package. All writes go through :class:`KubeClient`, and
every write is guarded by "differs from what the object has", so that the operator's own writes —
which come back as watch events — converge after one round instead of echoing.

Caches hold only what reconciling needs (our labels of a Node, a pod's phase and annotations), not
whole objects: a 1,000-node cluster's Node objects are large and mostly irrelevant here.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import secrets
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gpunuma import names
from gpunuma.kubeapi import ApiError, KubeClient, format_rfc3339
from gpunuma.operator.certificates import (
    CertificatePolicy,
    Pki,
    PkiError,
    ca_bundle,
    pki_from_secrets,
    pki_to_secrets,
    plan,
    service_dns_names,
)
from gpunuma.operator.derived import Derivations, Derived
from gpunuma.operator.labels import label_patch
from gpunuma.operator.peering import is_active_peer
from gpunuma.operator.placement import AllocationError, annotation_patch, pods_with_allocations
from gpunuma.operator.staleness import judge_heartbeat
from gpunuma.operator.status import (
    CONDITION_LABELED,
    CONDITION_STALE,
    Condition,
    desired_status,
    find_condition,
    merge_patch,
)
from gpunuma.settings import OperatorSettings

__all__ = ["Controller", "LayoutView", "NodeView", "PodView"]

logger = logging.getLogger("gpunuma.operator")

LAYOUTS_PATH = f"/apis/{names.CRD_GROUP}/{names.CRD_VERSION}/{names.CRD_PLURAL}"
PEERING_PATH = "/apis/kopf.dev/v1/clusterkopfpeerings"
WEBHOOKS_PATH = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
EVENT_SOURCE = "gpunuma-operator"
PEERING_RETRY_S = 2.0  # how soon the loop looks again while kopf has not joined the peering


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
class _Sent:
    """The last write to one object and the view it was computed from (see :meth:`_patch_once`)."""

    patch: dict[str, Any]
    basis: object


@dataclass
class Controller:
    settings: OperatorSettings
    client: KubeClient
    identity: str = "gpunuma"
    priority: int = 0
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    nodes: dict[str, NodeView] = field(default_factory=dict)
    layouts: dict[str, LayoutView] = field(default_factory=dict)
    pods: dict[str, dict[tuple[str, str], PodView]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    _pod_nodes: dict[tuple[str, str], str] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    _sent: dict[tuple[str, str], _Sent] = field(default_factory=dict)
    _allocations_seen: dict[str, object] = field(default_factory=dict)
    _stale_reported: dict[str, bool] = field(default_factory=dict)
    derivations: Derivations = field(default_factory=Derivations)
    # Whether kopf's keep-alive has put this replica in the peering object (always, standalone).
    peering_joined: bool = False

    # Cache upkeep (called by the kopf handlers) ------------------------------------------------

    def observe_node(self, body: Mapping[str, Any], *, deleted: bool = False) -> str:
        view = NodeView.from_body(body)
        if deleted:
            self.nodes.pop(view.name, None)
            self._sent.pop(("node", view.name), None)
        elif _newer(view.resource_version, self.nodes.get(view.name)):
            self.nodes[view.name] = view
        return view.name

    def observe_layout(self, body: Mapping[str, Any], *, deleted: bool = False) -> LayoutView:
        view = LayoutView.from_body(body)
        if deleted:
            self.layouts.pop(view.name, None)
        elif _newer(view.resource_version, self.layouts.get(view.name)):
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
        if deleted:
            self._sent.pop(("pod", f"{view.namespace}/{view.name}"), None)
        elif view.node:
            self.pods[view.node][key] = view
            self._pod_nodes[key] = view.node
        return view

    # Layouts → Node labels and status ----------------------------------------------------------

    async def reconcile_layout(self, name: str) -> None:
        """Bring the Node's labels and the layout's status in line with the layout's spec."""
        async with self._locks[name]:
            layout = self.layouts.get(name)
            if layout is None:
                return
            try:
                await self._reconcile_layout(layout)
            except ApiError as exc:
                logger.warning("layout %s: %s", name, exc)

    async def _reconcile_layout(self, layout: LayoutView) -> None:
        now = self.clock()
        heartbeat = judge_heartbeat(
            layout.spec.get("heartbeatTime"), now,
            interval_s=self.settings.heartbeat_interval_s,
            missed=self.settings.stale_after_heartbeats,
        )
        stale = Condition(
            CONDITION_STALE,
            "Unknown" if heartbeat.stale is None else ("True" if heartbeat.stale else "False"),
            heartbeat.reason, heartbeat.message,
        )
        applied: dict[str, str] | None = None
        derived = self._derived(layout)
        desired = None if derived.labels is None else dict(derived.labels)
        if desired is None:
            labeled = Condition(CONDITION_LABELED, "False", "InvalidLayout", derived.invalid or "")
        else:
            if heartbeat.stale:
                desired[names.LABEL_STALE] = "true"
            node = self.nodes.get(layout.name) or await self._fetch_node(layout.name)
            if node is None:
                labeled = _node_missing(layout.name)
            else:
                try:
                    await self._patch_node(node, desired)
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    self.nodes.pop(layout.name, None)
                    labeled = _node_missing(layout.name)
                else:
                    applied = desired
                    labeled = Condition(CONDITION_LABELED, "True", "LabelsApplied",
                                        f"{len(desired)} gpunuma.io labels on node {layout.name}")
        before = find_condition(layout.status.get("conditions"), CONDITION_STALE)
        status = desired_status(layout.status, [labeled, stale], applied, layout.generation, now)
        await self._patch_status(layout, status)
        # One Event per transition: what this process last reported wins over the status it
        # reads (which may lag behind its own write); after a restart, the status tells.
        recorded = before is not None and before.get("status") == "True"
        reported = self._stale_reported.get(layout.name, recorded)
        if heartbeat.stale is not None and heartbeat.stale != reported:
            self._stale_reported[layout.name] = heartbeat.stale
            await self._stale_event(layout.name, heartbeat.stale, heartbeat.message)

    async def _fetch_node(self, name: str) -> NodeView | None:
        """A Node not (yet) in the cache: at start-up the Node watch may not have delivered it
        when its layout's event is handled. Read it once rather than report it missing."""
        body = await self.client.get(f"/api/v1/nodes/{name}")
        if body is None:
            return None
        self.observe_node(body)
        return self.nodes.get(name)

    async def _patch_node(self, node: NodeView, desired: Mapping[str, str]) -> None:
        patch = label_patch(desired, node.labels, node.annotations)
        if patch is None:
            return
        body = await self._patch_once(("node", node.name), f"/api/v1/nodes/{node.name}", patch,
                                      node)
        if body is None:
            return
        changes = patch["metadata"].get("labels", {})
        logger.info("node %s: %d gpunuma.io labels set, %d removed", node.name,
                    sum(v is not None for v in changes.values()),
                    sum(v is None for v in changes.values()))
        if body.get("metadata"):
            self.nodes[node.name] = NodeView.from_body(body)

    async def _patch_status(self, layout: LayoutView, status: Mapping[str, Any]) -> None:
        patch = merge_patch(layout.status, status)
        if not patch:
            return
        try:
            body = await self._patch_once(("layout", layout.name),
                                          f"{LAYOUTS_PATH}/{layout.name}/status",
                                          {"status": patch}, layout)
        except ApiError as exc:
            # 404: deleted meanwhile (garbage-collected with its Node; the DELETED event cleans
            # the cache) or a CRD without the status subresource (the message says which).
            if exc.status == 404:
                logger.warning("layout %s: status not written: %s", layout.name, exc)
                return
            raise
        if body is not None and body.get("metadata") and layout.name in self.layouts:
            self.layouts[layout.name] = LayoutView.from_body(body)

    async def _patch_once(
        self, key: tuple[str, str], path: str, patch: dict[str, Any], basis: object,
    ) -> dict[str, Any] | None:
        """Send a merge patch, unless the same patch already succeeded against the same view.

        After a write, the watch event carrying its result can arrive later than another event
        that triggers a reconcile; that reconcile still sees the old view and would send the
        same patch again. The view changes as soon as any newer state of the object is observed.
        A failed write is not remembered, so the next event or round retries it. Returns the
        patched object, or None when nothing was sent.
        """
        timeless = _without_transition_times(patch)
        previous = self._sent.get(key)
        if previous is not None and previous.patch == timeless and previous.basis == basis:
            return None
        body = await self.client.merge_patch(path, patch)
        self._sent[key] = _Sent(timeless, basis)
        return body

    async def _stale_event(self, node: str, stale: bool, message: str) -> None:
        view = self.nodes.get(node)
        if view is None:
            return
        reason, kind = ("NodeLayoutStale", "Warning") if stale else ("NodeLayoutFresh", "Normal")
        text = message if stale else f"the gpunuma agent reports again; {message}"
        await self.post_event(view, kind, reason, text)

    async def post_event(self, node: NodeView, kind: str, reason: str, message: str) -> None:
        now = format_rfc3339(self.clock())
        namespace = "default"  # where `kubectl describe node` looks for a Node's events
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            # Named like kubectl's events (object.random hex) rather than by generateName, which
            # not every API emulator implements.
            "metadata": {"name": f"{node.name}.{secrets.token_hex(8)}", "namespace": namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node.name,
                               "uid": node.uid or node.name},
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": EVENT_SOURCE},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.client.create(f"/api/v1/namespaces/{namespace}/events", body)
        except ApiError as exc:  # an Event is a courtesy: never let it fail a reconcile
            logger.warning("node %s: could not post event %s: %s", node.name, reason, exc)

    async def forget_layout(self, body: Mapping[str, Any]) -> None:
        """A deleted layout: take our labels off its Node (if the Node is still there)."""
        view = self.observe_layout(body, deleted=True)
        async with self._locks[view.name]:
            if view.name in self.nodes:
                try:
                    # Read fresh rather than trust the cache: this is the last chance to clean up,
                    # and no later event would correct a patch computed from an outdated view.
                    fresh = await self.client.get(f"/api/v1/nodes/{view.name}")
                    if fresh is not None:
                        await self._patch_node(NodeView.from_body(fresh), {})
                except ApiError as exc:
                    if exc.status != 404:
                        logger.warning("node %s: could not remove labels: %s", view.name, exc)
        self._sent.pop(("layout", view.name), None)
        self._allocations_seen.pop(view.name, None)
        self._stale_reported.pop(view.name, None)
        self.derivations.forget(view.name)

    def _derived(self, layout: LayoutView) -> Derived:
        # Parsed once per generation of the layout, however many rounds and pods read it.
        return self.derivations.of(layout.name, layout.generation, layout.resource_version,
                                   layout.spec)

    # Allocations → pod annotations -------------------------------------------------------------

    async def reconcile_pods_of(self, node: str) -> None:
        """After a layout event: the pods on that node, if its allocations changed."""
        layout = self.layouts.get(node)
        if layout is None:
            return
        allocations = layout.spec.get("allocations")
        if node in self._allocations_seen and self._allocations_seen[node] == allocations:
            return
        self._allocations_seen[node] = allocations
        try:
            listed = pods_with_allocations(allocations)
        except AllocationError as exc:
            logger.warning("layout %s: %s", node, exc)
            return
        for key in sorted(listed & self.pods.get(node, {}).keys()):
            await self.reconcile_pod(*key, node=node)

    async def reconcile_pod(self, namespace: str, name: str, *, node: str) -> None:
        pod = self.pods.get(node, {}).get((namespace, name))
        layout = self.layouts.get(node)
        if pod is None or layout is None or pod.phase != "Running":
            return
        try:
            desired = self._derived(layout).placement(namespace, name)
        except AllocationError as exc:
            logger.warning("layout %s: %s", node, exc)
            return
        if desired is None:
            return
        patch = annotation_patch(desired, pod.annotations)
        if patch is None:
            return
        try:
            body = await self._patch_once(("pod", f"{namespace}/{name}"),
                                          f"/api/v1/namespaces/{namespace}/pods/{name}", patch, pod)
        except ApiError as exc:
            if exc.status == 404:
                self.pods.get(node, {}).pop((namespace, name), None)
            else:
                logger.warning("pod %s/%s: %s", namespace, name, exc)
            return
        if body is None:
            return
        logger.info("pod %s/%s: placement %s", namespace, name, desired[names.ANNOTATION_NUMA_NODES])
        if body.get("metadata"):
            self.observe_pod(body)

    # The periodic loop: staleness and certificates --------------------------------------------

    async def is_active(self) -> bool:
        """Only the replica kopf's peering lets run acts in the periodic loop."""
        if self.settings.standalone:
            self.peering_joined = True
            return True
        try:
            peering = await self.client.get(f"{PEERING_PATH}/{self.settings.peering_name}")
        except ApiError as exc:
            logger.warning("peering: %s; skipping this round", exc)
            return False
        if peering is None:
            # Peering is mandatory when not standalone: kopf keeps its handlers paused until the
            # ClusterKopfPeering exists, and so does the loop (no two replicas acting at once).
            logger.warning("peering: ClusterKopfPeering %r not found; waiting for it",
                           self.settings.peering_name)
            return False
        status = peering.get("status")
        self.peering_joined = isinstance(status, Mapping) and self.identity in status
        if not self.peering_joined:
            # kopf has not announced this replica yet; until it has, a replica started at the
            # same moment may not have been announced either, and both would think they lead.
            return False
        return is_active_peer(status, self.identity, self.priority, self.clock())

    async def check_once(self) -> None:
        """One round: re-judge every layout's heartbeat, retry pod placements whose write failed
        (in-memory comparisons only, unless something differs), renew certificates if due."""
        for name in list(self.layouts):
            await self.reconcile_layout(name)
        for node, pods in list(self.pods.items()):
            for namespace, name in list(pods):
                await self.reconcile_pod(namespace, name, node=node)
        await self.reconcile_certificates()

    async def run_periodically(self) -> None:
        """Forever: a round at once (a fresh install gets its certificates now), then every
        ``check_interval_s``; every ``PEERING_RETRY_S`` until kopf has announced this replica."""
        while True:
            try:
                if await self.is_active():
                    await self.check_once()
            except Exception:  # the loop must outlive any one bad round; kopf keeps running too
                logger.exception("periodic check failed; retrying in %s s",
                                 self.settings.check_interval_s)
            interval = self.settings.check_interval_s
            await asyncio.sleep(interval if self.peering_joined else min(interval, PEERING_RETRY_S))

    # Certificates -----------------------------------------------------------------------------

    async def reconcile_certificates(self) -> Literal["skipped", "unchanged", "written", "failed"]:
        certs = self.settings.certificates
        if certs.mode != "self-managed":
            return "skipped"
        async with self._locks["\0certificates"]:
            try:
                return await self._reconcile_certificates()
            except ApiError as exc:
                hint = (" (no permission: without a webhook, or with certificates issued "
                        "elsewhere, run with --certificates cert-manager)"
                        if exc.status == 403 else "")
                logger.warning("webhook certificates: %s%s", exc, hint)
                return "failed"

    async def _reconcile_certificates(self) -> Literal["unchanged", "written"]:
        certs = self.settings.certificates
        base = f"/api/v1/namespaces/{certs.namespace}/secrets"
        serving = await self.client.get(f"{base}/{certs.secret_name}")
        authority = await self.client.get(f"{base}/{certs.secret_name}-ca")
        try:
            current: Pki | None = pki_from_secrets(
                (serving or {}).get("data"), (authority or {}).get("data")
            )
        except PkiError as exc:
            if serving is not None or authority is not None:
                logger.warning("webhook certificates: %s; issuing new ones", exc)
            current = None
        policy = CertificatePolicy(
            leaf_validity=dt.timedelta(days=certs.leaf_validity_days),
            leaf_renew_before=dt.timedelta(days=certs.renew_before_days),
            ca_validity=dt.timedelta(days=certs.ca_validity_days),
            ca_renew_before=dt.timedelta(days=certs.ca_renew_before_days),
        )
        decision = plan(current, self.clock(), service_dns_names(certs.service_name,
                                                                  certs.namespace), policy)
        if decision is None:
            assert current is not None
            await self._patch_ca_bundle(ca_bundle(current))
            return "unchanged"
        pki, reason = decision
        # The bundle first: the API server must trust the new CA before any webhook serves a
        # leaf from it (the old CA stays in the bundle, so the old leaf keeps working too).
        await self._patch_ca_bundle(ca_bundle(pki))
        serving_data, authority_data = pki_to_secrets(pki)
        await self._write_secret(base, f"{certs.secret_name}-ca", authority, authority_data,
                                 "Opaque")
        await self._write_secret(base, certs.secret_name, serving, serving_data,
                                 "kubernetes.io/tls")
        logger.info("webhook certificates: %s (leaf valid until %s)", reason,
                    format_rfc3339(pki.leaf_cert.not_valid_after_utc))
        return "written"

    async def _write_secret(
        self, base: str, name: str, existing: Mapping[str, Any] | None, data: dict[str, str],
        kind: str,
    ) -> None:
        labels = {"app.kubernetes.io/managed-by": EVENT_SOURCE}
        if existing is None:
            await self.client.create(base, {
                "apiVersion": "v1", "kind": "Secret", "type": kind,
                "metadata": {"name": name, "namespace": self.settings.certificates.namespace,
                             "labels": labels},
                "data": data,
            })
            return
        meta: dict[str, Any] = {"labels": labels}
        version = (existing.get("metadata") or {}).get("resourceVersion")
        if version:
            # A precondition: if another replica renewed meanwhile, this write fails (409)
            # instead of replacing its certificate; the next round adopts the winner's.
            meta["resourceVersion"] = version
        stale_keys = {key: None for key in (existing.get("data") or {}) if key not in data}
        await self.client.merge_patch(f"{base}/{name}",
                                      {"metadata": meta, "data": {**stale_keys, **data}})

    async def _patch_ca_bundle(self, bundle: bytes) -> None:
        name = self.settings.certificates.webhook_configuration
        path = f"{WEBHOOKS_PATH}/{name}"
        configuration = await self.client.get(path)
        if configuration is None:
            logger.warning("MutatingWebhookConfiguration %s does not exist; its caBundle will be "
                           "set once it does", name)
            return
        encoded = base64.b64encode(bundle).decode("ascii")
        ops: list[dict[str, Any]] = []
        for index, webhook in enumerate(configuration.get("webhooks") or []):
            if (webhook.get("clientConfig") or {}).get("caBundle") != encoded:
                # `test` pins the index to the webhook we read, should the list change meanwhile.
                ops.append({"op": "test", "path": f"/webhooks/{index}/name",
                            "value": webhook.get("name")})
                ops.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle",
                            "value": encoded})
        if ops:
            await self.client.json_patch(path, ops)
            logger.info("MutatingWebhookConfiguration %s: caBundle updated", name)


def _newer(version: str | None, cached: NodeView | LayoutView | None) -> bool:
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


def _without_transition_times(value: Any) -> Any:
    """A status patch minus ``lastTransitionTime``: two computed a second apart are the same."""
    if isinstance(value, dict):
        return {k: _without_transition_times(v) for k, v in value.items()
                if k != "lastTransitionTime"}
    if isinstance(value, list):
        return [_without_transition_times(item) for item in value]
    return value


def _node_missing(name: str) -> Condition:
    return Condition(CONDITION_LABELED, "False", "NodeNotFound",
                     f"node {name} does not exist; its labels are applied once it registers")
