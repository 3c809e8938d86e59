"""Domain errors carry no HTTP; `relay.http.problems` maps every one of them to problem+json in one
place (issue 21): a store or the pipeline says what went wrong, never which status it is."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
from pathlib import Path

import pytest

import relay
from relay.core import errors
from relay.http import problems

ROOT = Path(__file__).resolve().parent.parent
# The layers below HTTP: what they raise is a domain error, whatever answers it.
DOMAIN_PACKAGES = ("relay/core", "relay/store", "relay/pipeline", "relay/outbound", "relay/triggers")


def _all_problem_classes() -> set[type[errors.Problem]]:
    for module in pkgutil.walk_packages(relay.__path__, "relay."):
        if module.name != "relay.__main__":
            importlib.import_module(module.name)
    found: set[type[errors.Problem]] = set()
    todo: list[type[errors.Problem]] = [errors.Problem]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_domain_error_class_has_its_own_mapping() -> None:
    classes = _all_problem_classes()
    assert classes - set(problems.KINDS) == set(), "a domain error without a line in relay.http.problems.KINDS"
    for cls, kind in problems.KINDS.items():
        assert 400 <= kind.status <= 599 and kind.title and kind.slug, cls


def _http_statuses(node: ast.AST) -> list[int]:
    return [
        n.value
        for n in ast.walk(node)
        if isinstance(n, ast.Constant) and type(n.value) is int and 100 <= n.value <= 599
    ]


def test_nothing_below_http_raises_an_http_status() -> None:
    offences = []
    for package in DOMAIN_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Raise) and node.exc is not None:
                    calls = [n for n in ast.walk(node.exc) if isinstance(n, ast.Call)]
                    for call in calls:
                        # A status is passed as a number literal (`status=404`, `Problem("...", 404)`).
                        given = list(call.args) + [k.value for k in call.keywords]
                        named = [k.arg for k in call.keywords if k.arg in ("status", "status_code", "headers")]
                        if named or _http_statuses(ast.Tuple(elts=[a for a in given if isinstance(a, ast.Constant)])):
                            offences.append(f"{path.relative_to(ROOT)}:{node.lineno} {call.args} {named}")
    # The exception tree itself names no status, title or header: those are the mapping's.
    tree = ast.parse((ROOT / "relay/core/errors.py").read_text(encoding="utf-8"))
    offences += [f"relay/core/errors.py status {s}" for s in _http_statuses(tree)]
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        t.attr for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Attribute)
    }
    offences += [f"relay/core/errors.py names {n}" for n in sorted(names & {"status", "slug", "title", "headers"})]
    assert offences == []


def _answer(problem: errors.Problem) -> tuple[int, dict[str, object], dict[str, str]]:
    response = problems.problem_response(problem)
    assert response.mimetype == "application/problem+json"
    body = json.loads(response.get_body())
    assert body["status"] == response.status_code and body["detail"] == problem.detail
    assert body["type"] == "urn:event-relay:problem:" + problems.kind_of(problem).slug
    return response.status_code, body, dict(response.headers)


@pytest.mark.parametrize(
    ("problem", "status", "headers"),
    [
        (errors.invalid("name", "is required"), 400, {}),
        (errors.Problem("try again"), 400, {}),
        (errors.Unauthorized("sign in"), 401, {"WWW-Authenticate": 'Bearer realm="relay"'}),
        (errors.Forbidden("no"), 403, {}),
        (errors.NotFound("none"), 404, {}),
        (errors.MethodNotAllowed("PUT is not allowed", ["GET", "POST"]), 405, {"Allow": "GET, POST"}),
        (errors.Conflict("taken"), 409, {}),
        (
            errors.AlreadyRunning("running", "http://h/api/operations/x", 5),
            409,
            {"Location": "http://h/api/operations/x", "Retry-After": "5"},
        ),
        (errors.PayloadTooLarge("big"), 413, {}),
        (errors.UnsupportedMediaType("xml"), 415, {}),
        (errors.TooManyRequests("many", retry_after=60), 429, {"Retry-After": "60"}),
        (errors.InternalError("broke"), 500, {}),
        (errors.ServiceUnavailable("down"), 503, {"Retry-After": "10"}),
        (errors.Contended("busy"), 503, {"Retry-After": "1"}),
    ],
)
def test_each_domain_error_answers_its_status_and_headers(
    problem: errors.Problem, status: int, headers: dict[str, str]
) -> None:
    got_status, body, got_headers = _answer(problem)
    assert got_status == status
    for name, value in headers.items():
        assert got_headers[name] == value
    if problem.errors:
        assert body["errors"] == [{"field": "name", "message": "is required"}]


def test_a_failed_operation_is_500_when_it_broke_and_409_when_stopped() -> None:
    status, body, _ = _answer(errors.OperationFailed("could not finish", "op1"))
    assert status == 500 and body["id"] == "op1" and body["operationStatus"] == "failed"
    assert body["title"] == "Operation failed"
    status, body, _ = _answer(errors.OperationFailed("gone", "op2", crashed=False))
    assert status == 409 and body["type"] == "urn:event-relay:problem:operation-failed"
