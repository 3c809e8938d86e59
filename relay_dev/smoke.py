"""`python -m relay smoke --url URL [--key KEY | --token TOKEN]`: the check to run after every deploy.

It prints one line per check and exits 0 when all hold, 1 otherwise (2 for a bad command line):

- the anonymous routes answer (`GET /api/health`, `GET /api/openapi.json`);
- a call without credentials is refused (401), and in entra mode (`--token`) so is a call that
  forges App Service Authentication's `X-MS-CLIENT-PRINCIPAL` header;
- the definition served matches the auth mode (keys: an `apiKey` security definition; entra:
  `oauth2`);
- the credentials given are accepted;
- a signed round trip: it opens a smoke run (the relay serves the receiving end itself, on its
  own public URL: `relay.http.routes.smoke`), subscribes the run's hook, publishes one `relay.smoke`
  event, waits for the receipt and verifies its Standard Webhooks signature with the secret the
  subscribe answered; then it removes the subscription and the run, also when a check failed.

Subscribers of every type (`*`) receive the `relay.smoke` event too (it is a real publish).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import urlsplit

import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

EXIT_OK = 0
EXIT_FAILED = 1
TIMEOUT = 30  # seconds one HTTP call may take
DEFAULT_WAIT = 60.0  # seconds the round trip may take (a cold start in Azure included)
EVENT_TYPE = "relay.smoke"


class CheckFailed(Exception):
    """A check that does not hold; the message is its one line."""


class Unreachable(CheckFailed):
    """Nothing answered at --url: the checks after it cannot run."""


@dataclass
class Smoke:
    origin: str
    key: str | None
    token: str | None
    wait: float = DEFAULT_WAIT
    out: Any = field(default_factory=lambda: sys.stdout)
    results: list[bool] = field(default_factory=list)
    unreachable: bool = False

    @property
    def mode(self) -> str:
        return "entra" if self.token else "keys"

    def credentials(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        return {"x-functions-key": self.key} if self.key else {}

    def call(
        self, method: str, path: str, *, body: Any = None, auth: bool = True, headers: dict[str, str] | None = None
    ) -> requests.Response:
        url = path if path.startswith(("http://", "https://")) else f"{self.origin}/api/{path}"
        sent = {"Accept": "application/json", "User-Agent": "relay-smoke", **(self.credentials() if auth else {})}
        sent.update(headers or {})
        try:
            return requests.request(method, url, json=body, headers=sent, timeout=TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            raise Unreachable(f"cannot reach the relay at {self.origin} ({type(exc).__name__})") from None

    # ---- running ----------------------------------------------------------------------------

    def check(self, name: str, run: Callable[[], str]) -> bool:
        """One check, one line: `ok   name: what held` or `FAIL name: what did not`."""
        if self.unreachable:
            self._line(False, name, "not run: the relay is unreachable")
            return False
        try:
            said, held = run(), True
        except Unreachable as exc:
            self.unreachable = True
            said, held = str(exc), False
        except CheckFailed as exc:
            said, held = str(exc), False
        except Exception as exc:  # noqa: BLE001 - an operator gets one line, never a traceback
            said, held = f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:200]}", False
        self._line(held, name, said)
        return held

    def _line(self, held: bool, name: str, said: str) -> None:
        self.results.append(held)
        print(f"{'ok  ' if held else 'FAIL'} {name}: {said}", file=self.out, flush=True)

    def run(self) -> int:
        self.check("health", self.health)
        definition: dict[str, Any] = {}
        self.check("definition", lambda: self.definition(definition))
        self.check("no credentials", self.refuses_anonymous)
        if self.mode == "entra":
            self.check("forged principal", self.refuses_forged_principal)
        self.check("credentials", self.accepts_credentials)
        self.round_trip(definition)
        failed = self.results.count(False)
        total = len(self.results)
        if failed:
            print(f"FAIL smoke: {failed} of {total} checks failed", file=self.out, flush=True)
            return EXIT_FAILED
        print(f"ok   smoke: all {total} checks hold ({self.mode} mode)", file=self.out, flush=True)
        return EXIT_OK

    # ---- the checks -------------------------------------------------------------------------

    def health(self) -> str:
        response = self.call("GET", "health", auth=False)
        doc = _json(response)
        if response.status_code != 200 or doc.get("status") != "ok":
            raise CheckFailed(f"GET /api/health answered {response.status_code} {_said(response)}")
        return "GET /api/health answered 200 without credentials"

    def definition(self, into: dict[str, Any]) -> str:
        response = self.call("GET", "openapi.json", auth=False)
        doc = _json(response)
        if response.status_code != 200 or not doc.get("paths"):
            raise CheckFailed(f"GET /api/openapi.json answered {response.status_code} {_said(response)}")
        into.update(doc)
        return "GET /api/openapi.json answered 200 without credentials; " + judge_security(doc, self.mode)

    def refuses_anonymous(self) -> str:
        response = self.call("GET", "subscriptions?limit=1", auth=False)
        if response.status_code != 401:
            raise CheckFailed(f"GET /api/subscriptions without credentials answered {response.status_code}, not 401")
        return "GET /api/subscriptions without credentials answered 401"

    def refuses_forged_principal(self) -> str:
        # What Easy Auth would hand the app for an admin, sent by the caller itself: in Azure the
        # platform replaces it; a relay that trusts it is open to anyone.
        forged = {
            "auth_typ": "aad",
            "claims": [
                {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": str(uuid.uuid4())},
                {"typ": "roles", "val": "Relay.Admin"},
            ],
            "name_typ": "name",
            "role_typ": "roles",
        }
        header = base64.b64encode(json.dumps(forged).encode()).decode()
        response = self.call("GET", "subscriptions?limit=1", auth=False, headers={"X-MS-CLIENT-PRINCIPAL": header})
        if response.status_code != 401:
            raise CheckFailed(
                f"GET /api/subscriptions with a forged X-MS-CLIENT-PRINCIPAL answered {response.status_code}, "
                "not 401: the relay trusts a header any caller can send"
            )
        return "GET /api/subscriptions with a forged X-MS-CLIENT-PRINCIPAL answered 401"

    def accepts_credentials(self) -> str:
        response = self.call("GET", "subscriptions?limit=1")
        if response.status_code != 200:
            given = "--token" if self.token else "--key" if self.key else "no --key or --token"
            raise CheckFailed(f"GET /api/subscriptions with {given} answered {response.status_code} {_said(response)}")
        return "GET /api/subscriptions with the credentials given answered 200"

    def round_trip(self, definition: dict[str, Any]) -> None:
        """Open a run, subscribe its hook, publish, await the receipt and verify it; then remove
        both, whatever happened."""
        made: dict[str, str] = {}
        try:
            self.check("round trip", lambda: self._round_trip(made))
        finally:
            if made:
                self.check("cleanup", lambda: self._cleanup(made))

    def _round_trip(self, made: dict[str, str]) -> str:
        response = self.call("POST", "smoke/runs", body={})
        if response.status_code != 201:
            raise CheckFailed(f"POST /api/smoke/runs answered {response.status_code} {_said(response)}")
        run = _json(response)
        made["run"] = str(run.get("id"))
        hook = str(run.get("notificationUrl"))
        response = self.call(
            "POST",
            "subscriptions",
            body={
                "notificationUrl": hook,
                "eventTypes": [EVENT_TYPE],
                "subjectBeginsWith": f"smoke/{made['run']}",
                "description": "python -m relay smoke (removed when the check ends)",
            },
        )
        if response.status_code != 201:
            hint = ""
            if response.status_code == 400 and "notificationUrl" in response.text:
                # The guard judged the relay's own URL like any other and refused it.
                hint = (
                    "; the relay's guard refuses its own URL: set RELAY_PUBLIC_URL to its public https URL "
                    "(or RELAY_ALLOW_PRIVATE_TARGETS=true on a local dev host)"
                )
            raise CheckFailed(
                f"subscribing the relay's own hook answered {response.status_code} {_said(response)}{hint}"
            )
        sub = _json(response)
        made["subscription"] = str(sub.get("id"))
        secret = str(sub.get("secret") or "")
        if not secret:
            raise CheckFailed("the subscribe answered no secret (was the hook subscribed before?)")
        event_id = f"smoke-{made['run']}"
        started = time.monotonic()
        response = self.call(
            "POST",
            "events",
            body={"type": EVENT_TYPE, "id": event_id, "subject": f"smoke/{made['run']}", "data": {"run": made["run"]}},
        )
        if response.status_code != 202:
            raise CheckFailed(f"POST /api/events answered {response.status_code} {_said(response)}")
        receipt = self._await_receipt(made["run"], started)
        took = time.monotonic() - started
        self._verify(receipt, secret, event_id, made["subscription"])
        return f"published {event_id}, received and verified its signature in {took:.1f} s at {_path_of(hook)}"

    def _await_receipt(self, run_id: str, started: float) -> dict[str, Any]:
        delay = 0.2
        while True:
            response = self.call("GET", f"smoke/runs/{run_id}")
            if response.status_code != 200:
                raise CheckFailed(f"GET /api/smoke/runs/{run_id} answered {response.status_code} {_said(response)}")
            receipts = _json(response).get("receipts") or []
            if receipts:
                return dict(receipts[0])
            if time.monotonic() - started > self.wait:
                raise CheckFailed(
                    f"no delivery reached the relay's own hook within {self.wait:g} s "
                    "(see the subscription's deliveries; is RELAY_PUBLIC_URL the relay's public URL?)"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    def _verify(self, receipt: dict[str, Any], secret: str, event_id: str, sub_id: str) -> None:
        headers = {str(k): str(v) for k, v in (receipt.get("headers") or {}).items()}
        body = str(receipt.get("body") or "").encode("utf-8")
        try:
            Webhook(secret).verify(body, headers, json_parse=False)
        except (WebhookVerificationError, ValueError) as exc:
            raise CheckFailed(
                f"the receipt's signature does not verify with the subscription's secret ({exc})"
            ) from None
        if headers.get("webhook-id") != event_id:
            raise CheckFailed(f"the receipt is of {headers.get('webhook-id')!r}, not the event published ({event_id})")
        try:
            doc = json.loads(body)
        except ValueError:
            raise CheckFailed("the receipt's body is not JSON") from None
        if not isinstance(doc, dict) or doc.get("type") != EVENT_TYPE or doc.get("id") != event_id:
            raise CheckFailed("the receipt's body is not the CloudEvent published")
        if receipt.get("subscriptionId") != sub_id:
            raise CheckFailed("the receipt was signed for another subscription")

    def _cleanup(self, made: dict[str, str]) -> str:
        removed, failed = [], []
        for what, path in (("subscription", "subscriptions/{}"), ("run", "smoke/runs/{}")):
            if what not in made:
                continue
            try:
                response = self.call("DELETE", path.format(made[what]))
            except Unreachable as exc:
                failed.append(f"{what} {made[what]} ({exc})")
                continue
            if response.status_code == 200:
                removed.append(f"{what} {made[what]}")
            else:
                failed.append(f"{what} {made[what]} ({response.status_code})")
        if failed:
            raise CheckFailed("could not remove " + ", ".join(failed) + "; remove them by hand")
        return "removed " + " and ".join(removed)


def judge_security(doc: dict[str, Any], mode: str) -> str:
    """Whether a definition's security fits the auth mode; CheckFailed when it does not."""
    kinds = sorted({str(d.get("type")) for d in (doc.get("securityDefinitions") or {}).values() if isinstance(d, dict)})
    wanted = "oauth2" if mode == "entra" else "apiKey"
    if kinds == [wanted]:
        return f"security {wanted} ({mode} mode)"
    hint = " (run with --token for a relay in entra mode)" if kinds == ["oauth2"] else ""
    raise CheckFailed(
        f"the definition's security is {', '.join(kinds) or 'missing'}, not {wanted} as {mode} mode needs{hint}"
    )


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        doc = response.json()
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _said(response: requests.Response) -> str:
    """The problem's detail, or a hint that the answer is not the relay's."""
    doc = _json(response)
    detail = " ".join(str(doc.get("detail") or doc.get("title") or "").split())[:200]
    if detail:
        return f"({detail})"
    return "(not a JSON answer: is --url a relay?)" if response.content else ""


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path.rsplit('/', 1)[0]}/…"


