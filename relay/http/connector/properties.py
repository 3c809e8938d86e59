"""The custom connector's `apiProperties.json`: the connection (a function key, or Entra ID sign-in),
the icon's brand colour and the policies.

Every option applies to both auth variants: `host_parameter` (one connector for many relays),
`certification` (publisher and stackOwner), and, through the definition, the website, privacy
policy and contact.
"""

from __future__ import annotations

from typing import Any

from relay.http.connector.definition import ENTRA_LOGIN, PAGEABLE, EntraSignIn
from relay.http.connector.operations import NEXT_LINK
from relay.http.connector.parts import BRAND_COLOR, HOST_PARAMETER, PUBLISHER, SECURITY_NAME

# Per-connector redirect URIs (https://global.consent.azure-apim.net/redirect/<connector>) are the
# platform's rule for new OAuth connectors; the exact URL is known once the connector exists.
ENTRA_REDIRECT_MODE = "GlobalPerConnector"
# The connection parameter every certified `aad` connector carries beside `token`: the platform
# fills it with the signed-in account's tenant (hidden, not asked for).
TENANT_PARAMETER = "token:TenantId"


def _host_parameter() -> dict[str, Any]:
    return {
        "type": "string",
        "uiDefinition": {
            "displayName": "Relay host",
            "description": "The host name of the relay's function app, such as myrelay.azurewebsites.net.",
            "tooltip": "The function app's default domain, or the custom domain in front of it.",
            "constraints": {"tabIndex": 1, "clearText": True, "required": "true"},
        },
    }


def _key_parameters() -> dict[str, Any]:
    return {
        SECURITY_NAME: {
            "type": "securestring",
            "uiDefinition": {
                "displayName": "Function key",
                "description": "A function key of the relay's function app.",
                "tooltip": "In the Azure portal: the function app, App keys, then a host key such as "
                "default (or: az functionapp keys list).",
                "constraints": {"tabIndex": 2, "clearText": False, "required": "true"},
            },
        }
    }


def _entra_parameters(entra: EntraSignIn) -> dict[str, Any]:
    """The `aad` sign-in as certified connectors in front of App Service APIs write it: the token's
    resource also as `AzureActiveDirectoryResourceId`, and the hidden `token:TenantId`."""
    return {
        "token": {
            "type": "oauthSetting",
            "oAuthSettings": {
                "identityProvider": "aad",
                "clientId": entra.client_id,
                "scopes": [entra.scope],
                "redirectMode": ENTRA_REDIRECT_MODE,
                "properties": {"IsFirstParty": "False", "AzureActiveDirectoryResourceId": entra.resource},
                "customParameters": {
                    "resourceUri": {"value": entra.resource},
                    "loginUri": {"value": ENTRA_LOGIN},
                    "tenantId": {"value": entra.tenant},
                },
            },
            "uiDefinition": {
                "displayName": "Sign in with Microsoft Entra ID",
                "description": "The account the connection acts as; its relay app roles decide what it may do.",
                "tooltip": "Sign in with your work account.",
                "constraints": {"required": "true"},
            },
        },
        TENANT_PARAMETER: {
            "type": "string",
            "metadata": {"sourceType": "AzureActiveDirectoryTenant"},
            "uiDefinition": {
                "displayName": "Tenant",
                # Word for word what the published schema allows here (ConnectionParameter-claim-TenantId).
                "description": "The tenant ID of for the Azure Active Directory application",
                "constraints": {"required": "false", "hidden": "true"},
            },
        },
    }


def properties(
    *,
    certification: bool = False,
    publisher: str = PUBLISHER,
    host_parameter: bool = False,
    entra: EntraSignIn | None = None,
) -> dict[str, Any]:
    """`apiProperties.json`: the connection asks for a function key (sent as `x-functions-key`), or
    signs in with Microsoft Entra ID (`entra`).

    `publisher`/`stackOwner` only for a certification submission: `paconn update` refuses a file
    that carries `stackOwner`. With `host_parameter`, the connection also asks for the relay's
    host and the `dynamichosturl` policy sends every call there, so one connector serves many relays.
    """
    parameters: dict[str, Any] = {}
    if host_parameter:
        parameters[HOST_PARAMETER] = _host_parameter()
    parameters.update(_key_parameters() if entra is None else _entra_parameters(entra))
    props: dict[str, Any] = {"connectionParameters": parameters, "iconBrandColor": BRAND_COLOR, "capabilities": []}
    policies: list[dict[str, Any]] = []
    if host_parameter:
        # The template replaces the whole backend URL, host and basePath.
        policies.append(
            {
                "templateId": "dynamichosturl",
                "title": "Route to the connection's relay",
                "parameters": {
                    "x-ms-apimTemplateParameter.urlTemplate": f"https://@connectionParameters('{HOST_PARAMETER}')/api"
                },
            }
        )
    # x-ms-pageable follows nextLink through the connector: this policy rewrites the relay's
    # absolute link into the connector's own, as certified pageable connectors do.
    policies.append(
        {
            "templateId": "updatenextlink",
            "title": "Route the next page through the connector",
            "parameters": {
                "x-ms-apimTemplate-operationName": list(PAGEABLE),
                "x-ms-apimTemplateParameter.nextLinkPropertyName": NEXT_LINK,
            },
        }
    )
    props["policyTemplateInstances"] = policies
    if certification:
        props["publisher"] = publisher
        props["stackOwner"] = publisher
    return {"properties": props}
