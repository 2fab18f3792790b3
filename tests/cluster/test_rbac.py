"""The chart's RBAC, asked of the real API server with tokens of the chart's own ServiceAccounts.

The table is README.md's ("What each identity may do"): every row is one SelfSubjectAccessReview
(what `kubectl auth can-i` sends) made with that identity's token, so the README cannot drift from
the chart. The webhook's account may do nothing at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from tests.chart.render import REPO
from tests.cluster.conftest import Release

README_HEADING = "### What each identity may do"

# API group of each resource the table names.
GROUPS = {
    "nodes": "", "pods": "", "secrets": "", "events": "", "configmaps": "", "namespaces": "",
    "serviceaccounts": "", "services": "",
    "gpunumalayouts": "gpunuma.io",
    "resourceslices": "resource.k8s.io",
    "mutatingwebhookconfigurations": "admissionregistration.k8s.io",
    "validatingwebhookconfigurations": "admissionregistration.k8s.io",
    "clusterkopfpeerings": "kopf.dev",
    "customresourcedefinitions": "apiextensions.k8s.io",
    "clusterroles": "rbac.authorization.k8s.io",
    "deployments": "apps",
}


@dataclass(frozen=True)
class Row:
    identity: str
    verb: str
    resource: str
    subresource: str
    name: str
    namespace: str
    allowed: bool

    def __str__(self) -> str:
        return f"{self.identity}: {self.verb} {self.resource}" + (
            f"/{self.subresource}" if self.subresource else "") + (
            f" {self.name}" if self.name else "") + (
            f" -n {self.namespace}" if self.namespace else "") + f" → {self.allowed}"


def readme_rows(release: str, namespace: str) -> list[Row]:
    """The README table's rows, ``<release>`` and ``<namespace>`` filled in."""
    text = (REPO / "README.md").read_text()
    assert README_HEADING in text, f"README.md lost its section {README_HEADING!r}"
    section = text.split(README_HEADING, 1)[1]
    rows: list[Row] = []
    for line in section.splitlines():
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        if cells[0] in ("identity", "") or set(cells[0]) <= {"-"}:
            continue
        identity, request, answer = cells
        request = request.replace("<release>", release).replace("<namespace>", namespace)
        match = re.fullmatch(
            r"(?P<verb>[a-z]+) (?P<resource>[a-z]+)(?:/(?P<sub>[a-z]+))?"
            r"(?: (?P<name>[a-z0-9.-]+))?(?: -n (?P<ns>[a-z0-9-]+))?", request)
        assert match, f"README RBAC row not understood: {line}"
        rows.append(Row(identity, match["verb"], match["resource"], match["sub"] or "",
                        match["name"] or "", match["ns"] or "", answer == "yes"))
    assert rows, "README RBAC table is empty"
    return rows


def test_each_identity_may_do_exactly_what_the_readme_table_says(release: Release) -> None:
    cluster = release.cluster
    rows = readme_rows(release.name, release.namespace)
    tokens = {identity: cluster.token(release.namespace, release.service_account(identity))
              for identity in sorted({row.identity for row in rows})}
    wrong = []
    for row in rows:
        attributes = {"verb": row.verb, "group": GROUPS[row.resource], "resource": row.resource}
        if row.subresource:
            attributes["subresource"] = row.subresource
        if row.name:
            attributes["name"] = row.name
        if row.namespace:
            attributes["namespace"] = row.namespace
        review = cluster.request(
            "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
             "spec": {"resourceAttributes": attributes}}, token=tokens[row.identity])
        if review["status"]["allowed"] != row.allowed:
            wrong.append(str(row))
    assert not wrong, "the API server answers differently from README's table:\n" + "\n".join(wrong)


@pytest.mark.parametrize("verb", ["get", "list", "watch", "create", "update", "patch", "delete"])
def test_the_webhook_account_can_do_nothing_with_any_resource(release: Release, verb: str) -> None:
    cluster = release.cluster
    token = cluster.token(release.namespace, release.service_account("webhook"))
    for resource, group in sorted(GROUPS.items()):
        for namespace in ("", release.namespace):
            attributes = {"verb": verb, "group": group, "resource": resource}
            if namespace:
                attributes["namespace"] = namespace
            review = cluster.request(
                "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                 "spec": {"resourceAttributes": attributes}}, token=token)
            assert review["status"]["allowed"] is False, (verb, resource, namespace)
