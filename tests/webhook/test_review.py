"""``admit`` without a server: the memory of recent answers."""

from __future__ import annotations

import json

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
