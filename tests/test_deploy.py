"""What a deployment from a fresh clone ships and needs: the package `.funcignore` lets through,
the imports of that package against `requirements.txt`, and the README's publish command.

Core Tools and azd read `.funcignore` by different rules, so the package is computed under both:
- azd follows gitignore; `pathspec`'s GitIgnoreSpec implements those rules.
- Core Tools uses its own parser, a port of codemix/gitignore-parser
  (Azure/azure-functions-core-tools, src/Cli/func/Common/GitIgnoreParser.cs, and the file walk of
  src/Cli/func/Common/FileSystemHelpers.cs GetLocalFiles): `CoreToolsIgnore` below reproduces it.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pathspec
import pytest

ROOT = Path(__file__).resolve().parents[1]

# What only runs on a developer's machine, never in Azure.
# (relay/__main__.py ships: it is only the name `python -m relay` answers to, and says so when the
# tools are absent; relay_dev/ is the tools.)
LOCAL_ONLY = ("relay_dev/",)


def funcignore(root: Path = ROOT) -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines((root / ".funcignore").read_text().splitlines())


class CoreToolsIgnore:
    """Core Tools' `.funcignore` matcher, as GitIgnoreParser.cs builds it: each line trimmed, `#`
    lines and empty ones dropped, `!` lines negative, one leading `/` removed; each pattern
    escaped, `**` -> `(.+)`, then `*` -> `([^/]+)`; all positive patterns joined into one regex
    `^((p1)|(p2)...)\\b` (ECMAScript: ASCII word boundary), likewise the negative ones. A file is
    accepted when a negative pattern matches it or no positive one does. So every pattern is
    anchored at the root and matched as a prefix, `*` needs a character and never crosses `/`, and
    a negative pattern wins over every positive line, wherever it stands."""

    _ESCAPE = re.compile(r"[\-\[\]/{}()+?.\\^$|]")

    def __init__(self, text: str) -> None:
        positive: list[str] = []
        negative: list[str] = []
        for raw in text.split("\n"):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            target = positive
            if line.startswith("!"):
                line, target = line[1:], negative
            if line.startswith("/"):
                line = line[1:]
            target.append(self._pattern(line))
        self._positive = self._join(sorted(positive))
        self._negative = self._join(sorted(negative))
        self.has_negative = bool(negative)

    @classmethod
    def _pattern(cls, line: str) -> str:
        escaped = cls._ESCAPE.sub(lambda m: "\\" + m.group(0), line)
        return escaped.replace("**", "(.+)").replace("*", "([^\\/]+)")

    @staticmethod
    def _join(patterns: list[str]) -> re.Pattern[str]:
        if not patterns:
            return re.compile("$^")
        return re.compile("^((" + ")|(".join(patterns) + "))\\b", re.ASCII)

    def accepts(self, path: str) -> bool:
        return bool(self._negative.search(path)) or not self._positive.search(path)


# FileSystemHelpers.GetLocalFiles: folders never walked into and files never listed, at any depth.
CORE_TOOLS_SKIPPED_DIRS = {".git", ".vscode"}
CORE_TOOLS_SKIPPED_FILES = {".funcignore", ".gitignore", "local.settings.json", "project.lock.json"}


def core_tools_package_files(root: Path = ROOT) -> set[str]:
    """Every file `func azure functionapp publish` zips from `root` (it tests each file's path;
    no folder is pruned but .git and .vscode)."""
    matcher = CoreToolsIgnore((root / ".funcignore").read_text())
    kept: set[str] = set()
    for folder, dirs, files in os.walk(root):
        rel_folder = Path(folder).relative_to(root)
        # Core Tools walks every folder; skipping one whose path plus "/" is already denied changes
        # nothing (the regex matched a prefix of it, so it matches every file below) and keeps a
        # fresh clone's .venv and node_modules from being walked file by file.
        dirs[:] = [
            d
            for d in dirs
            if d.lower() not in CORE_TOOLS_SKIPPED_DIRS
            and (matcher.has_negative or matcher.accepts(f"{(rel_folder / d).as_posix()}/"))
        ]
        for name in files:
            if name.lower() in CORE_TOOLS_SKIPPED_FILES:
                continue
            rel = (Path(folder) / name).relative_to(root).as_posix()
            if matcher.accepts(rel):
                kept.add(rel)
    return kept


def azd_package_files(root: Path = ROOT) -> set[str]:
    """What azd zips: `.funcignore` read as gitignore, and its Python packaging's own exclusions
    (Azure/azure-dev cli/azd/pkg/project/framework_service_python.go: a folder holding pyvenv.cfg,
    `__pycache__`, and `.azure`)."""
    return {
        f
        for f in package_files(root)
        if "__pycache__" not in f.split("/")[:-1]
        and not f.startswith(".azure/")
        and not any((root / Path(f).parents[i] / "pyvenv.cfg").is_file() for i in range(len(Path(f).parents) - 1))
    }


def shipped(root: Path = ROOT) -> set[str]:
    """What Azure runs: the host's files and relay/ minus the local tools and bytecode."""
    top = {"function_app.py", "host.json", "requirements.txt"}
    app = {
        p.relative_to(root).as_posix()
        for p in (root / "relay").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")
    }
    return top | {f for f in app if not f.startswith(LOCAL_ONLY)}


