"""The shell blocks of the README and docs/ run as written: offline checks of the mistakes that stop
a documented command (there is no Azure here, so nothing is executed against it).

- every block is valid shell (`bash -n`, with `<placeholders>` filled in);
- `az deployment ... create` gets only parameters main.bicep declares, and no parameters file
  holding azd's `${...}` placeholders, which the Azure CLI passes on literally (azd substitutes
  them from its environment: Azure/azure-dev, the Bicep provider's parameters-file handling);
- every repository file a command reads (`-f`, `@file`, `--body @...`, `--app-roles @...`) exists;
- `azd env set NAME` sets something azd itself reads or main.parameters.json maps;
- `python -m relay <command>` names a command the CLI has.
And the deploy guides end with the smoke check and say what private networking needs.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_infra import MAIN, NETWORK, PARAMETERS, STORAGE, child_names, parsed, resources

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = ("bash", "sh", "shell", "console", "zsh")

# Variables azd reads itself (Azure/azure-dev: the environment's AZURE_* keys), as opposed to ones
# that only reach the template through main.parameters.json.
AZD_OWN = {"AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP"}


PLACEHOLDER = re.compile(r"<[A-Za-z][^<>\n]*>")


def shell_blocks(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every fenced shell block in a Markdown file, indented ones too."""
    blocks = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
        if match:
            indent, lang = match.group(1), match.group(2)
            j = i + 1
            while j < len(lines) and not re.match(rf"^{re.escape(indent)}```\s*$", lines[j]):
                j += 1
            if lang in SHELLS:
                body = "\n".join(line[len(indent) :] if line.startswith(indent) else line for line in lines[i + 1 : j])
                blocks.append((i + 1, body))
            i = j + 1
        else:
            i += 1
    return blocks


def commands(block: str) -> list[list[str]]:
    """Each command of a block as words: continuation lines joined, comments and placeholders
    handled, `$(...)` substitutions and `;`/`&&`/`|` sequences split into their commands."""
    text = PLACEHOLDER.sub("PLACEHOLDER", block.replace("\\\n", " "))
    found: list[list[str]] = []
    for line in text.splitlines():
        for sub in [line, *re.findall(r"\$\(([^()]*)\)", line)]:
            try:
                words = shlex.split(sub, comments=True)
            except ValueError:
                continue
            current: list[str] = []
            for word in words:
                if word in (";", "&&", "||", "|"):
                    found.append(current)
                    current = []
                else:
                    current.append(word)
            found.append(current)
    # The README calls the venv's interpreter (`.venv/bin/python -m relay ...`); it is the same command.
    return [["python", *c[1:]] if c[0] == VENV_PYTHON else c for c in found if c]


VENV_PYTHON = ".venv/bin/python"


ALL_BLOCKS = [(path, line, block) for path in DOCS for line, block in shell_blocks(path)]
IDS = [f"{path.relative_to(ROOT)}:{line}" for path, line, _ in ALL_BLOCKS]


def test_the_docs_have_shell_blocks() -> None:
    names = {path.name for path, _, _ in ALL_BLOCKS}
    assert {"README.md", "deploy.md", "entra.md"} <= names


