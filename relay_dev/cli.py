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
        from relay_dev.admin import main as admin_main

        return admin_main(argv[1:])
    if argv[:1] == ["smoke"]:
        from relay_dev.smoke import main as smoke_main

        return smoke_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m relay")
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="run the function app locally (HTTP and queue triggers)")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=7071)
    dev.add_argument(
        "--function-key", default=None, help="require this key on function-level routes (or set RELAY_FUNCTION_KEY)"
    )
    dev.add_argument(
        "--azurite",
        action="store_true",
        help="start Azurite too (data in .azurite/), stop it on exit, and use it whatever AzureWebJobsStorage says",
    )
    dev.add_argument(
        "--azurite-port", type=int, default=10000, help="Azurite's blob port; queue and table take the next two"
    )
    dev.add_argument("--azurite-data", type=Path, default=APP_DIR / ".azurite", help="where Azurite keeps its data")

    conn = commands.add_parser("connector", help="write the Power Platform custom connector files")
    from relay_dev.connector_cli import add_arguments as connector_arguments

    connector_arguments(conn)

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
        from relay_dev.devhost import run

        return run(
            APP_DIR,
            args.host,
            args.port,
            args.function_key,
            azurite_port=args.azurite_port if args.azurite else None,
            azurite_data=args.azurite_data,
        )
    if args.command == "receive":
        from relay_dev.receiver import serve

        serve(args.host, args.port, args.secret)
        return 0
    from relay_dev.connector_cli import run as write_connector

    return write_connector(conn, args)


if __name__ == "__main__":
    sys.exit(main())
