"""Subscriptions in Azure Table Storage.

One table, several kinds of row, keyed for the access patterns:

| partition       | row key        | what                                                     |
|-----------------|----------------|----------------------------------------------------------|
| `s`             | `i:{id}`       | the subscription (point read by id, listing)             |
| `s`             | `u:{sha256}`   | URL -> id, written in the same transaction as the above  |
| `s`             | `d:{id}`       | removal record: the patterns a removed subscription had, |
|                 |                | so index rows left behind can be found without the row   |
| `x:{pattern}`   | `{id}`         | fan-out index: one row per pattern, carrying all a       |
|                 |                | delivery needs, so fan-out reads only matching rows      |
| `t`             | `{time}_{id}`  | tombstone: queued work skips subscriptions removed after |
|                 |                | it read the index                                        |
| `w:{sha256}`    | `{id}`         | Logic Apps caller (workflow id + operation name) -> id   |
| `k:{sha256}`    | `{id}`         | Logic Apps client tracking id -> id                      |
| `o:{hash}`      | `{id}`         | owner index (entra mode): one partition per owner, so    |
|                 |                | listing one's own costs O(own), not a scan of everyone's |
| `p`             | `{pattern}`    | presence: the pattern has (or had) fan-out index rows    |
| `p`             | (empty)        | the layout marker: whether the presence rows are whole   |

Presence rows let fan-out read only the index partitions that hold anything: one query of the
`p` partition for the patterns an event type matches (its RowKeys or'ed: within one partition,
at worst a read of the distinct patterns ever subscribed), then one query per present pattern.
A presence row is written before the first index row of its pattern and never removed (an
unsubscribe leaves it: a stale one costs one empty query, a missing one would lose deliveries),
so a reader never skips a pattern that has index rows. Fan-out trusts them only once the layout
marker says they are whole: a store created by this version is whole from its first
subscription on; a store that held subscriptions before presence rows existed is marked
`pending` by the first write of this version and made whole by the hourly sweep
(`Index.complete_layout`) once every instance of the older version, which writes index rows without
presence rows, is certainly gone. Until then fan-out reads every candidate partition.

The caller rows let an HTTP Webhook unsubscribe, which cannot send its callback URL, find its
subscription by the `x-ms-workflow-*` headers recorded at subscribe. They are hints: a reader
checks the subscription still records those values, and drops rows that outlived it.

Subscribe, re-subscribe, rotate, disable, activate and delete are one state machine over the
subscription row, and the index rows are derived from it (docs/subscriptions-lifecycle.md):

- Every change of the row is a conditional write on the ETag it was read with (a change that
  lost a race reads again) and raises the row's `ver`; a subscribe also raises its registration.
- After its change, each caller reconciles (`Lifecycle.reconcile`): it writes the index rows the row's
  state asks for (`Subscription.receives`), removes the ones it no longer asks for, and reads the
  row again, starting over if it changed. Once every caller has returned, the index is what the
  row says, whatever ran concurrently.
- A DELETE first marks the row `removing` (so every concurrent caller's re-read sees it), then
  writes a tombstone, removes the index rows and finally the row. A subscription is present until
  then and absent after: a 404 is never followed by a delivery of an event published after it.
- Fan-out checks each index row version (ETag) once per process against its subscription's row
  (`Index._checked`) and skips and removes one whose subscription is gone, receives nothing, is of
  another generation or no longer has the pattern: what an older version or a caller that died
  between writes left behind. The hourly sweep (`Lifecycle.repair_index`) checks the whole index.

The owner index is written before the subscription on create and removed after it on delete:
a row whose subscription is gone (or now someone else's) is skipped by a reader, while a
subscription is never missing from its owner's list. The fan-out index knows nothing of owners:
ownership decides who may manage a subscription, not which events it receives.

Rows stay here: the store hands out frozen `Subscription` records (and fan-out `Target`s read
from the index), and takes changes as their fields. Only `rows` and `kinds` know the column
names, the JSON the patterns are kept as and the text the times are kept as.

The modules, by concern:

- `rows`: the typed records (`Subscription`, `IndexRow`, `Caller`, ...) and their (de)serialisation;
  `kinds`: the other row kinds (URL, removal, tombstone, owner, presence, layout rows).
- `index`: the fan-out index rows, presence rows and layout marker, and fan-out's lookup.
- `consistency`: the state machine: conditional writes, `reconcile`, removal, the repair sweep.
- `owners`: the owner index, owner adoption, the Logic Apps caller rows.
- `cache`: what a process keeps between calls, a part of the runtime (`relay.core.runtime`).
- `store`: `SubscriptionStore`, the facade the routes and the pipeline call.
- `view`: a subscription as the API answers it.
"""

from __future__ import annotations

from relay.store.subscriptions.rows import (
    CALLER_HEADERS,
    ID_RE,
    LAYOUT_COMPLETE,
    LAYOUT_PENDING,
    PRESENCE_PARTITION,
    SUB_PARTITION,
    TOMB_PARTITION,
    Caller,
    IndexRow,
    Subscription,
    new_secret,
    owner_partition,
    url_key,
)
from relay.store.subscriptions.store import SubscriptionStore
from relay.store.subscriptions.view import SubscriptionView

__all__ = [
    "CALLER_HEADERS",
    "ID_RE",
    "LAYOUT_COMPLETE",
    "LAYOUT_PENDING",
    "PRESENCE_PARTITION",
    "SUB_PARTITION",
    "TOMB_PARTITION",
    "Caller",
    "IndexRow",
    "Subscription",
    "SubscriptionStore",
    "SubscriptionView",
    "new_secret",
    "owner_partition",
    "url_key",
]