@pytest.mark.parametrize("path,line,block", ALL_BLOCKS, ids=IDS)
def test_block_is_valid_shell(path: Path, line: int, block: str) -> None:
    """`bash -n` accepts the block once `<placeholders>` are filled in."""
    bash = shutil.which("bash")
    assert bash, "bash is on the PATH"
    done = subprocess.run(
        [bash, "-n"], input=PLACEHOLDER.sub("PLACEHOLDER", block), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, f"{path.name}:{line}: {done.stderr}"


def _option_values(words: list[str], *names: str) -> list[str]:
    values = []
    for i, word in enumerate(words):
        for name in names:
            if word == name and i + 1 < len(words):
                values.append(words[i + 1])
            elif word.startswith(name + "="):
                values.append(word[len(name) + 1 :])
    return values


def deployment_problems(block: str) -> list[str]:
    """What stops an `az deployment group|sub create` of a block: a parameters file with azd
    placeholders, a parameter main.bicep does not declare, a template that does not exist."""
    problems = []
    declared = set(parsed(MAIN)["parameters"])
    for words in commands(block):
        if words[:2] != ["az", "deployment"] or "create" not in words[2:4]:
            continue
        for template in _option_values(words, "-f", "--template-file"):
            if not (ROOT / template).is_file():
                problems.append(f"template {template} does not exist")
        for value in _option_values(words, "-p", "--parameters"):
            if "=" in value.split("@")[0] and not value.startswith("@"):
                name = value.split("=", 1)[0]
                if name not in declared:
                    problems.append(f"main.bicep has no parameter {name}")
                continue
            file = ROOT / value.lstrip("@")
            if not file.is_file():
                problems.append(f"parameters file {value} does not exist")
            elif "${" in file.read_text(encoding="utf-8"):
                problems.append(f"{value} holds azd placeholders the Azure CLI takes literally")
    return problems


@pytest.mark.parametrize("path,line,block", ALL_BLOCKS, ids=IDS)
def test_deployments_pass_only_what_the_cli_understands(path: Path, line: int, block: str) -> None:
    assert deployment_problems(block) == [], f"{path.name}:{line}"


def test_the_deployment_check_finds_the_parameters_file_mistake() -> None:
    """The check is not vacuous: the Entra deploy as the README gave it is caught, and so is a
    misspelt parameter; the fixed command passes."""
    assert "${AZURE_LOCATION}" in PARAMETERS.read_text()
    wrong = (
        "az deployment group create -g rg -n relay -f infra/main.bicep -p infra/main.parameters.json \\\n"
        "  -p environmentName=e -p authMode=entra -p entraClientId=$APP_ID -p entraAudience=api://$APP_ID\n"
    )
    assert deployment_problems(wrong) == [
        "infra/main.parameters.json holds azd placeholders the Azure CLI takes literally"
    ]
    assert deployment_problems("az deployment group create -g rg -f infra/main.bicep -p enviromentName=e") == [
        "main.bicep has no parameter enviromentName"
    ]
    assert deployment_problems(wrong.replace(" -p infra/main.parameters.json", "")) == []


def referenced_files(block: str) -> list[str]:
    """Repository files the commands of a block read: `@path` arguments and `-f`/`--src` files
    under infra/, connector/ or docs/ (files a command writes, like app.zip, are not checked)."""
    found = []
    for words in commands(block):
        for word in words:
            value = word.split("=", 1)[-1]
            if value.startswith("@") and "/" in value and not value.startswith("@-"):
                found.append(value[1:])
        for value in _option_values(words, "-f", "--template-file", "--api-def", "--api-definition-file"):
            if value.startswith(("infra/", "docs/")):
                found.append(value)
    return found


@pytest.mark.parametrize("path,line,block", ALL_BLOCKS, ids=IDS)
def test_files_the_commands_read_exist(path: Path, line: int, block: str) -> None:
    missing = [f for f in referenced_files(block) if not (ROOT / f).exists()]
    assert missing == [], f"{path.name}:{line}"


def test_azd_env_settings_reach_the_template() -> None:
    """Every `azd env set NAME` in the docs is read by azd itself or mapped by main.parameters.json
    (otherwise it is set and silently never used)."""
    mapped = set(re.findall(r"\$\{(\w+)", PARAMETERS.read_text()))
    for path, line, block in ALL_BLOCKS:
        for words in commands(block):
            if words[:3] == ["azd", "env", "set"] and len(words) > 3:
                assert words[3] in AZD_OWN | mapped, f"{path.name}:{line}: azd env set {words[3]}"


def _cli_commands() -> set[str]:
    source = (ROOT / "relay_dev" / "cli.py").read_text(encoding="utf-8")
    return set(re.findall(r"add_parser\(\s*\"([\w-]+)\"", source))


def test_relay_commands_exist() -> None:
    """`python -m relay X` in the docs names a command relay_dev/cli.py defines."""
    known = _cli_commands()
    assert {"dev", "connector", "admin", "smoke"} <= known
    for path, line, block in ALL_BLOCKS:
        for words in commands(block):
            if words[:3] == ["python", "-m", "relay"] and len(words) > 3:
                assert words[3] in known, f"{path.name}:{line}: python -m relay {words[3]}"


@pytest.mark.parametrize(
    "doc,credential", [("docs/deploy.md", "--key"), ("docs/entra.md", "--token"), ("README.md", "--key")]
)
def test_deploy_steps_end_with_the_smoke_check(doc: str, credential: str) -> None:
    """After the deployment steps, the operator runs `python -m relay smoke --url https://<host>`
    with the credential of the auth mode."""
    in_doc = [
        words
        for path, _, block in ALL_BLOCKS
        if path == ROOT / doc
        for words in commands(block)
        if words[:4] == ["python", "-m", "relay", "smoke"]
    ]
    assert in_doc, f"{doc} runs no smoke check"
    for words in in_doc:
        assert _option_values(words, "--url")[0].startswith("https://"), words
        assert _option_values(words, credential), words


def test_the_readme_runs_python_from_the_venv() -> None:
    """Every Python command of the README names the venv `make dev` creates (`.venv/bin/python`), so
    it runs as written from a fresh shell without activating anything."""
    pythons = []
    for line, block in shell_blocks(ROOT / "README.md"):
        for raw in block.replace("\\\n", " ").splitlines():
            for words in [shlex.split(PLACEHOLDER.sub("PLACEHOLDER", raw), comments=True)]:
                pythons += [(line, w) for w in words if w.split("/")[-1] in ("python", "python3")]
    assert pythons, "the README runs Python commands"
    assert all(word == VENV_PYTHON for _, word in pythons), pythons


MD_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^()\s]+)\)")


