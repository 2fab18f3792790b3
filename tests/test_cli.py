"""The command line: GPUNUMA_* variables are held to the same rules as the flags they stand for."""

from __future__ import annotations

import pytest

from gpunuma.cli import main


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
