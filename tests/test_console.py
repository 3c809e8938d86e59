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

from tests.helpers import FUNCTION_KEY, ROOT, Receiver, RelayProcess, wait_until

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
    assert sorted(a.split("?")[0] for a in assets) == ["/api/console/app.css", "/api/console/app.js"]
    for asset in assets:
        reply = requests.get(f"http://127.0.0.1:{relay.port}{asset}", timeout=10)
        assert reply.status_code == 200
        assert reply.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert reply.headers["Content-Type"].split(";")[0] in ("text/javascript", "text/css")
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
    page.get_by_text("Replay finished: 2 deliveries queued again.", exact=True).wait_for()
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
    row.get_by_text("Published").wait_for()
    received = receiver.wait_for(1)[0]
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
    assert received.json()["type"] == unique_type
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

    from relay import stats
    from relay.retention import sweep
    from relay.storage import DELIVERIES_TABLE, Endpoints, Storage

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
