"""`python -m relay receive`: a loopback webhook receiver that prints what arrives and whether
its Standard Webhooks signature verifies, for trying the relay out by hand."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def serve(host: str, port: int, secret: str | None, status: int = 202) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            verdict = "not checked (no --secret)"
            if secret:
                try:
                    Webhook(secret).verify(body, dict(self.headers.items()))
                    verdict = "valid"
                except WebhookVerificationError as exc:
                    verdict = f"INVALID ({exc})"
            try:
                shown: Any = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
            except ValueError:
                shown = body[:2000]
            print(
                f"--- {self.path}  webhook-id={self.headers.get('webhook-id')}  signature {verdict}\n{shown}",
                flush=True,
            )
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = _Server((host, port), Handler)
    print(f"receiving on http://{host}:{server.server_address[1]}/ (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


class _Server(ThreadingHTTPServer):
    # The relay opens up to 64 connections at once (its attempt threads); the socketserver
    # default backlog of 5 makes the kernel reset some of them, which a real receiver would not.
    request_queue_size = 256
