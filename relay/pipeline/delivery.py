"""Delivering one event to its subscribers, and deciding what happens after each attempt.

Attempts for all targets of a work item run concurrently on one pooled HTTP client. After the
attempts: first-attempt successes go into one receipt for the batch; a success after a retry,
a final failure and a replay are written to the subscription's own log row; a failure worth retrying
(and an attempt handed back unsent) gets its pending row at once and goes back to the queue in one
work item with the batch's other targets due about then (relay.later), invisible until the
backoff delay has passed (the host's own retry is a fixed delay, so it is kept
for crashes); a receiver that says its flow is gone disables the subscription.

Attempts to origins not known to answer are one flow of the attempt threads for all events
(`DOUBTFUL`), so dead receivers sharing a healthy one's event type wait their turn behind it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from relay.core import clock, telemetry
from relay.core.backoff import parse_retry_after, retry_delay
from relay.core.errors import TargetRefused
from relay.core.models import DeliveryMessage, EventRecord, Target
from relay.core.outcomes import Outcome, Verdict, classify
from relay.core.settings import Settings
from relay.core.statuses import DeliveryStatus
from relay.outbound import signing
from relay.outbound.sender import MASK, DeliveryError, OriginBusy, Sender, TLSError, redact_url, scrub
from relay.pipeline import health, stats
from relay.pipeline.later import Later, Laters, gather
from relay.pipeline.outbox import Outbox
from relay.pipeline.pools import Batch, get_pools
from relay.store.deliverylog import DeliveryLog
from relay.store.deliveryrows import RESPONSE_BYTES, Attempt, AttemptRecord, FirstTry
from relay.store.pacing import Pacer, backoffs
from relay.store.storage import Storage
from relay.store.subscriptions import Subscription, SubscriptionStore

log = logging.getLogger("relay.delivery")

# An attempt handed back because its origin had no free slot waits in the queue DEFER_FIRST seconds,
# doubled at each hand-back up to the delivery timeout (+0-50 % jitter): a busy but healthy origin
# (a burst on Power Automate's shared callback host, a loaded machine) frees slots within seconds,
# while one whose slots are held until the timeout is asked again at most once per timeout. It is
# handed back at most MAX_DEFERRALS times before it counts as an attempt that timed out, so every
# delivery still ends delivered or failed.
DEFER_FIRST = 2.0
MAX_DEFERRALS = 10
# The attempt threads' one flow for attempts to origins not known to answer (see `_doubtful_flow`).
DOUBTFUL = ("doubtful",)
# A delivery its subscription's rate limit (or a receiver's Retry-After) makes wait at most this
# long waits on its attempt thread; a longer wait goes back to the queue (whole seconds), holding
# the start time it reserved. Bounded so that one limited subscription holds few threads.
PACE_HOLD = 1.0
PACE_HELD_STARTS = 4


# What an attempt that got no answer means for the delivery: the one table. The first row whose
# class the exception is an instance of wins. The contract retries timeouts and refused or reset
# connections; a certificate that does not verify, or a URL the guard refuses, will not get
# better by trying again. (OriginBusy is not an attempt: it is deferred, see `attempt`.)
OUTCOMES: tuple[tuple[type[Exception], Outcome], ...] = (
    (TargetRefused, Outcome.FAILED),
    (TLSError, Outcome.FAILED),
    (DeliveryError, Outcome.RETRY),
)


def defer_delay(deferred: int, delivery_timeout: float) -> float:
    """Seconds (before jitter) an attempt handed back `deferred` times already waits this time."""
    return max(min(DEFER_FIRST * 2.0**deferred, delivery_timeout), 1.0)


def outcome_of(exc: TargetRefused | DeliveryError) -> Outcome:
    return next(outcome for kind, outcome in OUTCOMES if isinstance(exc, kind))


@dataclass
class Result:
    """What one attempt came to."""

    verdict: Verdict
    status_code: int | None = None
    retry_after: float | None = None
    deferred: bool = False  # nothing was sent: the origin had no free slot
    # The answer's headers and body, masked into the record only where a row keeps it (a
    # first-try success goes into the batch's receipt without it).
    reply: tuple[dict[str, str], bytes] | None = None


def kept_response(reply_headers: dict[str, str], body: bytes, target: Target) -> tuple[str, str] | None:
    """The receiver's answer as the delivery record keeps it: its content type and the first
    RESPONSE_BYTES of its body as text, with the callback's query values, path tokens and the
    signing secret masked (a receiver may echo what it was sent)."""
    if not body and not reply_headers.get("content-type"):
        return None
    text = body[:RESPONSE_BYTES].decode("utf-8", errors="replace")
    content_type = reply_headers.get("content-type", "")[:256]
    masked = []
    for part in (content_type, text):
        part = scrub(part, target.url) or ""
        if target.secret:
            part = part.replace(target.secret, MASK)
        masked.append(part)
    return masked[0], masked[1]


def attempt(sender: Sender, target: Target, event_id: str, note: signing.Notification) -> Result:
    now = clock.utcnow()
    # The grace of a rotation is decided here, at send time: a retry planned inside it and sent
    # after it carries the new secret's signature only.
    previous = target.previous if target.previousUntil is not None and now < target.previousUntil else None
    headers = {
        **note.headers,
        **signing.headers(secret=target.secret, event_id=event_id, body=note.body, now=now, previous=previous),
    }
    try:
        reply = sender.post(target.url, note.body, headers)
    except OriginBusy as exc:
        return Result(Verdict(Outcome.RETRY, exc.message), deferred=True)
    except TargetRefused as exc:
        return Result(Verdict(outcome_of(exc), f"refused by the outbound guard: {exc.reason}"))
    except DeliveryError as exc:
        return Result(Verdict(outcome_of(exc), f"{exc.kind}: {exc.message}"))
    return Result(
        classify(reply.status, reply.body),
        reply.status,
        parse_retry_after(reply.headers.get("retry-after")),
        reply=(reply.headers, reply.body),
    )


class Deliverer:
    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        sender: Sender | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._storage = storage
        self._settings = settings
        self._pools = get_pools(settings)
        self._sender = sender or self._pools.sender
        self._outbox = Outbox(storage, settings)
        self._subs = SubscriptionStore(storage)
        self._log = DeliveryLog(storage, settings.event_retention_days)
        self._rand = rand

    def deliver(
        self, event: EventRecord, data: Any, log_key: tuple[str, str], since: str, targets: list[Target]
    ) -> None:
        """Make one attempt per target and record what follows; raises only if recording fails."""
        self.start(event, data, log_key, since, targets).finish()

    def start(
        self, event: EventRecord, data: Any, log_key: tuple[str, str], since: str, targets: list[Target]
    ) -> Attempts:
        """Hand one attempt per target to the attempt threads and return at once; `finish()` waits
        for them. Called from a function's own thread, never from a pool's (see relay.pipeline.pools)."""
        notes = signing.Notifications(
            event_id=event.id,
            event_type=event.type,
            source=event.source,
            time=event.time,
            subject=event.subject,
            data=data,
            ext=event.ext,
        )
        for mode in {t.mode for t in targets}:
            notes.get(mode)  # built here, once, not by racing attempt threads (a body can be 1 MiB)
        # One queue entry per target and one wake-up for the whole batch (see relay.pipeline.pools). The
        # attempts of one event's fan-out are one flow, taking turns with every other flow; a
        # replay's or resend's attempt (logged from its first try, never handed back yet) is bulk
        # work of its subscription's flow, which live deliveries go before.
        bulk = all(t.logged and t.attempt == 1 and not t.deferred for t in targets)
        laters = Laters(partial(self._send_later, event, log_key, since), clock.utcnow)
        batch = self._pools.attempts.start(
            partial(self._attempt, event, notes, log_key, laters),
            targets,
            key=("bulk", targets[0].sub) if bulk and targets else ("event", event.id),
            bulk=bulk and bool(targets),
            flow_of=None if bulk else self._doubtful_flow,
        )
        return Attempts(self, event, log_key, laters, batch)

    def _doubtful_flow(self, target: Target) -> Hashable | None:
        """Attempts to origins not known to answer (never seen, timing out, breaker open) are one
        flow for all events: taking turns with every event's fan-out, however many dead receivers
        there are they hold back a healthy receiver's attempt by one turn, not by their number."""
        return None if self._sender.answers(target.url) else DOUBTFUL

    def _finish(
        self, event: EventRecord, log_key: tuple[str, str], laters: Laters, batch: Batch[Target, FirstTry | None]
    ) -> None:
        first_tries: list[FirstTry] = []
        failure: BaseException | None = None
        for done, error in batch.wait():
            if error is not None:
                failure = failure or error
            elif done is not None:
                first_tries.append(done)
        # Receipt before raising: the successes are real even if another target's recording failed.
        self._log.receipt(event.id, event.type, log_key, clock.utcnow(), first_tries)
        laters.close()  # what comes back later and was not sent yet (relay.later)
        if failure is not None:
            raise failure

    def _send_later(self, event: EventRecord, log_key: tuple[str, str], since: str, laters: list[Later]) -> None:
        """Work items for targets that come back later, each group due about together (relay.later).
        Their pending rows are written before: if a send fails, the whole batch is done again, which
        is at-least-once; the other order could leave a row saying "pending" with nothing behind it."""
        for delay, targets in gather(laters, clock.utcnow()):
            retry = DeliveryMessage(eventId=event.id, eventType=event.type, log=log_key, since=since, targets=targets)
            self._outbox.delivery_later(retry, delay)

    def _attempt(
        self, event: EventRecord, notes: signing.Notifications, log_key: tuple[str, str], laters: Laters, target: Target
    ) -> FirstTry | None:
        done = self._one(event, notes, log_key, target)
        if isinstance(done, Later):
            laters.add(done)
            return None
        return done

    def _one(
        self, event: EventRecord, notes: signing.Notifications, log_key: tuple[str, str], target: Target
    ) -> FirstTry | Later | None:
        paced = self._paced(event, target)
        if paced is not None:
            return paced  # it waits for its turn in a work item
        started = clock.utcnow()
        try:
            result = attempt(self._sender, target, event.id, notes.get(target.mode))
        except Exception as exc:  # one target's surprise must not fail its batch
            log.exception("delivery attempt failed unexpectedly event=%s subscription=%s", event.id, target.sub)
            result = Result(Verdict(Outcome.RETRY, f"unexpected error: {type(exc).__name__}"))
        elapsed = (clock.utcnow() - started).total_seconds()
        if result.verdict.reason:  # it goes into the delivery log, a log line, disabledReason
            result.verdict = replace(result.verdict, reason=scrub(result.verdict.reason, target.url))
        if result.deferred and target.deferred < MAX_DEFERRALS:
            return self._defer(event, log_key, target, started, result.verdict.reason or "not sent")
        outcome = result.verdict.outcome
        telemetry.record_attempt(outcome.value, elapsed)
        # Successes are counted by the metrics and logged at DEBUG: a line per delivery was 8 % of
        # the CPU in the benchmark, and each is an ingested record in Application Insights.
        level = logging.DEBUG if outcome is Outcome.DELIVERED else logging.INFO
        if log.isEnabledFor(level):
            url = redact_url(target.url)
            log.log(
                level,
                "delivery %s event=%s subscription=%s attempt=%d status=%s url=%s reason=%s",
                outcome.value,
                event.id,
                target.sub,
                target.attempt,
                result.status_code,
                url,
                result.verdict.reason or "-",
                extra={
                    "eventId": event.id,
                    "subscriptionId": target.sub,
                    "attempt": target.attempt,
                    "outcome": outcome.value,
                    "notificationUrl": url,
                },
            )
        # Each attempt's own start and duration, whatever its neighbours in the batch took.
        duration_ms = int(elapsed * 1000)
        done = Attempt(
            status=DeliveryStatus.SUCCEEDED,
            attempts=target.attempt,
            attempted_at=started,
            status_code=result.status_code,
            error=result.verdict.reason,
            record=AttemptRecord(
                at=started,
                duration_ms=duration_ms,
                status_code=result.status_code,
                error=result.verdict.reason if outcome is not Outcome.DELIVERED else None,
                response=(
                    kept_response(*result.reply, target)
                    if result.reply is not None and (target.logged or outcome is not Outcome.DELIVERED)
                    else None
                ),
                kind="retry" if target.attempt > 1 else target.kind,
            ),
        )
        if result.status_code == 429 and result.retry_after:
            Pacer(self._storage).back_off(target.sub, result.retry_after)  # its next attempts wait too
        if outcome is Outcome.DELIVERED:
            health.succeeded(self._storage, target.sub)
        else:
            health.failed(self._storage, self._settings, target, result.verdict.reason or "failed")
        if outcome is Outcome.DELIVERED:
            stats.record(self._storage, target.sub, "succeeded", elapsed)
            if target.once:
                self._subs.delete(target.sub)
            if target.logged:
                self._log.write(target.sub, event.id, event.type, log_key, done)
                return None
            return FirstTry(target.sub, result.status_code or 200, started, duration_ms)
        if outcome is Outcome.GONE:
            self._subs.disable(target.sub, result.verdict.reason or "receiver is gone")
            done.status = DeliveryStatus.FAILED
            self._failed(target.sub, self._log.write(target.sub, event.id, event.type, log_key, done), elapsed)
            return None
        delay = None
        if outcome is Outcome.RETRY:
            delay = retry_delay(
                self._settings.retry_schedule, target.attempt, retry_after=result.retry_after, rand=self._rand
            )
        if delay is None:
            done.status = DeliveryStatus.FAILED
            self._failed(target.sub, self._log.write(target.sub, event.id, event.type, log_key, done), elapsed)
            return None
        stats.record(self._storage, target.sub, "retrying", elapsed)
        # The pending row here; the retry's work item is sent with others due then (relay.later).
        done.status = DeliveryStatus.PENDING
        done.next_attempt_at = started + timedelta(seconds=elapsed + delay)
        self._log.write(target.sub, event.id, event.type, log_key, done)
        return Later(
            target.model_copy(update={"attempt": target.attempt + 1, "logged": True, "deferred": 0}),
            done.next_attempt_at,
        )

    def _paced(self, event: EventRecord, target: Target) -> Later | None:
        """None when this attempt may start now under its subscription's rate limit and a receiver's
        Retry-After (relay.store.pacing); one that may not soon waits here, else it comes back in a
        work item at its reserved start (not an attempt, not a deferral: it never fails)."""
        wait = backoffs().wait(target.sub)
        slot = target.slot
        if target.rate is not None:
            hold = min(PACE_HOLD, PACE_HELD_STARTS / target.rate)
            while True:
                decision = Pacer(self._storage).claim(target.sub, target.rate, slot)
                slot = decision.slot if decision.slot is not None else slot
                if decision.wait <= 0:
                    return None
                if decision.wait > hold:
                    wait = max(wait, decision.wait)
                    break
                time.sleep(decision.wait)
        if wait <= 0:
            return None
        # No delivery log row for the wait: a burst of waiting deliveries would cost a write each,
        # and the work item is as durable (a retry's row says pending already).
        log.debug("delivery waits %.2fs for its pace event=%s subscription=%s", wait, event.id, target.sub)
        return Later(target.model_copy(update={"slot": slot}), clock.utcnow() + timedelta(seconds=wait))

    def _defer(
        self, event: EventRecord, log_key: tuple[str, str], target: Target, started: datetime, reason: str
    ) -> Later:
        """Hand an attempt that was not sent (its origin's slots are held) back for a little while,
        without counting it; the pending row says why it waits."""
        delay = defer_delay(target.deferred, self._settings.delivery_timeout) * (1 + 0.5 * self._rand())
        log.info(
            "delivery deferred event=%s subscription=%s attempt=%d reason=%s",
            event.id,
            target.sub,
            target.attempt,
            reason,
        )
        due = started + timedelta(seconds=delay)
        self._log.write(
            target.sub,
            event.id,
            event.type,
            log_key,
            Attempt(
                status=DeliveryStatus.PENDING,
                attempts=target.attempt - 1,
                attempted_at=started,
                error=reason,
                next_attempt_at=due,
            ),
        )
        return Later(target.model_copy(update={"logged": True, "deferred": target.deferred + 1}), due)

    def _failed(self, sub_id: str, before: DeliveryStatus | None, elapsed: float | None = None) -> None:
        """Count a failed outcome; an event counts as failed once per subscription (a replay
        that fails again is an attempt more, not a failure more)."""
        stats.record(self._storage, sub_id, "failed", elapsed, new_failure=before is not DeliveryStatus.FAILED)

    def skip_removed(
        self, message: DeliveryMessage, paused: list[Target] | None = None, disabled: list[Target] | None = None
    ) -> list[Target]:
        """Targets whose subscription was not deleted or disabled after the work was planned,
        with the current secrets where they were rotated since (the message carries the old ones):
        the rotation's marker costs nothing more than the tombstone query every item makes, and
        only a rotated subscription pays a read of its row. With `paused`, targets whose
        subscription was paused since go there instead (to be held), and with `disabled` those
        whose subscription the relay disabled since (held too, released by activate)."""
        changes = self._subs.changes(message.since)
        removed, rotated = changes.removed, changes.rotated
        live = []
        read: dict[str, Subscription | None] = {}
        for target in message.targets:
            if removed.get(target.sub, -1) >= target.gen:
                if disabled is not None and health.held(self._storage, target, read):
                    disabled.append(target)  # the relay disabled it: held until it is re-activated
                    continue
                if target.logged:  # it has a row to close
                    self._give_up(message, target, "subscription was deleted or disabled")
                continue
            if paused is not None and target.sub in changes.paused:
                paused.append(target)
                continue
            if target.sub in rotated:
                current = self._subs.get(target.sub)
                if current is None:  # deleted since the tombstones were read
                    if target.logged:
                        self._give_up(message, target, "subscription was deleted or disabled")
                    continue
                target = target.model_copy(update=current.signing())
            live.append(target)
        return live

    def expired(self, message: DeliveryMessage, targets: list[Target]) -> None:
        for target in targets:
            self._give_up(message, target, "event is no longer retained")

    def abandon(self, message: DeliveryMessage, reason: str) -> None:
        """Record every target of a work item that cannot be processed as failed."""
        for target in message.targets:
            before = self._log.write(
                target.sub,
                message.eventId,
                message.eventType,
                message.log,
                Attempt(
                    status=DeliveryStatus.FAILED,
                    attempts=max(target.attempt - 1, 0),
                    attempted_at=clock.utcnow(),
                    error=reason,
                ),
            )
            self._failed(target.sub, before)

    def _give_up(self, message: DeliveryMessage, target: Target, reason: str) -> None:
        before = self._log.write(
            target.sub,
            message.eventId,
            message.eventType,
            message.log,
            Attempt(
                status=DeliveryStatus.FAILED, attempts=target.attempt - 1, attempted_at=clock.utcnow(), error=reason
            ),
        )
        self._failed(target.sub, before)


@dataclass
class Attempts:
    """The attempts `Deliverer.start` handed to the attempt threads."""

    deliverer: Deliverer
    event: EventRecord
    log_key: tuple[str, str]
    laters: Laters
    batch: Batch[Target, FirstTry | None]

    def finish(self) -> None:
        """Wait for every attempt, write the batch's receipt and send what comes back later;
        raises only if recording failed."""
        self.deliverer._finish(self.event, self.log_key, self.laters, self.batch)
