"""The GPUNumaLayout CRD: a valid manifest whose schema matches the agent's documents exactly.

The API server validates a custom resource against the CRD's structural schema and, with
``fieldValidation=Strict`` (kubectl's default), rejects unknown fields; otherwise it prunes them.
These tests turn the schema into the equivalent JSON Schema (``nullable`` → a null type, objects
closed to unknown fields, RFC 3339 ``date-time``) and validate what the agent really writes for
every fixture machine, both ways: each document validates, and each property the schema declares
is one the documents use.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gpunuma import names
from gpunuma.agent.allocations import (
    ClaimDevice,
    ContainerDevices,
    ContainerResources,
    PodResources,
    allocations,
)
from gpunuma.agent.observe import MemoryPolicy, NumaMaps, TaskState, classify, local_share
from gpunuma.agent.publisher import layout_object, layout_spec
from gpunuma.settings import DEFAULT_GPU_RESOURCES
from gpunuma.topology import Layout, Problem, parse_cpulist
from tests.fixtures import machines

CRD_PATH = (Path(__file__).resolve().parents[2] / "charts" / "gpunuma" / "files" / "crds"
            / "gpunumalayouts.gpunuma.io.yaml")
HEARTBEAT = "2026-11-21T05:00:00Z"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return document


@pytest.fixture(scope="module")
def validator(crd: dict[str, Any]) -> jsonschema.Draft7Validator:
    schema = _as_json_schema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    checker = jsonschema.FormatChecker()
    checker.checks("date-time", raises=ValueError)(_is_rfc3339)
    return jsonschema.Draft7Validator(schema, format_checker=checker)


def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str) or "T" not in value:
        return False
    datetime.datetime.fromisoformat(value)
    return True


def _as_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema the API server effectively applies for an OpenAPI v3 structural schema."""
    result = {key: value for key, value in node.items()
              if not key.startswith("x-kubernetes-") and key != "nullable"}
    if node.get("nullable"):
        result["type"] = [node["type"], "null"]
    if "properties" in node:
        result["properties"] = {k: _as_json_schema(v) for k, v in node["properties"].items()}
        result["additionalProperties"] = False
    if isinstance(node.get("additionalProperties"), dict):
        result["additionalProperties"] = _as_json_schema(node["additionalProperties"])
    if "items" in node:
        result["items"] = _as_json_schema(node["items"])
    return result


