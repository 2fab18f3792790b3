"""``admit`` without a server: the memory of recent answers."""

from __future__ import annotations

import json

from gpunuma import names
from gpunuma.settings import MutationSettings
from gpunuma.webhook.review import Memory, admit
from tests.webhook import pods

SETTINGS = MutationSettings()


def _admit(pod: dict, memory: Memory, uid: str = "u") -> dict:
    body = json.dumps(pods.admission_review(pod, uid=uid)).encode()
    return admit(body, SETTINGS, namespace_opted_in=False, memory=memory).response


def test_the_memory_keeps_only_the_newest_answers():
    memory = Memory(size=2)
    first, second, third = pods.vllm_server(), pods.amd_pod(), pods.mig_pod()
    for pod in (first, second, third):
        _admit(pod, memory)
    _admit(third, memory)
    _admit(second, memory)
    assert memory.hits == 2
    _admit(first, memory)  # forgotten when the third arrived
    assert memory.hits == 2


def test_other_settings_are_not_answered_from_memory():
    memory = Memory()
    pod = pods.vllm_server()
    _admit(pod, memory)
    body = json.dumps(pods.admission_review(pod)).encode()
    other = admit(body, MutationSettings(launcher_image="other:1"), namespace_opted_in=False,
                  memory=memory)
    assert memory.hits == 0
    out = pods.patched(pod, other.response)
    assert out["spec"]["initContainers"][0]["image"] == "other:1"


def test_a_pod_that_did_not_opt_in_is_not_remembered():
    # Without matchConditions nearly every pod of the cluster reaches the webhook: none of those
    # may fill the memory.
    memory = Memory()
    pod = pods.vllm_server()
    del pod["metadata"]["annotations"][names.ANNOTATION_INJECT]
    for uid in ("a", "b"):
        assert "patch" not in _admit(pod, memory, uid)["response"]
    assert len(memory) == 0
    assert memory.hits == 0


def test_a_denied_pod_is_remembered_like_a_patched_one():
    memory = Memory()
    denied = pods.vllm_server()
    denied["metadata"]["annotations"] = {**pods.OPT_IN, names.ANNOTATION_POLICY: "strict"}
    del denied["spec"]["containers"][0]["command"]
    assert _admit(denied, memory, "a")["response"]["allowed"] is False
    assert _admit(denied, memory, "b")["response"]["allowed"] is False
    assert (len(memory), memory.hits) == (1, 1)


def _with_annotation_of(size: int) -> tuple[dict, int]:
    """An opted-in pod whose AdmissionReview body is about ``size`` bytes, and that body's size."""
    pod = pods.vllm_server()
    pod["metadata"]["annotations"]["example.com/notes"] = ""
    base = len(json.dumps(pods.admission_review(pod, uid="u")).encode())
    pod["metadata"]["annotations"]["example.com/notes"] = "x" * (size - base)
    return pod, len(json.dumps(pods.admission_review(pod, uid="u")).encode())


def test_a_request_body_over_64_kib_is_never_remembered():
    memory = Memory()
    large, body_size = _with_annotation_of(64 * 1024 + 1)
    assert body_size == 64 * 1024 + 1
    for uid in ("a", "b"):
        assert "patch" in _admit(large, memory, uid)["response"]
    assert (len(memory), memory.hits) == (0, 0)
    # At the limit it is.
    fits, body_size = _with_annotation_of(64 * 1024)
    assert body_size == 64 * 1024
    _admit(fits, memory, "c")
    _admit(fits, memory, "d")
    assert (len(memory), memory.hits) == (1, 1)
