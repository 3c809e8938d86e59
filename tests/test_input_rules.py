"""What the relay accepts, matched whole: names and ids, JSON media types, `null`, `subject` and
`time`; events identified as CloudEvents does, by (source, type, id); and absolute URLs that
start where RELAY_PUBLIC_URL (or the platform) says."""

from __future__ import annotations

import uuid

import pytest
import requests

from relay.core.clock import parse_rfc3339
from relay.core.errors import ConfigurationError
from relay.core.matching import is_event_id, is_name, is_pattern
from relay.core.models import is_uri_reference
from relay.core.settings import Settings
from relay.http.connector import definition
from relay.outbound.sender import mask_url, scrub
from tests.helpers import Answer, InProcessApp, problem_of, wait_until

# ---- pure rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["x\n", "a\tb", "a\x00", "\n", "é", "a b", "", "a" * 129])
def test_names_are_matched_whole(text: str) -> None:
    assert not is_name(text) and not is_pattern(text) and not is_pattern(text + ".*")


@pytest.mark.parametrize("text", [".", "..", "....."])
def test_dot_only_ids_are_refused(text: str) -> None:
    assert is_name(text) and not is_event_id(text)
    assert is_event_id("a.b") and is_event_id(".a")


@pytest.mark.parametrize(
    "text",
    [
        "2026-W05-6T12:00:00Z",
        "2026-01-31T12:00:00,5Z",
        "2026-01-31T12:00:00",
        "2026-01-31 12:00:00Z",
        "2026-01-31T12:00Z",
        "20260131T120000Z",
        "2026-01-31T12:00:00Z\n",
        "2026-01-31T12:00:00+0100",
        "2026-02-30T00:00:00Z",
        "2026-01-31T12:00:00+24:00",
        "２026-01-31T12:00:00Z",
        "2026-1-31T12:00:00Z",
    ],
)
def test_time_is_rfc3339_exactly(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)


def test_rfc3339_forms_are_read() -> None:
    assert parse_rfc3339("2026-01-31T12:00:00.5Z").microsecond == 500_000
    assert parse_rfc3339("2026-01-31t13:30:00.123456789+01:30").isoformat() == "2026-01-31T12:00:00.123456+00:00"


def test_uri_references() -> None:
    for good in (
        "https://shop.example/orders",
        "urn:event:1",
        "/relative/path",
        "mailto:a@b.example",
        "https://x.example/a?b=%20#c",
    ):
        assert is_uri_reference(good), good
    for bad in ("has space", "a\nb", "%zz", "é", "http://[::1"):
        assert not is_uri_reference(bad), bad


def test_mask_keeps_names_and_hides_values() -> None:
    assert mask_url("https://x.example/p?a=1&sig=S&flag") == "https://x.example/p?a=***&sig=***&***"
    assert mask_url("https://u:pw@x.example/p#frag") == "https://u:***@x.example/p#***"
    assert mask_url("https://x.example/p") == "https://x.example/p"


def test_errors_about_an_attempt_are_scrubbed_of_query_values() -> None:
    url = "https://x.example/p?sig=S3CRETVALUE&sv=1.0"
    assert (
        scrub(f"connect to {url} failed: S3CRETVALUE", url)
        == "connect to https://x.example/p?sig=***&sv=1.0 failed: ***"
    )
    assert scrub(None, url) is None


def test_public_url_setting() -> None:
    assert Settings.from_environ({}).public_url is None
    assert (
        Settings.from_environ({"WEBSITE_HOSTNAME": "app.azurewebsites.net"}).public_url
        == "https://app.azurewebsites.net"
    )
    assert (
        Settings.from_environ(
            {"RELAY_PUBLIC_URL": "https://events.contoso.com/", "WEBSITE_HOSTNAME": "app.azurewebsites.net"}
        ).public_url
        == "https://events.contoso.com"
    )
    for bad in (
        "events.contoso.com",
        "ftp://x.example",
        "https://x.example/api",
        "https://x.example?a=1",
        "https://x.example:port",
    ):
        with pytest.raises(ConfigurationError):
            Settings.from_environ({"RELAY_PUBLIC_URL": bad})


# ---- HTTP answers --------------------------------------------------------------------------------


def _problem(response: Answer | requests.Response, status: int, field: str | None = None) -> None:
    problem_of(response, status, field)


# In-process (the app's own functions, no host): each refusal is the app's answer.

URL = "http://127.0.0.1:9/hook"  # never called: these subscriptions get no events


def fresh_url() -> str:
    """A callback URL no other test subscribed (subscribing a known URL again is not a creation)."""
    return f"{URL}/{uuid.uuid4().hex}"


