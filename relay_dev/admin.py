"""`python -m relay admin`: the operator console's tasks from a shell or a script.

It calls a running relay's HTTP API, with a function key (`--key` or `RELAY_ADMIN_KEY`) or an
Entra ID bearer token (`--token`). Tables for people, `--json` for scripts. Exit codes a script
can rely on (see EXIT_*), and a one-line message on stderr, never a traceback, when it fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import requests

from relay.core import clock
from relay.core.matching import is_name
from relay.core.statuses import DeliveryStatus, OperationStatus, SubscriptionStatus
from relay_dev import filtertext

EXIT_OK = 0
EXIT_CLIENT = 1  # the relay refused the request: 400, 404, 409, 413, ...
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_AUTH = 3  # 401 or 403: no, wrong or insufficient credentials
EXIT_SERVER = 4  # the relay failed: 5xx
EXIT_UNREACHABLE = 5  # nothing answered at --url
EXIT_REPLAY_FAILED = 6  # replay --wait: the operation ended in a problem

DEFAULT_URL = "http://127.0.0.1:7071"
TIMEOUT = 30
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
# The most delivery rows one listing reads to sort them newest first (the API pages in its own order).
READ_CAP = 10_000


class AdminError(Exception):
    def __init__(self, message: str, code: int, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status  # the relay's HTTP status, where it answered one


# ---- the relay's API ----------------------------------------------------------------------------


class Client:
    def __init__(self, url: str, key: str | None, token: str | None) -> None:
        url = url.rstrip("/")
        self.origin = url[:-4] if url.endswith("/api") else url
        parts = urlsplit(self.origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AdminError(f"--url must be an http(s) URL such as {DEFAULT_URL}, not {url!r}", EXIT_USAGE)
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        self.session.headers["User-Agent"] = "relay-admin"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        elif key:
            self.session.headers["x-functions-key"] = key

    def url(self, path: str) -> str:
        """`path` under /api, or a Location/nextLink the relay gave (followed on --url's host)."""
        if path.startswith(("http://", "https://")):
            parts = urlsplit(path)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            return self.origin + path
        return f"{self.origin}/api/{path.lstrip('/')}"

    def call(self, method: str, path: str, body: Any = None) -> requests.Response:
        try:
            response = self.session.request(
                method, self.url(path), timeout=TIMEOUT, json=body if body is not None else None
            )
        except requests.RequestException as exc:
            reason = type(exc).__name__
            raise AdminError(f"cannot reach the relay at {self.origin} ({reason})", EXIT_UNREACHABLE) from None
        if response.status_code >= 400:
            raise _problem(response)
        return response

    def json(self, method: str, path: str, body: Any = None) -> Any:
        return self.read(self.call(method, path, body))

    def read(self, response: requests.Response) -> Any:
        try:
            return response.json() if response.content else {}
        except ValueError:
            raise AdminError(
                f"the relay answered {response.status_code} with something that is not JSON "
                f"(is {self.origin} a relay?)",
                EXIT_SERVER,
            ) from None

    def pages(self, path: str, limit: int | None) -> Iterator[dict[str, Any]]:
        """Every item of a listing, following nextLink, at most `limit`."""
        count = 0
        next_path: str | None = path
        while next_path:
            page = self.json("GET", next_path)
            for item in page.get("value", []):
                yield item
                count += 1
                if limit is not None and count >= limit:
                    return
            next_path = page.get("nextLink")


def _problem(response: requests.Response) -> AdminError:
    detail = ""
    try:
        doc = response.json()
        if isinstance(doc, dict):
            detail = str(doc.get("detail") or doc.get("title") or "")
    except ValueError:
        pass
    status = response.status_code
    detail = " ".join(detail.split())[:300]
    if status == 401:
        return AdminError(
            f"the relay refused the credentials (401): give a function key with --key or "
            f"RELAY_ADMIN_KEY, or a token with --token{': ' + detail if detail else ''}",
            EXIT_AUTH,
        )
    if status == 403:
        return AdminError(f"not allowed (403): {detail or 'your roles do not allow this'}", EXIT_AUTH)
    if status >= 500:
        return AdminError(f"the relay failed ({status}): {detail or 'try again later'}", EXIT_SERVER)
    running = (
        f" (running: {response.headers['Location']})" if status == 409 and response.headers.get("Location") else ""
    )
    return AdminError(f"{status}: {detail or response.reason}{running}", EXIT_CLIENT, status)


# ---- output -------------------------------------------------------------------------------------


def _cell(value: Any, width: int = 70) -> str:
    text = "" if value is None else ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], out: Any = None) -> None:
    out = out or sys.stdout
    if not rows:
        print("(none)", file=out)
        return
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(title), *(len(c[i]) for c in cells)) for i, (_, title) in enumerate(columns)]
    print("  ".join(title.ljust(w) for (_, title), w in zip(columns, widths, strict=True)).rstrip(), file=out)
    for line in cells:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), file=out)


