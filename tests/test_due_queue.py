"""Retries due later wait in the due table, not as invisible messages of a triggered queue, so
Flex Consumption's scale controller sees no work that is not due (relay/store/due.py, docs/scaling.md).

The platform's rule cannot run here; it is encoded as data, from Microsoft Learn, "Target-based
scaling" (https://learn.microsoft.com/azure/azure-functions/functions-target-based-scaling):
desired instances = event source length / target executions per instance, rounded up; for Azure
Queue Storage the target executions per instance is host.json `extensions.queues.batchSize`, and
the event source length is the queue's message count, in which "messages with visibilityTimeout
are still counted … This can cause overscaling". The approximate message count Azure Storage
reports (Azurite's too) is that count: visible and invisible messages alike.
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from relay.core import settings
from relay.core.clock import from_time_key
from relay.store import due
from relay.store.storage import DELIVERY_QUEUE, DUE_TABLE, FANOUT_QUEUE, REPLAY_QUEUE
from tests.helpers import Receiver, wait_until

ROOT = Path(__file__).resolve().parents[1]
BATCH_SIZE = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]["batchSize"]
# Every queue a function of the app is triggered by (relay.triggers.worker's queue triggers).
TRIGGERED_QUEUES = (FANOUT_QUEUE, DELIVERY_QUEUE, REPLAY_QUEUE)
SCALE_RULE = {
    "source": "https://learn.microsoft.com/azure/azure-functions/functions-target-based-scaling",
    "event_source_length": "approximate message count, invisible messages included",
    "target_executions_per_instance": BATCH_SIZE,
}

PERIOD = 1.0  # RELAY_DUE_PERIOD in these tests
SUBSCRIBERS = 20
EVENTS = 50  # 20 x 50 = 1,000 deliveries
# The third retry's delay: long enough that the second retries are all made first, loaded or not
# (an idle two-core machine made them all 36 s after the publish, leaving a 64 s window to sample).
LONG = 100.0


def instances_wanted(counts: dict[str, int]) -> int:
    """The scale rule, per triggered queue, summed over the app's queue functions."""
    return sum(math.ceil(n / SCALE_RULE["target_executions_per_instance"]) for n in counts.values())


def queue_counts(azurite: Any) -> dict[str, int]:
    service = QueueServiceClient.from_connection_string(azurite.connection_string)
    return {q: service.get_queue_client(q).get_queue_properties().approximate_message_count for q in TRIGGERED_QUEUES}


