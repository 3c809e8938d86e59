"""The operator console (`GET /api/console`) driven in a real headless Chromium, and the API it
needs (`GET /api/stats`), against the dev host, Azurite and loopback receivers.

The browser is Debian's `chromium` driven by Playwright; Playwright's own browser download is
never used. Without a browser these tests skip with the reason, except under CI (`CI=true`),
where `.ci/run` installs it and a missing browser is a failure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import FUNCTION_KEY, ROOT, Receiver, RelayProcess, share_our_priority, wait_until

CHROMIUM = os.environ.get("RELAY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(os.environ.get("RELAY_TEST_ARTIFACTS") or Path(os.environ.get("TMPDIR", "/tmp")) / "relay-console")


def _no_browser_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401 - imported only to learn whether it is installed
    except ImportError:
        return "Python playwright is not installed (pip install -r requirements-dev.txt)"
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def relay(azurite: Any) -> Iterator[RelayProcess]:
    process = RelayProcess(azurite, {"RELAY_RETRY_SCHEDULE": "100ms,100ms"}).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _no_browser_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        # Its renderers start later from processes already here, in the same sessions.
        share_our_priority()
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(20_000)
    failures: list[str] = []
    page.on("pageerror", lambda exc: failures.append(str(exc)))
    page.on("requestfailed", lambda r: failures.append(f"request failed: {r.url}"))
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith("http://127.0.0.1") else None)
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not failures, failures
    assert not outside, f"the console loaded from another host: {outside}"


def sign_in(page: Any, relay: RelayProcess, key: str = FUNCTION_KEY) -> None:
    page.goto(f"{relay.base}/console")
    page.get_by_label("Function key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def failing_receiver(receivers: Callable[..., Receiver]) -> tuple[Receiver, dict[str, bool]]:
    state = {"healthy": False}
    receiver = receivers(lambda item, index: (200, {}, b"") if state["healthy"] else (500, {}, b"down"))
    return receiver, state


def stats_show(relay: RelayProcess, sub_id: str, outcome: str, at_least: int) -> bool:
    body = relay.get("stats?window=24h").json()
    return body["bySubscription"].get(sub_id, {}).get(outcome, 0) >= at_least


# ---- served files (no browser needed) -----------------------------------------------------------


def test_console_is_anonymous_cached_and_names_no_other_host(relay: RelayProcess) -> None:
    page = requests.get(f"{relay.base}/console", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Cache-Control"] == "no-cache"
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    again = requests.get(f"{relay.base}/console", headers={"If-None-Match": page.headers["ETag"]}, timeout=10)
    assert again.status_code == 304 and again.content == b""
    assets = [a for a in re.findall(r'(?:src|href)="([^"]+)"', page.text) if not a.startswith("#")]
    assert sorted(a.split("?")[0] for a in assets) == [
        "/api/console/app.css",
        "/api/console/app.js",
        "/api/console/favicon.svg",
    ]
    for asset in assets:
        reply = requests.get(f"http://127.0.0.1:{relay.port}{asset}", timeout=10)
        assert reply.status_code == 200
        assert reply.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert reply.headers["Content-Type"].split(";")[0] in ("text/javascript", "text/css", "image/svg+xml")
        assert (
            requests.get(
                f"http://127.0.0.1:{relay.port}{asset}", timeout=10, headers={"If-None-Match": reply.headers["ETag"]}
            ).status_code
            == 304
        )
        # Nothing from another host: no absolute URL to anything but the relay's own paths.
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", reply.text), asset
    # An asset asked for without its current hash is not cached for long.
    assert requests.get(f"{relay.base}/console/app.js", timeout=10).headers["Cache-Control"] == "no-cache"
    config = requests.get(f"{relay.base}/console/config.json", timeout=10)
    assert config.json()["auth"] == "keys" and config.headers["Cache-Control"] == "no-store"


def test_console_refuses_other_files_and_methods(relay: RelayProcess) -> None:
    missing = requests.get(f"{relay.base}/console/secrets.txt", timeout=10)
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("application/problem+json")
    assert requests.get(f"{relay.base}/console/..%2F__init__.py", timeout=10).status_code == 404
    posted = requests.post(f"{relay.base}/console", json={}, timeout=10)
    assert posted.status_code == 405 and posted.headers["Allow"] == "GET, HEAD"
    assert posted.json()["status"] == 405


def test_stats_needs_a_key_and_a_known_window(relay: RelayProcess) -> None:
    assert requests.get(f"{relay.base}/stats", timeout=10).status_code == 401
    bad = relay.get("stats?window=7d")
    assert bad.status_code == 400
    assert bad.json()["errors"] == [{"field": "window", "message": "must be 1h or 24h"}]
    hour = relay.get("stats?window=1h").json()
    assert len(hour["series"]) == 60 and hour["bucket"] == "minute"
    assert relay.get("stats").json()["window"] == "1h"
    day = relay.get("stats?window=24h").json()
    assert len(day["series"]) == 24 and day["bucket"] == "hour"
    assert set(day["totals"]) == {"succeeded", "retrying", "failed"}


def test_stats_count_attempts_per_subscription(
    relay: RelayProcess, receiver_factory: Callable[..., Receiver], unique_type: str
) -> None:
    good = receiver_factory()
    bad, _ = failing_receiver(receiver_factory)
    ok_sub = relay.subscribe(good.url, eventTypes=[unique_type])
    bad_sub = relay.subscribe(bad.url, eventTypes=[unique_type])
    for n in range(3):
        relay.publish({"type": unique_type, "data": {"n": n}})
    good.wait_for(3)
    # Three events, each tried three times at the bad receiver (two retries), then failed.
    wait_until(lambda: stats_show(relay, bad_sub["id"], "failed", 3), 30, "failures to be counted")
    wait_until(lambda: stats_show(relay, ok_sub["id"], "succeeded", 3), 30, "successes to be counted")
    for window in ("1h", "24h"):
        body = relay.get(f"stats?window={window}").json()
        mine = body["bySubscription"]
        assert mine[bad_sub["id"]]["failed"] == 3 and mine[bad_sub["id"]]["retrying"] == 6
        assert mine[ok_sub["id"]]["succeeded"] == 3 and mine[ok_sub["id"]]["failed"] == 0
        assert mine[ok_sub["id"]]["lastSuccessAt"].endswith("Z")
        assert mine[ok_sub["id"]]["averageMs"] is not None
        assert bad_sub["id"] in [f["id"] for f in body["failing"]]
        assert sum(p["failed"] for p in body["series"]) == body["totals"]["failed"] >= 3
        assert body["subscriptions"]["active"] >= 2 and body["subscriptions"]["complete"] is True


def test_activate_brings_back_a_disabled_subscription(
    relay: RelayProcess, receiver_factory: Callable[..., Receiver], unique_type: str
) -> None:
    state = {"gone": True}
    receiver = receiver_factory(lambda item, index: (410, {}, b"") if state["gone"] else (200, {}, b""))
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    relay.publish({"type": unique_type, "data": {}})
    wait_until(lambda: relay.get(f"subscriptions/{sub['id']}").json()["status"] == "disabled", 30, "disable")
    state["gone"] = False
    answer = relay.post(f"subscriptions/{sub['id']}/activate", {})
    assert answer.status_code == 200 and answer.json()["status"] == "active"
    assert "disabledReason" not in answer.json() and "secret" not in answer.json()
    relay.publish({"type": unique_type, "data": {"again": True}})
    assert receiver.wait_for(2)[1].json()["data"] == {"again": True}
    assert relay.post(f"subscriptions/{uuid.uuid4().hex}/activate", {}).status_code == 404


# ---- the console in Chromium --------------------------------------------------------------------


def test_sign_in_with_a_key(page: Any, relay: RelayProcess) -> None:
    sign_in(page, relay, key="not-the-key")
    error = page.locator("#key-error")
    error.wait_for()
    assert "refused" in error.inner_text()
    assert page.get_by_label("Function key").get_attribute("aria-invalid") == "true"
    page.get_by_label("Function key").fill(FUNCTION_KEY)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    assert page.evaluate("sessionStorage.getItem('relay.console.key')") == FUNCTION_KEY
    assert page.evaluate("localStorage.length") == 0
    assert FUNCTION_KEY not in page.url
    # Keyboard: the sections are reachable by Tab from the top of the page.
    page.get_by_role("link", name="Subscriptions").focus()
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Subscriptions", exact=True).wait_for()
    # Focus follows the navigation to the new view's heading, for keyboard and screen reader users.
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name="Subscriptions", exact=True)).to_be_focused()
    # A key revoked mid-session: the next call's 401 brings back the sign-in, saying why.
    page.evaluate("sessionStorage.setItem('relay.console.key', 'revoked-key')")
    page.get_by_role("link", name="Event types").click()
    page.get_by_label("Function key").wait_for()
    assert "refused the key" in page.locator("#signin-error").inner_text()
    assert page.evaluate("sessionStorage.length") == 0
    sign_in(page, relay)
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Function key").wait_for()
    assert page.evaluate("sessionStorage.length") == 0


def test_failing_subscription_found_replayed_and_cleared(
    page: Any, relay: RelayProcess, receiver_factory: Callable[..., Receiver], unique_type: str
) -> None:
    receiver, state = failing_receiver(receiver_factory)
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    for n in range(2):
        relay.publish({"type": unique_type, "data": {"n": n}})
    wait_until(
        lambda: len(relay.get(f"subscriptions/{sub['id']}/deliveries?status=failed").json()["value"]) == 2,
        30,
        "both deliveries to fail",
    )
    wait_until(lambda: stats_show(relay, sub["id"], "failed", 2), 30, "the failures to be counted")

    sign_in(page, relay)
    failing = page.locator(f'#failing a[href="#/subscriptions/{sub["id"]}/deliveries"]')
    failing.wait_for()
    assert failing.inner_text() == receiver.url
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "overview.png"))
    if os.environ.get("RELAY_UPDATE_DOCS") == "1":
        page.screenshot(path=str(ROOT / "docs" / "console.png"))

    page.get_by_role("link", name="Subscriptions").click()
    page.get_by_label("URL host").fill("127.0.0.1")
    page.get_by_label("Event type").fill(unique_type)
    row = page.locator(f'#subscriptions tr[data-id="{sub["id"]}"]')
    row.wait_for()
    assert row.locator('td[data-label="Failures (day)"]').inner_text() == "2"
    assert row.locator('td[data-label="Status"]').inner_text().startswith("active")
    page.get_by_label("Status").select_option("disabled")
    row.wait_for(state="detached")
    page.get_by_label("Status").select_option("active")
    row.get_by_role("link", name="Deliveries").click()

    page.get_by_role("heading", name="Deliveries", exact=True).wait_for()
    failed_rows = page.locator("#deliveries tr.failed")
    failed_rows.first.wait_for()
    assert failed_rows.count() == 2
    assert failed_rows.first.locator('td[data-label="Last code"]').inner_text() == "500"
    assert failed_rows.first.locator('td[data-label="Attempts"]').inner_text() == "3"
    assert "500" in failed_rows.first.locator('td[data-label="Last error"]').inner_text()

    state["healthy"] = True
    before = len(receiver.requests)
    page.get_by_role("button", name="Replay failed since…").click()
    page.locator("#replay-progress").wait_for()
    page.get_by_text("Replay finished: 2 deliveries queued again; none failed again.", exact=True).wait_for()
    receiver.wait_for(before + 2)
    # The receiver counts a request before the relay has its answer and writes the log row: the
    # page's one fetch must not race that write.
    wait_until(
        lambda: relay.get(f"subscriptions/{sub['id']}/deliveries?status=failed").json()["value"] == [],
        30,
        "the failures to be cleared in the delivery log",
    )
    page.get_by_label("Status", exact=True).select_option("failed")
    page.get_by_text("No failed deliveries.").wait_for()
    page.get_by_label("Status", exact=True).select_option("")
    page.locator("#deliveries tr.succeeded").nth(1).wait_for()
    assert page.locator("#deliveries tr.failed").count() == 0


def _verify(secret: str, received: Any) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{received.headers['webhook-id']}.{received.headers['webhook-timestamp']}.".encode() + received.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(sig.split(",", 1)[1] == expected for sig in received.headers["webhook-signature"].split())


def test_rotate_a_secret_shown_once(
    page: Any, relay: RelayProcess, receiver_factory: Callable[..., Receiver], unique_type: str
) -> None:
    receiver = receiver_factory()
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    sign_in(page, relay)
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    page.get_by_role("link", name="Subscriptions").click()
    row = page.locator(f'#subscriptions tr[data-id="{sub["id"]}"]')
    # The default grace: the old secret keeps signing beside the new one for a day (issue 23).
    row.get_by_role("button", name="Rotate secret").click()
    secret = row.locator("code.secret")
    secret.wait_for()
    first = secret.inner_text()
    assert first.startswith("whsec_") and first != sub["secret"]
    assert "shown once" in row.inner_text() and "also signs until" in row.inner_text()
    ends = relay.get(f"subscriptions/{sub['id']}").json()["previousSecretExpiresAt"]
    assert datetime.fromisoformat(ends.replace("Z", "+00:00")) > datetime.now(UTC) + timedelta(hours=23)
    row.get_by_role("button", name="Send test event").click()
    row.get_by_text("to this subscription only").wait_for()
    received = receiver.wait_for(1)[0]
    assert received.json()["type"] == "relay.test" and received.json()["relaytest"] is True
    assert _verify(first, received) and _verify(sub["secret"], received)
    # A leaked secret: the old one stops at once.
    row.get_by_label("keeps signing").select_option("0")
    row.get_by_role("button", name="Rotate secret").click()
    row.get_by_text("signs nothing more").wait_for()
    new = row.locator("code.secret").inner_text()
    assert new.startswith("whsec_") and new not in (first, sub["secret"])
    # Deliveries are signed with the new secret from now on.
    row.get_by_role("button", name="Send test event").click()
    wait_until(lambda: len(receiver.requests) >= 2, 30, "the second test event")
    received = receiver.wait_for(2)[1]
    assert received.json()["type"] == "relay.test"
    assert _verify(new, received) and not _verify(first, received) and not _verify(sub["secret"], received)
    # Reads never show it again.
    assert "secret" not in relay.get(f"subscriptions/{sub['id']}").json()


def test_reactivate_and_delete_from_the_list(
    page: Any, relay: RelayProcess, receiver_factory: Callable[..., Receiver], unique_type: str
) -> None:
    receiver = receiver_factory(lambda item, index: (410, {}, b""))
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    relay.publish({"type": unique_type, "data": {}})
    wait_until(lambda: relay.get(f"subscriptions/{sub['id']}").json()["status"] == "disabled", 30, "disable")
    sign_in(page, relay)
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    page.goto(f"{relay.base}/console#/subscriptions")
    page.get_by_label("Status").select_option("disabled")
    row = page.locator(f'#subscriptions tr[data-id="{sub["id"]}"]')
    assert "410" in row.locator('td[data-label="Status"]').inner_text()
    row.get_by_role("button", name="Re-activate").click()
    page.get_by_label("Status").select_option("active")
    row.locator(".badge.active").wait_for()
    assert relay.get(f"subscriptions/{sub['id']}").json()["status"] == "active"
    delete = row.get_by_role("button", name=f"Delete {receiver.url}")
    delete.click()
    assert delete.inner_text() == "Press again to delete"
    delete.click()
    row.wait_for(state="detached")
    assert relay.get(f"subscriptions/{sub['id']}").status_code == 404


def test_schema_mistake_shown_then_sample_event_delivered(
    page: Any, relay: RelayProcess, receiver_factory: Callable[..., Receiver], unique_type: str
) -> None:
    receiver = receiver_factory()
    relay.subscribe(receiver.url, eventTypes=[unique_type])
    sign_in(page, relay)
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    page.get_by_role("link", name="Event types").click()
    page.get_by_label("New event type").fill(unique_type)
    page.get_by_role("button", name="Create").click()
    page.get_by_role("heading", name=unique_type, exact=True).wait_for()
    schema = page.get_by_label("JSON Schema of data")

    schema.fill('{"type": "object",')  # not JSON: caught before anything is sent
    page.get_by_role("button", name="Save").click()
    assert "not valid JSON" in page.locator("#t-schema-error").inner_text()
    assert schema.get_attribute("aria-invalid") == "true"

    schema.fill(json.dumps({"type": "object", "properties": {"amount": {"type": "nummber"}}}))
    page.get_by_role("button", name="Save").click()
    error = page.locator("#t-schema-error")
    error.filter(has_text="not a valid JSON Schema").wait_for()
    assert relay.get(f"event-types/{unique_type}").status_code == 404

    good = {
        "type": "object",
        "required": ["amount", "currency"],
        "properties": {
            "amount": {"type": "integer", "minimum": 1},
            "currency": {"enum": ["EUR", "USD"]},
            "note": {"type": "string"},
            "rush": {"type": "boolean"},
        },
    }
    page.get_by_label("Description").fill("An order was paid")
    schema.fill(json.dumps(good))
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Saved.").wait_for()
    assert relay.get(f"event-types/{unique_type}").json()["schema"] == good

    # The publish form is generated from the schema: one labelled control per property.
    amount = page.get_by_label("amount")
    amount.fill("0")
    page.get_by_role("button", name="Publish").click()
    amount_error = page.locator("#p-data-amount-error")
    amount_error.wait_for()
    assert "minimum" in amount_error.inner_text()
    assert amount.get_attribute("aria-invalid") == "true"
    amount.fill("42")
    page.get_by_label("currency").select_option(label='"USD"')
    page.get_by_label("note").fill("from the console")
    page.get_by_label("rush").check()
    page.get_by_role("button", name="Publish").click()
    page.get_by_text("Published: event").wait_for()
    delivered = receiver.wait_for(1)[0].json()
    assert delivered["type"] == unique_type
    assert delivered["data"] == {"amount": 42, "currency": "USD", "note": "from the console", "rush": True}
    assert delivered["subject"] == "console-sample"


def test_readable_on_a_phone(
    browser: Any, relay: RelayProcess, receiver_factory: Callable[..., Receiver], unique_type: str
) -> None:
    relay.subscribe(receiver_factory().url, eventTypes=[unique_type])
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        sign_in(page, relay)
        page.get_by_role("heading", name="Overview", exact=True).wait_for()
        for hash_, heading in (
            ("#/overview", "Overview"),
            ("#/subscriptions", "Subscriptions"),
            ("#/event-types", "Event types"),
        ):
            page.goto(f"{relay.base}/console{hash_}")
            page.get_by_role("heading", name=heading, exact=True).wait_for()
            page.wait_for_load_state("networkidle")
            # Nothing wider than the screen: no sideways scrolling of the page.
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), hash_
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "phone-subscriptions.png"), full_page=True)
    finally:
        context.close()


def test_every_control_has_a_label(page: Any, relay: RelayProcess) -> None:
    sign_in(page, relay)
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    for hash_ in ("#/subscriptions", "#/event-types", f"#/event-types/test.labels.{uuid.uuid4().hex[:6]}"):
        page.goto(f"{relay.base}/console{hash_}")
        page.locator("main h1").wait_for()
        page.wait_for_load_state("networkidle")
        unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
            .filter(el => !el.labels?.length && !el.getAttribute('aria-label') && !el.textContent.trim())
            .map(el => el.outerHTML)""")
        assert unlabelled == [], (hash_, unlabelled)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), hash_  # 1280x800