@functools.cache
def _core_tools_cases() -> list[tuple[str, str, bool]]:
    """(pattern, path, ignored?) as GitIgnoreParser.cs decides, for the rules the tests rely on."""
    return [
        ("*.pyc", "x.pyc", True),
        ("*.pyc", "relay/x.pyc", False),  # anchored at the root: gitignore would ignore it
        ("**/*.pyc", "relay/x.pyc", True),
        ("__pycache__", "relay/__pycache__/api.cpython-311.pyc", False),
        ("**/__pycache__", "relay/__pycache__/api.cpython-311.pyc", True),
        ("local.settings*.json", "local.settings.json", False),  # `*` needs a character
        ("local.settings*.json", "local.settings.sample.json", True),
        ("tests", "tests/test_x.py", True),  # a prefix of the path
        ("docs", "docs/deploy.md", True),
        ("relay/bench", "relay/bench/prices.json", True),
        ("relay/bench", "relay/benchmark.py", False),  # \b: a whole name
        ("!relay/**\nrelay/devhost.py", "relay/devhost.py", False),  # a negative line always wins
    ]


@pytest.mark.parametrize("pattern,path,ignored", _core_tools_cases())
def test_the_core_tools_matcher_reproduces_its_parser(pattern: str, path: str, ignored: bool) -> None:
    """The reimplementation decides as GitIgnoreParser.cs's regexes do (traced by hand from its source)."""
    assert (not CoreToolsIgnore(pattern).accepts(path)) is ignored


LEFTOVERS = [
    "README.md",
    "CHANGELOG.md",
    "docs/deploy.md",
    "docs/console.png",
    "relay/__pycache__/api.cpython-311.pyc",
    "relay/http/routes/__pycache__/x.cpython-312.pyc",
    "relay/x.pyc",
    "__pycache__/function_app.cpython-311.pyc",
    "build/lib/relay/api.py",  # `pip install .` (azd restore) leaves these
    "build/bdist.linux-x86_64/x",
    "event_relay.egg-info/PKG-INFO",
    "dist/event_relay-0.1.tar.gz",
    "event-relay_env/pyvenv.cfg",  # azd's virtual environment
    "event-relay_env/lib/python3.12/site-packages/x.py",
    ".azure/dev/.env",
    ".python_packages/lib/site-packages/requests/__init__.py",
    ".venv/pyvenv.cfg",
    "local.settings.json",
    "local.settings.sample.json",
    "bench-results.json",
    "bench-results-2.json",
    ".vscode/settings.json",
    "tests/test_x.py",
    "infra/main.bicep",
    "connector/apiDefinition.swagger.json",
    "azure.yaml",
    "pyproject.toml",
    "Makefile",
    "requirements-dev.txt",
    "package.json",
    "node_modules/x/index.js",
    "relay_dev/cli.py",
    "relay_dev/devhost.py",
    "relay_dev/azurite.py",
    "relay_dev/receiver.py",
    "relay_dev/bench/__init__.py",
    "relay_dev/bench/prices.json",
]


def _tree_with_leftovers(tmp_path: Path) -> Path:
    """A copy of the app's files plus what a working copy accumulates (docs, build output, caches,
    virtual environments, local settings)."""
    for rel in shipped() | {".funcignore"}:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, tmp_path / rel)
    for rel in LEFTOVERS:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    return tmp_path


def test_both_tools_ship_only_what_azure_runs(tmp_path: Path) -> None:
    """Under Core Tools' rules and azd's alike, a working copy full of leftovers ships exactly the
    app: no README, changelog, docs, nested bytecode, build output or egg-info, local settings,
    virtual environment or local tool."""
    root = _tree_with_leftovers(tmp_path)
    expected = shipped(root)
    assert "relay/http/console/app.js" in expected and "relay/http/api.py" in expected
    core_tools, azd = core_tools_package_files(root), azd_package_files(root)
    assert sorted(core_tools - expected) == [] and sorted(expected - core_tools) == []
    assert sorted(azd - expected) == [] and sorted(expected - azd) == []


def test_the_repository_ships_the_same_package_under_both_tools() -> None:
    assert core_tools_package_files() == azd_package_files() == shipped()


