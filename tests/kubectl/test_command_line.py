"""`kubectl gpunuma` as a kubectl citizen: flags anywhere, -o json|yaml|wide, -l, pod/NAME,
--version, a plain "not installed", and shell completion through the real kubectl."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpunuma import __version__, names
from gpunuma.kubectl.command import build_parser, parse, pod_name
from gpunuma.kubectl.completion import FLAGS, complete
from tests.conftest import require_tool
from tests.kubectl.conftest import run_kubectl
from tests.kubectl.test_kubectl import NODES_TABLE_WIDE, PODS_TABLE_WIDE

ROOT = Path(__file__).resolve().parents[2]


async def kubectl(capsys: pytest.CaptureFixture[str], kubeconfig: Path, *argv: str) -> tuple[int, str, str]:
    return await run_kubectl(capsys, "--kubeconfig", str(kubeconfig), *argv)


def table_cells(table: str) -> list[list[str]]:
    """A kubectl table's cells: columns start where the header's words start."""
    lines = table.splitlines()
    header = lines[0]
    gaps = (i + 3 for i in range(len(header) - 3) if header[i:i + 3] == "   " and header[i + 3] != " ")
    starts = [0, *gaps]
    return [[line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)] for line in lines]


@pytest.mark.parametrize(("command", "wide"), [("nodes", NODES_TABLE_WIDE), ("pods", PODS_TABLE_WIDE)])
@pytest.mark.parametrize("output", ["json", "yaml"])
async def test_json_and_yaml_hold_every_cell_of_the_wide_table(
    cluster: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str], command: str, wide: str, output: str,
) -> None:
    code, out, err = await kubectl(capsys, kubeconfig, command, "-o", output)
    assert (code, err) == (0, "")
    document = json.loads(out) if output == "json" else yaml.safe_load(out)
    rows = table_cells(wide)[1:]
    cells = [[value if value is not None else "-" for value in item.values()] for item in document["items"]]
    assert cells == rows


async def test_nodes_with_a_selector_asks_the_server_and_shows_only_the_nodes_it_returned(
    cluster: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    gpu_a = cluster.objects["v1/nodes", None, "gpu-a"].raw
    cluster["get /api/v1/nodes", cluster.params(labelSelector="pool=h100")] << {
        "apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": [gpu_a]}
    code, out, _ = await kubectl(capsys, kubeconfig, "nodes", "-l", "pool=h100")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["NODE", "gpu-a"]


async def test_pods_with_a_selector_adds_it_to_the_managed_label(
    cluster: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    trainer = cluster.objects["v1/pods", "ml", "trainer-0"].raw
    selector = f"{names.LABEL_MANAGED}=true,app=trainer"
    cluster["get /api/v1/namespaces/ml/pods", cluster.params(labelSelector=selector)] << {
        "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [trainer]}
    code, out, _ = await kubectl(capsys, kubeconfig, "-l", "app=trainer", "pods")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["POD", "trainer-0"]


@pytest.mark.parametrize("target", ["trainer-0", "pod/trainer-0", "pods/trainer-0", "po/trainer-0"])
async def test_explain_takes_a_pod_as_kubectl_names_it(
    cluster: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str], target: str,
) -> None:
    code, out, _ = await kubectl(capsys, kubeconfig, "-n", "ml", "explain", target)
    assert code == 0
    assert out.startswith("Pod:         ml/trainer-0\n")


@pytest.mark.parametrize("argv", [["explain", "deploy/trainer"], ["explain", "pod/"],
                                  ["explain", "x", "-o", "json"], ["explain", "x", "-A"],
                                  ["pods", "-n", "ml", "-A"], ["pods", "-o", "csv"]])
def test_bad_command_lines_are_refused_with_a_reason(
    argv: list[str], capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(argv)
    assert exited.value.code == 2
    assert "kubectl gpunuma" in capsys.readouterr().err


def test_pod_name_strips_the_pod_kind_only() -> None:
    assert pod_name("pod/a") == "a"
    assert pod_name("a") == "a"
    with pytest.raises(ValueError, match="explain takes a pod"):
        pod_name("node/a")


def test_the_version_flag_prints_the_plugins_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"kubectl gpunuma {__version__}\n"


@pytest.mark.parametrize("argv", [["pods"], ["explain", "trainer-0"]])
async def test_every_subcommand_says_plainly_when_gpunuma_is_not_installed(
    kmock: Any, kubeconfig: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
) -> None:
    kmock.resources["v1/pods"] = {}
    kmock.resources["v1/nodes"] = {}
    code, out, err = await kubectl(capsys, kubeconfig, *argv)
    assert (code, out) == (1, "")
    assert "gpunuma is not installed in this cluster" in err


def test_completion_offers_subcommands_flags_and_outputs() -> None:
    assert complete([""]) == [f"{name}\t{text}" for name, text in
                              [("nodes", complete(["n"])[0].split("\t")[1]),
                               ("pods", complete(["p"])[0].split("\t")[1]),
                               ("explain", complete(["e"])[0].split("\t")[1])]]
    assert complete(["pods", "-o", ""]) == ["table", "wide", "json", "yaml"]
    assert complete(["pods", "--output=j"]) == ["--output=json"]
    assert [line.split("\t")[0] for line in complete(["pods", "--all"])] == ["--all-namespaces"]
    assert complete(["pods", "-n", ""]) == []  # a namespace: nothing offered without asking the cluster
    assert complete(["--context", "lab", "p"])[0].startswith("pods\t")
    assert complete(["explain", ""]) == []


def test_completion_knows_every_long_flag_of_the_parser() -> None:
    parser = build_parser()
    flags = {option for action in parser._actions for option in action.option_strings}
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for sub in action.choices.values():
            flags |= {option for sub_action in sub._actions for option in sub_action.option_strings}
    assert {flag for flag in flags if flag.startswith("--")} == set(FLAGS)


def test_kubectl_itself_completes_the_plugin_through_its_completion_executable(tmp_path: Path) -> None:
    kubectl = require_tool("kubectl")
    for name, module in (("kubectl-gpunuma", "gpunuma.kubectl.command"),
                         ("kubectl_complete-gpunuma", "gpunuma.kubectl.completion")):
        script = tmp_path / name
        script.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                          f"from {module} import main\nsys.exit(main())\n")
        script.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([kubectl, "__complete", "gpunuma", "ex"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split("\t")[0] == "explain"
    assert result.stdout.splitlines()[-1] == ":4"


def test_the_krew_manifest_names_the_plugin_its_completion_and_the_archives_digest(tmp_path: Path) -> None:
    manifest = yaml.safe_load((ROOT / "plugins" / "krew" / "gpunuma.yaml").read_text())
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert (manifest["kind"], manifest["metadata"]["name"]) == ("Plugin", "gpunuma")
    assert manifest["spec"]["version"] == f"v{__version__}"
    result = subprocess.run([sys.executable, str(ROOT / "plugins" / "krew" / "build.py"), str(tmp_path)],
                            capture_output=True, text=True, timeout=60, check=True)
    digest = hashlib.sha256((tmp_path / "kubectl-gpunuma.tar.gz").read_bytes()).hexdigest()
    assert digest in result.stdout
    with tarfile.open(tmp_path / "kubectl-gpunuma.tar.gz") as archive:
        shipped = set(archive.getnames())
    for platform in manifest["spec"]["platforms"]:
        assert platform["sha256"] == digest, "run python3 plugins/krew/build.py and commit the manifest"
        assert platform["uri"].endswith(f"/v{__version__}/kubectl-gpunuma.tar.gz")
        assert platform["bin"] in shipped
        assert {entry["from"] for entry in platform["files"]} == shipped == {
            "kubectl-gpunuma", "kubectl_complete-gpunuma"}
    assert "Python 3.11" in manifest["spec"]["caveats"]


def test_the_krew_shims_run_the_plugin_and_its_completion(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
           f"{os.environ['PATH']}"}
    shims = ROOT / "plugins" / "krew"
    version = subprocess.run([str(shims / "kubectl-gpunuma"), "--version"], env=env, capture_output=True,
                             text=True, timeout=60, check=True)
    assert version.stdout == f"kubectl gpunuma {__version__}\n"
    completion = subprocess.run([str(shims / "kubectl_complete-gpunuma"), "po"], env=env, capture_output=True,
                                text=True, timeout=60, check=True)
    assert completion.stdout.splitlines()[0].startswith("pods\t")
    assert completion.stderr == ""
