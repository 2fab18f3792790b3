"""The release's cgroup mechanism switch: what it turns on in the webhook and the agent, and what
the agent gets only then (a writable host cgroupfs, the kubelet's CPU manager checkpoint)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.render import Rendered, load_chart, render


@pytest.fixture(scope="module")
def chart() -> Any:
    return load_chart()


def _mounts(rendered: Rendered) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in rendered.pod_spec("agent")["containers"][0]["volumeMounts"]}


def _host_paths(rendered: Rendered) -> dict[str, str]:
    return {v["name"]: v["hostPath"]["path"] for v in rendered.pod_spec("agent")["volumes"]
            if "hostPath" in v}


def test_off_by_default_the_agent_reads_cgroups_through_its_read_only_sys(chart: Any) -> None:
    rendered = render(chart)
    assert rendered.env("webhook")["GPUNUMA_CGROUP_BINDING"] == "false"
    env = rendered.env("agent")
    assert env["GPUNUMA_CGROUP_BINDING"] == "false"
    assert env["GPUNUMA_CGROUP_ROOT"] == "/host/sys/fs/cgroup"
    assert _mounts(rendered)["host-sys"]["readOnly"] is True
    assert "/sys/fs/cgroup" not in _host_paths(rendered).values()
    assert "GPUNUMA_CPU_MANAGER_STATE" not in env


def test_enabled_the_webhook_hands_containers_over_and_the_agent_may_write_cgroups(
        chart: Any) -> None:
    rendered = render(chart, {"cgroupBinding": {"enabled": True}})
    assert rendered.env("webhook")["GPUNUMA_CGROUP_BINDING"] == "true"
    env = rendered.env("agent")
    assert env["GPUNUMA_CGROUP_BINDING"] == "true"
    mounts = _mounts(rendered)
    assert env["GPUNUMA_CGROUP_ROOT"] == mounts["host-cgroup"]["mountPath"]
    assert mounts["host-cgroup"]["readOnly"] is False
    assert _host_paths(rendered)["host-cgroup"] == "/sys/fs/cgroup"
    assert env["GPUNUMA_CPU_MANAGER_STATE"] == mounts["cpu-manager-state"]["mountPath"]
    assert mounts["cpu-manager-state"]["readOnly"] is True
    assert _host_paths(rendered)["cpu-manager-state"] == "/var/lib/kubelet/cpu_manager_state"


def test_without_memory_observation_the_agent_keeps_no_capability(chart: Any) -> None:
    rendered = render(chart, {"agent": {"observeMemory": False}})
    context = rendered.pod_spec("agent")["containers"][0]["securityContext"]
    assert context["capabilities"] == {"drop": ["ALL"]}


def test_a_misspelt_switch_is_refused(chart: Any) -> None:
    with pytest.raises(Exception, match="cgroupBinding"):
        render(chart, {"cgroupBinding": {"enable": True}})