def test_a_thousand_retries_want_no_instance_until_due_and_are_made_on_time(
    relay_factory, receiver_factory, unique_type, azurite
) -> None:
    """1,000 deliveries to dead receivers (503) make their second retry; until the third is due
    the scale rule wants 0 instances, across a SIGKILL and restart of the dev host; then every
    third retry leaves the due table for its queue within one timer period of its due time, and
    is made (never before it is due) with nothing lost."""
    env = {"RELAY_DUE_PERIOD": "1s", "RELAY_RETRY_SCHEDULE": f"2s,2s,{int(LONG)}s"}
    relay = relay_factory(env)
    clock_offset = time.time() - time.monotonic()  # Received.at is monotonic; the relay's times are wall clock
    # One receiver (origin) per subscriber: a dead origin's slots are not what this test is about.
    receivers: list[Receiver] = [receiver_factory(lambda item, n: (503, {}, b"")) for _ in range(SUBSCRIBERS)]
    subs = [relay.subscribe(r.url, eventTypes=[unique_type])["id"] for r in receivers]
    by_url = {r.url: sub for r, sub in zip(receivers, subs, strict=True)}
    ids = [
        v["id"] for v in relay.publish([{"type": unique_type, "data": {"i": i}} for i in range(EVENTS)]).json()["value"]
    ]
    expected = {(sub, event) for sub in subs for event in ids}
    table = TableServiceClient.from_connection_string(azurite.connection_string).get_table_client(DUE_TABLE)

    def attempts() -> dict[tuple[str, str], list[float]]:
        seen: dict[tuple[str, str], list[float]] = {}
        for r in receivers:
            with r.cond:
                for got in r.requests:
                    seen.setdefault((by_url[r.url], got.headers["webhook-id"]), []).append(got.at + clock_offset)
        return {key: sorted(times) for key, times in seen.items()}

    row_keys: dict[tuple[str, str], tuple[str, str]] = {}  # (subscription, event) -> the row's keys

    def waiting() -> dict[tuple[str, str], float]:
        """This test's rows of the due table: (subscription, event) -> due time (the row key's).
        A row is a work item: the retries of one event's targets due about together."""
        rows = {}
        for row in table.list_entities(select=["PartitionKey", "RowKey", "Body"]):
            if row["PartitionKey"] == due.CURSOR[0] or unique_type not in row["Body"]:
                continue
            item = json.loads(row["Body"])
            for target in item["targets"]:
                key = (target["sub"], item["eventId"])
                rows[key] = from_time_key(row["RowKey"].split("-")[0]).timestamp()
                row_keys[key] = (row["PartitionKey"], row["RowKey"])
        return rows

    def still_there() -> set[tuple[str, str]]:
        """The keys of the rows left (a light read: row keys only, a query per minute partition)."""
        partitions = {pk for pk, _ in row_keys.values()}
        return {
            (pk, row["RowKey"])
            for pk in partitions
            for row in table.query_entities("PartitionKey eq @pk", parameters={"pk": pk}, select=["RowKey"])
        }

    # Every delivery has made its second retry (attempt 3).
    wait_until(lambda: all(len(attempts().get(k, ())) == 3 for k in expected), 600, "every second retry")
    # Their work items settle (deleted once their executions end); then the rule wants nothing
    # while the third retries wait.
    try:
        wait_until(lambda: instances_wanted(queue_counts(azurite)) == 0, 30, "no instance wanted")
    except AssertionError:
        counts = queue_counts(azurite)
        raise AssertionError(f"the scale rule wants {instances_wanted(counts)} instances for {counts}") from None

    def third_waiting() -> dict[tuple[str, str], float] | None:
        found = waiting()
        return found if set(found) == expected else None

    rows = wait_until(third_waiting, 30, "the third retries' rows in the due table")
    first_due = min(rows.values())
    print(f"\nsecond retries all made {first_due - time.time():.1f} s before the first third retry is due")
    assert first_due - time.time() > 10, "the window before the third retries is too short to prove anything"
    samples, killed = 0, False
    while time.time() < first_due - 0.5:
        counts = queue_counts(azurite)
        assert instances_wanted(counts) == 0, (counts, SCALE_RULE)
        samples += 1
        if not killed and samples >= 4:
            relay.kill()  # the retries live in the due table: a killed host loses none of them
            relay.start()
            killed = True
        time.sleep(0.25)
    assert killed and samples > 8

    # The timer's part, to one period: each row leaves the table (sent to its queue) once due.
    # A row first missed by a read was moved before that read ended: lateness is measured to
    # the read's end, which a stall of this machine or of Azurite delays as it delays the timer.
    # The dev host answering its health route meanwhile shows how long the process itself was
    # held up (a loaded machine can pause it for seconds, timer and all).
    moved_at: dict[tuple[str, str], float] = {}
    read_gaps: list[float] = []
    pauses: list[float] = []
    while len(moved_at) < len(rows):
        started = time.time()
        left = still_there()
        now = time.time()
        read_gaps.append(now - started + 0.1)  # the read, and the sleep before it
        assert relay.get("health").status_code == 200
        pauses.append(time.time() - now)
        for key in rows.keys() - moved_at.keys():
            if row_keys[key] not in left:
                moved_at[key] = now
        assert now < max(rows.values()) + 60, f"{len(rows) - len(moved_at)} rows never moved"
        time.sleep(0.1)
    late_move = sorted(moved_at[key] - rows[key] for key in rows)
    # The attempts themselves: every third retry made, none before it was due.
    wait_until(lambda: all(len(v) >= 4 for v in attempts().values()), 120, "every third retry")
    made = attempts()
    assert set(made) == expected
    early = [made[key][3] - rows[key] for key in expected if made[key][3] < rows[key] - 0.05]
    assert not early, early[:10]  # never made before it was due
    print(
        f"moved after due: min {late_move[0]:.2f} s, median {late_move[len(late_move) // 2]:.2f} s, "
        f"max {late_move[-1]:.2f} s (longest read of the table {max(read_gaps):.2f} s, "
        f"longest health answer {max(pauses):.2f} s); "
        f"{samples} scale samples in the window, all 0 instances"
    )
    assert late_move[0] >= -0.05  # never moved before it is due
    # The timer's runs, as the dev host logged them (relay.triggers.worker.on_due): moving a thousand rows
    # due within a few seconds is one run's work, and on a loaded two-core machine that run can
    # take many seconds (CI saw 18 s), which a one-second test period cannot hide.
    runs = [float(s) for s in re.findall(r"due: \d+ messages moved into their queues in ([0-9.]+) s", relay.logs())]
    assert runs, "the dev host logged no run of the due timer"
    longest_run = max(runs)
    # A row is moved by the first run that starts after it is due: within one timer period (the
    # dev host ticks every 0.2 s), or once the run under way then has ended; that run and the
    # one that moves it, and the read that saw the row gone. A machine or an Azurite that stalls
    # delays that read as much as the run, and a pause of the dev host shows as a slow health answer.
    bound = PERIOD + 1.0 + 2 * longest_run + max(read_gaps) + max(pauses)
    assert late_move[-1] <= bound, (late_move[-10:], runs)


