"""The pure rules (backoff, outcomes, matching, settings, time keys), tested without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from relay.core import clock
from relay.core.backoff import parse_retry_after, retry_delay
from relay.core.errors import ConfigurationError
from relay.core.matching import is_pattern, patterns_for_type, subject_matches, type_matches
from relay.core.models import FanoutMessage
from relay.core.outcomes import Outcome, classify
from relay.core.settings import Settings, parse_schedule


def test_schedule_parses_every_unit() -> None:
    """The retry schedule accepts ms, s, m and h, and counts attempts as one plus its delays."""
    assert parse_schedule("500ms, 5s,5m,2h") == (0.5, 5.0, 300.0, 7200.0)
    settings = Settings.from_environ({"RELAY_RETRY_SCHEDULE": "1s,2s"})
    assert settings.retry_schedule == (1.0, 2.0)  # three attempts: the first and one per delay


def test_default_settings_match_the_contract() -> None:
    """With nothing set, every setting takes the contract's default."""
    s = Settings.from_environ({})
    assert s.retry_schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert (s.delivery_timeout, s.allow_private_targets, s.max_event_bytes, s.event_retention_days) == (
        30,
        False,
        1048576,
        7,
    )


@pytest.mark.parametrize(
    "env",
    [
        {"RELAY_RETRY_SCHEDULE": "5 parsecs"},
        {"RELAY_DELIVERY_TIMEOUT": "-1"},
        {"RELAY_ALLOW_PRIVATE_TARGETS": "maybe"},
        {"RELAY_MAX_EVENT_BYTES": "big"},
    ],
)
def test_bad_settings_name_themselves(env: dict[str, str]) -> None:
    """A malformed setting fails with a message naming it."""
    with pytest.raises(ConfigurationError, match=next(iter(env))):
        Settings.from_environ(env)


def test_backoff_follows_the_schedule_with_bounded_jitter() -> None:
    """Each retry waits its scheduled delay within +/-20 %, and the schedule's end means no retry."""
    schedule = (5.0, 300.0)
    assert retry_delay(schedule, 1, rand=lambda: 0.0) == pytest.approx(4.0)
    assert retry_delay(schedule, 1, rand=lambda: 1.0) == pytest.approx(6.0)
    assert retry_delay(schedule, 2, rand=lambda: 0.5) == pytest.approx(300.0)
    assert retry_delay(schedule, 3) is None


def test_retry_after_wins_when_longer_up_to_an_hour() -> None:
    """A longer Retry-After is honoured, a shorter one is not, and none is longer than an hour."""
    assert retry_delay((1.0,), 1, retry_after=2.0, rand=lambda: 0.5) == 2.0
    assert retry_delay((10.0,), 1, retry_after=2.0, rand=lambda: 0.5) == 10.0
    assert retry_delay((1.0,), 1, retry_after=99999.0, rand=lambda: 0.5) == 3600.0
    # A scheduled delay beyond the cap is never shortened by a Retry-After.
    assert retry_delay((7200.0,), 1, retry_after=10800.0, rand=lambda: 0.5) == 7200.0


def test_odd_receiver_answers_do_not_raise() -> None:
    """Non-ASCII digits in Retry-After and absurdly nested error bodies are just ignored."""
    assert parse_retry_after("\u00b2") is None
    assert classify(404, b"[" * 70_000).outcome is Outcome.FAILED


def test_retry_after_reads_seconds_and_http_dates() -> None:
    """Retry-After is delta-seconds or an HTTP date."""
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("soon") is None