def package_files(root: Path = ROOT) -> set[str]:
    """Every file under `root` that `.funcignore` lets into the deployment package."""
    spec = funcignore(root)
    kept: set[str] = set()
    for folder, dirs, files in os.walk(root):
        rel_folder = Path(folder).relative_to(root)
        # An ignored folder is not descended into (as git and Core Tools do).
        dirs[:] = [d for d in dirs if not spec.match_file(f"{(rel_folder / d).as_posix()}/")]
        for name in files:
            rel = (rel_folder / name).as_posix()
            if not spec.match_file(rel):
                kept.add(rel)
    return kept


def test_package_holds_the_app_and_no_local_tools() -> None:
    """The package has function_app.py, host.json, requirements.txt and relay/, and none of the
    dev host, Azurite launcher, receiver, benchmark, tests, infra or local settings."""
    files = package_files()
    for needed in ("function_app.py", "host.json", "requirements.txt", "relay/__init__.py", "relay/http/api.py"):
        assert needed in files, needed
    leaked = sorted(
        f
        for f in files
        if f.startswith(LOCAL_ONLY)
        or f.startswith(("tests/", "infra/", "node_modules/", ".venv/", ".azurite/", "connector/"))
        or "local.settings" in f
    )
    assert leaked == []


@pytest.mark.parametrize(
    "path",
    [
        "event-relay_env/lib/python3.11/site-packages/x.py",  # azd's virtual environment
        "h7_env/bin/python",
        ".azure/dev/.env",  # azd's environment state
        ".python_packages/lib/site-packages/requests/__init__.py",
        "relay_dev/cli.py",
        "relay_dev/devhost.py",
        "relay_dev/azurite.py",
        "relay_dev/receiver.py",
        "relay_dev/bench/__main__.py",
        "relay/__pycache__/api.cpython-311.pyc",
        ".hypothesis/examples/x",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/x",  # tool caches
    ],
)
def test_funcignore_leaves_out(path: str) -> None:
    """azd's `<project>_env/`, `.azure/`, `.python_packages/` and the local tools never ship."""
    assert funcignore().match_file(path), path


@pytest.mark.parametrize("path", ["*_env/", ".azure/", ".python_packages/"])
def test_gitignore_leaves_out_azd_state(path: str) -> None:
    """The same azd folders are never committed."""
    assert path in (ROOT / ".gitignore").read_text().splitlines()


def test_function_app_imports_without_the_local_tools(tmp_path: Path) -> None:
    """Only the package is copied (as Azure gets it) and function_app imports from it; no local
    tool module is loaded on the way."""
    for rel in package_files():
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    assert not (tmp_path / "relay_dev").exists()
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import function_app, relay; "
        "assert relay.__file__.startswith(sys.argv[1]), relay.__file__; "
        "print(sorted(m for m in sys.modules if m.startswith(('relay_dev.devhost', 'relay_dev.azurite', "
        "'relay_dev.receiver', 'relay_dev.bench'))))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "APPLICATIONINSIGHTS_CONNECTION_STRING")}
    done = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


def _module_name(rel: str) -> tuple[str, bool]:
    """The dotted name of a source file, and whether it is a package's `__init__`."""
    parts = rel[: -len(".py")].split("/")
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


IMPORTERS = ("import_module", "__import__")


