"""``gpunuma operator`` flags: defaults, environment, and clear refusals of bad values."""

from __future__ import annotations

import pytest

from gpunuma.cli import build_parser, main
from gpunuma.cli import operator_settings as settings_from_args
from gpunuma.operator.run import kopf_settings


def test_the_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "gpunuma")
    settings = settings_from_args(build_parser().parse_args(["operator"]))
    assert settings.heartbeat_interval_s == 600
    assert settings.stale_after_heartbeats == 3
    assert settings.pod_namespaces == ()
    assert settings.certificates.mode == "self-managed"
    assert settings.certificates.namespace == "gpunuma"
    assert settings.certificates.leaf_validity_days == 365
    assert settings.certificates.renew_before_days == 30
    assert settings.priority is None
    assert settings.log_format == "json"


def test_flags_and_environment_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUNUMA_HEARTBEAT_INTERVAL", "60")
    monkeypatch.setenv("GPUNUMA_CERTIFICATES", "cert-manager")
    args = build_parser().parse_args([
        "operator", "--pod-namespaces", "ml, research", "--stale-after", "5", "--priority", "7",
        "--namespace", "ops", "--liveness", "",
    ])
    settings = settings_from_args(args)
    assert settings.heartbeat_interval_s == 60
    assert settings.stale_after_heartbeats == 5
    assert settings.pod_namespaces == ("ml", "research")
    assert settings.certificates.mode == "cert-manager"
    assert settings.certificates.namespace == "ops"
    assert settings.liveness_endpoint is None
    tuned = kopf_settings(settings, priority=7)
    assert tuned.peering.priority == 7
    assert tuned.peering.clusterwide


@pytest.mark.parametrize(("flags", "message"), [
    (["--stale-after", "0"], "--stale-after must be at least 1"),
    (["--cert-renew-before-days", "400"], "must be > 0 and below --cert-validity-days"),
])
def test_a_bad_value_is_refused_with_a_message_naming_the_flag(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["operator", *flags]) == 2
    assert message in capsys.readouterr().err


def test_a_bad_number_on_the_command_line_is_an_argparse_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["operator", "--heartbeat-interval", "-1"])
    assert exited.value.code == 2
    assert "--heartbeat-interval" in capsys.readouterr().err


def test_a_bad_operator_variable_breaks_neither_other_commands_nor_silently_the_operator(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GPUNUMA_HEARTBEAT_INTERVAL", "ten minutes")
    build_parser().parse_args(["inspect"])  # another command still parses
    with pytest.raises(SystemExit):
        build_parser().parse_args(["operator"])
    assert "--heartbeat-interval: 'ten minutes' is not a number of seconds" in (
        capsys.readouterr().err)