def heading_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings: lower case, punctuation dropped, spaces
    as hyphens, a repeated heading numbered (-1, -2, ...)."""
    anchors: set[str] = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if re.match(r"^\s*```", line):
            in_code = not in_code
        match = None if in_code else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            candidate, n = slug, 0
            while candidate in anchors:
                n += 1
                candidate = f"{slug}-{n}"
            anchors.add(candidate)
    return anchors


def broken_links(path: Path) -> list[str]:
    """Relative links of a Markdown file (outside code) whose file, or heading, does not exist."""
    broken = []
    in_code = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if re.match(r"^\s*```", line):
            in_code = not in_code
            continue
        if in_code:
            continue
        for target in MD_LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # http(s), mailto: not checked here
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            if not resolved.exists():
                broken.append(f"{path.name}:{number}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in heading_anchors(resolved):
                broken.append(f"{path.name}:{number}: {target} (no such heading)")
    return broken


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_relative_links_point_at_files_and_headings_that_exist(path: Path) -> None:
    assert broken_links(path) == []


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    """The check is not vacuous: a link to a file that is not there, or to a heading the target does
    not have, is reported; links that resolve, code and URLs are not."""
    (tmp_path / "b.md").write_text("# Title\n\n## `GET /api/x.json`: the thing\n", encoding="utf-8")
    doc = tmp_path / "a.md"
    doc.write_text(
        "See [b](b.md#get-apixjson-the-thing), [top](#intro), [web](https://example.com/x#y).\n"
        "# Intro\n"
        "Not [c](c.md), not [b](b.md#nowhere), not [self](#nothing). `[d](d.md)`\n"
        "```\n[e](e.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(doc) == [
        "a.md:3: c.md (no such file)",
        "a.md:3: b.md#nowhere (no such heading)",
        "a.md:3: #nothing (no such heading)",
    ]


def test_the_readme_is_short() -> None:
    """The README is what a newcomer reads first: at most 250 lines, the rest in docs/."""
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


def test_private_networking_prerequisites_name_the_resource_provider() -> None:
    """The app subnet is delegated to Microsoft.App/environments, which a subscription refuses until
    the Microsoft.App resource provider is registered: the prerequisites register it."""
    [subnet] = [
        r
        for r in resources(NETWORK, "Microsoft.Network/virtualNetworks/subnets").values()
        if r["config"]["name"] == "app"
    ]
    namespace = subnet["config"]["properties"]["delegations"][0]["properties"]["serviceName"].split("/")[0]
    assert namespace == "Microsoft.App"
    registered = [
        words
        for path, _, block in ALL_BLOCKS
        if path.name == "deploy.md"
        for words in commands(block)
        if words[:3] == ["az", "provider", "register"]
    ]
    assert any(_option_values(w, "--namespace", "-n") == [namespace] for w in registered), registered
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    prerequisites = text[text.index("## Prerequisites") : text.index("## 1.")]
    assert namespace in prerequisites


def test_docs_describe_the_platform_as_it_is() -> None:
    """No claim the platform contradicts: Flex has no FTP endpoint to disable, `.python_packages`
    is Core Tools' own folder, not something `.funcignore` stops a local build from using, and a
    locked network's deploys go to the SCM endpoint; the table list is the template's."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS)
    assert "FTPS is disabled" not in text
    assert "which this\n`.funcignore` does not support" not in text and "does not support: it leaves" not in text
    deploy = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "no FTP" in deploy and "SCM endpoint" in deploy
    assert "deploy from a machine on the network" not in text
    for table in child_names(STORAGE, "Microsoft.Storage/storageAccounts/tableServices/tables"):
        assert f"`{table}`" in deploy, table


def test_entra_steps_register_the_console_sign_in() -> None:
    """Easy Auth without a client secret signs browsers in with the implicit flow: the documented
    registration adds the web redirect URI https://<host>/.auth/login/aad/callback and ID-token
    issuance."""
    updates = [
        words
        for path, _, block in ALL_BLOCKS
        if path.name == "entra.md"
        for words in commands(block)
        if words[:4] == ["az", "ad", "app", "update"] and "--web-redirect-uris" in words
    ]
    assert updates, "docs/entra.md adds the console's redirect URI"
    [update] = updates
    assert _option_values(update, "--web-redirect-uris")[0].endswith("/.auth/login/aad/callback")
    assert _option_values(update, "--web-redirect-uris")[0].startswith("https://")
    assert _option_values(update, "--enable-id-token-issuance") == ["true"]
