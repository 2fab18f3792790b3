"""``gpunuma inject`` output means, to Kubernetes' own YAML reader, the input plus the mutation.

The reader is the machine's real ``kubectl``: ``kubectl label --local -f FILE k=v -o json`` decodes
a file offline with the same code as ``kubectl apply`` (sigs.k8s.io/yaml over go-yaml v2). The
expected result is the mutation applied to what kubectl decoded from the input; the actual one is
what kubectl decodes from inject's output. Documents inject leaves alone come out byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpunuma import names
from gpunuma.settings import MutationSettings
from gpunuma.webhook import kubeyaml
from gpunuma.webhook.inject import inject_documents, inject_text

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "tests" / "fixtures" / "manifests"
SETTINGS = MutationSettings(launcher_image="registry.example/gpunuma:1.2.3")


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        message = "kubectl is not installed (apt-get install kubernetes-client)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def kubectl_read(path: Path) -> list[Any]:
    """The objects of ``path`` as kubectl decodes them (a List's items one by one)."""
    result = subprocess.run(
        [kubectl(), "label", "--local", "-f", str(path), "gpunuma-test=decoded", "-o", "json"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    decoder, text, objects, at = json.JSONDecoder(), result.stdout, [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        value, at = decoder.raw_decode(text, at)
        objects.append(value)
    return objects


def flatten(documents: list[Any]) -> list[Any]:
    out = []
    for document in documents:
        if document is None:
            continue
        out.extend(document["items"] if document.get("kind") == "List" else [document])
    return out


def as_json(objects: list[Any]) -> list[str]:
    """Exact JSON text of each object, keys sorted: ``true`` is not ``1``."""
    return [json.dumps(o, sort_keys=True) for o in objects]


def assert_means_input_plus_mutation(before: Path, after: Path, **flags: Any) -> None:
    decoded = kubectl_read(before)
    expected = inject_documents(decoded, SETTINGS, **flags)
    assert expected.errors == []
    assert as_json(kubectl_read(after)) == as_json(flatten(expected.documents))


def run_inject(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpunuma", "inject", "-f", str(path),
         "--launcher-image", SETTINGS.launcher_image],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60, check=False)


# --- Real-world-shaped manifests -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in MANIFESTS.glob("*.yaml")))
def test_real_world_manifests_decode_identically_apart_from_the_mutation(name, tmp_path):
    source = MANIFESTS / name
    result = run_inject(source)
    assert result.returncode == 0, result.stderr
    out = tmp_path / name
    out.write_text(result.stdout)
    assert_means_input_plus_mutation(source, out)
    _, documents = kubeyaml.read(source.read_text())
    changed = 0
    for document in documents:
        if document.render(inject_documents([document.value], SETTINGS).documents[0]) == (
                document.text):
            assert document.text in result.stdout  # untouched: byte for byte
        else:
            changed += 1
    assert changed >= 1, "every fixture holds a workload inject mutates"
    # Comments survive, in changed documents too.
    comments = [line.strip() for line in source.read_text().splitlines()
                if line.strip().startswith("#")]
    assert all(comment in result.stdout for comment in comments)


def test_a_job_with_a_quoted_learning_rate_keeps_it_a_string(tmp_path):
    # The example: PyYAML wrote "1e-4" back unquoted, which kubectl reads as 0.0001.
    source = tmp_path / "job.yaml"
    source.write_text(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: train\nspec:\n  template:\n"
        "    spec:\n      restartPolicy: Never\n      containers:\n      - name: trainer\n"
        "        image: pytorch\n        command: [python, train.py]\n"
        '        args: ["--lr", "1e-4", "--resume", "y", "--warmup", "08", "--mode", "0o17"]\n'
        "        resources: {limits: {nvidia.com/gpu: 1}}\n")
    result = run_inject(source)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out.yaml"
    out.write_text(result.stdout)
    [job] = kubectl_read(out)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--lr", "1e-4", "--resume", "y", "--warmup", "08", "--mode",
                                 "0o17"]
    assert container["command"] == [names.LAUNCHER_PATH, "--", "python", "train.py"]


def test_a_list_of_pods_is_written_without_anchors(tmp_path):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "i", "command": ["run"],
         "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}
    items = [{**pod, "metadata": {"name": f"p{i}"}} for i in range(3)]
    source = tmp_path / "list.yaml"
    source.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    result = run_inject(source)
    assert result.returncode == 0, result.stderr
    events = list(yaml.parse(result.stdout))
    assert not [e for e in events if isinstance(e, yaml.AliasEvent)]
    assert not [e for e in events if getattr(e, "anchor", None)]
    out = tmp_path / "out.yaml"
    out.write_text(result.stdout)
    assert_means_input_plus_mutation(source, out)


def test_documents_without_gpu_pods_come_out_byte_for_byte(tmp_path):
    text = ("# a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
            "data:\n  a: '1e-4'   # quoted\n  b: y\n\n\n---\n---\n"
            "apiVersion: v1\r\nkind: Pod\r\nmetadata:\r\n    name: web\r\nspec:\r\n"
            "    containers: [{name: web, image: nginx, command: [nginx]}]\r\n...\n")
    output, result = inject_text(text, SETTINGS)
    assert result.errors == []
    assert output == text


# --- Generated scalars ---------------------------------------------------------------------------

_TRICKY = ["1e-4", "1E5", "1e5", "y", "Y", "n", "N", "yes", "no", "on", "off", "ON", "true",
           "False", "null", "Null", "~", "08", "09.5", "0o17", "017", "0x1F", "0b101", "-0b101",
           "1:20", "190:20:30", "2024-01-01", "2024-01-01T10:00:00Z", ".5", "+.5", "+1", "-0",
           "1.", "1_000", "1__2", "0.1e+2", ".nan", ".inf", "-.Inf", "=", "1e400", "0x_1F",
           "9223372036854775808", "Inf", "NaN", "-", "+", ".", "1e", "<<", "tRue", "0e0", ""]
_numberish = st.from_regex(r"[-+]?(0[xob])?[0-9_]{0,4}(\.[0-9_]*)?([eE][-+]?[0-9]{1,3})?",
                           fullmatch=True)
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Co", "Cn", "Cf",
                                                                  "Zl", "Zp")), max_size=8)
