"""Command line: `python -m relay dev` runs the app locally, `python -m relay connector` writes
the custom connector files, `python -m relay receive` prints the webhooks it is sent,
`python -m relay admin` operates a running relay, `python -m relay smoke` checks one after a deploy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["admin"]:
        # Its own parser: options may come before its group and after its command alike.
        from .admin import main as admin_main

        return admin_main(argv[1:])
    if argv[:1] == ["smoke"]:
        from .smoke import main as smoke_main

        return smoke_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m relay")
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="run the function app locally (HTTP and queue triggers)")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=7071)
    dev.add_argument(
        "--function-key", default=None, help="require this key on function-level routes (or set RELAY_FUNCTION_KEY)"
    )

    conn = commands.add_parser("connector", help="write the Power Platform custom connector files")
    conn.add_argument("--host", required=True, help="the relay's host name, e.g. myrelay.azurewebsites.net")
    conn.add_argument("--out", default="connector", type=Path)
    conn.add_argument(
        "--website",
        default=None,
        help="the publisher's website (x-ms-connector-metadata, info.contact); default: the relay's console",
    )
    conn.add_argument("--privacy-policy", default=None, help="the privacy policy's URL; default: the website")
    conn.add_argument("--contact-name", default=None, help="info.contact name")
    conn.add_argument("--contact-email", default=None, help="info.contact email")
    conn.add_argument(
        "--certification",
        action="store_true",
        help="add publisher and stackOwner to apiProperties.json, as a certification submission "
        "needs (paconn update refuses files that carry stackOwner)",
    )
    conn.add_argument("--publisher", default=None, help="publisher and stackOwner with --certification")
    conn.add_argument(
        "--host-parameter",
        action="store_true",
        help="ask for the relay's host in the connection (dynamichosturl), so one connector serves many relays",
    )
    conn.add_argument(
        "--auth",
        choices=("keys", "entra"),
        default="keys",
        help="keys: the connection holds a function key; entra: it signs in with Microsoft Entra ID",
    )
    conn.add_argument("--client-id", default=None, help="--auth entra: the connector's app registration (client) id")
    conn.add_argument("--resource", default=None, help="--auth entra: the relay's Application ID URI")
    conn.add_argument("--tenant", default="common", help="--auth entra: tenant id of the sign-in (default common)")

    recv = commands.add_parser("receive", help="print webhooks that arrive, verifying their signature")
    recv.add_argument("--host", default="127.0.0.1")
    recv.add_argument("--port", type=int, default=9000)
    recv.add_argument("--secret", default=None, help="the subscription's whsec_ secret")

    commands.add_parser(
        "admin",
        add_help=False,
        help="operate a running relay: subscriptions, deliveries, replay, event types, publish "
        "(python -m relay admin --help)",
    )

    commands.add_parser(
        "smoke",
        add_help=False,
        help="check a running relay after a deploy, round trip included (python -m relay smoke --help)",
    )

    args = parser.parse_args(argv)
    if args.command == "dev":
        from .devhost import run

        return run(APP_DIR, args.host, args.port, args.function_key)
    if args.command == "receive":
        from .receiver import serve

        serve(args.host, args.port, args.secret)
        return 0
    from .connector import PUBLISHER, About, write_entra_files, write_files

    if args.publisher and not args.certification:
        parser.error("--publisher goes with --certification")
    about = About(
        website=args.website,
        privacy_policy=args.privacy_policy,
        contact_name=args.contact_name or About.contact_name,
        contact_email=args.contact_email,
    )
    if args.auth == "entra":
        if not args.client_id or not args.resource:
            parser.error("--auth entra needs --client-id and --resource")
        written = write_entra_files(args.host, args.out, args.client_id, args.resource, args.tenant)
    else:
        written = write_files(
            args.host,
            args.out,
            about=about,
            certification=args.certification,
            publisher=args.publisher or PUBLISHER,
            host_parameter=args.host_parameter,
        )
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