def test_counters_add_up_across_writers_and_expire_with_the_log(azurite: Any) -> None:
    """Two processes' rows add up; a repeated flush does not count twice; the sweep removes them."""
    from datetime import datetime, timedelta

    from relay.pipeline import stats
    from relay.pipeline.retention import sweep
    from relay.store.storage import DELIVERIES_TABLE, Endpoints, Storage

    storage = Storage(Endpoints(connection_string=azurite.connection_string))
    storage.ensure()
    # A fixed hour far from today's rows: 2031-05-01 10:00 to 10:59.
    base = datetime(2031, 5, 1, 10, 0, tzinfo=UTC)
    sub_a, sub_b = uuid.uuid4().hex, uuid.uuid4().hex
    first, second = stats.Recorder(process="first"), stats.Recorder(process="second")
    first.record(storage, sub_a, "retrying", 0.25, at=base + timedelta(minutes=58, seconds=1))
    first.record(storage, sub_a, "failed", 0.75, at=base + timedelta(minutes=58, seconds=2))
    first.record(storage, sub_b, "succeeded", 0.01, at=base + timedelta(minutes=59))
    second.record(storage, sub_b, "succeeded", 0.03, at=base + timedelta(minutes=59, seconds=30))
    for recorder in (first, second, first):  # the second flush of `first` adds nothing
        recorder.flush()
    rows = list(storage.table(DELIVERIES_TABLE).query_entities("PartitionKey eq 'c:2031050110'"))
    assert sorted(r["RowKey"] for r in rows) == ["h_first", "h_second", "m58_first", "m59_first", "m59_second"]

    hour = stats.read(storage, "1h", now=base + timedelta(minutes=59, seconds=59))
    by_minute = {p["start"]: p for p in hour["series"]}
    assert by_minute["2031-05-01T10:58:00.000Z"] == {
        "start": "2031-05-01T10:58:00.000Z",
        "succeeded": 0,
        "retrying": 1,
        "failed": 1,
    }
    assert by_minute["2031-05-01T10:59:00.000Z"]["succeeded"] == 2
    day = stats.read(storage, "24h", now=base + timedelta(minutes=59, seconds=59))
    assert day["series"][-1]["start"] == "2031-05-01T10:00:00.000Z"
    assert day["bySubscription"][sub_a] == {"succeeded": 0, "retrying": 1, "failed": 1, "averageMs": 500, "maxMs": 750}
    assert day["bySubscription"][sub_b]["succeeded"] == 2 and day["bySubscription"][sub_b]["maxMs"] == 30
    assert day["bySubscription"][sub_b]["lastSuccessAt"] == "2031-05-01T10:59:30.000Z"
    assert day["totals"] == {"succeeded": 2, "retrying": 1, "failed": 1}
    assert day["failing"][0]["id"] == sub_a and day["slowest"][0]["id"] == sub_a
    assert hour["from"] == "2031-05-01T10:00:00.000Z" and hour["to"] == "2031-05-01T11:00:00.000Z"

    # An hour's window that starts in the previous clock hour reads both partitions.
    later = stats.read(storage, "1h", now=base + timedelta(minutes=70))
    assert later["totals"] == {"succeeded": 2, "retrying": 1, "failed": 1}
    assert stats.read(storage, "1h", now=base + timedelta(minutes=120))["totals"]["failed"] == 0

    sweep(storage, 7, now=clock_in(2031, 6, 1))
    assert list(storage.table(DELIVERIES_TABLE).query_entities("PartitionKey eq 'c:2031050110'")) == []


