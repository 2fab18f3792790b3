"""Observed bindings of real processes, end to end: cgroups and /proc → agent → CR → pod → explain.

Three containers of one pod run as real processes in a container-like cgroup tree of this machine's
cgroup v1 cpuset hierarchy: one bound by itself the way numa-exec binds (numactl: CPU affinity and
an MPOL_BIND memory policy), one left unbound, one without command that the agent binds through its
cgroup. The agent (real loop, kmock for the API, a real gRPC kubelet stand-in) must report each as
what it is, and ``kubectl gpunuma explain`` must say so from the annotations the operator writes.

This machine has one NUMA node and two CPUs; the layout the agent is given splits them (GPU 0 on
node 0 with CPU 1, node 1 with CPU 0), so that "local" is a narrowing the kernel really applies.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gpunuma import names
from gpunuma.kubectl import explain
from gpunuma.operator.placement import pod_annotations
from gpunuma.settings import DiscoverySettings
from gpunuma.topology import Layout
from tests.agent import test_agent
from tests.agent.cgroupv1 import Tree, cgroup_tree_in, new_container_id
from tests.agent.conftest import KubeletServer, container, cr, pod
from tests.agent.test_agent import Running
from tests.conftest import require_tool
from tests.polling import eventually

GPU = "GPU-5a1b2c3d-0000-4000-8000-000000000001"
LAYOUT = Layout.from_document({
    "numaNodes": [{"id": 0, "cpus": "1", "memoryMiB": 1024, "distances": [10, 21]},
                  {"id": 1, "cpus": "0", "memoryMiB": 1024, "distances": [21, 10]}],
    "gpus": [{"index": 0, "vendor": "nvidia", "model": "NVIDIA H100", "uuid": GPU,
              "pciBusId": "0000:1b:00.0", "minor": 0, "renderNode": None, "numaNode": 0,
              "reportedNumaNode": 0, "migDevices": [], "partitions": []}],
    "source": "sysfs",
    "errors": [],
})


# The agent harness of test_agent: kmock with this node, and a starter for the real agent loop.
api = test_agent.api
start = test_agent.start


class FixedLayout:
    def discover(self, _: DiscoverySettings) -> Layout:
        return LAYOUT


@pytest.fixture
def cgroup_tree(tmp_path: Path) -> Iterator[Tree]:
    with cgroup_tree_in(tmp_path) as tree:
        yield tree


def _observed(api: Any) -> dict[str, dict[str, Any]]:
    try:
        entries = cr(api)["spec"]["allocations"]
    except AssertionError:
        return {}
    return {entry["container"]: entry.get("observed", {}) for entry in entries}


async def test_launcher_bound_unbound_and_cgroup_bound_are_each_reported_as_what_they_are(
    api: Any, start: Callable[..., Running], kubelet: KubeletServer, cgroup_tree: Tree,
    tmp_path: Path,
) -> None:
    numactl = require_tool("numactl")
    uid = str(uuid.uuid4())
    ids = {name: new_container_id() for name in ("wrapped", "plain", "cgroupy")}
    api.objects["v1/pods", "ml", "trio"] = {
        "metadata": {"name": "trio", "namespace": "ml", "uid": uid,
                     "labels": {names.LABEL_MANAGED: "true"},
                     "annotations": {names.ANNOTATION_INJECT: "true",
                                     names.ANNOTATION_INJECTED: "0.1.0",
                                     names.ANNOTATION_WRAPPED: "wrapped",
                                     names.ANNOTATION_SKIPPED: "plain",
                                     names.ANNOTATION_CGROUP_BOUND: "cgroupy"}},
        "spec": {"nodeName": "gpu-node-7", "containers": [
            {"name": "wrapped", "image": "x", "command": [names.LAUNCHER_PATH, "--", "serve"],
             "resources": {"limits": {"nvidia.com/gpu": 1}},
             "env": [{"name": "GPUNUMA_POLICY", "value": "strict"}]},
            {"name": "plain", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 1}}},
            {"name": "cgroupy", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 1}},
             "env": [{"name": "GPUNUMA_POLICY", "value": "preferred"}]}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": name, "containerID": f"containerd://{cid}"} for name, cid in ids.items()]},
    }
    kubelet.servicer.pods = [pod("ml", "trio", *(
        container(name, [("nvidia.com/gpu", [GPU])]) for name in ids))]
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cpuset").symlink_to(cgroup_tree.base)  # the agent's --cgroup-root, v1 layout
    pod_dir = cgroup_tree.pod(uid)
    wrapped = cgroup_tree.start(pod_dir, uid, "wrapped", container_id=ids["wrapped"], command=(
        numactl, "--physcpubind=1", "--membind=0", "sleep", "300"))
    plain = cgroup_tree.start(pod_dir, uid, "plain", container_id=ids["plain"])

    run = start(FixedLayout(), socket=kubelet.socket, cgroup_root=root, cgroup_binding=True,
                cpu_manager_state=tmp_path / "no-cpu-manager-state")
    await eventually(lambda: run.agent.binder is not None, within=10)
    # Started while the agent watches: bound through inotify.
    cgroupy = cgroup_tree.start(pod_dir, uid, "cgroupy", container_id=ids["cgroupy"])
    await eventually(lambda: cgroupy.status("Cpus_allowed_list") == "1", within=10)
    await eventually(lambda: _observed(api).get("cgroupy", {}).get("by") == "cgroup", within=15)
    await eventually(lambda: _observed(api).get("wrapped", {}).get("by") == "numa-exec", within=15)
    observed = _observed(api)

    # What the kernel says, and what the agent reported: the same.
    assert wrapped.status("Cpus_allowed_list") == "1"
    assert plain.status("Cpus_allowed_list") == "0-1"
    assert observed["wrapped"] == {
        "cpus": "1", "mems": "0", "policy": "bind:0", "binding": "full", "by": "numa-exec",
        "localMemoryShare": observed["wrapped"]["localMemoryShare"]}
    assert observed["wrapped"]["localMemoryShare"] == 1.0  # node 0 holds every page
    assert observed["plain"]["binding"] == "none"
    assert observed["plain"]["by"] == "none"
    assert observed["plain"]["cpus"] == "0-1"
    assert observed["plain"]["policy"] == "default"
    assert "CPUs 0 are outside the GPUs' node(s) 0" in observed["plain"]["reason"]
    assert observed["cgroupy"]["cpus"] == "1"
    assert observed["cgroupy"]["binding"] == "full"  # one memory node here: it is the GPU's
    spec = cr(api)["spec"]
    assert spec["cgroupBinding"]["state"] == "active"
    containers = run.agent.metrics.containers
    assert containers.labels(binding="full")._value.get() == 2
    assert containers.labels(binding="none")._value.get() == 1

    # The operator's annotations and kubectl gpunuma explain.
    annotations = pod_annotations(spec["allocations"], "ml", "trio")
    assert annotations is not None
    assert annotations[names.ANNOTATION_BINDING] == "none"
    the_pod = api.objects["v1/pods", "ml", "trio"].raw
    the_pod["metadata"]["annotations"].update(annotations)
    text = explain(the_pod, None)
    assert "Verdict:     not bound: observed running on CPUs 0-1" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines()
            if line.startswith("  ") and len(line.split()) == 7}
    assert rows["wrapped"][3:] == ["1", "1", "full", "numa-exec"]
    assert rows["plain"][3:] == ["1", "0-1", "none", "none"]
    assert rows["cgroupy"][3:] == ["1", "1", "full", "cgroup"]
    assert "cgroup-bound: no command, the node's agent binds its cgroup's cpuset" in text
    assert "  plain: nothing bound this container; CPUs 0 are outside" in text


async def test_a_node_whose_kubelet_runs_the_static_cpu_manager_is_left_alone(
    api: Any, start: Callable[..., Running], kubelet: KubeletServer, cgroup_tree: Tree,
    tmp_path: Path,
) -> None:
    uid = str(uuid.uuid4())
    cid = new_container_id()
    api.objects["v1/pods", "ml", "solo"] = {
        "metadata": {"name": "solo", "namespace": "ml", "uid": uid,
                     "annotations": {names.ANNOTATION_CGROUP_BOUND: "server"}},
        "spec": {"nodeName": "gpu-node-7", "containers": [{"name": "server", "image": "x"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "server", "containerID": f"containerd://{cid}"}]},
    }
    kubelet.servicer.pods = [pod("ml", "solo", container("server", [("nvidia.com/gpu", [GPU])]))]
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cpuset").symlink_to(cgroup_tree.base)
    state = tmp_path / "cpu_manager_state"
    # What the kubelet writes with --cpu-manager-policy=static.
    state.write_text('{"policyName":"static","defaultCpuSet":"0-1","checksum":1}')
    run = start(FixedLayout(), socket=kubelet.socket, cgroup_root=root, cgroup_binding=True,
                cpu_manager_state=state)
    await eventually(lambda: run.agent.binder is not None, within=10)
    server = cgroup_tree.start(cgroup_tree.pod(uid), uid, "server", container_id=cid)
    await eventually(lambda: _observed(api).get("server", {}).get("binding") == "none", within=15)
    await run.agent.binder.idle()  # type: ignore[union-attr]
    assert server.status("Cpus_allowed_list") == "0-1"
    assert (server.directory / "cpuset.cpus").read_text().strip() == "0-1"
    binding = cr(api)["spec"]["cgroupBinding"]
    assert binding["state"] == "static-cpu-manager"
    assert "static" in binding["message"]