def truncated(text: str) -> None:
    """Say on stderr that a listing stopped at --limit (stdout stays a table or JSON)."""
    print(f"note: {text}", file=sys.stderr)


def emit(args: argparse.Namespace, doc: Any, people: Any) -> None:
    """`--json`: the API's document; otherwise what `people` prints."""
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        people()


# ---- commands -----------------------------------------------------------------------------------

SUB_COLUMNS = [
    ("id", "ID"),
    ("status", "STATUS"),
    ("eventTypes", "EVENT TYPES"),
    ("notificationUrl", "URL"),
    ("disabledReason", "REASON"),
]
DELIVERY_COLUMNS = [
    ("eventId", "EVENT"),
    ("eventType", "TYPE"),
    ("status", "STATUS"),
    ("attempts", "ATTEMPTS"),
    ("lastStatusCode", "CODE"),
    ("lastAttemptAt", "LAST ATTEMPT"),
    ("nextAttemptAt", "NEXT ATTEMPT"),
    ("lastError", "LAST ERROR"),
]


def _query(path: str, **params: Any) -> str:
    given = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urlencode(given)}" if given else path


def subscriptions_list(client: Client, args: argparse.Namespace) -> int:
    items: list[dict[str, Any]] = []
    more = False
    # One more than asked for, to know whether --limit cut the list.
    path = _query("subscriptions", eventType=args.event_type, limit=min(args.limit + 1, 1000))
    for sub in client.pages(path, None):
        if args.status and sub.get("status") != args.status:
            continue
        if len(items) == args.limit:
            more = True
            break
        items.append(sub)
    if more:
        truncated(f"showing the first {len(items)} subscriptions; there are more: raise --limit to see them")
    emit(args, items, lambda: table(items, SUB_COLUMNS))
    return EXIT_OK


def subscriptions_show(client: Client, args: argparse.Namespace) -> int:
    sub = client.json("GET", f"subscriptions/{args.id}")

    def people() -> None:
        for key, value in sub.items():
            shown = filtertext.describe(value) if key == "filters" else _cell(value, 10_000)
            print(f"{key + ':':<20}{shown}")

    emit(args, sub, people)
    return EXIT_OK


def subscriptions_subscribe(client: Client, args: argparse.Namespace) -> int:
    """Subscribe a URL (again: the same id, the new filters). Prints the secret when it is new."""
    body: dict[str, Any] = {"notificationUrl": args.notification_url}
    if args.event_type:
        body["eventTypes"] = args.event_type
    for field, value in (
        ("subjectBeginsWith", args.subject_begins_with),
        ("subjectEndsWith", args.subject_ends_with),
        ("description", args.description),
    ):
        if value is not None:
            body[field] = value
    if args.max_per_second is not None:
        body["maxPerSecond"] = args.max_per_second
    if args.filters is not None:
        body["filters"] = _json_arg(args.filters, "--filters")
    if args.filter:
        filters = body.setdefault("filters", {})
        if not isinstance(filters, dict):
            raise AdminError("--filters must be a JSON object to add --filter conditions to it", EXIT_USAGE)
        filters["data"] = [*filters.get("data", []), *args.filter]
    sub = client.json("POST", "subscriptions", body)

    def people() -> None:
        limit = f", at most {sub['maxPerSecond']:g} per second" if "maxPerSecond" in sub else ""
        print(f"subscribed {sub.get('id')} to {', '.join(sub.get('eventTypes', []))}{limit} ({sub.get('status')})")
        if sub.get("filters"):
            print(f"filters: {filtertext.describe(sub['filters'])}")
        if sub.get("secret"):
            print(f"signing secret (shown once; give it to the receiver):\n{sub['secret']}")

    emit(args, sub, people)
    return EXIT_OK