def test_a_retry_left_in_the_queue_by_the_old_release_is_still_delivered(
    relay_factory, receiver_factory, unique_type, azurite
) -> None:
    """A retry the previous release sent as an invisible queue message is delivered as before."""
    relay = relay_factory({"RELAY_DUE_PERIOD": "1s", "RELAY_RETRY_SCHEDULE": "1h"})
    receiver = receiver_factory(lambda item, n: (503, {}, b"") if n == 0 else (200, {}, b""))
    sub = relay.subscribe(receiver.url, eventTypes=[unique_type])["id"]
    event = relay.publish({"type": unique_type, "data": 1}).json()["id"]
    receiver.wait_for(1)
    table = TableServiceClient.from_connection_string(azurite.connection_string).get_table_client(DUE_TABLE)

    def retry_row() -> Any:
        rows = [r for r in table.list_entities() if r["PartitionKey"] != due.CURSOR[0] and event in r["Body"]]
        return rows[0] if rows else None

    row = wait_until(retry_row, 30, "the retry an hour away to be in the due table")
    # What the old release did with it: an invisible message in the delivery queue, due in 2 s.
    table.delete_entity(row["PartitionKey"], row["RowKey"])
    from relay.store.storage import Storage, endpoints_from_settings

    storage = Storage(endpoints_from_settings({"AzureWebJobsStorage": azurite.connection_string}))
    storage.queue(DELIVERY_QUEUE).send_message(row["Body"], visibility_timeout=2, time_to_live=-1)
    got = receiver.wait_for(2, timeout=60)[1]
    assert got.headers["webhook-id"] == event

    # The delivery log is written after the receiver's 200 arrives: await it rather than race it.
    def recorded() -> Any:
        answer = relay.get(f"subscriptions/{sub}/deliveries").json()["value"]
        return answer if answer and answer[0]["status"] != "pending" else None

    answer = wait_until(recorded, 30, "the second attempt to be recorded")
    assert answer[0]["status"] == "succeeded" and answer[0]["attempts"] == 2, answer


# ---- the due table itself, in this process ------------------------------------------------------