@pytest.mark.parametrize(
    "status,body,outcome",
    [
        (200, b"", Outcome.DELIVERED),
        (202, b"", Outcome.DELIVERED),
        (410, b"", Outcome.GONE),
        (404, b'{"error":{"code":"WorkflowNotFound","message":"x"}}', Outcome.GONE),
        (404, b'{"error":{"code":"WorkflowTriggerVersionNotFound"}}', Outcome.GONE),
        (400, b'{"error":{"code":"WorkflowTriggerIsNotEnabled"}}', Outcome.GONE),
        (404, b"not json", Outcome.FAILED),
        (400, b"{}", Outcome.FAILED),
        (408, b"", Outcome.RETRY),
        (429, b"", Outcome.RETRY),
        (500, b"", Outcome.RETRY),
        (503, b"", Outcome.RETRY),
        (302, b"", Outcome.FAILED),
        (401, b"", Outcome.FAILED),
    ],
)
def test_outcomes_follow_the_contract(status: int, body: bytes, outcome: Outcome) -> None:
    """Each receiver answer maps to delivered, gone, retry or failed exactly as the contract lists."""
    assert classify(status, body).outcome is outcome


def test_type_patterns() -> None:
    """An event matches its exact type, every `prefix.*` above it, and `*`."""
    assert patterns_for_type("order.line.added") == ["order.line.added", "order.line.*", "order.*", "*"]
    assert type_matches(["order.*"], "order.created")
    assert not type_matches(["order.*"], "orders.created")
    assert not type_matches(["invoice.paid"], "invoice.paid.late")
    assert is_pattern("*") and is_pattern("a.*") and is_pattern("a:b-c_d")
    assert not is_pattern("a*") and not is_pattern(".*") and not is_pattern("a b")


def test_subject_filters() -> None:
    """Subject filters need a subject, and both ends must match when both are given."""
    assert subject_matches(None, None, None)
    assert not subject_matches(None, "orders/", None)
    assert subject_matches("orders/42.json", "orders/", ".json")
    assert not subject_matches("orders/42.xml", "orders/", ".json")


def test_time_keys_sort_as_time() -> None:
    """Row keys sort like the moments they encode, and inverted keys sort newest first."""
    a = datetime(2026, 1, 1, tzinfo=UTC)
    b = a + timedelta(microseconds=1)
    assert clock.time_key(a) < clock.time_key(b)
    assert clock.inverted_key(a) > clock.inverted_key(b)
    assert clock.from_time_key(clock.time_key(b)) == b
    assert clock.rfc3339(a) == "2026-01-01T00:00:00.000Z"
    assert clock.parse_rfc3339("2026-01-01T01:00:00+01:00") == a
    with pytest.raises(ValueError):
        clock.parse_rfc3339("2026-01-01")


def test_replay_times_are_aware_utc_instants_from_the_edge_on() -> None:
    """`since`/`until` are read once into UTC datetimes; the wire and the connector keep a string."""
    from datetime import datetime

    from relay.core.models import ReplayRequest

    request = ReplayRequest.model_validate({"since": "2026-01-01T01:00:00+01:00", "until": "2026-01-01T00:30:00Z"})
    assert request.since == datetime(2026, 1, 1, tzinfo=UTC) and request.since.tzinfo is UTC
    assert request.until is not None and request.until > request.since  # as instants, not as text
    assert ReplayRequest.model_json_schema()["properties"]["since"]["type"] == "string"


def test_a_queued_event_keeps_its_acceptance_time_as_written_and_is_read_as_an_aware_time() -> None:
    """Messages queued by an earlier version carry `acceptedAt` as text: they still parse, the code
    behind the edge gets an aware datetime, and the message is written back byte for byte."""
    queued = (
        '{"v":1,"event":{"id":"e1","type":"t.x","source":"s","time":"2026-01-01T00:00:00Z",'
        '"subject":null,"data":1,"blob":null,"acceptedAt":"2026-01-31T12:00:00.123456Z","generated":false},'
        '"origin":null,"kicked":false}'
    )
    message = FanoutMessage.model_validate_json(queued)
    assert message.event.acceptedAt == datetime(2026, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)
    assert message.event.acceptedAt.utcoffset() == timedelta(0)
    assert message.model_dump_json() == queued
