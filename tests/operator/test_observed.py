"""The operator writes what the agent observed onto pods, not the plan, and warns when unbound."""

from __future__ import annotations

import json
from typing import Any

import kmock

from gpunuma import names
from gpunuma.operator.placement import pod_annotations as placement_of
from gpunuma.operator.placement import unbound_containers
from tests.operator.conftest import Runner, condition, two_socket_spec
from tests.operator.test_operator import (
    ALLOCATION,
    create,
    node_events,
    patch_spec,
    pod_annotations,
    running_pod,
)
from tests.polling import eventually

UNBOUND = {"cpus": "0-127", "mems": "0-1", "policy": "default", "localMemoryShare": 0.48,
           "binding": "none", "by": "none",
           "reason": "numa-exec did not bind (see its log line); CPUs 0-31,64-127 are outside "
                     "the GPUs' node(s) 1"}
BOUND = {"cpus": "32-63", "mems": "1", "policy": "bind:1", "localMemoryShare": 0.97,
         "binding": "full", "by": "numa-exec"}


def entry(container: str, observed: dict[str, Any] | None) -> dict[str, Any]:
    result = {**ALLOCATION, "container": container}
    if observed is not None:
        result["observed"] = observed
    return result


def test_annotations_say_what_was_observed_and_keep_the_plan_beside_it() -> None:
    annotations = placement_of([entry("main", UNBOUND), entry("side", BOUND)], "ml", "train-0")
    assert annotations is not None
    placement = json.loads(annotations[names.ANNOTATION_PLACEMENT])
    assert placement["main"] == {"gpus": ALLOCATION["deviceIds"], "numaNodes": [1],
                                 "cpus": "0-127", "plannedCpus": "32-63", "binding": "none",
                                 "by": "none", "reason": UNBOUND["reason"]}
    assert placement["side"]["binding"] == "full"
    assert "plannedCpus" not in placement["side"]
    assert annotations[names.ANNOTATION_CPUSET] == "0-127"  # where the processes really run
    assert annotations[names.ANNOTATION_NUMA_NODES] == "1"  # only the bound container counts
    assert annotations[names.ANNOTATION_BINDING] == "none"  # the weakest container's
    assert unbound_containers([entry("main", UNBOUND), entry("side", BOUND)], "ml",
                              "train-0") == {"main": UNBOUND["reason"]}


def test_a_pod_nothing_bound_claims_no_numa_node() -> None:
    annotations = placement_of([entry("main", UNBOUND)], "ml", "train-0")
    assert annotations is not None
    assert annotations[names.ANNOTATION_NUMA_NODES] == ""


def test_entries_without_observed_keep_the_plan_as_before() -> None:
    annotations = placement_of([entry("main", None)], "ml", "train-0")
    assert annotations is not None
    assert names.ANNOTATION_BINDING not in annotations
    assert annotations[names.ANNOTATION_CPUSET] == "32-63"
    assert annotations[names.ANNOTATION_NUMA_NODES] == "1"


async def test_an_opted_in_pod_that_ends_up_unbound_gets_one_warning_event(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    await create(cluster)
    pod = running_pod("train-0", "gpu-1")
    pod["metadata"]["annotations"] = {names.ANNOTATION_INJECTED: "0.1.0",
                                      names.ANNOTATION_WRAPPED: "main"}
    await cluster.post("/api/v1/namespaces/ml/pods", json=pod)
    async with operator():
        await eventually(lambda: condition(cluster, "gpu-1", "Labeled").get("status") == "True")
        await patch_spec(cluster, "gpu-1",
                         two_socket_spec(allocations=[entry("main", UNBOUND)]), 2)
        await eventually(lambda: pod_annotations(cluster, "train-0").get(
            names.ANNOTATION_BINDING) == "none")
        await eventually(lambda: len(node_events(cluster, "NotNumaBound")) == 1)
        # The share of memory changes: annotations do not, and no second event is posted.
        await patch_spec(cluster, "gpu-1", two_socket_spec(
            allocations=[entry("main", {**UNBOUND, "localMemoryShare": 0.5})]), 3)
        await eventually(lambda: condition(cluster, "gpu-1", "Labeled").get(
            "observedGeneration") == 3)
        # Then numa-exec's successor binds it: the annotations follow, no warning.
        await patch_spec(cluster, "gpu-1", two_socket_spec(allocations=[entry("main", BOUND)]), 4)
        await eventually(lambda: pod_annotations(cluster, "train-0").get(
            names.ANNOTATION_BINDING) == "full")
    [event] = node_events(cluster, "NotNumaBound")
    assert event["type"] == "Warning"
    assert event["involvedObject"]["kind"] == "Pod"
    assert event["involvedObject"]["name"] == "train-0"
    assert "main: numa-exec did not bind" in event["message"]


async def test_a_node_where_the_agent_stands_aside_says_so_in_status_and_one_event(
    cluster: kmock.KubernetesEmulator, operator: Runner,
) -> None:
    spec = two_socket_spec()
    spec["cgroupBinding"] = {"state": "static-cpu-manager", "message": "the kubelet's CPU "
                             "manager policy is static: it owns every container's cpuset"}
    await create(cluster, spec=spec)
    async with operator():
        await eventually(lambda: condition(cluster, "gpu-1", "CgroupBinding").get(
            "reason") == "StaticCPUManager")
        await eventually(lambda: len(node_events(cluster, "CgroupBindingStaticCPUManager")) == 1)
        await patch_spec(cluster, "gpu-1", {"heartbeatTime": spec["heartbeatTime"]}, 2)
        await eventually(lambda: condition(cluster, "gpu-1", "Labeled").get(
            "observedGeneration") == 2)
    assert condition(cluster, "gpu-1", "CgroupBinding")["status"] == "False"
    [event] = node_events(cluster, "CgroupBindingStaticCPUManager")
    assert event["involvedObject"]["kind"] == "Node"
    assert "static" in event["message"]


def test_a_container_whose_processes_were_not_found_keeps_the_plan_marked_unknown() -> None:
    unknown = {"binding": "unknown", "by": "none", "reason": "the container has not started"}
    annotations = placement_of([entry("main", unknown), entry("side", BOUND)], "ml", "train-0")
    assert annotations is not None
    assert annotations[names.ANNOTATION_NUMA_NODES] == "1"
    assert annotations[names.ANNOTATION_CPUSET] == "32-63"
    assert annotations[names.ANNOTATION_BINDING] == "unknown"
    assert json.loads(annotations[names.ANNOTATION_PLACEMENT])["main"]["binding"] == "unknown"
