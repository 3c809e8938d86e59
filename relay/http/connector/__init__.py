"""The Power Platform custom connector and the full API document, generated from the code.

- `definition`: the connector definition (Swagger 2.0 with the `x-ms-*` extensions), keys or
  Entra ID sign-in; `GET /api/openapi.json` serves the running auth mode's.
- `properties`: `apiProperties.json`; `files`: what `python -m relay connector` writes
  (`cli`), with `icon.png` and `readme.md`.
- `full`: every route of the API as an OpenAPI document (`GET /api/openapi/full.json`), built
  from the same models and schema parts (`parts`), which fuzzing holds the relay to.
"""

from __future__ import annotations

from relay.http.connector.definition import (
    ENTRA_LOGIN,
    ENTRA_SECURITY_NAME,
    PAGEABLE,
    TEST_CONNECTION,
    EntraSignIn,
    definition,
    entra_scope,
)
from relay.http.connector.files import (
    DEFINITION_FILE,
    ICON_FILE,
    PROPERTIES_FILE,
    README_FILE,
    icon,
    readme,
    render,
    write_files,
)
from relay.http.connector.operations import NEXT_LINK
from relay.http.connector.parts import EXAMPLE_HOST, PROBLEM, PUBLISHER, TITLE, About
from relay.http.connector.properties import TENANT_PARAMETER, properties

__all__ = [
    "DEFINITION_FILE",
    "ENTRA_LOGIN",
    "ENTRA_SECURITY_NAME",
    "EXAMPLE_HOST",
    "ICON_FILE",
    "NEXT_LINK",
    "PAGEABLE",
    "PROBLEM",
    "PROPERTIES_FILE",
    "PUBLISHER",
    "README_FILE",
    "TENANT_PARAMETER",
    "TEST_CONNECTION",
    "TITLE",
    "About",
    "EntraSignIn",
    "definition",
    "entra_scope",
    "icon",
    "properties",
    "readme",
    "render",
    "write_files",
]
