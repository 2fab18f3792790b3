"""The Pod Security checks the chart tests rely on: each rule catches what it should."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.chart.podsecurity import baseline_violations, restricted_violations

RESTRICTED_POD: dict[str, Any] = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{
        "name": "app", "image": "app:1",
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }],
    "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "tls", "secret": {"secretName": "s"}}],
}


def changed(path: str, value: Any) -> dict[str, Any]:
    """RESTRICTED_POD with one field set; path segments by '.', list indices as numbers."""
    pod = copy.deepcopy(RESTRICTED_POD)
    *parents, last = path.split(".")
    node: Any = pod
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[last] = value
    return pod


def test_a_restricted_pod_has_no_violations() -> None:
    assert restricted_violations(RESTRICTED_POD) == []
    assert baseline_violations(RESTRICTED_POD) == []


@pytest.mark.parametrize(("path", "value", "rule"), [
    ("hostNetwork", True, "host namespaces"),
    ("hostPID", True, "host namespaces"),
    ("containers.0.securityContext.privileged", True, "privileged containers"),
    ("containers.0.securityContext.capabilities.add", ["SYS_ADMIN"], "capabilities"),
    ("containers.0.ports", [{"containerPort": 80, "hostPort": 80}], "host ports"),
    ("containers.0.securityContext.procMount", "Unmasked", "/proc mount type"),
    ("securityContext.seccompProfile", {"type": "Unconfined"}, "seccomp"),
    ("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}], "sysctls"),
    ("containers.0.securityContext.seLinuxOptions", {"type": "spc_t"}, "SELinux"),
    ("volumes", [{"name": "sys", "hostPath": {"path": "/sys"}}], "HostPath volumes"),
])
def test_baseline_rules_catch_their_violation(path: str, value: Any, rule: str) -> None:
    violations = baseline_violations(changed(path, value))
    assert violations, f"{path}={value!r} passed baseline"
    assert all(violation.startswith(rule) for violation in violations)


@pytest.mark.parametrize(("path", "value", "rule"), [
    ("containers.0.securityContext.allowPrivilegeEscalation", True, "privilege escalation"),
    ("securityContext.runAsNonRoot", False, "running as non-root"),
    ("containers.0.securityContext.runAsUser", 0, "running as non-root user"),
    ("containers.0.securityContext.capabilities.drop", ["NET_RAW"], "capabilities"),
    ("containers.0.securityContext.capabilities.add", ["CHOWN"], "capabilities"),
    ("securityContext.seccompProfile", {}, "seccomp"),
    ("volumes", [{"name": "data", "nfs": {"server": "n", "path": "/"}}], "volume types"),
])
def test_restricted_rules_catch_what_baseline_allows(path: str, value: Any, rule: str) -> None:
    pod = changed(path, value)
    assert baseline_violations(pod) == []
    violations = restricted_violations(pod)
    assert violations, f"{path}={value!r} passed restricted"
    assert all(violation.startswith(rule) for violation in violations)


def test_a_container_level_seccomp_profile_satisfies_restricted_without_a_pod_level_one() -> None:
    pod = changed("securityContext.seccompProfile", {})
    pod["containers"][0]["securityContext"]["seccompProfile"] = {"type": "RuntimeDefault"}
    assert restricted_violations(pod) == []
