"""Filters on an event's data (CONTRACT section 6, issue 23 item 5): the evaluator, the 400s of a
subscribe that asks for something else, and fan-out on the dev host delivering (and logging)
only what each subscription wants."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relay.core.filters import MAX_CONDITIONS, Filters, compiled, matches
from tests.helpers import problem_of, wait_until
from tests.test_console import browser, page, sign_in  # noqa: F401 - the console tests' browser fixtures


def passes(conditions: list[dict[str, Any]], data: Any) -> bool:
    text = Filters.model_validate({"data": conditions}).stored()
    return matches(text, lambda: data)


def one(op: str, value: Any, data: Any, path: str = "x") -> bool:
    return passes([{"path": path, "op": op, "value": value}], data)


# ---- the evaluator ----------------------------------------------------------------------------


def test_eq_and_ne_compare_json_values_with_json_types() -> None:
    assert one("eq", 1, {"x": 1}) and one("eq", 1, {"x": 1.0}) and one("eq", "a", {"x": "a"})
    assert (
        one("eq", None, {"x": None}) and one("eq", [1, "a"], {"x": [1, "a"]}) and one("eq", {"a": 1}, {"x": {"a": 1}})
    )
    assert not one("eq", 1, {"x": True}) and not one("eq", True, {"x": 1})  # JSON: true is not 1
    assert not one("eq", 0, {"x": False}) and not one("eq", "1", {"x": 1}) and not one("eq", None, {})
    assert not one("eq", {"a": 1}, {"x": {"a": True}})
    assert one("ne", 1, {"x": 2}) and one("ne", 1, {"x": "1"}) and one("ne", 1, {"x": True})
    assert not one("ne", "a", {"x": "a"})
    assert one("ne", "a", {})  # a missing value is not equal to it


def test_in_takes_an_array_of_candidates() -> None:
    assert one("in", ["DE", "FR"], {"x": "FR"}) and one("in", [1, 2], {"x": 2.0})
    assert not one("in", ["DE", "FR"], {"x": "IT"}) and not one("in", [1], {"x": True})
    assert not one("in", ["DE"], {}) and not one("in", [], {"x": "DE"})


def test_number_ranges_are_false_for_other_types() -> None:
    assert one("gt", 100, {"x": 100.5}) and not one("gt", 100, {"x": 100})
    assert one("ge", 100, {"x": 100}) and not one("ge", 100, {"x": 99})
    assert one("lt", 0, {"x": -1}) and not one("lt", 0, {"x": 0})
    assert one("le", 0, {"x": 0}) and not one("le", 0, {"x": 0.1})
    for op in ("gt", "ge", "lt", "le"):
        for other in ("500", True, None, [500], {"v": 500}):
            assert not one(op, 1, {"x": other}), (op, other)  # a gt on a string is false, not an error
        assert not one(op, 1, {})


def test_exists_and_contains() -> None:
    assert one("exists", True, {"x": None}) and one("exists", True, {"x": 0})
    assert not one("exists", True, {}) and one("exists", False, {}) and not one("exists", False, {"x": 1})
    assert one("contains", "gold", {"x": "tier-gold-1"}) and not one("contains", "gold", {"x": "silver"})
    assert (
        not one("contains", "1", {"x": 1}) and not one("contains", "a", {"x": ["a"]}) and not one("contains", "a", {})
    )


def test_paths_go_into_objects_and_array_positions() -> None:
    data = {"customer": {"address": {"country": "DE"}}, "lines": [{"sku": "A"}, {"sku": "B"}]}
    assert one("eq", "DE", data, "customer.address.country")
    assert one("eq", "B", data, "lines.1.sku") and not one("exists", True, data, "lines.2.sku")
    assert not one("exists", True, data, "customer.address.country.more")  # through a string
    assert not one("exists", True, data, "lines.sku")  # a name into an array
    assert not one("exists", True, data, "customer.0")  # a position into an object without that key
    assert not one("eq", 1, "scalar data", "x") and not one("eq", 1, None, "x") and not one("eq", 1, [1], "x")
    assert one("eq", 8, {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 8}}}}}}}}, "a.b.c.d.e.f.g.h")


def test_every_condition_must_hold_and_none_means_everything() -> None:
    both = [{"path": "total", "op": "gt", "value": 100}, {"path": "country", "op": "in", "value": ["DE"]}]
    assert passes(both, {"total": 150, "country": "DE"})
    assert not passes(both, {"total": 150, "country": "FR"}) and not passes(both, {"total": 50, "country": "DE"})
    assert Filters.model_validate({"data": []}).stored() is None
    assert matches(None, lambda: pytest.fail("data read without filters"))


def test_the_predicate_is_compiled_once_per_text() -> None:
    text = Filters.model_validate({"data": [{"path": "n", "op": "eq", "value": 1}]}).stored()
    assert text is not None
    assert compiled(text) is compiled(text)
    assert json.loads(text) == {"data": [{"path": "n", "op": "eq", "value": 1}]}


# ---- validation at subscribe ------------------------------------------------------------------


def refused(app: Any, filters: Any, field: str) -> None:
    answer = app.post("subscriptions", {"notificationUrl": "http://127.0.0.1:9/hook", "filters": filters})
    problem_of(answer, 400, field)


def test_bad_filters_are_400s_naming_the_field(app) -> None:
    good = {"path": "total", "op": "gt", "value": 1}
    refused(app, {"data": [good] * (MAX_CONDITIONS + 1)}, "filters.data")
    refused(app, {"data": [good, good, {**good, "op": "between"}]}, "filters.data[2].op")
    refused(app, {"data": [{**good, "path": "a.b.c.d.e.f.g.h.i"}]}, "filters.data[0].path")
    refused(app, {"data": [{**good, "path": "a..b"}]}, "filters.data[0].path")
    refused(app, {"data": [{**good, "path": ""}]}, "filters.data[0].path")
    refused(app, {"data": [{**good, "value": "100"}]}, "filters.data[0].value")
    refused(app, {"data": [{**good, "value": True}]}, "filters.data[0].value")
    refused(app, {"data": [{"path": "c", "op": "in", "value": "DE"}]}, "filters.data[0].value")
    refused(app, {"data": [{"path": "c", "op": "exists", "value": "yes"}]}, "filters.data[0].value")
    refused(app, {"data": [{"path": "c", "op": "contains", "value": 1}]}, "filters.data[0].value")
    refused(app, {"data": [{"path": "c", "op": "eq", "value": "x" * 2000}]}, "filters.data[0].value")
    refused(app, {"data": [{"path": "c", "op": "eq"}]}, "filters.data[0].value")
    refused(app, {"data": [{"op": "eq", "value": 1}]}, "filters.data[0].path")
    refused(app, {"data": [{**good, "operator": "gt"}]}, "filters.data[0].operator")
    refused(app, {"data": "total>1"}, "filters.data")
    refused(app, {"subject": "x"}, "filters.subject")
    refused(app, None, "filters")
    refused(app, [good], "filters")


def test_filters_are_shown_and_replaced_by_subscribing_again(app) -> None:
    url = "http://127.0.0.1:9/shown"
    filters = {"data": [{"path": "total", "op": "gt", "value": 100}, {"path": "c", "op": "in", "value": ["DE"]}]}
    made = app.subscribe(url, eventTypes=["f.shown"], filters=filters)
    assert made["filters"] == filters
    assert app.get(f"subscriptions/{made['id']}").json()["filters"] == filters
    listed = [s for s in app.get("subscriptions").json()["value"] if s["id"] == made["id"]]
    assert listed[0]["filters"] == filters
    app.subscribe(url, eventTypes=["f.shown"])
    assert "filters" not in app.get(f"subscriptions/{made['id']}").json()


# ---- fan-out on the dev host ------------------------------------------------------------------


def test_only_matching_events_reach_the_filtered_subscription(relay, receiver_factory, unique_type) -> None:
    """Two subscriptions on one type, one with data and subject filters: each receives exactly its
    events, and the filtered-out events leave no delivery row in the filtered one's log."""
    everything, filtered = receiver_factory(), receiver_factory()
    relay.subscribe(everything.url, eventTypes=[unique_type])
    sub = relay.subscribe(
        filtered.url,
        eventTypes=[unique_type],
        subjectBeginsWith="orders/",
        filters={
            "data": [
                {"path": "total", "op": "gt", "value": 100},
                {"path": "customer.country", "op": "in", "value": ["DE", "AT"]},
            ]
        },
    )
    events = [
        ("big-de", "orders/1", {"total": 150, "customer": {"country": "DE"}}, True),
        ("big-at", "orders/2", {"total": 101.5, "customer": {"country": "AT"}}, True),
        ("small-de", "orders/3", {"total": 100, "customer": {"country": "DE"}}, False),
        ("big-fr", "orders/4", {"total": 500, "customer": {"country": "FR"}}, False),
        ("text-total", "orders/5", {"total": "900", "customer": {"country": "DE"}}, False),
        ("no-customer", "orders/6", {"total": 900}, False),
        ("not-object", "orders/7", [1, 2, 3], False),
        ("other-subject", "invoices/8", {"total": 150, "customer": {"country": "DE"}}, False),
    ]
    relay.publish([{"type": unique_type, "id": i, "subject": s, "data": d} for i, s, d, _ in events])
    everything.wait_for(len(events))
    wanted = {i for i, _, _, ok in events if ok}
    filtered.wait_for(len(wanted))
    wait_until(relay.queue_idle, 60, "work queues to drain")

    assert sorted(everything.ids()) == sorted(i for i, *_ in events)
    assert sorted(filtered.ids()) == sorted(wanted)
    logged = relay.get(f"subscriptions/{sub['id']}/deliveries").json()["value"]
    assert sorted(d["eventId"] for d in logged) == sorted(wanted)
    # A replay of everything sends again only what the filters let through.
    started = relay.post(f"subscriptions/{sub['id']}/replay", {"since": sub["createdAt"], "status": "all"})
    assert started.status_code == 202, started.text

    def replayed() -> Any:
        answer = relay.session.get(started.headers["Location"], timeout=10)
        assert answer.status_code in (200, 202), answer.text
        return answer.json() if answer.status_code == 200 else None

    assert wait_until(replayed, 60, "the replay to finish")["replayed"] == len(wanted)
    filtered.wait_for(2 * len(wanted))
    wait_until(relay.queue_idle, 60, "work queues to drain")
    assert sorted(filtered.ids()) == sorted([*wanted, *wanted])
    assert relay.get(f"subscriptions/{sub['id']}").json()["filters"]["data"][0] == {
        "path": "total",
        "op": "gt",
        "value": 100,
    }


