"""Delivering one event to its subscribers, and deciding what happens after each attempt.

Attempts for all targets of a work item run concurrently on one pooled HTTP client. After the
attempts: first-attempt successes go into one receipt for the batch; a success after a retry,
a final failure and a replay are written to the subscription's own log row; a failure worth retrying
becomes its own queue message, invisible until the backoff delay has passed (the host's own
retry is a fixed delay, so it is kept for crashes); a receiver that says its flow is gone
disables the subscription.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
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
from relay.outbound.sender import DeliveryError, OriginBusy, Sender, TLSError, redact_url, scrub
from relay.pipeline import health, stats
from relay.pipeline.outbox import Outbox
from relay.pipeline.pools import Batch, get_pools
from relay.store.deliverylog import Attempt, DeliveryLog, FirstTry
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


def attempt(sender: Sender, target: Target, event_id: str, note: signing.Notification) -> Result:
    headers = {
        **note.headers,
        **signing.headers(secret=target.secret, event_id=event_id, body=note.body, now=clock.utcnow()),
    }
    try:
        reply = sender.post(target.url, note.body, headers)
    except OriginBusy as exc:
        return Result(Verdict(Outcome.RETRY, exc.message), deferred=True)
    except TargetRefused as exc:
        return Result(Verdict(outcome_of(exc), f"refused by the outbound guard: {exc.reason}"))
    except DeliveryError as exc:
        return Result(Verdict(outcome_of(exc), f"{exc.kind}: {exc.message}"))
    return Result(classify(reply.status, reply.body), reply.status, parse_retry_after(reply.headers.get("retry-after")))


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
        )
        for mode in {t.mode for t in targets}:
            notes.get(mode)  # built here, once, not by racing attempt threads (a body can be 1 MiB)
        # One queue entry per target and one wake-up for the whole batch (see relay.pipeline.pools). The
        # attempts of one event's fan-out are one flow, taking turns with every other flow; a
        # replay's or resend's attempt (logged from its first try, never handed back yet) is bulk
        # work of its subscription's flow, which live deliveries go before.
        bulk = all(t.logged and t.attempt == 1 and not t.deferred for t in targets)
        batch = self._pools.attempts.start(
            partial(self._one, event, notes, log_key, since),
            targets,
            key=("bulk", targets[0].sub) if bulk and targets else ("event", event.id),
            bulk=bulk and bool(targets),
        )
        return Attempts(self, event, log_key, batch)

    def _finish(self, event: EventRecord, log_key: tuple[str, str], batch: Batch[Target, FirstTry | None]) -> None:
        first_tries: list[FirstTry] = []
        failure: BaseException | None = None
        for done, error in batch.wait():
            if error is not None:
                failure = failure or error
            elif done is not None:
                first_tries.append(done)
        # Receipt before raising: the successes are real even if another target's recording failed.
        self._log.receipt(event.id, event.type, log_key, clock.utcnow(), first_tries)
        if failure is not None:
            raise failure

    def _one(
        self, event: EventRecord, notes: signing.Notifications, log_key: tuple[str, str], since: str, target: Target
    ) -> FirstTry | None:
        if not self._paced(event, log_key, since, target):
            return None  # it waits for its turn in the queue
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
            self._defer(event, log_key, since, target, started, result.verdict.reason or "not sent")
            return None
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
        done = Attempt(
            status=DeliveryStatus.SUCCEEDED,
            attempts=target.attempt,
            attempted_at=started,
            status_code=result.status_code,
            error=result.verdict.reason,
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
            return FirstTry(target.sub, result.status_code or 200)
        if outcome is Outcome.GONE:
            self._subs.disable(target.sub, result.verdict.reason or "receiver is gone")
            stats.record(self._storage, target.sub, "failed", elapsed)
            done.status = DeliveryStatus.FAILED
            self._log.write(target.sub, event.id, event.type, log_key, done)
            return None
        delay = None
        if outcome is Outcome.RETRY:
            delay = retry_delay(
                self._settings.retry_schedule, target.attempt, retry_after=result.retry_after, rand=self._rand
            )
        stats.record(self._storage, target.sub, "failed" if delay is None else "retrying", elapsed)
        if delay is None:
            done.status = DeliveryStatus.FAILED
            self._log.write(target.sub, event.id, event.type, log_key, done)
            return None
        # The pending row first: if enqueueing the retry fails, the whole message is retried and
        # this attempt made again, which is at-least-once; the other order could show "failed".
        done.status = DeliveryStatus.PENDING
        done.next_attempt_at = started + timedelta(seconds=elapsed + delay)
        self._log.write(target.sub, event.id, event.type, log_key, done)
        self._requeue(
            event,
            log_key,
            since,
            target.model_copy(update={"attempt": target.attempt + 1, "logged": True, "deferred": 0}),
            delay,
        )
        return None

    def _paced(self, event: EventRecord, log_key: tuple[str, str], since: str, target: Target) -> bool:
        """Whether this attempt may start now under its subscription's rate limit and a receiver's
        Retry-After (relay.store.pacing); one that may not soon waits here, else it is sent back to
        the queue for its reserved start (not an attempt, not a deferral: it never fails)."""
        wait = backoffs().wait(target.sub)
        slot = target.slot
        if target.rate is not None:
            hold = min(PACE_HOLD, PACE_HELD_STARTS / target.rate)
            while True:
                decision = Pacer(self._storage).claim(target.sub, target.rate, slot)
                slot = decision.slot if decision.slot is not None else slot
                if decision.wait <= 0:
                    return True
                if decision.wait > hold:
                    wait = max(wait, decision.wait)
                    break
                time.sleep(decision.wait)
        if wait <= 0:
            return True
        # No delivery log row for the wait: a burst of waiting deliveries would cost a write each,
        # and the queue message is as durable (a retry's row says pending already).
        log.debug("delivery waits %.2fs for its pace event=%s subscription=%s", wait, event.id, target.sub)
        self._requeue(event, log_key, since, target.model_copy(update={"slot": slot}), wait)
        return False

    def _defer(
        self, event: EventRecord, log_key: tuple[str, str], since: str, target: Target, started: datetime, reason: str
    ) -> None:
        """Put an attempt that was not sent (its origin's slots are held) back in the queue for a
        little while, without counting it; the pending row says why it waits."""
        delay = defer_delay(target.deferred, self._settings.delivery_timeout) * (1 + 0.5 * self._rand())
        log.info(
            "delivery deferred event=%s subscription=%s attempt=%d reason=%s",
            event.id,
            target.sub,
            target.attempt,
            reason,
        )
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
                next_attempt_at=started + timedelta(seconds=delay),
            ),
        )
        self._requeue(
            event, log_key, since, target.model_copy(update={"logged": True, "deferred": target.deferred + 1}), delay
        )

    def _requeue(self, event: EventRecord, log_key: tuple[str, str], since: str, target: Target, delay: float) -> None:
        retry = DeliveryMessage(eventId=event.id, eventType=event.type, log=log_key, since=since, targets=[target])
        self._outbox.delivery_later(retry, delay)

    def skip_removed(self, message: DeliveryMessage) -> list[Target]:
        """Targets whose subscription was not deleted or disabled after the work was planned,
        with the current secret where it was rotated since (the message carries the old one)."""
        removed, rotated = self._subs.changes_since(message.since)
        live = []
        read: dict[str, Subscription | None] = {}
        for target in message.targets:
            if removed.get(target.sub, -1) >= target.gen:
                if health.hold(self._storage, message, target, read):
                    continue  # the relay disabled it: held until it is re-activated
                if target.logged:  # it has a row to close
                    self._give_up(message, target, "subscription was deleted or disabled")
                continue
            if target.sub in rotated:
                secret = self._subs.current_secret(target.sub)
                if secret is None:  # deleted since the tombstones were read
                    if target.logged:
                        self._give_up(message, target, "subscription was deleted or disabled")
                    continue
                target = target.model_copy(update={"secret": secret})
            live.append(target)
        return live

    def expired(self, message: DeliveryMessage, targets: list[Target]) -> None:
        for target in targets:
            self._give_up(message, target, "event is no longer retained")

    def abandon(self, message: DeliveryMessage, reason: str) -> None:
        """Record every target of a work item that cannot be processed as failed."""
        for target in message.targets:
            stats.record(self._storage, target.sub, "failed")
            self._log.write(
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

    def _give_up(self, message: DeliveryMessage, target: Target, reason: str) -> None:
        stats.record(self._storage, target.sub, "failed")
        self._log.write(
            target.sub,
            message.eventId,
            message.eventType,
            message.log,
            Attempt(
                status=DeliveryStatus.FAILED, attempts=target.attempt - 1, attempted_at=clock.utcnow(), error=reason
            ),
        )


@dataclass
class Attempts:
    """The attempts `Deliverer.start` handed to the attempt threads."""

    deliverer: Deliverer
    event: EventRecord
    log_key: tuple[str, str]
    batch: Batch[Target, FirstTry | None]

    def finish(self) -> None:
        """Wait for every attempt and write the batch's receipt; raises only if recording failed."""
        self.deliverer._finish(self.event, self.log_key, self.batch)
