"""The Power Platform custom connector definition, `apiDefinition.swagger.json` (Swagger 2.0).

Generated, never hand-edited: `python -m relay connector` writes it (`relay.http.connector.files`),
`GET /api/openapi.json` serves it for the running auth mode, and the tests hold the committed
copy under `connector/` to this module.

Power Platform specifics (docs/power-platform.md has the sources):

- webhook trigger: `x-ms-trigger: single` on `POST /subscriptions`, the notification body on the
  path item as `x-ms-notification-content`, the callback URL as a required, internal body property
  with `x-ms-notification-url`; the platform removes the subscription by sending `DELETE` to the
  `Location` of the 201, so `DELETE /subscriptions/{id}` is defined (internal);
- `data` of the notification is typed from the chosen event type's registered schema with
  `x-ms-dynamic-schema` (plus `x-ms-dynamic-properties`, which references a property inside the body
  parameter unambiguously);
- polling trigger: `x-ms-trigger: batch` on `GET /events/poll`; the state travels in `Location`;
- replay is asynchronous by the platform's polling action pattern (202 + `Location` +
  `Retry-After`), which needs no extension: `x-ms-long-running-operation` is an AutoRest extension
  that the Power Platform connector schema does not allow on an operation;
- certification validator rules the schema cannot say: one response with a schema per operation
  (OperationHasManyResponsesWithSchema), a dynamic call's required input fed by a required
  parameter (OperationParameterRequiredMismatch), `x-ms-capabilities.testConnection`, and
  `x-ms-pageable` on the operations that answer a `nextLink`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relay import __version__
from relay.http.connector.operations import (
    event_paths,
    event_type_paths,
    replay_paths,
    subscription_paths,
)
from relay.http.connector.parts import (
    DESCRIPTION,
    KEY_HEADER,
    LIST_EVENT_TYPES,
    LIST_SUBSCRIPTIONS,
    SECURITY_NAME,
    TITLE,
    About,
)

# The operation the platform calls when a connection is made, so a wrong key or a sign-in without
# a relay role fails there and then, not later as a 401 in a dropdown: cheap, no inputs, and open
# to every role (publishers and subscribers may both read event types).
TEST_CONNECTION = LIST_EVENT_TYPES
# The operations that answer a page with `nextLink` (x-ms-pageable, and the updatenextlink policy
# of apiProperties.json, which points the link back through the connector).
PAGEABLE = (LIST_SUBSCRIPTIONS, "ListDeliveries")

# ---- Microsoft Entra ID sign-in (RELAY_AUTH=entra) ------------------------------------------------
#
# `python -m relay connector --auth entra --client-id <id> --resource <application ID URI>
# --tenant <tenant>`: the same operations, but the connection signs the maker in with Microsoft
# Entra ID (OAuth 2.0, identity provider `aad`), as certified connectors in front of App Service
# APIs do, so every operation (the webhook subscribe and its DELETE included) runs as the maker,
# with the maker's app roles.

ENTRA_SECURITY_NAME = "oauth2-auth"
ENTRA_LOGIN = "https://login.microsoftonline.com"
ENTRA_SCOPE = "user_impersonation"  # the delegated scope infra/entra/api.json exposes


@dataclass(frozen=True)
class EntraSignIn:
    """What the OAuth 2.0 variant needs: the relay's Application ID URI (the token's resource), the
    tenant whose accounts sign in, and the connector's own app registration (apiProperties.json
    only; the served definition does not need it). The tenant is never `common`: the relay's app
    is single-tenant (az ad app create --sign-in-audience AzureADMyOrg), and signing in to it
    through the common endpoint fails with AADSTS50194."""

    resource: str
    tenant: str
    client_id: str = ""

    @property
    def scope(self) -> str:
        return entra_scope(self.resource)

    @property
    def authorization_url(self) -> str:
        return f"{ENTRA_LOGIN}/{self.tenant}/oauth2/authorize"

    @property
    def token_url(self) -> str:
        return f"{ENTRA_LOGIN}/{self.tenant}/oauth2/token"


def entra_scope(resource: str) -> str:
    return f"{resource.rstrip('/')}/{ENTRA_SCOPE}"


def security(entra: EntraSignIn | None) -> dict[str, Any]:
    """`securityDefinitions` and `security`: the function key, or Entra ID sign-in."""
    if entra is None:
        definitions: dict[str, Any] = {
            SECURITY_NAME: {
                "type": "apiKey",
                "in": "header",
                "name": KEY_HEADER,
                "description": "A function key of the relay's function app.",
            },
        }
        name = SECURITY_NAME
    else:
        definitions = {
            ENTRA_SECURITY_NAME: {
                "type": "oauth2",
                "flow": "accessCode",
                # The platform signs in through the `aad` provider of apiProperties; these name the
                # same endpoints, of the relay's tenant, for tools that read only the Swagger.
                "authorizationUrl": entra.authorization_url,
                "tokenUrl": entra.token_url,
                "scopes": {entra.scope: "Call the relay as the signed-in user, with that user's relay roles."},
                "description": "Sign in with Microsoft Entra ID; the relay checks the user's app roles.",
            },
        }
        name = ENTRA_SECURITY_NAME
    return {"securityDefinitions": definitions, "security": [{name: []}]}


def _info(host: str, scheme: str, about: About) -> dict[str, Any]:
    """What the definition says of itself and where the relay is: `info`, `host`, `basePath`, media types."""
    contact = {"name": about.contact_name, "url": about.site(host)}
    if about.contact_email:
        contact["email"] = about.contact_email
    return {
        "swagger": "2.0",
        "info": {"title": TITLE, "description": DESCRIPTION, "version": __version__, "contact": contact},
        "host": host,
        "basePath": "/api",
        "schemes": [scheme],
        "consumes": ["application/json"],
        "produces": ["application/json", "application/problem+json"],
    }


def definition(
    host: str, scheme: str = "https", about: About | None = None, entra: EntraSignIn | None = None
) -> dict[str, Any]:
    """The Swagger 2.0 connector definition for a relay reached at `scheme://host` (`name[:port]`):
    with a function key, or with Entra ID sign-in when `entra` is given (RELAY_AUTH=entra)."""
    about = about or About()
    return {
        **_info(host, scheme, about),
        "paths": {**subscription_paths(), **replay_paths(), **event_paths(), **event_type_paths()},
        **security(entra),
        "x-ms-capabilities": {"testConnection": {"operationId": TEST_CONNECTION, "parameters": {}}},
        "x-ms-connector-metadata": [
            {"propertyName": "Website", "propertyValue": about.site(host)},
            {"propertyName": "Privacy policy", "propertyValue": about.privacy(host)},
            {"propertyName": "Categories", "propertyValue": "IT Operations;Productivity"},
        ],
    }
