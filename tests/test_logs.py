"""Logging: a level and a format for every component, and kopf's per-handler success lines dropped."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest

from gpunuma import logs
from gpunuma.cli import build_parser, main
from gpunuma.cli import operator_settings as settings_from_args
from gpunuma.operator.run import configure_logging
from gpunuma.settings import LoggingSettings


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    objects = logging.getLogger("kopf.objects")
    filters = objects.filters[:]
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    objects.filters[:] = filters


def test_json_lines_carry_time_level_logger_message_and_exception() -> None:
    record = logging.LogRecord("gpunuma.agent", logging.ERROR, __file__, 1, "write %s failed", ("x",), None)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["level"] == "error"
    assert entry["logger"] == "gpunuma.agent"
    assert entry["message"] == "write x failed"
    assert "RuntimeError: boom" in entry["exception"]
    assert entry["time"].endswith("+00:00")


@pytest.mark.parametrize("command", ["agent", "webhook", "operator"])
def test_every_long_running_component_has_a_log_level_and_format(command: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "n")
    monkeypatch.setenv("GPUNUMA_TLS_CERT_FILE", "c")
    monkeypatch.setenv("GPUNUMA_TLS_KEY_FILE", "k")
    args = build_parser().parse_args([command])
    assert (args.log_level, args.log_format) == ("info", "json")
    monkeypatch.setenv("GPUNUMA_LOG_LEVEL", "debug")
    monkeypatch.setenv("GPUNUMA_LOG_FORMAT", "plain")
    args = build_parser().parse_args([command])
    assert (args.log_level, args.log_format) == ("debug", "plain")


def test_a_bad_log_level_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NODE_NAME", "n")
    monkeypatch.setenv("GPUNUMA_LOG_LEVEL", "verbose")
    with pytest.raises(SystemExit):
        main(["agent"])
    assert "GPUNUMA_LOG_LEVEL='verbose' is not a valid --log-level" in capsys.readouterr().err


def test_configure_sets_the_level_and_the_plain_format(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure(LoggingSettings(level="warning", format="plain"))
    logging.getLogger("gpunuma.agent").info("discovered 8 GPUs")
    logging.getLogger("gpunuma.agent").warning("kubelet unreachable")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(" WARNING gpunuma.agent: kubelet unreachable")


def test_the_operator_drops_kopfs_handler_successes_and_keeps_the_rest(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "gpunuma")
    settings = settings_from_args(build_parser().parse_args(["operator", "--log-level", "info"]))
    configure_logging(settings)
    objects = logging.getLogger("kopf.objects")
    objects.info("Handler 'gpunuma_layout_event' succeeded.")
    objects.info("Layout gpu-1 labelled")
    objects.warning("Handler 'gpunuma_pod_event' succeeded.")  # not kopf's INFO line: kept
    logging.getLogger("gpunuma.operator").debug("below the level")
    lines = [json.loads(line)["message"] for line in capsys.readouterr().err.splitlines()]
    assert lines == ["Layout gpu-1 labelled", "Handler 'gpunuma_pod_event' succeeded."]


def test_the_operator_log_level_reaches_the_root_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "gpunuma")
    settings = settings_from_args(build_parser().parse_args(["operator", "--log-level", "error"]))
    assert settings.logging.level == "error"
    configure_logging(settings)
    assert logging.getLogger().level == logging.ERROR
