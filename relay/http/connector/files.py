"""The files `python -m relay connector` writes: the definition, `apiProperties.json`, `icon.png`
and `readme.md` (what certified connectors carry beside their files), all generated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from relay.http.connector.definition import TEST_CONNECTION, EntraSignIn, definition
from relay.http.connector.parts import PUBLISHER, TITLE, About
from relay.http.connector.properties import properties

DEFINITION_FILE = "apiDefinition.swagger.json"
PROPERTIES_FILE = "apiProperties.json"
ICON_FILE = "icon.png"
README_FILE = "readme.md"
# The repository's committed connector folder (the writer is a local tool: the package ships neither).
COMMITTED_ICON = Path(__file__).resolve().parents[3] / "connector" / ICON_FILE
METHODS = ("get", "put", "post", "delete", "patch")


def icon() -> bytes:
    """`icon.png`: the committed one (connector/icon.png: square, the brand colour edge to edge, a
    white mark: a source dot sending an arrow to a ring), copied as it is. tests/test_connector.py
    checks its size and colours against apiProperties' brand colour."""
    return COMMITTED_ICON.read_bytes()


def render(document: dict[str, Any]) -> str:
    """The committed form: 2-space indent, keys in generation order, UTF-8, a final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def readme(doc: dict[str, Any], publisher: str, entra: EntraSignIn | None) -> str:
    """`readme.md`, in the sections certified connectors' readmes have, from the definition itself
    (so its list of operations cannot drift)."""
    triggers: list[str] = []
    actions: list[str] = []
    for item in doc["paths"].values():
        for method in METHODS:
            op = item.get(method)
            if op is None or op.get("x-ms-visibility") == "internal":
                continue
            line = f"- **{op['summary']}**: {op['description']}"
            (triggers if "x-ms-trigger" in op else actions).append(line)
    if entra is None:
        credentials = (
            "The connection asks for a function key of the relay's function app: in the Azure portal, "
            "the function app, App keys, then a host key such as default (or `az functionapp keys list`). "
            "Use a host key, never the master key."
        )
    else:
        credentials = (
            "The connection signs in with Microsoft Entra ID, in the relay's tenant; the account needs one "
            "of the relay's app roles (Relay.Publisher, Relay.Subscriber or Relay.Admin)."
        )
    meta = {m["propertyName"]: m["propertyValue"] for m in doc["x-ms-connector-metadata"]}
    lines = [
        f"# {doc['info']['title']}",
        "",
        doc["info"]["description"],
        "",
        "## Publisher",
        "",
        publisher,
        "",
        "## Prerequisites",
        "",
        "A running Event Relay (an Azure function app) and a Premium licence: custom connectors are "
        "Premium, and data loss prevention policies apply to them as to any connector.",
        "",
        "## Obtaining credentials",
        "",
        credentials,
        f" Creating a connection calls {TEST_CONNECTION}, so a wrong credential fails there.",
        "",
        "## Supported operations",
        "",
        "### Triggers",
        "",
        *triggers,
        "",
        "### Actions",
        "",
        *actions,
        "",
        "## Known issues and limitations",
        "",
        "- Delivery is at least once: a flow that must not act twice keeps the event id and skips repeats.",
        "- Rotating a subscription's secret returns the new secret as the action's output: turn on "
        "Secure outputs in the action's settings so run history does not show it.",
        "- Data of an event type without a registered schema is untyped: to publish an object, pass "
        "an expression such as json('{\"orderId\": 1}').",
        "",
        "## Deployment instructions",
        "",
        "Generate these files for your relay's host with `python -m relay connector --host <host>`, then "
        "`paconn create --api-def apiDefinition.swagger.json --api-prop apiProperties.json --icon icon.png`.",
        "",
        f"Website: {meta['Website']}. Privacy policy: {meta['Privacy policy']}.",
        "",
    ]
    return "\n".join(lines)


def write_files(
    host: str,
    out: Path,
    *,
    about: About | None = None,
    certification: bool = False,
    publisher: str = PUBLISHER,
    host_parameter: bool = False,
    entra: EntraSignIn | None = None,
) -> list[Path]:
    """Write `apiDefinition.swagger.json`, `apiProperties.json`, `icon.png` and `readme.md` into
    `out`, for keys or (with `entra`) Entra ID sign-in; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = definition(host, about=about, entra=entra)
    props = properties(certification=certification, publisher=publisher, host_parameter=host_parameter, entra=entra)
    contents: list[tuple[str, bytes]] = [
        (DEFINITION_FILE, render(doc).encode("utf-8")),
        (PROPERTIES_FILE, render(props).encode("utf-8")),
        (ICON_FILE, icon()),
        (README_FILE, readme(doc, publisher if certification else TITLE, entra).encode("utf-8")),
    ]
    written = []
    for name, data in contents:
        path = out / name
        path.write_bytes(data)
        written.append(path)
    return written