# ---- the definitions --------------------------------------------------------------------------


def test_the_webhook_trigger_offers_filters_as_an_optional_advanced_input() -> None:
    from relay.http.connector import EXAMPLE_HOST, definition

    doc = definition(EXAMPLE_HOST)
    trigger = next(
        op for item in doc["paths"].values() for op in item.values() if op.get("operationId") == "OnEventPublished"
    )
    body = next(p for p in trigger["parameters"] if p["in"] == "body")["schema"]
    filters = body["properties"]["filters"]
    assert "filters" not in body.get("required", [])
    assert filters["x-ms-visibility"] == "advanced" and filters["properties"]["data"]["maxItems"] == MAX_CONDITIONS
    condition = filters["properties"]["data"]["items"]
    assert condition["required"] == ["path", "op", "value"]
    assert condition["properties"]["op"]["enum"] == ["eq", "ne", "in", "gt", "ge", "lt", "le", "exists", "contains"]


@pytest.mark.parametrize(
    ("condition", "accepted"),
    [
        ({"path": "total", "op": "gt", "value": 1}, True),
        ({"path": "a.b.c.d.e.f.g.h", "op": "eq", "value": None}, True),
        ({"path": "c", "op": "in", "value": ["DE"]}, True),
        ({"path": "c", "op": "exists", "value": False}, True),
        ({"path": "c", "op": "contains", "value": "x"}, True),
        ({"path": "total", "op": "gt", "value": "1"}, False),
        ({"path": "c", "op": "in", "value": "DE"}, False),
        ({"path": "c", "op": "exists", "value": 1}, False),
        ({"path": "c", "op": "contains", "value": 1}, False),
        ({"path": "a.b.c.d.e.f.g.h.i", "op": "eq", "value": 1}, False),
        ({"path": "a..b", "op": "eq", "value": 1}, False),
        ({"path": "c", "op": "between", "value": 1}, False),
        ({"path": "c", "op": "eq", "value": 1, "more": 1}, False),
    ],
)
def test_the_full_document_says_exactly_what_the_relay_accepts(condition: dict[str, Any], accepted: bool) -> None:
    """The full API document's filters schema agrees with the relay's validation, op by op."""
    import jsonschema
    from pydantic import ValidationError

    from relay.http.connector.filterparts import full_filters

    body = {"data": [condition]}
    valid_by_schema = jsonschema.Draft7Validator(full_filters()).is_valid(body)
    try:
        Filters.model_validate(body)
        valid_by_relay = True
    except ValidationError:
        valid_by_relay = False
    assert valid_by_schema == valid_by_relay == accepted


