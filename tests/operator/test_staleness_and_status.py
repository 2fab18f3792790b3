"""Heartbeat judgement, status conditions and the status merge patch."""

from __future__ import annotations

import datetime as dt

import pytest

from gpunuma.operator.staleness import judge_heartbeat
from gpunuma.operator.status import Condition, desired_status, merge_patch
from gpunuma.rfc3339 import format_rfc3339, parse_rfc3339

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def test_rfc3339_with_z_and_offsets_is_parsed_timezone_aware() -> None:
    assert parse_rfc3339("2026-05-01T12:00:00Z") == NOW
    assert parse_rfc3339("2026-05-01T14:00:00.5+02:00") == NOW + dt.timedelta(seconds=0.5)
    assert format_rfc3339(NOW + dt.timedelta(microseconds=7)) == "2026-05-01T12:00:00Z"


@pytest.mark.parametrize("text", ["yesterday", "2026-05-01T12:00:00", ""])
def test_a_bad_or_zoneless_timestamp_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match="2024-05-01T12:00:00Z"):
        parse_rfc3339(text)


def test_a_heartbeat_older_than_three_intervals_is_stale() -> None:
    old = format_rfc3339(NOW - dt.timedelta(seconds=1801))
    verdict = judge_heartbeat(old, NOW, interval_s=600, missed=3)
    assert verdict.stale is True
    assert verdict.reason == "HeartbeatMissed"
    assert "3 heartbeats of 600 s" in verdict.message


def test_a_heartbeat_within_three_intervals_is_fresh_and_its_message_does_not_change() -> None:
    first = judge_heartbeat(format_rfc3339(NOW - dt.timedelta(seconds=1799)), NOW,
                            interval_s=600, missed=3)
    second = judge_heartbeat(format_rfc3339(NOW), NOW, interval_s=600, missed=3)
    assert first.stale is False
    assert first == second  # a heartbeat alone never rewrites the status


@pytest.mark.parametrize(("value", "reason"), [(None, "NoHeartbeat"), (17, "InvalidHeartbeat"),
                                               ("soon", "InvalidHeartbeat")])
def test_a_missing_or_invalid_heartbeat_cannot_be_judged(value: object, reason: str) -> None:
    verdict = judge_heartbeat(value, NOW, interval_s=600, missed=3)
    assert verdict.stale is None
    assert verdict.reason == reason


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    first = desired_status({}, [Condition("Stale", "False", "HeartbeatFresh", "ok")], None, 1, NOW)
    later = NOW + dt.timedelta(hours=1)
    second = desired_status(first, [Condition("Stale", "False", "HeartbeatFresh", "ok")], None, 2,
                            later)
    third = desired_status(second, [Condition("Stale", "True", "HeartbeatMissed", "x")], None, 2,
                           later)
    assert second["conditions"][0]["lastTransitionTime"] == "2026-05-01T12:00:00Z"
    assert second["conditions"][0]["observedGeneration"] == 2
    assert third["conditions"][0]["lastTransitionTime"] == "2026-05-01T13:00:00Z"


def test_conditions_of_other_types_are_kept() -> None:
    current = {"conditions": [{"type": "Custom", "status": "True"}]}
    status = desired_status(current, [Condition("Labeled", "True", "LabelsApplied", "m")],
                            {"gpunuma.io/layout": "4-4"}, 3, NOW)
    assert [c["type"] for c in status["conditions"]] == ["Custom", "Labeled"]
    assert status["appliedLabels"] == {"gpunuma.io/layout": "4-4"}
    assert status["observedGeneration"] == 3


def test_the_status_merge_patch_removes_a_label_key_and_is_empty_when_equal() -> None:
    current = {"appliedLabels": {"a": "1", "b": "2"}, "observedGeneration": 1}
    desired = {"appliedLabels": {"a": "1"}, "observedGeneration": 1}
    assert merge_patch(current, desired) == {"appliedLabels": {"b": None}}
    assert merge_patch(desired, desired) == {}


@pytest.mark.parametrize("ahead", [dt.timedelta(minutes=6), dt.timedelta(days=365 * 973)])
def test_a_heartbeat_from_the_future_is_stale_not_fresh_forever(ahead: dt.timedelta) -> None:
    """Issue #16 item 4: a forged heartbeat in year 2999 kept a node fresh for ever."""
    verdict = judge_heartbeat(format_rfc3339(NOW + ahead), NOW, interval_s=600, missed=3)
    assert verdict.stale is True
    assert verdict.reason == "HeartbeatFromTheFuture"
    assert "ahead of the operator's clock" in verdict.message


def test_a_heartbeat_a_little_ahead_is_clock_skew_and_fresh() -> None:
    verdict = judge_heartbeat(format_rfc3339(NOW + dt.timedelta(seconds=90)), NOW,
                              interval_s=600, missed=3)
    assert verdict.stale is False