def imported_names(source: str, rel: str) -> set[str]:
    """Every module name a file imports, at its top or lazily inside a function, relative imports
    resolved, with the packages each import runs on the way (`relay_dev.bench.runner` runs
    `relay_dev.bench`'s `__init__` too); `importlib.import_module("...")` with a literal name counts."""
    module, is_package = _module_name(rel)
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import x`: x may be a module
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Attribute, ast.Name))
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    with_parents = set()
    for name in names:
        parts = name.split(".")
        with_parents.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return with_parents


def _repository_file(name: str, root: Path) -> str | None:
    """The repository's own file a module name is (None for the standard library and packages)."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(root).as_posix()
    return None


def imports_leaving_the_package(root: Path = ROOT) -> list[str]:
    """`file: module` for each import, in a file the package holds, of a repository module the
    package does not hold: code that would fail in Azure (or be a dev tool pulled into it)."""
    files = package_files(root)
    found = []
    # The one door: `python -m relay` runs relay_dev's command line; Azure never runs it.
    for rel in sorted(f for f in files if f.endswith(".py") and f != "relay/__main__.py"):
        for name in sorted(imported_names((root / rel).read_text(encoding="utf-8"), rel)):
            target = _repository_file(name, root)
            if target is not None and target not in files:
                found.append(f"{rel}: {name}")
    return found


def test_no_packaged_module_imports_a_module_left_out_of_the_package() -> None:
    """Not even a lazy import: no file of the package imports a repository module `.funcignore`
    leaves out (the dev host, the Azurite launcher, the receiver, the benchmark, the CLI, tests)."""
    assert imports_leaving_the_package() == []


LEAKS = {
    "top-level absolute": "import relay_dev.devhost\n",
    "lazy from package": "def f():\n    from relay_dev import receiver\n    return receiver\n",
    "parent package": "def f():\n    from relay_dev.bench.runner import main\n",
    "importlib": "import importlib\nimportlib.import_module('relay_dev.azurite')\n",
    "the command line": "from relay_dev import cli\n",
}


@pytest.mark.parametrize("source", LEAKS.values(), ids=LEAKS.keys())
def test_the_import_check_finds_a_local_tool_imported_by_the_app(tmp_path: Path, source: str) -> None:
    """The check above is not vacuous: a copy of the package with one such import added fails it."""
    for rel in package_files() | {p.relative_to(ROOT).as_posix() for p in ROOT.glob("relay*/**/*.py")}:
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    shutil.copy2(ROOT / ".funcignore", tmp_path / ".funcignore")
    assert imports_leaving_the_package(tmp_path) == []
    api = tmp_path / "relay" / "http" / "api.py"
    api.write_text(api.read_text(encoding="utf-8") + "\n" + source, encoding="utf-8")
    assert {line.split(":")[0] for line in imports_leaving_the_package(tmp_path)} == {"relay/http/api.py"}


# ---- requirements ---------------------------------------------------------------------------------


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _imports(path: Path) -> set[str]:
    """Dotted names of every absolute import in a file, lazy ones inside functions too
    (`from opentelemetry import metrics` is the module `opentelemetry.metrics`: a namespace
    package alone names no distribution)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in sys.stdlib_module_names:
                continue
            subs = {f"{node.module}.{a.name}" for a in node.names if _is_module(f"{node.module}.{a.name}")}
            names |= subs or {node.module}
    return names


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _owner(module: str) -> str | None:
    """The installed distribution whose files hold `module` (namespace packages such as `azure`
    are shared by many distributions, so the module's own file decides, not its top level)."""
    spec = importlib.util.find_spec(module)
    origin = spec.origin if spec and spec.origin not in (None, "namespace") else None
    if origin is None:
        return None
    origin_path = Path(origin).resolve()
    for dist_name in md.packages_distributions().get(module.split(".")[0], []):
        dist = md.distribution(dist_name)
        for file in dist.files or []:
            if Path(dist.locate_file(file)).resolve() == origin_path:
                return _canonical(dist.metadata["Name"])
    return None


def declared_requirements() -> set[str]:
    names = set()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(_canonical(re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0]))
    return names


def test_every_import_of_the_deployed_code_is_a_declared_requirement() -> None:
    """Each third-party module the package imports (directly, lazily too) comes from a
    distribution requirements.txt names, not from something another package happens to pull in."""
    local = {"relay", "relay_dev", "function_app"}  # relay_dev: only relay/__main__.py names it
    stdlib = set(sys.stdlib_module_names)
    modules = set()
    for rel in package_files():
        if rel.endswith(".py"):
            modules |= {m for m in _imports(ROOT / rel) if m.split(".")[0] not in stdlib | local | {"__future__"}}
    assert modules, "no third-party import found"
    declared = declared_requirements()
    owners = {module: _owner(module) for module in sorted(modules)}
    assert None not in owners.values(), {m: o for m, o in owners.items() if o is None}
    undeclared = {m: o for m, o in owners.items() if o not in declared}
    assert undeclared == {}, f"imported but not in requirements.txt: {undeclared}"
    for direct in ("urllib3", "referencing", "azure-core", "opentelemetry-api"):
        assert direct in declared, direct


# ---- the README's publish command -----------------------------------------------------------------


def test_readme_publish_command_names_the_worker_runtime() -> None:
    """`func azure functionapp publish` from a fresh clone (no local.settings.json) needs
    `--python`: every such command in the README and docs/ carries it."""
    text = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    blocks = re.findall(r"^\s*```[^\n]*\n(.*?)^\s*```", text, re.S | re.M)
    commands = [line for block in blocks for line in block.splitlines() if "func azure functionapp publish" in line]
    assert commands, "the README shows how to publish with Core Tools"
    for command in commands:
        assert "--python" in command.split(), command


def test_azurite_runs_without_telemetry() -> None:
    """`make dev` and the tests start Azurite through one launcher (relay_dev/azurite.py), which
    passes --disableTelemetry (a clean first screen)."""
    makefile = (ROOT / "Makefile").read_text()
    assert "bin/azurite" not in makefile and "--azurite " in makefile.split("\ndev:", 1)[1].split("\n\n", 1)[0]
    assert '"--disableTelemetry"' in (ROOT / "relay_dev" / "azurite.py").read_text()
