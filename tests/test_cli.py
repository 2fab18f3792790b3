"""The command line: GPUNUMA_* variables are held to the same rules as the flags they stand for."""

from __future__ import annotations

import pytest
import yaml

from gpunuma.cli import _connection, main


@pytest.mark.parametrize(
    ("variable", "value", "argv"),
    [
        ("GPUNUMA_BACKEND", "NVML", ["inspect"]),
        ("GPUNUMA_LOG_FORMAT", "text", ["operator"]),
        ("GPUNUMA_CERTIFICATES", "cert_manager", ["operator"]),
        ("GPUNUMA_DEFAULT_POLICY", "loose", ["webhook", "--tls-cert-file", "c", "--tls-key-file", "k"]),
    ],
)
def test_a_bad_environment_value_is_refused_naming_the_variable(
    variable: str, value: str, argv: list[str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{variable}={value!r} is not a valid" in error
    assert "choose from" in error


def test_a_good_environment_value_is_taken(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GPUNUMA_BACKEND", "sysfs")
    assert main(["inspect", "--output", "labels"]) == 0
    assert "gpunuma.io/source=sysfs" in capsys.readouterr().out


def test_cluster_commands_find_the_kubeconfig_as_kubectl_does(tmp_path, monkeypatch):
    """gpunuma check and cleanup-nodes read $KUBECONFIG before ~/.kube/config (it was skipped)."""
    config = tmp_path / "elsewhere.yaml"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.kube/config there
    monkeypatch.setenv("KUBECONFIG", str(config))
    assert _connection(None).server == "http://127.0.0.1:6443"
