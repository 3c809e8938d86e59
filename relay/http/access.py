"""Who may do what: the Microsoft Entra ID mode of CONTRACT section 4 (`RELAY_AUTH=entra`).

In keys mode the Functions host checks the function key and every caller may do everything;
nothing here runs. In entra mode the HTTP functions are anonymous to the host and this module,
called from the one dispatch point (`relay.http.api.route`), requires a principal:

- The principal is App Service Authentication's (Easy Auth) `X-MS-CLIENT-PRINCIPAL` header,
  base64 JSON `{auth_typ, name_typ, role_typ, claims: [{typ, val}]}`. It is trusted only when
  the platform's authentication is on (`WEBSITE_AUTH_ENABLED=True`): then the platform has
  validated the token and replaced whatever header the caller sent. Without the flag anyone can
  send the header, so it is ignored and the call is a 401. The local dev host plays Easy Auth
  (`relay_dev.easyauth`) and hands over the principal the same way, so this is the one code path.
- App roles (the token's `roles` claim) decide which operations a caller may use (`RULES`,
  keyed by the route handler's name); a call the roles do not allow is a 403.
- Subscriptions are owned by the principal that created them, keyed on its tenant and object
  id (`oid:{tid}:{oid}`), or for an application token without an `oid`, on its tenant and client
  id (`app:{tid}:{azp|appid}`): the prefixes keep users and applications apart, and a `sub` is
  never read as an object id (anyone can have a token whose `sub` equals someone's `oid`). A
  token with neither may publish and read, but is refused (403) wherever ownership matters. A
  subscriber reaches only its own; another owner's is a 404, so its existence is not revealed.
  An admin reaches all. The check for routes with a subscription id is made here, before the
  handler; lists and subscribe take the caller's scope (`owner_scope`).
- Earlier releases keyed ownership on the bare `oid`. Such subscriptions are migrated to the
  namespaced key by their owner's first call to this process (`_adopt_legacy`): only a token
  carrying that very `oid` moves them, and it moves them once.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from relay.core.errors import Forbidden, NotFound, Unauthorized
from relay.core.settings import get_settings

PUBLISHER = "Relay.Publisher"
SUBSCRIBER = "Relay.Subscriber"
ADMIN = "Relay.Admin"
ROLES = (PUBLISHER, SUBSCRIBER, ADMIN)


class Request(Protocol):
    """What the checks read of a call (`relay.http.api.Request` has it); a protocol, so that the
    request parser may depend on this module and not the other way round."""

    url: str
    headers: Mapping[str, str]
    route: Mapping[str, str]
    principal: Principal | None


PRINCIPAL_HEADER = "x-ms-client-principal"
# The headers Easy Auth sets for the application; a caller's own copies never count.
EASY_AUTH_HEADERS = (
    PRINCIPAL_HEADER,
    "x-ms-client-principal-id",
    "x-ms-client-principal-name",
    "x-ms-client-principal-idp",
    "x-ms-token-aad-access-token",
    "x-ms-token-aad-id-token",
)
PLATFORM_FLAG = "WEBSITE_AUTH_ENABLED"

# Paths anyone may call in entra mode: the same list is Easy Auth's `excludedPaths` in
# infra/modules/easyauth.bicep (a test compares them). A path and everything below it.
# The console is excluded as `/api/console/*`, the form Easy Auth documents for a folder.
ANONYMOUS_PATHS = (
    "/api/health",
    "/api/openapi.json",
    "/api/openapi/full.json",
    "/api/console",
    "/api/console/*",
    # The smoke check's hook (relay.http.routes.smoke): the relay's own deliveries carry no token; the
    # hook answers only to the Standard Webhooks signature of its run's subscription.
    "/api/smoke/hook/*",
)

log = logging.getLogger("relay.access")

OBJECT_ID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
TENANT_CLAIMS = ("http://schemas.microsoft.com/identity/claims/tenantid", "tid")
CLIENT_ID_CLAIMS = ("azp", "appid")  # the calling application, in v2.0 and v1.0 tokens
SUBJECT_CLAIMS = ("sub", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier")
NAME_CLAIMS = ("name", "preferred_username", "appid", "azp")
DEFAULT_ROLE_TYPE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"


@dataclass(frozen=True)
class Principal:
    """A caller Easy Auth vouched for: its owner key (`oid:{tid}:{oid}`, `app:{tid}:{client id}`,
    or None when the token names neither) and its app roles."""

    id: str | None
    roles: frozenset[str]
    name: str = ""
    # The bare object id earlier releases owned subscriptions by (see `_adopt_legacy`).
    legacy_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles


@dataclass(frozen=True)
class Rule:
    roles: frozenset[str]
    owned: str | None = None  # the route parameter naming what must be the caller's: "id" or "operationId"
    mine: bool = False  # scoped to the caller's own subscriptions: a caller must be an owner


def _rule(*roles: str, owned: str | None = None, mine: bool = False) -> Rule:
    return Rule(frozenset(roles) | {ADMIN}, owned, mine or owned is not None)


# The contract's table, by route handler (relay.http.routes.*). A handler not named here is admin-only,
# so a route added later is closed until someone decides who may use it.
RULES: dict[str, Rule] = {
    "create_subscription": _rule(SUBSCRIBER, mine=True),
    "list_subscriptions": _rule(SUBSCRIBER, mine=True),  # scoped to the caller's own in the store
    "unsubscribe": _rule(SUBSCRIBER, mine=True),  # scoped to the caller's own in the store
    "get_subscription": _rule(SUBSCRIBER, owned="id"),
    # Another owner's subscription is answered as an unknown id would be: 200, nothing removed
    # (the store checks the owner on the row it removes). A 404 here failed the save of a flow
    # whose co-owner had re-pointed its connection (the platform deletes the old registration).
    "delete_subscription": _rule(SUBSCRIBER, mine=True),
    "list_deliveries": _rule(SUBSCRIBER, owned="id"),
    "start_replay": _rule(SUBSCRIBER, owned="id"),
    "get_operation": _rule(SUBSCRIBER, owned="operationId"),
    "rotate_secret": _rule(SUBSCRIBER, owned="id"),
    "activate_subscription": _rule(SUBSCRIBER, owned="id"),
    "pause_subscription": _rule(SUBSCRIBER, owned="id"),
    "resume_subscription": _rule(SUBSCRIBER, owned="id"),
    "test_subscription": _rule(SUBSCRIBER, owned="id"),
    "resend_delivery": _rule(SUBSCRIBER, owned="id"),
    "poll_events": _rule(SUBSCRIBER),
    "publish_events": _rule(PUBLISHER),
    "publish_batch": _rule(PUBLISHER),
    "list_event_types": _rule(PUBLISHER, SUBSCRIBER),
    "get_event_type": _rule(PUBLISHER, SUBSCRIBER),
    "event_data_schema": _rule(PUBLISHER, SUBSCRIBER),  # the designer's dynamic-schema source
    "put_event_type": _rule(),
    "delete_event_type": _rule(),
    # The smoke check (relay.http.routes.smoke): opening a run is like subscribing; a run is its owner's.
    "create_smoke_run": _rule(SUBSCRIBER),
    "get_smoke_run": _rule(SUBSCRIBER),
    "delete_smoke_run": _rule(SUBSCRIBER),
}
ADMIN_ONLY = _rule()


def entra_mode() -> bool:
    return get_settings().auth_mode == "entra"


def platform_auth_on(environ: Mapping[str, str] | None = None) -> bool:
    """App Service sets WEBSITE_AUTH_ENABLED=True when its authentication is on (any case)."""
    env = os.environ if environ is None else environ
    return (env.get(PLATFORM_FLAG) or "").strip().lower() == "true"


def is_anonymous_path(path: str) -> bool:
    lowered = path.rstrip("/").lower()
    # `/x/*`: everything below /x (Easy Auth's wildcard form), not /x itself.
    return any(
        lowered.startswith(p[:-1]) if p.endswith("/*") else lowered == p or lowered.startswith(p + "/")
        for p in ANONYMOUS_PATHS
    )


def parse_principal(header: str) -> Principal | None:
    """Easy Auth's `X-MS-CLIENT-PRINCIPAL`; None when it is not one or names nobody."""
    try:
        doc = json.loads(base64.b64decode(header.strip() + "=" * (-len(header.strip()) % 4), validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("claims"), list):
        return None
    claims: dict[str, list[str]] = {}
    for claim in doc["claims"]:
        if isinstance(claim, dict) and isinstance(claim.get("typ"), str) and isinstance(claim.get("val"), str):
            claims.setdefault(claim["typ"], []).append(claim["val"])

    def first(names: tuple[str, ...]) -> str:
        return next((claims[n][0] for n in names if claims.get(n) and claims[n][0]), "")

    oid, tenant, client = first(OBJECT_ID_CLAIMS), first(TENANT_CLAIMS), first(CLIENT_ID_CLAIMS)
    if not (oid or client or first(SUBJECT_CLAIMS)):
        return None  # names nobody
    owner = owner_key(tenant, oid, client)
    role_typ = doc.get("role_typ")
    if not isinstance(role_typ, str):
        role_typ = DEFAULT_ROLE_TYPE
    roles = frozenset(claims.get("roles", []) + claims.get(role_typ, []))
    name_typ = doc.get("name_typ") if isinstance(doc.get("name_typ"), str) else ""
    name = first((name_typ, *NAME_CLAIMS) if name_typ else NAME_CLAIMS)
    return Principal(owner, roles, name, oid if owner and oid else None)


def owner_key(tenant: str, oid: str, client: str) -> str | None:
    """Whose subscriptions a caller manages: the tenant and object id of a user (or service
    principal), else the tenant and client id of an application token, each under its own
    prefix; None without a tenant or either id (a `sub` never stands in for an `oid`)."""
    if not tenant or ":" in tenant:
        return None
    if oid:
        return f"oid:{tenant}:{oid}"
    if client:
        return f"app:{tenant}:{client}"
    return None


def principal_of(headers: Mapping[str, str]) -> Principal | None:
    """The caller Easy Auth vouched for, or None; the header counts only with the platform flag on."""
    if not platform_auth_on():
        return None
    header = next((v for k, v in headers.items() if k.lower() == PRINCIPAL_HEADER), None)
    return parse_principal(header) if header else None


def admit(request: Request, handler: Callable[..., Any]) -> Principal | None:
    """The dispatch-time check of every call: 401 without a principal, 403 when its roles do not
    allow the operation, 404 for another owner's subscription. None in keys mode and on the
    anonymous paths."""
    if not entra_mode() or is_anonymous_path(urlsplit(request.url).path):
        return None
    principal = principal_of(request.headers)
    if principal is None:
        raise Unauthorized("sign in: send a Microsoft Entra ID access token for the relay (Authorization: Bearer)")
    rule = RULES.get(getattr(handler, "__name__", ""), ADMIN_ONLY)
    if not principal.roles & rule.roles:
        needed = " or ".join(sorted(rule.roles))
        raise Forbidden(f"this operation needs the app role {needed}")
    if rule.mine and not principal.is_admin:
        if principal.id is None:
            raise Forbidden(
                "this operation needs a token that names its owner: a user's or service principal's "
                "object id (oid) with its tenant (tid), or an application's client id (azp/appid)"
            )
        _adopt_legacy(principal)
        if rule.owned:
            _check_owner(rule.owned, request.route.get(rule.owned, ""), principal)
    elif principal.is_admin and principal.id is not None:
        _adopt_legacy(principal)
    return principal


_adopted: set[str] = set()
_adopted_lock = threading.Lock()


def _adopt_legacy(principal: Principal) -> None:
    """Migrate subscriptions an earlier release keyed on the bare `oid` to the caller's
    namespaced owner key: once per principal per process (a query of one small partition), and
    only for a token whose own `oid` it is."""
    if principal.legacy_id is None or principal.id is None:
        return
    with _adopted_lock:
        if principal.id in _adopted:
            return
    from relay.store.storage import get_storage
    from relay.store.subscriptions import SubscriptionStore

    moved = SubscriptionStore(get_storage("fast")).adopt_owner(principal.legacy_id, principal.id)
    if moved:
        log.info("ownership of %d subscription(s) moved to the tenant-qualified owner key", moved)
    with _adopted_lock:
        _adopted.add(principal.id)


def owner_scope(request: Request) -> str | None:
    """Whose subscriptions a call may reach: the caller's own id, or None for all (keys mode, admin)."""
    principal = request.principal
    return None if principal is None or principal.is_admin else principal.id


def _check_owner(param: str, value: str, principal: Principal) -> None:
    """404 when the subscription (or the replay operation's subscription) is someone else's;
    an id that names nothing is left to the handler, which answers as it always does."""
    from relay.pipeline.replay import Operations
    from relay.store.storage import get_storage
    from relay.store.subscriptions import ID_RE, SubscriptionStore

    if not ID_RE.match(value):
        return
    storage = get_storage("fast")
    sub_id = value
    if param == "operationId":
        op = Operations(storage).get(value)
        if op is None:
            return
        sub_id = op.subscription_id
    entity = SubscriptionStore(storage).get(sub_id)
    if entity is None and param == "id":
        return
    if entity is None or entity.owner != principal.id:
        raise NotFound("no subscription has this id" if param == "id" else "no operation has this id")