def clock_in(*parts: int) -> Any:
    from datetime import datetime

    return datetime(*parts, tzinfo=UTC)


def test_entra_mode_offers_sign_in_and_sends_the_token(browser: Any, azurite: Any, tmp_path: Path) -> None:
    """With RELAY_AUTH=entra the page offers Easy Auth's sign-in and, for a pasted token, sends it
    as a bearer token (and never a function key). The token is minted from the Entra tests' key,
    and the dev host validates it as Easy Auth would."""
    from tests.test_entra import ENTRA_ENV, Tokens, jwks_file

    token = Tokens().mint(["Relay.Admin"])
    relay = RelayProcess(
        azurite, {**ENTRA_ENV, "RELAY_ENTRA_JWKS": str(jwks_file(tmp_path))}, function_key=None
    ).start()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(20_000)
    sent: list[dict[str, str]] = []
    page.on("request", lambda r: sent.append(r.headers) if "/api/stats" in r.url else None)
    try:
        assert requests.get(f"{relay.base}/console/config.json", timeout=10).json()["auth"] == "entra"
        page.goto(f"{relay.base}/console#/signin")
        link = page.get_by_role("link", name="Sign in with Microsoft")
        assert link.get_attribute("href") == "/.auth/login/aad?post_login_redirect_uri=%2Fapi%2Fconsole"
        page.get_by_label("Access token").fill(token)
        page.get_by_role("button", name="Continue").click()
        page.get_by_role("heading", name="Overview", exact=True).wait_for()
        assert sent and all(h.get("authorization") == f"Bearer {token}" for h in sent)
        assert not any("x-functions-key" in h for h in sent)
        assert page.evaluate("sessionStorage.getItem('relay.console.token')") == token
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "entra-overview.png"))
    finally:
        context.close()
        relay.stop()