class _Parser(argparse.ArgumentParser):
    """Exit 1 on a usage error too (contract: 0 when every check holds, 1 otherwise): a deploy
    pipeline that runs the check with a wrong argument must fail, whatever it makes of exit 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_FAILED, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m relay smoke",
        description="Check a running relay after a deploy: anonymous routes, refused credentials, the "
        "definition, and a signed round trip through the relay's own receiving hook. "
        "Exit 0 when every check holds, 1 otherwise.",
    )
    parser.add_argument("--url", default=None, help="the relay, e.g. https://myrelay.azurewebsites.net (or RELAY_URL)")
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument("--key", default=None, help="a function key, keys mode (default: RELAY_ADMIN_KEY)")
    auth.add_argument(
        "--token",
        default=None,
        help="an Entra ID access token, entra mode (roles Relay.Admin, or Publisher+Subscriber)",
    )
    parser.add_argument("--wait", type=float, default=DEFAULT_WAIT, help="seconds the round trip may take")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    url = (args.url or os.environ.get("RELAY_URL") or "").rstrip("/")
    if not url:
        parser.error("--url is required (or set RELAY_URL)")
    origin = url[:-4] if url.endswith("/api") else url
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        parser.error(f"--url must be an http(s) URL such as https://myrelay.azurewebsites.net, not {url!r}")
    key = args.key or (None if args.token else os.environ.get("RELAY_ADMIN_KEY"))
    try:
        return Smoke(origin, key, args.token, wait=args.wait).run()
    except KeyboardInterrupt:
        print("FAIL smoke: interrupted", flush=True)
        return EXIT_FAILED