@pytest.mark.parametrize("event_id", ["evt-1\n", "evt\t1", "evt\x001", ".", "..", "..."])
def test_event_ids_with_a_control_character_or_only_dots_are_400(app: InProcessApp, event_id: str) -> None:
    _problem(app.post("events", {"type": "a.b", "id": event_id, "data": 1}), 400, "id")


@pytest.mark.parametrize("event_type", ["a.b\n", "a\rb", "a\x7fb"])
def test_event_types_with_a_control_character_are_400(app: InProcessApp, event_type: str) -> None:
    _problem(app.post("events", {"type": event_type, "data": 1}), 400, "type")


@pytest.mark.parametrize(
    "method, path, body, field",
    [
        ("POST", "subscriptions", {"notificationUrl": URL, "eventType": "foo\n"}, "eventType"),
        ("POST", "subscriptions", {"notificationUrl": URL, "eventTypes": ["foo.*\n"]}, "eventTypes"),
        ("PUT", "event-types/abc%0A", {}, "name"),
        ("GET", "event-types/abc%0A", None, "name"),
        ("DELETE", "event-types/abc%0A", None, "name"),
        ("GET", "subscriptions?eventType=abc%0A", None, "eventType"),
        ("GET", "events/poll?eventType=abc%0A", None, "eventType"),
    ],
)
def test_names_with_a_newline_are_400_naming_the_field(
    app: InProcessApp, method: str, path: str, body: object, field: str
) -> None:
    """A trailing newline in a type, a pattern or a name is a 400, never a 202 that cannot be
    processed later or a 500."""
    _problem(app.request(method, path, body), 400, field)


def test_an_id_with_a_newline_in_a_path_is_400(app: InProcessApp) -> None:
    """A path id with a newline names nothing: a 400 naming it (contract section 6; it was a 404, and
    a 200 for DELETE), and the real subscription is untouched."""
    sub = app.subscribe(fresh_url())["id"]
    _problem(app.get(f"subscriptions/{sub}%0A"), 400, "id")
    _problem(app.get(f"subscriptions/{sub}%0A/deliveries"), 400, "id")
    _problem(app.get(f"operations/{sub}%0A"), 400, "operationId")
    _problem(app.delete(f"subscriptions/{sub}%0A"), 400, "id")
    assert app.get(f"subscriptions/{sub}").status_code == 200


def test_a_body_that_is_not_json_is_415_and_nothing_is_done(app: InProcessApp) -> None:
    """No Content-Type or a non-JSON one is a 415 before anything happens; +json types are JSON."""
    body = f'{{"notificationUrl": "{fresh_url()}"}}'.encode()
    _problem(app.post("subscriptions", data=body), 415)  # no Content-Type at all
    _problem(app.post("subscriptions", data=body, headers={"Content-Type": "text/plain"}), 415)
    _problem(app.post("events", data=b'{"type": "a.b", "data": 1}'), 415)
    _problem(app.put("event-types/no.ctype", data=b"{}"), 415)
    assert app.get("event-types/no.ctype").status_code == 404
    created = app.post(
        "subscriptions", data=body, headers={"Content-Type": "application/merge-patch+json; charset=utf-8"}
    )
    assert created.status_code == 201 and "secret" in created.json()  # the 415s created nothing
    _problem(app.post("events", data=b""), 400, "body")


def test_null_is_not_absent(app: InProcessApp) -> None:
    """`null` for a field that is not nullable is a 400 naming it; `data: null` is data."""
    url = fresh_url()
    for name in (
        "eventType",
        "eventTypes",
        "subjectBeginsWith",
        "subjectEndsWith",
        "description",
        "once",
        "notificationUrl",
    ):
        _problem(app.post("subscriptions", {"notificationUrl": url, name: None}), 400, name)
    sub = app.subscribe(url)
    assert "secret" in sub and sub["eventTypes"] == ["*"]  # created now: none of the 400s subscribed it
    for name in ("id", "source", "subject", "time", "type"):
        _problem(app.post("events", {"type": "a.b", "data": 1, name: None}), 400, name)
    assert app.post("events", {"type": "a.b", "data": None}).status_code == 202
    _problem(app.post("unsubscribe", {"notificationUrl": None}), 400, "notificationUrl")
    _problem(app.put("event-types/null.schema", {"schema": None}), 400, "schema")
    _problem(app.put("event-types/null.schema", {"description": None}), 400, "description")
    for name in ("since", "until", "status"):
        _problem(
            app.post(f"subscriptions/{sub['id']}/replay", {"since": "2026-01-01T00:00:00Z", name: None}), 400, name
        )