def _must_exist(client: Client, path: str, what: str) -> None:
    """The relay answers 200 to a DELETE of what is not there (it is gone either way); a person
    who typed a wrong id must hear so."""
    try:
        client.call("GET", path)
    except AdminError as exc:
        if exc.status == 404:
            raise AdminError(f"{what} not found: nothing deleted", EXIT_CLIENT, 404) from None
        raise


def subscriptions_delete(client: Client, args: argparse.Namespace) -> int:
    _must_exist(client, f"subscriptions/{quote(args.id, safe='')}", f"subscription {args.id}")
    client.json("DELETE", f"subscriptions/{args.id}")
    emit(args, {"id": args.id, "deleted": True}, lambda: print(f"deleted subscription {args.id}"))
    return EXIT_OK


def per_second(text: str) -> float:
    """--max-per-second: a number from 0.1 to 1000 (the relay's own bounds, said before asking it)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.1 <= value <= 1000:
        raise argparse.ArgumentTypeError("must be from 0.1 to 1000")
    return value


def subscriptions_activate(client: Client, args: argparse.Namespace) -> int:
    sub = client.json("POST", f"subscriptions/{args.id}/activate", {})
    emit(args, sub, lambda: print(f"subscription {args.id} is {sub.get('status')}"))
    return EXIT_OK


def subscriptions_pause(client: Client, args: argparse.Namespace) -> int:
    sub = client.json("POST", f"subscriptions/{quote(args.id, safe='')}/pause", {})
    emit(args, sub, lambda: print(f"subscription {args.id} is {sub.get('status')}: its deliveries are held"))
    return EXIT_OK


def subscriptions_resume(client: Client, args: argparse.Namespace) -> int:
    sub = client.json("POST", f"subscriptions/{quote(args.id, safe='')}/resume", {})
    emit(args, sub, lambda: print(f"subscription {args.id} is {sub.get('status')}: held deliveries go out in order"))
    return EXIT_OK


def subscriptions_test(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.type:
        body["type"] = args.type
    if args.data is not None:
        body["data"] = _json_arg(args.data, "--data")
    doc = client.json("POST", f"subscriptions/{quote(args.id, safe='')}/test", body)
    emit(args, doc, lambda: print(f"test event {doc.get('id')} sent to subscription {args.id} alone"))
    return EXIT_OK


def deliveries_resend(client: Client, args: argparse.Namespace) -> int:
    path = f"subscriptions/{quote(args.subscription, safe='')}/deliveries/{quote(args.event, safe='')}/resend"
    response = client.call("POST", path, {})
    op = client.read(response)
    location = response.headers.get("Location", "")
    emit(
        args,
        {**op, "location": location},
        lambda: print(
            f"event {args.event} queued again for subscription {args.subscription} (operation {op.get('id')})"
        ),
    )
    return EXIT_OK


def subscriptions_rotate(client: Client, args: argparse.Namespace) -> int:
    # Without --grace the relay's default applies (the old secret signs beside the new one for a day).
    body = {} if args.grace is None else {"graceSeconds": args.grace}
    doc = client.json("POST", f"subscriptions/{args.id}/secret", body)

    def show() -> None:
        ends = doc.get("previousSecretExpiresAt")
        grace = f"the previous secret also signs until {ends}" if ends else "the previous secret signs nothing more"
        print(f"new signing secret of {args.id} (shown once; give it to the receiver; {grace}):\n{doc.get('secret')}")

    emit(args, doc, show)
    return EXIT_OK


def _newest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """By last attempt, newest first; a delivery not yet tried is newer than any tried one."""
    never = datetime.max.replace(tzinfo=UTC)

    def key(row: dict[str, Any]) -> datetime:
        try:
            return clock.parse_rfc3339(row["lastAttemptAt"]) if row.get("lastAttemptAt") else never
        except ValueError:
            return never

    return sorted(rows, key=key, reverse=True)


def deliveries_list(client: Client, args: argparse.Namespace) -> int:
    # The API lists in its storage order: read the log (up to READ_CAP rows) and sort it here.
    path = _query(f"subscriptions/{args.subscription}/deliveries", status=args.status, limit=1000)
    read = list(client.pages(path, READ_CAP + 1))
    capped = len(read) > READ_CAP
    rows = _newest_first(read[:READ_CAP])
    items = rows[: args.limit]
    if len(rows) > len(items) or capped:
        total = f"the first {READ_CAP} read" if capped else str(len(rows))
        truncated(f"showing {len(items)} of {total} deliveries, newest first; raise --limit to see more")
    emit(args, items, lambda: table(items, DELIVERY_COLUMNS))
    return EXIT_OK


FAILURE_COLUMNS = [
    ("lastAttemptAt", "LAST ATTEMPT"),
    ("subscriptionId", "SUBSCRIPTION"),
    ("eventId", "EVENT"),
    ("eventType", "TYPE"),
    ("attempts", "ATTEMPTS"),
    ("lastStatusCode", "CODE"),
    ("notificationUrl", "URL"),
    ("lastError", "LAST ERROR"),
]


def failures(client: Client, args: argparse.Namespace) -> int:
    """Deliveries that failed (and stay failed) since --since, across every subscription.

    Within the last day the relay's counters (GET /api/stats?window=24h) name the subscriptions
    with failures, so only their logs are read; further back every subscription's log is read.
    """
    since = clock.parse_rfc3339(args.since)
    subs = {s["id"]: s for s in client.pages("subscriptions?limit=1000", None)}
    if clock.utcnow() - since <= timedelta(hours=23):
        counts = client.json("GET", "stats?window=24h").get("bySubscription", {})
        candidates = [sid for sid, c in counts.items() if c.get("failed")]
    else:
        candidates = list(subs)
    found: list[dict[str, Any]] = []
    for sid in candidates:
        try:
            rows = client.pages(f"subscriptions/{sid}/deliveries?status=failed&limit=1000", READ_CAP)
            for row in rows:
                at = row.get("lastAttemptAt")
                if at and clock.parse_rfc3339(at) >= since:
                    url = subs.get(sid, {}).get("notificationUrl")
                    found.append({"subscriptionId": sid, "notificationUrl": url, **row})
        except AdminError as exc:
            if exc.status != 404:  # a subscription deleted since it was counted
                raise
    rows_out = _newest_first(found)
    items = rows_out[: args.limit]
    if len(rows_out) > len(items):
        truncated(f"showing {len(items)} of {len(rows_out)} failed deliveries, newest first; raise --limit to see more")
    emit(args, items, lambda: table(items, FAILURE_COLUMNS))
    return EXIT_OK


def parse_time(text: str) -> str:
    """RFC 3339, or a span back from now: `30m`, `6h`, `2d`."""
    match = _RELATIVE.match(text.strip())
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return clock.rfc3339(clock.utcnow() - timedelta(**{unit: int(match.group(1))}))
    try:
        return clock.rfc3339(clock.parse_rfc3339(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: give RFC 3339 (2026-01-31T12:00:00Z) or a span back from now (24h, 30m, 7d)"
        ) from None


def replay(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"since": args.since, "status": "all" if args.all else "failed"}
    if args.until:
        body["until"] = args.until
    if args.event_type:
        body["eventType"] = args.event_type
    response = client.call("POST", f"subscriptions/{args.subscription}/replay", body)
    location = response.headers.get("Location", "")
    op = client.read(response)
    if not args.wait:
        emit(
            args,
            {**op, "location": location},
            lambda: print(f"replay {op.get('id')} started; follow it at {location}, or run with --wait"),
        )
        return EXIT_OK
    progress = Progress(sys.stderr, enabled=not args.json)
    started = time.monotonic()
    try:
        while True:
            progress.show(time.monotonic() - started)
            answer = client.call("GET", location)
            op = client.read(answer)
            if answer.status_code != 202:
                break
            delay = float(answer.headers.get("Retry-After") or 1)
            _sleep(min(max(delay, 0.2), 10), progress, started)
            location = answer.headers.get("Location") or location
    except AdminError as exc:
        progress.done("failed")
        if exc.code == EXIT_CLIENT or exc.code == EXIT_SERVER:
            raise AdminError(f"the replay did not finish: {exc}", EXIT_REPLAY_FAILED) from None
        raise
    progress.done(op.get("status", "done"))
    emit(
        args,
        op,
        lambda: print(f"replay {op.get('id')} {op.get('status')}: {op.get('replayed', 0)} deliveries queued again"),
    )
    return EXIT_OK if op.get("status") == OperationStatus.SUCCEEDED else EXIT_REPLAY_FAILED


def _sleep(seconds: float, progress: Progress, started: float) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.2))
        progress.show(time.monotonic() - started)


class Progress:
    """A bar on stderr while the operation runs. The API tells only running or done, so the bar
    sweeps (it shows that work goes on, not how much is left) beside the elapsed time."""

    WIDTH = 24

    def __init__(self, out: Any, enabled: bool = True) -> None:
        self.out, self.enabled, self.tick = out, enabled, 0
        self.tty = bool(getattr(out, "isatty", lambda: False)())

    def show(self, elapsed: float) -> None:
        if not self.enabled:
            return
        self.tick += 1
        pos = self.tick % (2 * self.WIDTH - 8)
        pos = pos if pos < self.WIDTH - 4 else 2 * self.WIDTH - 8 - pos
        bar = " " * pos + "####" + " " * (self.WIDTH - 4 - pos)
        if self.tty:
            self.out.write(f"\rreplay [{bar}] running {elapsed:5.1f}s")
        elif self.tick % 5 == 1:  # a log, not a terminal: a line now and then
            self.out.write(f"replay running {elapsed:.1f}s\n")
        self.out.flush()

    def done(self, status: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.out.write(f"\rreplay [{'#' * self.WIDTH}] {status}{' ' * 12}\n")
        else:
            self.out.write(f"replay {status}\n")
        self.out.flush()


def overview(client: Client, args: argparse.Namespace) -> int:
    """The console's overview: subscriptions by status, outcomes in the window, the most failing
    and the slowest subscriptions (GET /api/stats)."""
    doc = client.json("GET", f"stats?window={args.window}")

    def people() -> None:
        subs = {s["id"]: s.get("notificationUrl") for s in client.pages("subscriptions?limit=1000", None)}
        counts = doc.get("subscriptions", {})
        more = "" if counts.get("complete", True) else "+"
        totals = doc.get("totals", {})
        print(f"{counts.get('active', 0)}{more} active subscriptions, {counts.get('disabled', 0)}{more} disabled")
        print(
            f"last {args.window}: {totals.get('succeeded', 0)} succeeded, {totals.get('retrying', 0)} retrying, "
            f"{totals.get('failed', 0)} failed"
        )
        for title, key, columns in (
            ("most failing", "failing", [("failed", "FAILED"), ("retrying", "RETRYING"), ("succeeded", "SUCCEEDED")]),
            ("slowest", "slowest", [("averageMs", "AVERAGE MS"), ("maxMs", "MAX MS")]),
        ):
            print(f"\n{title}:")
            rows = [{**r, "url": subs.get(r["id"], "(deleted)")} for r in doc.get(key, [])]
            table(rows, [("id", "SUBSCRIPTION"), *columns, ("url", "URL")])

    emit(args, doc, people)
    return EXIT_OK


def event_types_show(client: Client, args: argparse.Namespace) -> int:
    doc = client.json("GET", f"event-types/{quote(args.name, safe='')}")

    def people() -> None:
        for key, value in doc.items():
            if key != "schema":
                print(f"{key + ':':<14}{_cell(value, 10_000)}")
        schema = doc.get("schema")
        print(f"{'schema:':<14}{'(none: any data)' if schema is None else ''}")
        if schema is not None:
            print(json.dumps(schema, indent=2, ensure_ascii=False))

    emit(args, doc, people)
    return EXIT_OK


def event_types_delete(client: Client, args: argparse.Namespace) -> int:
    path = f"event-types/{quote(args.name, safe='')}"
    _must_exist(client, path, f"event type {args.name}")
    client.json("DELETE", path)
    emit(args, {"name": args.name, "deleted": True}, lambda: print(f"deleted event type {args.name}"))
    return EXIT_OK


def event_types_list(client: Client, args: argparse.Namespace) -> int:
    items = client.json("GET", "event-types").get("value", [])
    rows = [{**t, "hasSchema": "yes" if t.get("schema") is not None else "no"} for t in items]
    emit(args, items, lambda: table(rows, [("name", "NAME"), ("hasSchema", "SCHEMA"), ("description", "DESCRIPTION")]))
    return EXIT_OK


def _json_arg(text: str, what: str) -> Any:
    """Inline JSON, `@file`, a path to a file, or `-` for standard input."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@") or (not text.lstrip().startswith(("{", "[", '"')) and Path(text).is_file()):
        path = Path(text[1:] if text.startswith("@") else text)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise AdminError(f"{what}: cannot read {path}: {exc.strerror}", EXIT_USAGE) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise AdminError(f"{what} is not valid JSON: {exc}", EXIT_USAGE) from None


