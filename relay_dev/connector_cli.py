"""`python -m relay connector`: its options and what it writes. Every option applies to both auth
variants; what cannot be honoured is refused with a message, never dropped."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from relay.http.connector.definition import EntraSignIn
from relay.http.connector.files import write_files
from relay.http.connector.parts import PUBLISHER, About

# Tenant names that are not one tenant: the relay's app registration is single-tenant, and a
# sign-in through these endpoints fails for it (AADSTS50194).
NOT_A_TENANT = ("common", "organizations", "consumers")
# A tenant id (GUID) or one of the tenant's domain names (contoso.onmicrosoft.com).
TENANT_RE = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")


def add_arguments(conn: argparse.ArgumentParser) -> None:
    conn.add_argument("--host", required=True, help="the relay's host name, e.g. myrelay.azurewebsites.net")
    conn.add_argument("--out", default="connector", type=Path)
    conn.add_argument(
        "--website",
        default=None,
        help="the publisher's website (x-ms-connector-metadata, info.contact); default: the relay's console; "
        "required with --certification",
    )
    conn.add_argument(
        "--privacy-policy",
        default=None,
        help="the privacy policy's URL; default: the website; required with --certification",
    )
    conn.add_argument("--contact-name", default=None, help="info.contact name")
    conn.add_argument("--contact-email", default=None, help="info.contact email; required with --certification")
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
    conn.add_argument(
        "--tenant",
        default=None,
        help="--auth entra: the tenant id (or a domain name of the tenant) the relay's app is registered in; "
        "required, e.g. $(az account show --query tenantId -o tsv)",
    )


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Write the files; a combination of options that cannot be honoured is a usage error (exit 2)."""
    if args.publisher and not args.certification:
        parser.error("--publisher goes with --certification")
    about = About(
        website=args.website,
        privacy_policy=args.privacy_policy,
        contact_name=args.contact_name or About.contact_name,
        contact_email=args.contact_email,
    )
    if args.certification and about.missing_for_certification():
        parser.error(
            "--certification needs the publisher's own pages and contact: "
            + ", ".join(about.missing_for_certification())
        )
    entra = None
    if args.auth == "entra":
        missing = [
            name for name, value in (("--client-id", args.client_id), ("--resource", args.resource)) if not value
        ]
        if not args.tenant:
            missing.append("--tenant (e.g. --tenant $(az account show --query tenantId -o tsv))")
        if missing:
            parser.error("--auth entra needs " + ", ".join(missing))
        if args.tenant.lower() in NOT_A_TENANT or not TENANT_RE.fullmatch(args.tenant):
            parser.error(
                f"--tenant {args.tenant!r}: name the tenant the relay's app is registered in (its id or a domain "
                "name); the app is single-tenant, and signing in through common fails (AADSTS50194)"
            )
        entra = EntraSignIn(resource=args.resource, tenant=args.tenant, client_id=args.client_id)
    elif any((args.client_id, args.resource, args.tenant)):
        parser.error("--client-id, --resource and --tenant go with --auth entra")
    written = write_files(
        args.host,
        args.out,
        about=about,
        certification=args.certification,
        publisher=args.publisher or PUBLISHER,
        host_parameter=args.host_parameter,
        entra=entra,
    )
    for path in written:
        print(f"wrote {path}")
    return 0