def test_subject_and_time_follow_cloudevents(app: InProcessApp) -> None:
    """An empty subject and ISO 8601 forms that are not RFC 3339 are 400s; RFC 3339 passes."""
    _problem(app.post("events", {"type": "a.b", "data": 1, "subject": ""}), 400, "subject")
    for text in ("2026-W05-6T12:00:00Z", "2026-01-31T12:00:00,5Z", "2026-01-31T12:00:00"):
        _problem(app.post("events", {"type": "a.b", "data": 1, "time": text}), 400, "time")
    _problem(
        app.post("events", [{"type": "a.b", "data": 1}, {"type": "a.b", "data": 1, "subject": ""}]), 400, "[1].subject"
    )
    assert app.post("events", {"type": "a.b", "data": 1, "time": "2026-01-31T12:00:00.5Z"}).status_code == 202


# ---- against the dev host -----------------------------------------------------------------------


def test_an_event_is_its_source_type_and_id(relay, receiver_factory, unique_type) -> None:
    """The same id with another type or source is another event, delivered in full; the same
    (source, type, id) again is answered 202 and not delivered again."""
    prefix = unique_type.rsplit(".", 1)[0]
    receiver = receiver_factory()
    relay.subscribe(receiver.url, eventTypes=[f"{prefix}.*"])
    shared = f"evt-{uuid.uuid4().hex}"
    sent = [
        {"type": f"{prefix}.a", "id": shared, "data": "default source, type a"},
        {"type": f"{prefix}.b", "id": shared, "data": "default source, type b"},
        {"type": f"{prefix}.a", "id": shared, "source": "urn:shop:one", "data": "source one"},
        {"type": f"{prefix}.a", "id": shared, "source": "https://two.example/orders?x=1", "data": "source two"},
    ]
    for event in sent:
        assert relay.publish(event).json() == {"id": shared}
    for event in sent:  # each again: nothing more is delivered
        assert relay.publish({**event, "data": "repeat"}).json() == {"id": shared, "duplicate": True}
    receiver.wait_for(4)
    wait_until(relay.queue_idle, 30, "work queues to drain")
    got = sorted((r.json()["source"], r.json()["type"], r.json()["data"]) for r in receiver.requests)
    events_url = f"{relay.base}/events"
    assert got == sorted(
        [
            (events_url, f"{prefix}.a", "default source, type a"),
            (events_url, f"{prefix}.b", "default source, type b"),
            ("urn:shop:one", f"{prefix}.a", "source one"),
            ("https://two.example/orders?x=1", f"{prefix}.a", "source two"),
        ]
    )
    _problem(relay.post("events", {"type": "a.b", "data": 1, "source": "not a uri"}), 400, "source")
    _problem(relay.post("events", {"type": "a.b", "data": 1, "source": ""}), 400, "source")
    _problem(relay.post("events", {"type": "a.b", "data": 1, "source": "urn:" + "x" * 1024}), 400, "source")


@pytest.mark.parametrize(
    "env, base",
    [
        ({"RELAY_PUBLIC_URL": "https://events.contoso.example"}, "https://events.contoso.example"),
        ({"WEBSITE_HOSTNAME": "relay-test.azurewebsites.net"}, "https://relay-test.azurewebsites.net"),
        (
            {
                "RELAY_PUBLIC_URL": "https://events.contoso.example:8443",
                "WEBSITE_HOSTNAME": "relay-test.azurewebsites.net",
            },
            "https://events.contoso.example:8443",
        ),
    ],
)
def test_absolute_urls_start_at_the_public_url(relay_factory, receiver_factory, unique_type, env, base) -> None:
    """Location, nextLink, the default source, the poll and replay Locations and the definition's
    host all start at RELAY_PUBLIC_URL, else https:// + WEBSITE_HOSTNAME."""
    relay = relay_factory(env)
    receiver = receiver_factory()
    subs = [relay.subscribe(f"{receiver.url}/{n}", eventTypes=[unique_type]) for n in range(2)]
    assert all(s["location"] == f"{base}/api/subscriptions/{s['id']}?registration=1" for s in subs)
    page = relay.get(f"subscriptions?eventType={unique_type}&limit=1").json()
    assert page["nextLink"].startswith(f"{base}/api/subscriptions?")
    relay.publish({"type": unique_type, "data": 1})
    assert receiver.wait_for(2)[0].json()["source"] == f"{base}/api/events"
    assert relay.get(f"events/poll?eventType={unique_type}").headers["Location"].startswith(f"{base}/api/events/poll?")
    replay = relay.post(f"subscriptions/{subs[0]['id']}/replay", {"since": subs[0]["createdAt"]})
    assert replay.headers["Location"].startswith(f"{base}/api/operations/")
    doc = requests.get(f"{relay.base}/openapi.json", timeout=30).json()
    assert doc == definition(base.split("://", 1)[1])
