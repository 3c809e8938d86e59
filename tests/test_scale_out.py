"""Scale-out: Azure runs several instances of the app on one storage account. Three dev hosts
share one Azurite; one is SIGKILLed during a fan-out of 2,000 deliveries and never comes back.
The other two finish its work once its messages become visible again: nothing is lost, and the
duplicates (at least once allows them) are counted and bounded by the killed host's share."""

from __future__ import annotations

from tests.helpers import wait_until

SUBSCRIBERS = 40
EVENTS = 50  # 40 x 50 = 2,000 deliveries


def _delivered(receiver) -> set[tuple[str, str]]:
    with receiver.cond:
        return {(r.path, r.headers["webhook-id"]) for r in receiver.requests}


def test_three_hosts_one_killed_mid_fan_out_lose_nothing(relay_factory, receiver_factory, unique_type) -> None:
    receiver = receiver_factory()
    hosts = [relay_factory() for _ in range(3)]
    first = hosts[0]
    for n in range(SUBSCRIBERS):
        hosts[n % 3].subscribe(f"{receiver.url}/{n}", eventTypes=[unique_type])
    ids = [
        v["id"] for v in first.publish([{"type": unique_type, "data": {"i": i}} for i in range(EVENTS)]).json()["value"]
    ]
    expected = {(f"/hook/{n}", i) for n in range(SUBSCRIBERS) for i in ids}

    receiver.wait_for(200, timeout=60)
    hosts[1].kill()
    assert _delivered(receiver) < expected, "the kill came too late to prove anything"

    # The killed host's leases run out (30 s at most) and the two survivors take its messages.
    wait_until(lambda: _delivered(receiver) >= expected, 180, "every delivery on the two survivors")
    assert _delivered(receiver) == expected
    wait_until(lambda: first.queue_idle(), 90, "the queues to drain")
    duplicates = len(receiver.requests) - len(expected)
    print(f"\n{duplicates} duplicate deliveries with one of three hosts killed")
    # Only work the killed host had taken and not finished is done again: its share at most.
    assert duplicates <= len(expected) // 3, duplicates
