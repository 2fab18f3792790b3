"""``gpunuma check``: does the installed release work? Like ``linkerd check``, one line per check.

1. the GPUNumaLayout CRD is served;
2. agents report: layouts exist and their heartbeats are fresh;
3. the operator acts: a live peer in the peering object, and every layout's status has caught up
   with its spec (``observedGeneration``) with ``Labeled`` true;
4. the webhook answers over TLS with a certificate that the caBundle of its
   MutatingWebhookConfiguration trusts, under the Service's DNS name: what the API server checks.

The judging functions are pure (objects and a clock in, a :class:`Check` out); :func:`run_checks`
does the I/O. The chart's ``helm test`` runs this inside the cluster, where the webhook's Service
name resolves; from outside, ``--webhook-address`` reaches it through a port-forward.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpunuma import names
from gpunuma.kubeapi import ApiError, KubeClient
from gpunuma.operator import paths
from gpunuma.operator.staleness import judge_heartbeat
from gpunuma.operator.status import CONDITION_LABELED, find_condition
from gpunuma.rfc3339 import parse_rfc3339
from gpunuma.settings import CheckSettings

__all__ = ["Check", "format_report", "judge_agents", "judge_operator",
           "judge_webhook_certificate", "run_checks"]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""
    skipped: bool = False


def _age(text: object, now: dt.datetime) -> dt.timedelta | None:
    try:
        return now - parse_rfc3339(str(text))
    except (TypeError, ValueError):
        return None


def _human(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 2 * 86400:
        return f"{seconds // 86400}d"
    if seconds >= 7200:
        return f"{seconds // 3600}h"
    if seconds >= 120:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def judge_agents(layouts: Sequence[Mapping[str, Any]], now: dt.datetime,
                 settings: CheckSettings) -> Check:
    name = "agents report"
    if not layouts:
        return Check(name, False, "no GPUNumaLayout exists: no agent has published its node",
                     "kubectl get pods -A -l app.kubernetes.io/component=agent -o wide (none "
                     "scheduled? set agent.nodeSelector/affinity)")
    limit = dt.timedelta(seconds=settings.heartbeat_interval_s * settings.stale_after_heartbeats)
    stale = []
    for layout in layouts:
        beat = (layout.get("spec") or {}).get("heartbeatTime")
        # The operator's own judgement, so that the check and the layout's Stale condition agree.
        if judge_heartbeat(beat, now, interval_s=settings.heartbeat_interval_s,
                           missed=settings.stale_after_heartbeats).stale is False:
            continue
        age = _age(beat, now)
        node = (layout.get("metadata") or {}).get("name", "?")
        if age is None:
            stale.append(f"{node} (no heartbeat)")
        elif age < dt.timedelta(0):
            stale.append(f"{node} ({_human(-age)} in the future)")
        else:
            stale.append(f"{node} ({_human(age)} ago)")
    if stale:
        return Check(name, False, f"{len(stale)} of {len(layouts)} without a heartbeat within "
                     f"{_human(limit)}: {', '.join(sorted(stale)[:5])}",
                     "look at the agent pod on those nodes and its logs")
    return Check(name, True, f"{len(layouts)} GPU node(s), every heartbeat within {_human(limit)}")


def judge_operator(peering: Mapping[str, Any] | None, layouts: Sequence[Mapping[str, Any]],
                   now: dt.datetime, settings: CheckSettings) -> Check:
    name = "operator acts"
    hint = "kubectl logs -l app.kubernetes.io/component=operator -A"
    if peering is None:
        return Check(name, False, f"ClusterKopfPeering {settings.peering_name!r} does not exist: "
                     "no replica may act", "set operator.peering.create=true, or create it")
    live = 0
    for info in (peering.get("status") or {}).values():
        if not isinstance(info, Mapping):
            continue
        age = _age(info.get("lastseen"), now)
        try:
            lifetime = dt.timedelta(seconds=int(info.get("lifetime", 60)))
        except (TypeError, ValueError):
            continue
        if age is not None and age < lifetime:
            live += 1
    if not live:
        return Check(name, False, f"no live operator replica in ClusterKopfPeering "
                     f"{settings.peering_name!r}", hint)
    behind = []
    for layout in layouts:
        meta, status = layout.get("metadata") or {}, layout.get("status") or {}
        labeled = find_condition(status.get("conditions"), CONDITION_LABELED) or {}
        if status.get("observedGeneration") != meta.get("generation"):
            behind.append(f"{meta.get('name', '?')} (status at generation "
                          f"{status.get('observedGeneration')}, spec at {meta.get('generation')})")
        elif labeled.get("status") != "True":
            behind.append(f"{meta.get('name', '?')} ({labeled.get('reason') or 'not labelled'})")
    if behind:
        return Check(name, False, f"{len(behind)} of {len(layouts)} layout(s) not applied: "
                     f"{', '.join(sorted(behind)[:5])}", hint)
    return Check(name, True, f"{live} live replica(s); {len(layouts)} layout(s) applied to their Nodes")


def judge_webhook_certificate(certificate: dict[str, Any] | None, now: dt.datetime) -> str:
    """How long the served certificate (``ssl.SSLSocket.getpeercert()``) is valid: a detail."""
    if not certificate or "notAfter" not in certificate:
        return ""
    expires = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(certificate["notAfter"]), dt.UTC)
    return f"; its certificate expires in {_human(expires - now)}"


async def _probe_webhook(host: str, port: int, server_name: str, bundle: bytes, path: str,
                         timeout_s: float) -> dict[str, Any]:
    """GET ``path`` over TLS, trusting exactly ``bundle``, checking ``server_name``; the peer cert."""
    context = ssl.create_default_context(cadata=bundle.decode("ascii"))
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=context, server_hostname=server_name), timeout_s)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n"
                     .encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout_s)
        certificate: dict[str, Any] = writer.get_extra_info("peercert") or {}
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, OSError):
            await writer.wait_closed()
    parts = status_line.decode("latin-1").split()
    if len(parts) < 2 or parts[1] != "200":
        raise OSError(f"{path} answered {' '.join(parts[1:]) or 'nothing'}")
    return certificate


async def check_webhook(configuration: Mapping[str, Any] | None, now: dt.datetime,
                        settings: CheckSettings) -> Check:
    name = "webhook reachable"
    if configuration is None:
        return Check(name, False, f"MutatingWebhookConfiguration {settings.webhook_configuration!r} "
                     "does not exist", "is webhook.enabled=true in the release?")
    for webhook in configuration.get("webhooks") or []:
        client = webhook.get("clientConfig") or {}
        service, encoded = client.get("service") or {}, client.get("caBundle")
        if not service:
            continue
        label = str(webhook.get("name", "?"))
        if not encoded:
            return Check(name, False, f"{label}: no caBundle yet, so the API server trusts no "
                         "certificate", "the operator (or cert-manager's CA injector) sets it: "
                         "look at its logs")
        server_name = f"{service.get('name')}.{service.get('namespace')}.svc"
        port = int(service.get("port") or 443)
        host, _, address_port = (settings.webhook_address or f"{server_name}:{port}").rpartition(":")
        try:
            certificate = await _probe_webhook(host.strip("[]"), int(address_port), server_name,
                                               base64.b64decode(encoded), "/healthz", settings.timeout_s)
        except ssl.SSLCertVerificationError as exc:
            return Check(name, False, f"{server_name}: its certificate is not trusted by the caBundle "
                         f"of {label} ({exc.verify_message})", "the certificate Secret and the "
                         "caBundle disagree: look at the operator's (or cert-manager's) logs")
        except (OSError, TimeoutError, ValueError) as exc:
            outside = settings.webhook_address is None
            return Check(name, False, f"{server_name}:{port}: {exc or type(exc).__name__}",
                         "from outside the cluster, port-forward the Service and pass "
                         "--webhook-address 127.0.0.1:PORT (or run `helm test`)" if outside else
                         "is the webhook pod Ready? kubectl get pods -l "
                         "app.kubernetes.io/component=webhook -A")
        return Check(name, True, f"{server_name}:{port} answers with a certificate that the "
                     f"caBundle of {label} trusts{judge_webhook_certificate(certificate, now)}")
    return Check(name, False, f"MutatingWebhookConfiguration {settings.webhook_configuration!r} "
                 "calls no Service")


async def run_checks(client: KubeClient, settings: CheckSettings,
                     now: dt.datetime | None = None) -> list[Check]:
    now = now or dt.datetime.now(dt.UTC)
    results: list[Check] = []
    error: ApiError | None = None
    try:
        listed = await client.get(paths.LAYOUTS)
    except ApiError as exc:
        listed, error = None, exc
    if listed is None:
        reason = f"{error}" if error else "the API server does not know it (404)"
        results.append(Check("GPUNumaLayout CRD served", False, reason,
                             "install the chart (crds.enabled=true) or apply "
                             "charts/gpunuma/files/crds/"))
        return results
    layouts = [item for item in listed.get("items") or [] if isinstance(item, Mapping)]
    results.append(Check("GPUNumaLayout CRD served", True,
                         f"{names.CRD_GROUP}/{names.CRD_VERSION} {names.CRD_PLURAL}"))
    if "agents" not in settings.skip:
        results.append(judge_agents(layouts, now, settings))
    if "operator" not in settings.skip:
        try:
            peering = await client.get(paths.peering(settings.peering_name))
        except ApiError as exc:
            results.append(Check("operator acts", False, f"cannot read the peering: {exc}"))
        else:
            results.append(judge_operator(peering, layouts, now, settings))
    if "webhook" not in settings.skip:
        try:
            configuration = await client.get(paths.webhook_configuration(settings.webhook_configuration))
        except ApiError as exc:
            results.append(Check("webhook reachable", False,
                                 f"cannot read its configuration: {exc}"))
        else:
            results.append(await check_webhook(configuration, now, settings))
    return results


def format_report(results: Sequence[Check]) -> str:
    lines = ["gpunuma check"]
    for result in results:
        mark = "-" if result.skipped else ("√" if result.ok else "×")
        lines.append(f"{mark} {result.name}: {result.detail}")
        if not result.ok and result.hint:
            lines.append(f"    see: {result.hint}")
    failed = sum(1 for r in results if not r.ok and not r.skipped)
    lines.append("Status: " + ("all checks passed" if not failed else f"{failed} check(s) failed"))
    return "\n".join(lines) + "\n"