# ---- the admin CLI ----------------------------------------------------------------------------


def test_filter_text_reads_every_operator_and_shows_one_line() -> None:
    from relay_dev.filtertext import describe, parse_filter

    assert parse_filter("total>100") == {"path": "total", "op": "gt", "value": 100}
    assert parse_filter("total >= 99.5") == {"path": "total", "op": "ge", "value": 99.5}
    assert parse_filter("n<0")["op"] == "lt" and parse_filter("n<=0")["op"] == "le"
    assert parse_filter("status=paid") == {"path": "status", "op": "eq", "value": "paid"}
    assert parse_filter("flag!=true") == {"path": "flag", "op": "ne", "value": True}
    assert parse_filter("c.country in DE,AT,1") == {"path": "c.country", "op": "in", "value": ["DE", "AT", 1]}
    assert parse_filter("sku~gold") == {"path": "sku", "op": "contains", "value": "gold"}
    assert parse_filter("coupon?") == {"path": "coupon", "op": "exists", "value": True}
    assert parse_filter("!coupon?") == {"path": "coupon", "op": "exists", "value": False}
    for bad in ("total", "total>many", ">1"):
        with pytest.raises(Exception, match="filter|compares numbers"):
            parse_filter(bad)
    filters = {"data": [parse_filter("total>100"), parse_filter("c in DE,AT"), parse_filter("!coupon?")]}
    Filters.model_validate(filters)  # what the CLI sends is what the relay takes
    assert describe(filters) == 'total > 100 · c in ["DE","AT"] · coupon is missing'


