"""Keeps the node's GPUNumaLayout equal to what the agent knows, with as few API writes as possible.

The spec is the layout document (DESIGN §4) plus ``summary`` (what the printer columns show: JSONPath
cannot count arrays), ``allocations`` and ``heartbeatTime``. The publisher remembers the last spec
it wrote or read, so a pass with nothing new costs no API call at all; only the heartbeat, every
``--heartbeat`` seconds, writes ``spec.heartbeatTime`` alone with a merge patch. A changed spec is
written whole with a JSON patch, because the document holds ``null`` values that a merge patch
would read as "delete this key".

It reads the object only when it knows nothing (at start, after an error): an agent that restarts
on an unchanged node finds its CR current and writes nothing until the heartbeat is due.

Each heartbeat's answer is the stored object: when its spec is not what the server stored for the
agent's last write, someone else changed it (another node's credentials, a hand edit), and the
agent writes its spec back whole ("repaired") instead of keeping a forgery fresh.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any, Literal

from gpunuma import names
from gpunuma.kubeapi import ApiError, KubeClient
from gpunuma.rfc3339 import format_rfc3339, parse_rfc3339
from gpunuma.topology import Layout

__all__ = [
    "LayoutPublisher",
    "PublishResult",
    "layout_object",
    "layout_path",
    "layout_spec",
    "layout_summary",
]

log = logging.getLogger("gpunuma.agent")
PublishResult = Literal["created", "updated", "heartbeat", "repaired", "unchanged"]

API_VERSION = f"{names.CRD_GROUP}/{names.CRD_VERSION}"


def layout_path(node_name: str = "") -> str:
    base = f"/apis/{names.CRD_GROUP}/{names.CRD_VERSION}/{names.CRD_PLURAL}"
    return f"{base}/{node_name}" if node_name else base


def layout_summary(layout: Layout) -> dict[str, Any]:
    """What ``kubectl get gnl`` shows: GPU count, CPU-bearing NUMA nodes, GPUs per node.

    ``layout`` follows the ``gpunuma.io/layout`` label's rule (``4-4``; ``unknown`` when a GPU's
    node is unknown) but is never left out for length, as the label is.
    """
    return {
        "gpus": len(layout.gpus),
        "numaNodes": len(layout.cpu_nodes),
        "layout": layout.gpus_per_node_text(),
    }


def layout_spec(layout: Layout, allocations: list[dict[str, Any]]) -> dict[str, Any]:
    """The spec the agent wants, without ``heartbeatTime`` (which is added when written)."""
    spec = layout.to_document()
    spec["summary"] = layout_summary(layout)
    spec["allocations"] = allocations
    return spec


def layout_object(node_name: str, node_uid: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The whole GPUNumaLayout: named after its Node and owned by it (deleted with it)."""
    return {
        "apiVersion": API_VERSION,
        "kind": names.CRD_KIND,
        "metadata": {
            "name": node_name,
            "labels": {"app.kubernetes.io/managed-by": "gpunuma-agent"},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": node_uid}
            ],
        },
        "spec": spec,
    }


def _heartbeat_time(text: Any) -> datetime.datetime | None:
    """The spec's ``heartbeatTime``, or None when absent or unreadable (then a heartbeat is due)."""
    try:
        return parse_rfc3339(text) if isinstance(text, str) else None
    except ValueError:
        return None


