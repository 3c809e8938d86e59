"""The dev host's stand-in for App Service Authentication (Easy Auth) with Microsoft Entra ID.

In Azure, Easy Auth validates the caller's bearer token before the function app sees the request,
answers 401 itself for a missing or bad one (`unauthenticatedClientAction: Return401`), and hands
the app the principal in `X-MS-CLIENT-PRINCIPAL`. Locally `python -m relay dev` does the same with
this module, so the relay reads the principal through one code path (`relay.http.access`) in both
places:

- `Authorization: Bearer <JWT>`, RS256 only (`alg: none` and HMAC are refused before any key is
  looked at), signed by a key of `RELAY_ENTRA_JWKS` (an https URL, or a path to a JWKS file)
  named by the token's `kid`, with `iss` in `RELAY_ENTRA_ISSUER` and `aud` in
  `RELAY_ENTRA_AUDIENCE` (each may list several, comma-separated, as Easy Auth's allowed
  audiences do), `exp` required and `nbf` honoured;
- any `X-MS-CLIENT-PRINCIPAL*` header the caller sent is removed, always;
- the principal is written the way Easy Auth writes it: base64 JSON with `auth_typ: aad`,
  `name_typ`, `role_typ` and one `{typ, val}` claim per value, the object id and subject under
  their WS-Federation claim types, as the platform maps them.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from relay.core.errors import ConfigurationError
from relay.http.access import EASY_AUTH_HEADERS, PRINCIPAL_HEADER, is_anonymous_path

log = logging.getLogger("relay.easyauth")

ALGORITHMS = ["RS256"]
LEEWAY_SECONDS = 60  # clock skew tolerated on exp/nbf
NAME_TYPE = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
ROLE_TYPE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
# JWT claim -> the claim type Easy Auth passes it under (the rest keep their JWT names).
CLAIM_TYPES = {
    "oid": "http://schemas.microsoft.com/identity/claims/objectidentifier",
    "sub": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier",
    "tid": "http://schemas.microsoft.com/identity/claims/tenantid",
    "scp": "http://schemas.microsoft.com/identity/claims/scope",
    "upn": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
}


class TokenRefused(Exception):
    """Why a bearer token is not accepted (said in the 401, never with the token itself)."""


def _listed(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass
class EasyAuth:
    issuers: list[str]
    audiences: list[str]
    jwks: str

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> EasyAuth | None:
        """Configured when RELAY_AUTH=entra and RELAY_ENTRA_JWKS is set; issuer and audience are then required."""
        if (env.get("RELAY_AUTH") or "").strip().lower() != "entra" or not env.get("RELAY_ENTRA_JWKS"):
            return None
        issuers, audiences = _listed(env.get("RELAY_ENTRA_ISSUER", "")), _listed(env.get("RELAY_ENTRA_AUDIENCE", ""))
        if not issuers or not audiences:
            raise ConfigurationError(
                "RELAY_ENTRA_JWKS is set: RELAY_ENTRA_ISSUER and RELAY_ENTRA_AUDIENCE are required"
            )
        auth = cls(issuers, audiences, env["RELAY_ENTRA_JWKS"])
        auth._load()
        return auth

    def _load(self) -> None:
        self._client: jwt.PyJWKClient | None = None
        self._keys: dict[str, Any] = {}
        if self.jwks.lower().startswith("https://"):
            self._client = jwt.PyJWKClient(self.jwks, cache_keys=True, lifespan=3600, timeout=10)
            return
        if self.jwks.lower().startswith("http://"):
            raise ConfigurationError("RELAY_ENTRA_JWKS: signing keys are fetched over https only")
        path = Path(self.jwks)
        try:
            keyset = jwt.PyJWKSet.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise ConfigurationError(f"RELAY_ENTRA_JWKS: {path} is not a readable JWKS file ({exc})") from None
        self._keys = {k.key_id: k for k in keyset.keys if k.key_id}

    def _key(self, kid: str) -> Any:
        if self._client is not None:
            try:
                return self._client.get_signing_key(kid).key
            except jwt.PyJWKClientConnectionError:
                log.warning("easy auth: the signing keys could not be fetched from RELAY_ENTRA_JWKS")
                raise TokenRefused("the issuer's signing keys could not be fetched; try again") from None
            except jwt.PyJWKClientError:
                raise TokenRefused("the token's kid names no signing key of the issuer") from None
        found = self._keys.get(kid)
        if found is None:
            raise TokenRefused("the token's kid names no signing key of the issuer")
        return found.key

    def validate(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; TokenRefused with the reason otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRefused("the bearer token is not a JWT") from None
        if header.get("alg") not in ALGORITHMS:
            raise TokenRefused("the token must be signed with RS256")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRefused("the token names no signing key (kid)")
        try:
            return jwt.decode(
                token,
                self._key(kid),
                algorithms=ALGORITHMS,
                audience=self.audiences,
                issuer=self.issuers,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRefused("the token is not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise TokenRefused("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise TokenRefused("the token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise TokenRefused("the token's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"the token is not valid ({type(exc).__name__})") from None

    def admit(self, path: str, headers: dict[str, str]) -> str | None:
        """Play Easy Auth for one request: strip the caller's principal headers, then either set
        the principal (None returned) or return why the request is a 401."""
        for name in EASY_AUTH_HEADERS:
            headers.pop(name, None)
        if is_anonymous_path(path):
            return None
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "sign in: send a Microsoft Entra ID access token (Authorization: Bearer)"
        try:
            claims = self.validate(token.strip())
        except TokenRefused as exc:
            return str(exc)
        headers[PRINCIPAL_HEADER] = client_principal(claims)
        return None


def client_principal(claims: Mapping[str, Any]) -> str:
    """`X-MS-CLIENT-PRINCIPAL` for validated token claims, as Easy Auth writes it."""
    out: list[dict[str, str]] = []
    for name, value in claims.items():
        if name == "roles" and not isinstance(value, list):
            # Entra issues app roles as an array; a string (`"roles": "Relay.Admin"`) is not a
            # role grant any issuer of ours writes, so it grants nothing.
            continue
        typ = CLAIM_TYPES.get(name, name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (dict, list)):
                continue
            out.append({"typ": typ, "val": item if isinstance(item, str) else json.dumps(item)})
    doc = {"auth_typ": "aad", "claims": out, "name_typ": NAME_TYPE, "role_typ": ROLE_TYPE}
    return base64.b64encode(json.dumps(doc).encode("utf-8")).decode("ascii")