def test_the_cli_subscribes_with_filters_and_shows_them(relay) -> None:
    import subprocess
    import sys

    from tests.helpers import FUNCTION_KEY, ROOT

    def admin(*args: str) -> str:
        command = [sys.executable, "-m", "relay", "admin", "--url", f"http://127.0.0.1:{relay.port}"]
        done = subprocess.run(
            [*command, "--key", FUNCTION_KEY, *args], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    made = json.loads(
        admin(
            "subscriptions",
            "subscribe",
            "http://127.0.0.1:9/cli",
            "--event-type",
            "f.cli",
            "--filter",
            "total>100",
            "--filters",
            '{"data": [{"path": "c", "op": "in", "value": ["DE"]}]}',
            "--json",
        )
    )
    assert made["filters"]["data"] == [
        {"path": "c", "op": "in", "value": ["DE"]},
        {"path": "total", "op": "gt", "value": 100},
    ]
    assert 'filters:            c in ["DE"] · total > 100' in admin("subscriptions", "show", made["id"])


# ---- the console ------------------------------------------------------------------------------


def test_the_console_lists_the_filters_on_the_subscription_page(page: Any, relay) -> None:  # noqa: F811
    sub = relay.subscribe(
        "http://127.0.0.1:9/console-filters",
        eventTypes=["f.console"],
        subjectBeginsWith="orders/",
        filters={
            "data": [{"path": "total", "op": "gt", "value": 100}, {"path": "coupon", "op": "exists", "value": False}]
        },
    )
    sign_in(page, relay)
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    page.goto(f"{relay.base}/console#/subscriptions/{sub['id']}/deliveries")
    line = page.locator("#sub-filters")
    line.wait_for()
    assert line.inner_text() == 'Filters: subject begins with "orders/" · total > 100 · coupon is missing'