def event_types_put(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.description is not None:
        body["description"] = args.description
    if args.schema is not None:
        body["schema"] = _json_arg(args.schema, "--schema")
    response = client.call("PUT", f"event-types/{args.name}", body)
    doc = client.read(response)
    verb = "registered" if response.status_code == 201 else "updated"
    emit(args, doc, lambda: print(f"{verb} event type {doc.get('name')}"))
    return EXIT_OK


def publish(client: Client, args: argparse.Namespace) -> int:
    event: dict[str, Any] = {"type": args.type, "data": _json_arg(args.data, "--data")}
    for name in ("id", "subject", "source"):
        if getattr(args, name):
            event[name] = getattr(args, name)
    doc = client.json("POST", "events", event)
    emit(args, doc, lambda: print(f"published {args.type} as event {doc.get('id')}"))
    return EXIT_OK


# ---- the command line ---------------------------------------------------------------------------


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def event_type_name(text: str) -> str:
    """One event type name: the listing answers which subscriptions an event of it would reach."""
    if not is_name(text):
        if "*" in text:
            raise argparse.ArgumentTypeError(
                f"{text!r}: patterns such as order.* are not allowed here; give one event type name "
                "(the list shows the subscriptions an event of that type would reach, patterns included)"
            )
        raise argparse.ArgumentTypeError(f"{text!r} is not an event type name (1 to 128 of A-Z a-z 0-9 . _ - :)")
    return text


def build_parser() -> argparse.ArgumentParser:
    # The connection options and --json are taken before the group and after the command alike.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help=f"the relay (default: RELAY_URL, else {DEFAULT_URL})")
    auth = common.add_mutually_exclusive_group()
    auth.add_argument("--key", default=argparse.SUPPRESS, help="a function key (default: RELAY_ADMIN_KEY)")
    auth.add_argument("--token", default=argparse.SUPPRESS, help="an Entra ID access token (RELAY_AUTH=entra)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts")

    parser = argparse.ArgumentParser(
        prog="python -m relay admin",
        parents=[common],
        description="Operate a running relay: subscriptions, deliveries, replay, event types and test events.",
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")

    subs = groups.add_parser(
        "subscriptions", help="list, show, subscribe/update, delete, re-activate, rotate-secret, pause, resume, test"
    )
    sub_cmds = subs.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub_cmds.add_parser("list", parents=[common], help="list subscriptions")
    p.add_argument("--event-type", type=event_type_name, help="only those an event of this type would reach")
    # The values, not the enum members: argparse prints the choices' repr when one is wrong.
    p.add_argument("--status", choices=[s.value for s in SubscriptionStatus])
    p.add_argument("--limit", type=positive, default=10_000)
    p.set_defaults(run=subscriptions_list)
    for name, run, text in (
        ("show", subscriptions_show, "show one subscription"),
        ("delete", subscriptions_delete, "delete a subscription"),
        ("activate", subscriptions_activate, "re-activate a disabled subscription"),
        ("rotate-secret", subscriptions_rotate, "replace the signing secret; prints the new one"),
        ("pause", subscriptions_pause, "hold a subscription's deliveries (neither attempted nor failed)"),
        ("resume", subscriptions_resume, "deliver what was held, in order, and go on delivering"),
    ):
        p = sub_cmds.add_parser(name, parents=[common], help=text)
        p.add_argument("id")
        p.set_defaults(run=run)
        if name == "rotate-secret":
            p.add_argument(
                "--grace",
                type=int,
                metavar="SECONDS",
                help="how long the previous secret keeps signing beside the new one "
                "(0 to 604800; 0 after a leak; default: the relay's, a day)",
            )
    p = sub_cmds.add_parser("test", parents=[common], help="send one test event to this subscription alone")
    p.add_argument("id")
    p.add_argument("--type", type=event_type_name, help="one of its event types (default: relay.test)")
    p.add_argument("--data", help="the data: inline JSON, a file, @file, or - for stdin (default: an example)")
    p.set_defaults(run=subscriptions_test)
    for name in ("subscribe", "update"):  # update: subscribing the same URL again changes it
        p = sub_cmds.add_parser(name, parents=[common], help="subscribe a URL, or change what it receives")
        p.add_argument("notification_url", metavar="URL")
        p.add_argument("--event-type", action="append", help="a type, a prefix such as order.*, or * (repeatable)")
        p.add_argument("--subject-begins-with")
        p.add_argument("--subject-ends-with")
        p.add_argument("--description")
        p.add_argument(
            "--filter",
            action="append",
            type=filtertext.parse_filter,
            help="a condition on data (repeatable, all must hold): 'total>100', 'status=paid', "
            "'country in DE,AT', 'sku~gold', 'coupon?'",
        )
        p.add_argument("--filters", help='filters as JSON ({"data": [...]}): inline, a file, @file, or - for stdin')
        p.add_argument(
            "--max-per-second", type=per_second, help="start at most this many deliveries a second (0.1-1000)"
        )
        p.set_defaults(run=subscriptions_subscribe)

    dels = groups.add_parser("deliveries", help="list a subscription's deliveries, resend one")
    del_cmds = dels.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = del_cmds.add_parser("list", parents=[common], help="deliveries of a subscription, newest first")
    p.add_argument("subscription")
    p.add_argument("--status", choices=[s.value for s in DeliveryStatus])
    p.add_argument("--limit", type=positive, default=100, help="show at most this many (default 100)")
    p.set_defaults(run=deliveries_list)
    p = del_cmds.add_parser("resend", parents=[common], help="deliver one event again to this subscription alone")
    p.add_argument("subscription")
    p.add_argument("event", metavar="EVENT_ID")
    p.set_defaults(run=deliveries_resend)

    p = groups.add_parser("failures", parents=[common], help="deliveries that failed across the relay, newest first")
    p.add_argument(
        "--since", type=parse_time, default="1h", help="RFC 3339, or a span back from now: 1h (default), 30m, 7d"
    )
    p.add_argument("--limit", type=positive, default=100, help="show at most this many (default 100)")
    p.set_defaults(run=failures)

    p = groups.add_parser("replay", parents=[common], help="deliver a subscription's failed deliveries again")
    p.add_argument("subscription")
    p.add_argument("--since", required=True, type=parse_time, help="RFC 3339, or a span back from now: 24h, 30m, 7d")
    p.add_argument("--until", type=parse_time)
    p.add_argument("--all", action="store_true", help="every matching event, not only failed deliveries")
    p.add_argument("--event-type", help="only events of this type: a name, or a prefix pattern such as order.*")
    p.add_argument("--wait", action="store_true", help="show progress until the replay ends")
    p.set_defaults(run=replay)

    p = groups.add_parser("overview", parents=[common], help="counts and the most failing and slowest subscriptions")
    p.add_argument("--window", choices=["1h", "24h"], default="1h")
    p.set_defaults(run=overview)

    types = groups.add_parser("event-types", help="list, show, register or delete event types")
    type_cmds = types.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = type_cmds.add_parser("list", parents=[common], help="the registered event types")
    p.set_defaults(run=event_types_list)
    p = type_cmds.add_parser("put", parents=[common], help="register or update an event type")
    p.add_argument("name")
    p.add_argument("--description")
    p.add_argument("--schema", help="JSON Schema of data: inline JSON, a file, @file, or - for stdin")
    p.set_defaults(run=event_types_put)
    p = type_cmds.add_parser("show", parents=[common], help="one event type with its schema")
    p.add_argument("name")
    p.set_defaults(run=event_types_show)
    p = type_cmds.add_parser("delete", parents=[common], help="remove an event type from the catalogue")
    p.add_argument("name")
    p.set_defaults(run=event_types_delete)

    p = groups.add_parser("publish", parents=[common], help="publish a (test) event")
    p.add_argument("type")
    p.add_argument("--data", required=True, help="the event's data: inline JSON, a file, @file, or - for stdin")
    p.add_argument("--subject")
    p.add_argument("--id")
    p.add_argument("--source")
    p.set_defaults(run=publish)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    url = getattr(args, "url", None) or os.environ.get("RELAY_URL") or DEFAULT_URL
    token = getattr(args, "token", None)
    key = getattr(args, "key", None) or (None if token else os.environ.get("RELAY_ADMIN_KEY"))
    try:
        code: int = args.run(Client(url, key, token), args)
        return code
    except AdminError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a script gets one line and a code, never a traceback
        print(f"error: unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return EXIT_CLIENT