class LayoutPublisher:
    """Creates or updates one node's GPUNumaLayout; see the module docstring for the rules.

    ``monotonic`` schedules heartbeats (the event loop's clock, so that tests can fast-forward
    it); ``wall`` stamps ``heartbeatTime``.
    """

    def __init__(
        self,
        client: KubeClient,
        node_name: str,
        *,
        monotonic: Callable[[], float],
        wall: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self._client = client
        self._node_name = node_name
        self._monotonic = monotonic
        self._wall = wall
        self._published: dict[str, Any] | None = None  # spec without heartbeatTime
        # The spec as the server stored it after the agent's last write (pruning included).
        self._stored: dict[str, Any] | None = None
        self._heartbeat_at: float | None = None  # monotonic time of the last heartbeatTime

    def forget(self) -> None:
        """Read the object again before the next write (after an error left its state unknown)."""
        self._published = None
        self._stored = None
        self._heartbeat_at = None

    def heartbeat_due_in(self, period: float) -> float:
        """Seconds until the next heartbeat is due (0 when due or unknown)."""
        if self._heartbeat_at is None:
            return 0.0
        return max(0.0, self._heartbeat_at + period - self._monotonic())

    async def publish(self, spec: dict[str, Any], *, heartbeat: float) -> PublishResult:
        """Make the CR's spec equal ``spec``; heartbeat when ``heartbeat`` seconds have passed.

        Raises :class:`ApiError`; the caller retries with backoff. Any failure makes the next call
        read the object first, so a retry never trusts a write that may not have happened.
        """
        try:
            return await self._publish(spec, heartbeat)
        except ApiError:
            # Includes a 404 on a patch: the CR was deleted under us, and the next pass recreates it.
            self.forget()
            raise

    async def _publish(self, spec: dict[str, Any], heartbeat: float) -> PublishResult:
        path = layout_path(self._node_name)
        if self._published is None:
            existing = await self._client.get(path)
            if existing is None:
                return await self._create(spec)
            current = dict(existing.get("spec") or {})
            written = _heartbeat_time(current.pop("heartbeatTime", None))
            self._published = current
            self._stored = dict(current)
            if written is not None:
                age = (self._wall() - written).total_seconds()
                self._heartbeat_at = self._monotonic() - max(0.0, age)
        now = self._wall()
        if spec != self._published:
            await self._write(path, spec, now)
            return "updated"
        if self.heartbeat_due_in(heartbeat) <= 0:
            answer = await self._client.merge_patch(
                path, {"spec": {"heartbeatTime": format_rfc3339(now)}})
            self._heartbeat_at = self._monotonic()
            stored = _spec_of(answer)
            if stored is not None and self._stored is not None and stored != self._stored:
                log.warning("GPUNumaLayout %s: its spec was changed by someone else; writing "
                            "this node's layout back", self._node_name)
                await self._write(path, spec, now)
                return "repaired"
            return "heartbeat"
        return "unchanged"

    async def _write(self, path: str, spec: dict[str, Any], now: datetime.datetime) -> None:
        value = {**spec, "heartbeatTime": format_rfc3339(now)}
        answer = await self._client.json_patch(path, [{"op": "add", "path": "/spec", "value": value}])
        self._remember(spec, _spec_of(answer))

    async def _create(self, spec: dict[str, Any]) -> PublishResult:
        node = await self._client.get(f"/api/v1/nodes/{self._node_name}")
        if node is None:
            raise ApiError(404, f"Node {self._node_name!r} does not exist: set --node-name (env "
                           "NODE_NAME, from the downward API spec.nodeName)", reason="NotFound")
        uid = node.get("metadata", {}).get("uid")
        if not isinstance(uid, str) or not uid:
            raise ApiError(0, f"Node {self._node_name!r} has no metadata.uid to own the layout")
        body = layout_object(self._node_name, uid, {**spec, "heartbeatTime": format_rfc3339(self._wall())})
        answer = await self._client.create(layout_path(), body)
        self._remember(spec, _spec_of(answer))
        return "created"

    def _remember(self, spec: dict[str, Any], stored: dict[str, Any] | None) -> None:
        # What we sent, not what came back: a field the server prunes (an older CRD) must not
        # look like a change on every pass. What came back is what later answers are compared
        # with, to notice a write by someone else.
        self._published = spec
        self._stored = stored
        self._heartbeat_at = self._monotonic()


def _spec_of(answer: object) -> dict[str, Any] | None:
    """The spec of an object the API server returned, without ``heartbeatTime``."""
    if not isinstance(answer, dict) or not isinstance(answer.get("spec"), dict):
        return None
    stored = dict(answer["spec"])
    stored.pop("heartbeatTime", None)
    return stored