# ---- issue 22: what the browser showed, at a desktop and a phone width -----------------------------
#
# Each test runs at 1366 and 390 px wide, in a time zone that is not UTC (Europe/Berlin, UTC+1 in
# December) so local times can be told from UTC ones. The page's own requests are watched: any
# answer of 400 or more (a favicon's 404, say) fails the test.

WIDTHS = [1366, 390]
ZONE = "Europe/Berlin"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
LONG_PATH = "flows/orders-west/triggers/manual/paths/invoke?api-version=2016-06-01&sp=run&sv=1.0&sig=abc"


class Watched:
    """A page of a fresh browser context at one width, with what went wrong on it."""

    def __init__(self, browser: Any, width: int, name: str, **options: Any) -> None:
        self.width, self.name = width, name
        phone = width < 500
        self.context = browser.new_context(
            viewport={"width": width, "height": 900}, timezone_id=ZONE, is_mobile=phone, has_touch=phone, **options
        )
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.problems: list[str] = []
        self.closing = False
        self.page.on("pageerror", lambda exc: self.problems.append(f"script error: {exc}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("response", lambda r: self.problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)

    def _failed(self, request: Any) -> None:
        # net::ERR_ABORTED is the browser cancelling a request itself: closing the context, or a
        # navigation leaving a page whose favicon was still loading (seen on a loaded machine in
        # both cases). A server's failure is a status (above) or another net:: error.
        if not self.closing and request.failure != "net::ERR_ABORTED":
            self.problems.append(f"request failed: {request.url} ({request.failure})")

    def close(self) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{self.name}.png"), full_page=True)
        self.closing = True
        self.context.close()


@pytest.fixture(params=WIDTHS, ids=lambda w: f"{w}px")
def width(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def watched(browser: Any, width: int, request: pytest.FixtureRequest) -> Iterator[Watched]:
    w = Watched(browser, width, request.node.name)
    yield w
    w.close()
    assert not w.problems, w.problems


@pytest.fixture(scope="module")
def receiver_factory_module() -> Iterator[Callable[..., Receiver]]:
    """Receivers that live as long as the module's dev host, for data shared by both widths."""
    made: list[Receiver] = []

    def make(script: Any = None) -> Receiver:
        made.append(Receiver(script))
        return made[-1]

    yield make
    for r in made:
        r.close()


def put_type(relay: RelayProcess, name: str, body: dict[str, Any]) -> None:
    assert relay.session.put(f"{relay.base}/event-types/{name}", json=body, timeout=10).status_code in (200, 201)


def signed_in(w: Watched, relay: RelayProcess, hash_: str = "#/overview") -> Any:
    page = w.page
    sign_in(page, relay)
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    if hash_ != "#/overview":
        page.goto(f"{relay.base}/console{hash_}")
        page.locator("main h1").wait_for()
    page.wait_for_load_state("networkidle")
    return page


def visible(page: Any, selector: str) -> bool:
    return bool(page.locator(selector).first.is_visible())


def test_sign_in_page_shows_no_navigation(watched: Watched, relay: RelayProcess) -> None:
    page = watched.page
    page.goto(f"{relay.base}/console")
    page.get_by_label("Function key").wait_for()
    assert not visible(page, "#nav") and not visible(page, "#signout")
    sign_in(page, relay)
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    assert visible(page, "#nav") and visible(page, "#signout")
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Function key").wait_for()
    assert not visible(page, "#nav") and not visible(page, "#signout")


@pytest.fixture(scope="module")
def many_deliveries(relay: RelayProcess, receiver_factory_module: Callable[..., Receiver]) -> str:
    """A subscription with 55 succeeded deliveries: more than the console's page of 50."""
    receiver = receiver_factory_module()
    kind = f"test.many.{uuid.uuid4().hex[:8]}"
    sub = relay.subscribe(receiver.url, eventTypes=[kind])
    for n in range(55):
        relay.publish({"type": kind, "data": {"n": n}})
    receiver.wait_for(55)
    wait_until(
        lambda: (
            len(relay.get(f"subscriptions/{sub['id']}/deliveries?status=succeeded&limit=1000").json()["value"]) == 55
        ),
        60,
        "55 deliveries in the log",
    )
    return str(sub["id"])


def test_load_more_appends_the_next_page_and_only_then_shows(
    watched: Watched, relay: RelayProcess, many_deliveries: str, receiver_factory: Callable[..., Receiver]
) -> None:
    page = signed_in(watched, relay, f"#/subscriptions/{many_deliveries}/deliveries")
    rows = page.locator("#deliveries tbody tr")
    more = page.get_by_role("button", name="Load more")
    wait_until(lambda: rows.count() == 50, 30, "the first page")
    assert more.is_visible()
    more.click()
    wait_until(lambda: rows.count() == 55, 30, "the second page appended")
    ids = page.eval_on_selector_all("#deliveries tbody tr", "rows => rows.map(r => r.dataset.event)")
    assert len(set(ids)) == 55, "Load more appended rows already shown"
    page.wait_for_function("() => !document.querySelector('#deliveries-summary').textContent.includes('+')")
    assert not more.is_visible(), "Load more is shown with no next page"

    # A short log: no Load more at all.
    receiver = receiver_factory()
    kind = f"test.few.{uuid.uuid4().hex[:8]}"
    sub = relay.subscribe(receiver.url, eventTypes=[kind])
    relay.publish({"type": kind, "data": {}})
    receiver.wait_for(1)
    wait_until(lambda: relay.get(f"subscriptions/{sub['id']}/deliveries").json()["value"], 30, "the log row")
    page.goto(f"{relay.base}/console#/subscriptions/{sub['id']}/deliveries")
    page.locator("#deliveries tbody tr").first.wait_for()
    page.wait_for_load_state("networkidle")
    assert not more.is_visible()
    assert not visible(page, "#replay-progress"), "the replay's progress shows before any replay"


def test_replay_progress_only_while_it_runs_and_says_how_many_failed_again(
    watched: Watched, relay: RelayProcess, receiver_factory: Callable[..., Receiver], unique_type: str
) -> None:
    receiver, state = failing_receiver(receiver_factory)
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    for n in range(3):
        relay.publish({"type": unique_type, "data": {"n": n}})
    wait_until(
        lambda: len(relay.get(f"subscriptions/{sub['id']}/deliveries?status=failed").json()["value"]) == 3,
        30,
        "three deliveries to fail",
    )
    page = signed_in(watched, relay, f"#/subscriptions/{sub['id']}/deliveries")
    page.locator("#deliveries tr.failed").nth(2).wait_for()
    assert not visible(page, "#replay-progress") and not visible(page, "#replay-bar")
    # The receiver still fails: the replay's last words say so.
    page.get_by_role("button", name="Replay failed since…").click()
    page.get_by_text("Replay finished: 3 deliveries queued again; 3 failed again.", exact=True).wait_for(timeout=90_000)
    assert not visible(page, "#replay-bar"), "the progress bar still animates after the replay"
    # Healthy again: none failed again.
    state["healthy"] = True
    page.get_by_role("button", name="Replay failed since…").click()
    page.get_by_text("Replay finished: 3 deliveries queued again; none failed again.", exact=True).wait_for(
        timeout=90_000
    )
    assert not visible(page, "#replay-bar")


@pytest.fixture(scope="module")
def long_failing(relay: RelayProcess, receiver_factory_module: Callable[..., Receiver]) -> dict[str, Any]:
    """A failing subscription with a long Logic Apps-like callback URL, counted on the overview."""
    receiver = receiver_factory_module(lambda item, index: (500, {}, b"down"))
    kind = f"test.long.{uuid.uuid4().hex[:8]}"
    sub = relay.subscribe(receiver.url + LONG_PATH, eventTypes=[kind])
    relay.publish({"type": kind, "data": {}})
    wait_until(lambda: stats_show(relay, sub["id"], "failed", 1), 60, "the failure to be counted")
    return {**sub, "type": kind}


VIEWS = ["#/overview", "#/subscriptions", "#/event-types", "#/event-types/{type}", "#/subscriptions/{id}/deliveries"]


def test_no_sideways_scrolling_whole_event_ids_and_readable_chart_labels(
    watched: Watched, relay: RelayProcess, long_failing: dict[str, Any]
) -> None:
    put_type(relay, long_failing["type"], {"description": "long"})
    page = watched.page
    page.goto(f"{relay.base}/console")
    page.get_by_label("Function key").wait_for()
    views = ["sign-in"]
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    signed_in(watched, relay)
    for view in VIEWS:
        hash_ = view.format(type=long_failing["type"], id=long_failing["id"])
        page.goto(f"{relay.base}/console{hash_}")
        page.locator("main h1").wait_for()
        page.wait_for_load_state("networkidle")
        views.append(hash_)
        sizes = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert sizes[0] <= sizes[1], (hash_, sizes)
    # Event ids on the delivery cards: whole, inside their card, without scrolling it.
    page.locator('#deliveries td[data-label="Event"] code').first.wait_for()
    codes = page.eval_on_selector_all(
        '#deliveries td[data-label="Event"] code',
        """codes => codes.map(c => {
            const box = c.closest('.scroll').getBoundingClientRect();
            const rects = [...c.getClientRects()];
            return {id: c.textContent, inside: rects.every(r => r.left >= box.left - 0.5 && r.right <= box.right + 0.5),
                    scrolls: c.closest('.scroll').scrollWidth > c.closest('.scroll').clientWidth};
        })""",
    )
    assert codes and all(c["inside"] and not c["scrolls"] for c in codes), codes
    # Chart labels as drawn: font size times the drawing's scale, at least 11 px.
    page.goto(f"{relay.base}/console#/overview")
    page.locator(".chart-card").first.wait_for()
    sizes = page.eval_on_selector_all(
        ".chart-card .tick",
        """ticks => ticks.map(t => {
            const svg = t.closest('svg');
            const scale = svg ? svg.getBoundingClientRect().width / svg.viewBox.baseVal.width : 1;
            return parseFloat(getComputedStyle(t).fontSize) * scale;
        })""",
    )
    assert sizes and min(sizes) >= 11, sizes


TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC([+-]\d{1,2}(?::\d\d)?)? \((\d+ (?:s|min|h|d) ago)\)$")


def test_times_are_local_with_their_zone_relative_and_utc_on_hover(
    watched: Watched, relay: RelayProcess, receiver_factory: Callable[..., Receiver], unique_type: str
) -> None:
    from datetime import datetime, timedelta

    receiver = receiver_factory()
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    relay.publish({"type": unique_type, "data": {}})
    receiver.wait_for(1)
    wait_until(lambda: relay.get(f"subscriptions/{sub['id']}/deliveries").json()["value"], 30, "the log row")
    wait_until(lambda: stats_show(relay, sub["id"], "succeeded", 1), 30, "the success to be counted")
    at = relay.get(f"subscriptions/{sub['id']}/deliveries").json()["value"][0]["lastAttemptAt"]
    page = signed_in(watched, relay, f"#/subscriptions/{sub['id']}/deliveries")
    cell = page.locator('#deliveries td[data-label="Last attempt"] time').first
    cell.wait_for()
    assert cell.get_attribute("datetime") == at
    match = TIME.match(cell.inner_text().strip())
    assert match, cell.inner_text()
    utc = datetime.fromisoformat(at.replace("Z", "+00:00"))
    assert match.group(1) == (utc + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")  # Berlin in December
    assert match.group(2) == "+1"
    title = cell.get_attribute("title") or ""
    assert at.replace("T", " ").removesuffix("Z") in title and "UTC" in title, title
    # The subscriptions list's "Last success" reads the same way.
    page.goto(f"{relay.base}/console#/subscriptions")
    success = page.locator(f'#subscriptions tr[data-id="{sub["id"]}"] td[data-label="Last success"] time')
    success.wait_for()
    assert TIME.match(success.inner_text().strip()), success.inner_text()
    assert "UTC" in (success.get_attribute("title") or "")


def _contrast(fg: str, bg: str) -> float:
    def luminance(css: str) -> float:
        r, g, b = (int(x) / 255 for x in re.findall(r"[\d.]+", css)[:3])
        lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_favicon_badges_and_callback_breaks(
    watched: Watched, relay: RelayProcess, long_failing: dict[str, Any]
) -> None:
    page = signed_in(watched, relay, "#/subscriptions")
    # The favicon: named by the page and served (a 404 on any load fails the `watched` fixture).
    assert page.locator('link[rel="icon"]').count() == 1
    page.get_by_label("Event type").fill(long_failing["type"])
    row = page.locator(f'#subscriptions tr[data-id="{long_failing["id"]}"]')
    row.wait_for()
    badge = row.locator(".badge.active")
    colors = badge.evaluate("b => [getComputedStyle(b).color, getComputedStyle(b).backgroundColor]")
    assert _contrast(*colors) >= 4.5, colors
    # The callback breaks only between the URL's parts: after a '/', before a '?' or '&'.
    url = row.locator('td[data-label="Callback"] .url')
    breaks = url.evaluate("""el => {
        const text = el.textContent, found = [];
        const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
        const chars = [];
        for (let node = walker.nextNode(); node; node = walker.nextNode())
          for (let i = 0; i < node.length; i++) chars.push([node, i]);
        let top = null;
        chars.forEach(([node, i], k) => {
          const range = document.createRange();
          range.setStart(node, i); range.setEnd(node, i + 1);
          const rect = range.getClientRects()[0];
          if (!rect) return;
          if (top !== null && rect.top > top + 2)
            found.push(text.slice(Math.max(0, k - 8), k) + '|' + text.slice(k, k + 8));
          top = rect.top;
        });
        return found;
    }""")
    assert breaks, "the long callback URL did not wrap: make the test's URL longer"
    bad = [b for b in breaks if not (b.split("|")[0].endswith("/") or b.split("|")[1][:1] in "?&")]
    assert not bad, bad


@pytest.fixture(scope="module")
def keyless_relay(azurite: Any) -> Iterator[RelayProcess]:
    process = RelayProcess(azurite, {}, function_key=None).start()
    yield process
    process.stop()


def test_sign_in_says_what_the_relay_expects(
    watched: Watched, relay: RelayProcess, keyless_relay: RelayProcess
) -> None:
    page = watched.page
    page.goto(f"{keyless_relay.base}/console")
    page.get_by_label("Function key").wait_for()
    note = page.locator("#key-note")
    assert "accepts any key" in note.inner_text()
    page.get_by_label("Function key").fill("anything at all")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    # A relay that checks keys says nothing of the kind.
    page.goto(f"{relay.base}/console#/signin")
    page.get_by_label("Function key").wait_for()
    assert "accepts any key" not in page.locator("main").inner_text()


def test_no_accessibility_violations_on_any_view(
    browser: Any, width: int, relay: RelayProcess, long_failing: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """axe-core (from node_modules, injected by the test) on every view. The context bypasses the
    page's CSP only so the test can inject the script; the served CSP stays as it is."""
    assert AXE.is_file(), f"{AXE} is missing: run npm ci (axe-core is a devDependency)"
    put_type(relay, long_failing["type"], {"description": "for axe", "schema": {"type": "object"}})
    w = Watched(browser, width, request.node.name, bypass_csp=True)
    try:
        page = w.page
        page.goto(f"{relay.base}/console")
        page.get_by_label("Function key").wait_for()
        found: dict[str, Any] = {}

        def check(view: str) -> None:
            page.wait_for_load_state("networkidle")
            page.add_script_tag(path=str(AXE))
            result = page.evaluate(
                "async () => (await axe.run(document)).violations.map(v => "
                "({id: v.id, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))"
            )
            if result:
                found[view] = result

        check("sign-in")
        signed_in(w, relay)
        for view in VIEWS:
            hash_ = view.format(type=long_failing["type"], id=long_failing["id"])
            page.goto(f"{relay.base}/console{hash_}")
            page.locator("main h1").wait_for()
            check(hash_)
        assert not found, found
        assert not w.problems, w.problems
    finally:
        w.close()


def test_pause_resume_test_event_and_resend_on_the_subscription_page(
    watched: Watched, relay: RelayProcess, receiver_factory: Callable[..., Receiver], unique_type: str
) -> None:
    """Pause holds (the delivery shows pending, nothing arrives), Resume delivers it; Send test
    event reaches this subscription only; Resend on a delivery row delivers that event again."""
    receiver = receiver_factory()
    neighbour = receiver_factory()
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])
    relay.subscribe(neighbour.url, eventTypes=[unique_type])
    page = signed_in(watched, relay, f"#/subscriptions/{sub['id']}/deliveries")
    actions = page.locator("#sub-actions")
    actions.get_by_role("button", name=f"Pause {receiver.url}").click()
    page.locator("main .badge.paused").wait_for()
    assert relay.get(f"subscriptions/{sub['id']}").json()["status"] == "paused"

    event_id = relay.publish({"type": unique_type, "data": {"n": 1}}).json()["id"]
    neighbour.wait_for(1)
    wait_until(lambda: relay.get(f"subscriptions/{sub['id']}/deliveries?status=pending").json()["value"], 30, "held")
    page.get_by_role("button", name="Refresh").click()
    held = page.locator(f'#deliveries tr[data-event="{event_id}"]')
    held.locator(".badge.pending").wait_for()
    assert "paused" in held.inner_text() and receiver.requests == []

    page.locator("#sub-actions").get_by_role("button", name=f"Resume {receiver.url}").click()
    page.locator("main .badge.active").wait_for()
    assert receiver.wait_for(1)[0].headers["webhook-id"] == event_id

    page.locator("#sub-actions").get_by_role("button", name="Send test event").click()
    page.locator("#sub-output").get_by_text("to this subscription only").wait_for()
    test = receiver.wait_for(2)[1].json()
    assert test["type"] == "relay.test" and test["relaytest"] is True

    wait_until(lambda: relay.get(f"subscriptions/{sub['id']}/deliveries?status=succeeded").json()["value"], 30, "log")
    page.get_by_role("button", name="Refresh").click()
    page.locator(f'#deliveries tr[data-event="{event_id}"] .badge.succeeded').wait_for()
    page.get_by_role("button", name=f"Resend event {event_id}").click()
    page.locator("#sub-output").get_by_text("queued again").wait_for()
    assert receiver.wait_for(3)[2].headers["webhook-id"] == event_id
    wait_until(relay.queue_idle, 30, "the queues to drain")
    assert len(neighbour.requests) == 1  # neither the test event nor the resend reached it


def test_a_deliverys_attempts_and_the_endpoints_health_are_shown(
    watched: Watched, relay: RelayProcess, receiver_factory: Callable[..., Receiver], unique_type: str
) -> None:
    """Issue 22 items 1, 3 and 4 in the browser: the subscriptions list shows each endpoint's
    health; a delivery's Attempts button shows every attempt kept, the receiver's answer (masked)
    and the event as delivered."""
    answer = b'{"error": "order total missing", "echo": "sig=TOPSECRETSIG"}'
    receiver = receiver_factory(lambda received, n: (400, {"Content-Type": "application/json"}, answer))
    url = receiver.url + "?sig=TOPSECRETSIG"
    sub = relay.subscribe(url, eventTypes=[unique_type])
    event_id = relay.publish({"type": unique_type, "data": {"n": 1}}).json()["id"]
    receiver.wait_for(1)
    wait_until(
        lambda: relay.get(f"subscriptions/{sub['id']}/deliveries?status=failed").json()["value"], 30, "the failure"
    )
    wait_until(
        lambda: relay.get(f"subscriptions/{sub['id']}").json()["health"]["hour"]["attempts"], 30, "the health counters"
    )
    page = signed_in(watched, relay, "#/subscriptions")
    row = page.locator(f'#subscriptions tr[data-id="{sub["id"]}"]')
    row.locator("td.health").wait_for()
    assert "0% ok" in row.locator("td.health").inner_text() and "hour" in row.locator("td.health").inner_text()

    page.goto(f"{relay.base}/console#/subscriptions/{sub['id']}/deliveries")
    delivery = page.locator(f'#deliveries tr[data-event="{event_id}"]')
    delivery.get_by_role("button", name=f"Attempts of event {event_id}").click()
    detail = page.locator(f'#deliveries tr[data-detail="{event_id}"]')
    detail.get_by_text("1 attempt kept").wait_for()
    text = detail.inner_text()
    assert "HTTP 400" in text and "order total missing" in text
    assert "TOPSECRETSIG" not in text  # the callback's sig, echoed by the receiver, is masked
    detail.locator("summary").click()
    assert unique_type in detail.locator("pre.event").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