def _realistic_allocations(layout: Layout) -> list[dict[str, Any]]:
    if not layout.gpus:
        return []
    ids = tuple(layout.gpus[0].uuid or layout.gpus[0].pci_bus_id for _ in range(1))
    pods = [PodResources("ml", "trainer", (ContainerResources(
        "main", (ContainerDevices("nvidia.com/gpu" if layout.gpus[0].vendor == "nvidia"
                                  else "amd.com/gpu", (*ids, "unknown-device")),),
        frozenset({0, 1})),
        ContainerResources("dra", claims=(ClaimDevice("ml", "gpu", "gpu.nvidia.com", "p", "gpu-0"),)),
    ))]
    dra = {("gpu.nvidia.com", "p", "gpu-0"): [layout.gpus[0].pci_bus_id]}
    entries = allocations(pods, layout, DEFAULT_GPU_RESOURCES, dra)
    # What the agent observes of a process pinned to its GPU's CPUs whose memory is not bound.
    for entry in entries:
        nodes = frozenset(entry["numaNodes"])
        local = frozenset(parse_cpulist(entry["cpus"]))
        task = TaskState(local, frozenset({0}), local, NumaMaps(MemoryPolicy("default"), {0: 3}),
                         local_share({0: 3}, nodes))
        entry["observed"] = classify(task, gpu_nodes=nodes, local_cpus=local,
                                     all_cpus=frozenset(range(100000)), wrapped=False,
                                     cgroup_written=local, exclusive_cpus=frozenset())
    return entries


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The CR the agent writes for every fixture machine, through the real discovery."""
    from tests.agent.conftest import layout_of

    result = {}
    for name, shape in machines.SHAPES.items():
        tree = machines.build(shape(), tmp_path_factory.mktemp(name))
        mig: dict[str, tuple[str, ...]] | None = None
        if name == "two_socket_8gpu":
            mig = {tree.machine.gpus[0].bdf: ("MIG-0f0e0d0c-0b0a-5908-0706-050403020100",)}
        layout = layout_of(tree, mig=mig)
        if name == "workstation":  # one failing device, as a vendor backend reports it
            layout = layout.with_errors([Problem("0000:01:00.0", "nvml", "GPU is lost")])
        spec = {**layout_spec(layout, _realistic_allocations(layout)), "heartbeatTime": HEARTBEAT}
        if layout.gpus:
            spec["cgroupBinding"] = {"state": "active", "message": "binding through v1 cpusets"}
        result[name] = layout_object(f"node-{name.replace('_', '-')}", "0b8f7c1e-uid", spec)
    return result


def test_the_crd_manifest_is_valid_for_kubernetes_1_30_and_newest(crd: dict[str, Any]) -> None:
    for version in ("1.30", "1.37"):
        kubernetes_validate.validate(crd, version, strict=True)


def test_the_crd_declares_the_public_names(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{names.CRD_PLURAL}.{names.CRD_GROUP}"
    assert (spec["group"], spec["scope"]) == (names.CRD_GROUP, "Cluster")
    assert spec["names"]["kind"] == names.CRD_KIND
    assert spec["names"]["shortNames"] == [names.CRD_SHORT_NAME]
    [version] = spec["versions"]
    assert version["name"] == names.CRD_VERSION
    assert version["subresources"] == {"status": {}}
    columns = [c["name"].upper() for c in version["additionalPrinterColumns"]
               if c.get("priority", 0) == 0]
    assert columns == ["NODE", "GPUS", "NUMA", "LAYOUT", "SOURCE", "AGE"]


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for key, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{key}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_the_schema_is_structural(crd: dict[str, Any]) -> None:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "type" in node, f"{path or '<root>'} has no type: not a structural schema"
        assert not ("properties" in node and "additionalProperties" in node), path
        if "required" in node:
            assert set(node["required"]) <= set(node["properties"]), path


def test_every_fixture_machines_layout_validates(
    documents: dict[str, dict[str, Any]], validator: jsonschema.Draft7Validator
) -> None:
    for name, document in documents.items():
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
        assert errors == [], name


def _paths(value: Any, path: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield f"{path}.{key}"
            yield from _paths(child, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from _paths(item, f"{path}[]")


def test_every_spec_field_of_the_schema_is_one_the_agent_writes(
    crd: dict[str, Any], documents: dict[str, dict[str, Any]]
) -> None:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    declared = {path for path, _ in _walk(schema) if path and not path.endswith("[]")}
    written = {path for document in documents.values() for path in _paths(document["spec"])}
    assert declared == written


@pytest.mark.parametrize(("change", "where"), [
    (lambda s: s["gpus"][0].update(numa=0), "unknown field in a GPU"),
    (lambda s: s.update(gpuCount=8), "unknown field in spec"),
    (lambda s: s["numaNodes"][0].update(memoryMb=1), "misspelt field"),
    (lambda s: s["gpus"][0].update(index="0"), "index as a string"),
    (lambda s: s["gpus"][0].update(vendor="intel"), "unknown vendor"),
    (lambda s: s["gpus"][0].update(pciBusId="00000000:1B:00.0"), "NVML's bus id form"),
    (lambda s: s["gpus"][0].update(numaNode=-1), "unknown NUMA node as -1, not null"),
    (lambda s: s["numaNodes"][0].update(cpus="0-55;112-167"), "not a cpulist"),
    (lambda s: s["allocations"][0].update(numaNodes="0"), "numaNodes as a string"),
    (lambda s: s["allocations"][0].pop("cpus"), "allocation without cpus"),
    (lambda s: s["summary"].update(gpus=None), "null where no null is allowed"),
    (lambda s: s["allocations"][0]["observed"].update(binding="partial"), "unknown binding"),
    (lambda s: s["allocations"][0]["observed"].update(localMemoryShare=1.5), "share over 1"),
    (lambda s: s["cgroupBinding"].update(state="on"), "unknown cgroup binding state"),
    (lambda s: s.update(heartbeatTime="yesterday"), "heartbeat not RFC 3339"),
    (lambda s: s.pop("heartbeatTime"), "no heartbeat"),
])
def test_a_wrong_document_is_rejected(
    documents: dict[str, dict[str, Any]], validator: jsonschema.Draft7Validator,
    change: Callable[[dict[str, Any]], None], where: str,
) -> None:
    document = copy.deepcopy(documents["two_socket_8gpu"])
    change(document["spec"])
    assert not validator.is_valid(document), where


@pytest.mark.parametrize(("change", "where"), [
    (lambda s: s.update(numaNodes=[dict(s["numaNodes"][0], id=i % 1024) for i in range(1025)]),
     "more NUMA nodes than Linux allows"),
    (lambda s: s["numaNodes"][0].update(cpus="0-65535," * 3000 + "0"), "a 24 KB cpulist"),
    (lambda s: s["numaNodes"][0].update(distances=[10] * 1025), "1025 distances"),
    (lambda s: s.update(gpus=s["gpus"] * 33), "264 GPUs"),
    (lambda s: s["gpus"][0].update(model="x" * 257), "a 257-character model"),
    (lambda s: s.update(errors=[{"device": None, "source": "nvml", "message": "m"}] * 257),
     "257 errors"),
    (lambda s: s.update(errors=[{"device": None, "source": "nvml", "message": "m" * 4097}]),
     "an error message of 4097 characters"),
    (lambda s: s.update(allocations=s["allocations"] * 4097), "4097+ allocations"),
    (lambda s: s["allocations"][0].update(pod="p" * 254), "a pod name longer than Kubernetes'"),
    (lambda s: s["allocations"][0].update(deviceIds=["GPU-x"] * 1025), "1025 device ids"),
    (lambda s: s.update(source="s" * 65), "a 65-character source"),
])
def test_the_crd_bounds_every_string_and_array(
    documents: dict[str, dict[str, Any]], validator: jsonschema.Draft7Validator,
    change: Callable[[dict[str, Any]], None], where: str,
) -> None:
    """The API server refuses a layout that could make the operator slow or big (issue #16)."""
    document = copy.deepcopy(documents["two_socket_8gpu"])
    change(document["spec"])
    assert not validator.is_valid(document), where


def test_the_agent_fits_long_vendor_errors_into_the_bounds(
    documents: dict[str, dict[str, Any]], validator: jsonschema.Draft7Validator,
) -> None:
    """A vendor library's long messages, or many of them, never make the whole layout invalid."""
    layout = Layout.from_document(documents["workstation"]["spec"]).with_errors(
        [Problem(f"0000:{i % 256:02x}:00.0", "nvml", "x" * 10_000) for i in range(300)]
    )
    spec = {**layout_spec(layout, []), "heartbeatTime": HEARTBEAT}
    errors = [e.message for e in validator.iter_errors(layout_object("n", "uid", spec))]
    assert errors == []


def test_the_status_the_operator_writes_validates(
    documents: dict[str, dict[str, Any]], validator: jsonschema.Draft7Validator
) -> None:
    document = copy.deepcopy(documents["two_socket_8gpu"])
    document["status"] = {
        "observedGeneration": 3,
        "appliedLabels": {names.LABEL_GPU_COUNT: "8", names.LABEL_LAYOUT: "4-4"},
        "conditions": [{"type": "Labeled", "status": "True", "reason": "Applied", "message": "",
                        "lastTransitionTime": HEARTBEAT, "observedGeneration": 3}],
    }
    assert validator.is_valid(document)
    document["status"]["appliedLabels"][names.LABEL_GPU_COUNT] = 8
    assert not validator.is_valid(document)


def _json_path(document: dict[str, Any], path: str) -> Any:
    value: Any = document
    for part in path.strip(".").split("."):
        key, _, index = part.partition("[")
        value = value[key]
        if index:
            value = value[int(index.rstrip("]"))]
    return value


def test_the_printer_columns_show_the_overview(
    crd: dict[str, Any], documents: dict[str, dict[str, Any]]
) -> None:
    columns = {c["name"].upper(): c["jsonPath"]
               for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]
               if c["name"].upper() not in ("AGE", "HEARTBEAT")}
    shown = {name: _json_path(documents["epyc_nps4_8node"], path)
             for name, path in columns.items()}
    assert shown == {"NODE": "node-epyc-nps4-8node", "GPUS": 8, "NUMA": 8,
                     "LAYOUT": "0-2-0-2-0-2-0-2", "SOURCE": "sysfs"}
    gh200 = documents["gh200_like"]
    assert _json_path(gh200, columns["NUMA"]) == 1  # memory-only nodes are not counted
    assert _json_path(documents["vm_two_node"], columns["LAYOUT"]) == "unknown"