_scalars = st.one_of(st.sampled_from(_TRICKY), _numberish, _text)


def _plain_ok(text: str) -> bool:
    """``text`` can be written unquoted as a block sequence item and reads back as itself."""
    try:
        node = yaml.compose(f"- {text}\n")
    except yaml.YAMLError:
        return False
    return (isinstance(node, yaml.SequenceNode) and len(node.value) == 1
            and isinstance(node.value[0], yaml.ScalarNode) and node.value[0].style is None
            and node.value[0].value == text
            # kubectl cannot turn NaN or infinity into JSON at all
            and text.lower().lstrip("+-") not in (".nan", ".inf"))


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _manifest(quoted: list[str], plain: list[str]) -> str:
    args = "".join(f"        - {_quoted(s)}\n" for s in quoted)
    args += "".join(f"        - {s}\n" for s in plain if _plain_ok(s))
    env = "".join(f"        - name: V{i}\n          value: {_quoted(s)}\n"
                  for i, s in enumerate(quoted))
    data = "".join(f"  k{i}: {_quoted(s)}\n" for i, s in enumerate(quoted))
    return (
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: train  # the job\nspec:\n"
        "  template:\n    spec:\n      restartPolicy: Never\n      containers:\n"
        "      - name: trainer\n        image: pytorch\n        command: [torchrun, train.py]\n"
        "        resources: {limits: {nvidia.com/gpu: 1}}\n"
        + (f"        args:\n{args}" if args else "        args: []\n")
        + (f"        env:\n{env}" if env else "        env: []\n")
        + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: hparams}\n"
        + (f"data:\n{data}" if data else "data: {}\n"))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(_scalars, max_size=20), st.lists(_scalars, max_size=20))
def test_generated_scalars_keep_their_meaning(tmp_path, quoted, plain):
    text = _manifest(quoted, plain)
    source, out = tmp_path / "in.yaml", tmp_path / "out.yaml"
    source.write_text(text)
    output, result = inject_text(text, SETTINGS)
    assert result.errors == []
    out.write_text(output)
    assert_means_input_plus_mutation(source, out)


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.sampled_from(_TRICKY), _numberish).filter(_plain_ok), min_size=1,
                max_size=60))
def test_plain_scalars_decode_as_kubectl_decodes_them(tmp_path, plain):
    source = tmp_path / "values.yaml"
    source.write_text("apiVersion: example.com/v1\nkind: Values\nmetadata: {name: v}\nvalues:\n"
                      + "".join(f"- {s}\n" for s in plain))
    [decoded] = kubectl_read(source)
    for text, theirs in zip(plain, decoded.get("values") or [], strict=True):
        ours = kubeyaml.decode_plain(text)
        if isinstance(theirs, bool) or theirs is None or isinstance(theirs, str):
            assert (type(ours), ours) == (type(theirs), theirs), text
        else:  # JSON numbers: go's float64 8 prints as 8
            assert not isinstance(ours, bool | str), text
            assert float(ours) == float(theirs), text  # type: ignore[arg-type]
