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
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from . import clock
from .statuses import DeliveryStatus, OperationStatus, SubscriptionStatus

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


class AdminError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


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
    return AdminError(f"{status}: {detail or response.reason}{running}", EXIT_CLIENT)


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
    items = [
        s
        for s in client.pages(_query("subscriptions", eventType=args.event_type, limit=min(args.limit, 1000)), None)
        if not args.status or s.get("status") == args.status
    ][: args.limit]
    emit(args, items, lambda: table(items, SUB_COLUMNS))
    return EXIT_OK


def subscriptions_show(client: Client, args: argparse.Namespace) -> int:
    sub = client.json("GET", f"subscriptions/{args.id}")

    def people() -> None:
        for key, value in sub.items():
            print(f"{key + ':':<20}{_cell(value, 10_000)}")

    emit(args, sub, people)
    return EXIT_OK


def subscriptions_delete(client: Client, args: argparse.Namespace) -> int:
    client.json("DELETE", f"subscriptions/{args.id}")
    emit(args, {"id": args.id, "deleted": True}, lambda: print(f"deleted subscription {args.id}"))
    return EXIT_OK


def subscriptions_activate(client: Client, args: argparse.Namespace) -> int:
    sub = client.json("POST", f"subscriptions/{args.id}/activate", {})
    emit(args, sub, lambda: print(f"subscription {args.id} is {sub.get('status')}"))
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


def deliveries_list(client: Client, args: argparse.Namespace) -> int:
    path = _query(f"subscriptions/{args.subscription}/deliveries", status=args.status, limit=min(args.limit, 1000))
    items = list(client.pages(path, args.limit))
    emit(args, items, lambda: table(items, DELIVERY_COLUMNS))
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

    subs = groups.add_parser("subscriptions", help="list, show, delete, re-activate, rotate-secret")
    sub_cmds = subs.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub_cmds.add_parser("list", parents=[common], help="list subscriptions")
    p.add_argument("--event-type", help="only those an event of this type would reach")
    p.add_argument("--status", choices=list(SubscriptionStatus))
    p.add_argument("--limit", type=int, default=10_000)
    p.set_defaults(run=subscriptions_list)
    for name, run, text in (
        ("show", subscriptions_show, "show one subscription"),
        ("delete", subscriptions_delete, "delete a subscription"),
        ("activate", subscriptions_activate, "re-activate a disabled subscription"),
        ("rotate-secret", subscriptions_rotate, "replace the signing secret; prints the new one"),
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

    dels = groups.add_parser("deliveries", help="list a subscription's deliveries")
    del_cmds = dels.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = del_cmds.add_parser("list", parents=[common], help="deliveries of a subscription, newest first")
    p.add_argument("subscription")
    p.add_argument("--status", choices=list(DeliveryStatus))
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(run=deliveries_list)

    p = groups.add_parser("replay", parents=[common], help="deliver a subscription's failed deliveries again")
    p.add_argument("subscription")
    p.add_argument("--since", required=True, type=parse_time, help="RFC 3339, or a span back from now: 24h, 30m, 7d")
    p.add_argument("--until", type=parse_time)
    p.add_argument("--all", action="store_true", help="every matching event, not only failed deliveries")
    p.add_argument("--wait", action="store_true", help="show progress until the replay ends")
    p.set_defaults(run=replay)

    types = groups.add_parser("event-types", help="list or register event types")
    type_cmds = types.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = type_cmds.add_parser("list", parents=[common], help="the registered event types")
    p.set_defaults(run=event_types_list)
    p = type_cmds.add_parser("put", parents=[common], help="register or update an event type")
    p.add_argument("name")
    p.add_argument("--description")
    p.add_argument("--schema", help="JSON Schema of data: inline JSON, a file, @file, or - for stdin")
    p.set_defaults(run=event_types_put)

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