class Sends:
    """The queue sends of a run, recorded instead of sent (the run's storage reads are real)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def __call__(self, queue: str, text: str) -> Any:
        from concurrent.futures import Future

        self.sent.append((queue, text))
        done: Future[Any] = Future()
        done.set_result(None)
        return done


def test_a_run_moves_only_what_is_due_and_reads_a_bounded_number_of_partitions(app_storage, monkeypatch) -> None:
    """Rows due later stay; a run after a long silence reads at most MAX_PARTITIONS minute
    partitions, one single-partition query each, and the cursor then catches up run by run."""
    table = due.DueTable(app_storage)
    rows = app_storage.table(DUE_TABLE)
    for row in rows.list_entities():  # this module's Azurite may hold other tests' rows
        rows.delete_entity(row["PartitionKey"], row["RowKey"])
    due.forget_cursors()  # the cursor went too: the first add makes it again
    queries: list[str] = []
    real = type(rows).query_entities

    def counted(self: Any, query_filter: str, **kw: Any) -> Any:
        queries.append(query_filter)
        assert query_filter.startswith("PartitionKey eq @pk and "), query_filter
        return real(self, query_filter, **kw)

    monkeypatch.setattr(type(rows), "query_entities", counted)
    table.add(DELIVERY_QUEUE, "soon", 60)
    table.add(DELIVERY_QUEUE, "later", 3600)
    now = datetime.now(UTC)
    sends = Sends()
    assert table.move(sends, now) == 0 and sends.sent == []
    assert table.move(sends, now + timedelta(seconds=61)) == 1 and sends.sent == [(DELIVERY_QUEUE, "soon")]
    # Four hours on with nothing run: one run reads an hour of partitions at most.
    queries.clear()
    assert table.move(sends, now + timedelta(hours=4)) == 0  # "later" is beyond this run's hour
    assert len(queries) == due.MAX_PARTITIONS
    for _ in range(4):
        table.move(sends, now + timedelta(hours=4))
    assert sends.sent == [(DELIVERY_QUEUE, "soon"), (DELIVERY_QUEUE, "later")]
    assert [r["RowKey"] for r in rows.list_entities()] == [due.CURSOR[1]]  # moved rows are deleted


def test_a_row_another_run_deleted_first_does_not_leave_the_others_to_be_sent_again(app_storage) -> None:
    """Two runs at once (a host that lost the timer's lock mid-run): the other run deletes one of
    this run's rows before this run does. This run's other rows are still deleted, so the next
    run does not send them a second time."""
    table = due.DueTable(app_storage)
    rows = app_storage.table(DUE_TABLE)
    for row in rows.list_entities():  # this module's Azurite may hold other tests' rows
        rows.delete_entity(row["PartitionKey"], row["RowKey"])
    due.forget_cursors()
    for n in range(5):
        table.add(DELIVERY_QUEUE, f"item-{n}", 1)
    mine = [r for r in rows.list_entities() if r["RowKey"] != due.CURSOR[1]]
    sends = Sends()

    def racing(queue: str, text: str) -> Any:
        if not sends.sent:  # the other run's delete, while this run sends
            rows.delete_entity(mine[0]["PartitionKey"], mine[0]["RowKey"])
        return sends(queue, text)

    later = datetime.now(UTC) + timedelta(seconds=5)
    table.move(racing, later)
    assert sorted(text for _, text in sends.sent) == [f"item-{n}" for n in range(5)]
    assert [r["RowKey"] for r in rows.list_entities()] == [due.CURSOR[1]]
    assert table.move(sends, later) == 0 and len(sends.sent) == 5  # nothing sent again


@pytest.mark.parametrize(
    ("text", "seconds", "schedule"),
    [("1s", 1, "*/1 * * * * *"), ("15s", 15, "*/15 * * * * *"), ("1m", 60, "0 */1 * * * *"), ("", 60, None)],
)
def test_the_due_period_is_a_schedule_a_timer_can_keep(text: str, seconds: float, schedule: str | None) -> None:
    assert settings.parse_due_period(text) == seconds
    assert due.due_schedule(seconds) == (schedule or "0 */1 * * * *")


@pytest.mark.parametrize("text", ["7s", "45m", "0s", "soon"])
def test_a_due_period_no_timer_schedule_can_keep_is_refused(text: str) -> None:
    with pytest.raises(settings.ConfigurationError, match="RELAY_DUE_PERIOD"):
        settings.parse_due_period(text)
