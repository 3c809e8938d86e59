"""Fairness between origins: per-origin slots, a lane for doubtful origins and a circuit breaker,
shared by a sender's threads.

One origin (scheme, host, port) cannot take every delivery thread: attempts to it share a few
slots, an attempt that cannot get one soon is handed back (`OriginBusy`) instead of waiting, and
an origin that keeps timing out is not connected to for a while (`BreakerOpen`). Per-origin slots
alone do not help when dead receivers are spread over many origins (150 dead origins took every
thread for a whole timeout each), so attempts to origins that are not known to answer (never
seen, or whose last attempt timed out) share one small lane, and the rest of the threads stay
with the origins that answer.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from relay.outbound.errors import BreakerOpen, OriginBusy
from relay.outbound.guard import Origin

__all__ = ["ORIGINS_KEPT", "OriginGate"]


@dataclass
class _Waiter:
    cond: threading.Condition  # on the gate's one lock; wakes only this waiter
    granted: bool = False  # a freed slot was handed to it (and is counted in `in_flight`)
    laned: bool = False  # that slot was counted in the lane for doubtful origins


@dataclass
class _OriginState:
    in_flight: int = 0
    queue: deque[_Waiter] = field(default_factory=deque)  # waiting for a slot, oldest first
    full_since: float = 0.0  # when the slots last became all taken, or one was handed on
    timeouts: deque[float] = field(default_factory=deque)
    answers: deque[float] = field(default_factory=lambda: deque(maxlen=ANSWERS_KEPT))  # recent answer times
    open_until: float = 0.0  # breaker: no connection before this; 0 = closed
    probing: bool = False  # breaker half-open: one attempt is finding out
    trusted: bool = False  # its last finished attempt got an answer (not a timeout)
    in_lane: int = 0  # of `in_flight`, attempts counted in the gate's lane for doubtful origins


# Origins remembered before idle ones are swept (each remembered one had a recent timeout or answer).
ORIGINS_KEPT = 4096
# How many of an origin's recent answer times its stall rule is judged against, and by how much the
# slowest of them is stretched: a full origin is stalled only when nothing came back for longer than
# it has recently taken to answer (a slow flow, or a loaded machine), not after a fixed second.
ANSWERS_KEPT = 16
PATIENCE_FACTOR = 2.0


class OriginGate:
    """Per-origin slots and circuit breaker, shared by every thread of one sender.

    Slots: at most `cap` attempts to one origin at a time. A thread that finds them all taken
    queues for one; a freed slot is handed to the oldest waiter, never to a thread that comes
    later (which would let a waiter starve while the origin answers quickly). It waits only while
    the origin is making progress (a slot was freed within its patience: `stall`
    seconds, or twice the slowest of its recent answers when that is longer) and at most `wait`
    seconds; otherwise `OriginBusy` hands the delivery back at once, so a receiver that never
    answers holds `cap` threads and no more, and one that answers slowly is not taken for dead.

    Lane: an origin is trusted once an attempt to it got an answer, and untrusted again when one
    times out. Attempts to untrusted origins (never seen, or failing) hold at most `lane` slots of
    the whole gate at a time; one more is handed back at once (`OriginBusy`, rescheduled by the
    caller), so however many dead origins there are, the other threads stay with the origins
    that answer. `lane=None`: no lane.

    Breaker: `trip` timeouts within `window` seconds open it for `cooloff` seconds, during which
    attempts fail at once with `BreakerOpen` without connecting (an origin that has never
    answered opens it after `first_trip`). After that one attempt (a probe) goes through; its
    success closes the breaker, another timeout opens it again.
    """

    def __init__(
        self,
        *,
        cap: int,
        wait: float,
        stall: float,
        trip: int,
        window: float,
        cooloff: float,
        lane: int | None = None,
        first_trip: int | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cap, self.wait, self.stall = cap, wait, stall
        self.trip, self.window, self.cooloff = trip, window, cooloff
        self.lane, self.first_trip = lane, first_trip or trip
        self._in_lane = 0  # attempts in flight to untrusted origins, all origins together
        self._now = now
        self._lock = threading.Lock()
        self._origins: dict[Origin, _OriginState] = {}

    def remembered(self) -> int:
        """How many origins the gate keeps state for: those with attempts in flight or waiting,
        or a timeout, answer times, open breaker or probe still to remember. Bounded near
        `ORIGINS_KEPT`."""
        with self._lock:
            return len(self._origins)

    def answers(self, origin: Origin) -> bool:
        """Whether the origin's last finished attempt got an answer and its breaker is closed."""
        with self._lock:
            state = self._origins.get(origin)
            return state is not None and state.trusted and not state.open_until

    def acquire(self, origin: Origin, label: str) -> bool:
        """Take a slot; True when this attempt is the breaker's probe. Raises `OriginBusy` or
        `BreakerOpen` when nothing may be sent now."""
        with self._lock:
            now = self._now()
            state = self._origins.get(origin)
            if state is None:
                if len(self._origins) >= ORIGINS_KEPT:
                    self._forget_idle(now)
                state = self._origins[origin] = _OriginState()
            give_up_at = now + self.wait
            waiter: _Waiter | None = None
            kept = False  # the caller leaves with a slot
            try:
                while True:
                    holds = waiter is not None and waiter.granted  # a slot was handed to this thread
                    if state.open_until:
                        if now < state.open_until or state.probing:
                            raise BreakerOpen(
                                f"not sent: {label} timed out lately ({self.first_trip} timeout if it "
                                f"never answered, else {self.trip} within {self.window:g} s), so it is "
                                "left alone for a while"
                            )
                        if not holds:
                            self._check_lane(state, label)
                        state.probing = True  # half-open: this attempt finds out whether it is back
                        if not holds:
                            self._take(state, now)
                        kept = True
                        return True
                    if holds:
                        kept = True
                        return False
                    if state.in_flight < self._cap(state) and (not state.queue or state.queue[0] is waiter):
                        self._check_lane(state, label)
                        if waiter is not None:  # first in the queue, with a slot free: take it
                            state.queue.popleft()
                            waiter.granted = True
                        self._take(state, now)
                        kept = True
                        return False
                    patience = self._patience(state)
                    stalled_at = state.full_since + patience
                    if now >= stalled_at or now >= give_up_at:
                        raise OriginBusy(
                            f"not sent: {state.in_flight} attempts to {label} are in flight and "
                            f"none finished within {min(patience, self.wait):.3g} s"
                        )
                    if waiter is None:
                        # While it waits, the entry stays (release keeps entries with a queue).
                        waiter = _Waiter(threading.Condition(self._lock))
                        state.queue.append(waiter)
                    waiter.cond.wait(min(stalled_at, give_up_at) - now)
                    now = self._now()
            finally:
                if waiter is not None and not waiter.granted:
                    state.queue.remove(waiter)
                elif waiter is not None and not kept:
                    # A slot was handed over, but this thread leaves without it (the breaker opened
                    # meanwhile, or anything raised while it woke): the slot goes on, not lost.
                    state.in_flight -= 1
                    if waiter.laned:
                        state.in_lane -= 1
                        self._in_lane -= 1
                    if not state.open_until:
                        self._hand_on(state, now)

    def _laned(self, state: _OriginState) -> bool:
        """Whether an attempt to this origin now would count in the lane for doubtful origins."""
        return self.lane is not None and not state.trusted

    def _cap(self, state: _OriginState) -> int:
        """Slots the origin may hold: one while it is doubtful (its first answer, or its recovery,
        decides whether the others are worth a thread), `cap` once it answers."""
        return 1 if self._laned(state) else self.cap

    def _check_lane(self, state: _OriginState, label: str) -> None:
        if self._laned(state) and self._in_lane >= (self.lane or 0):
            raise OriginBusy(
                f"not sent: {label} has not answered lately, and the {self.lane} attempts allowed "
                "to such receivers at a time are in flight"
            )

    def _patience(self, state: _OriginState) -> float:
        return max(self.stall, PATIENCE_FACTOR * max(state.answers, default=0.0))

    def _forget_idle(self, now: float) -> None:
        """Drop origins with nothing in flight whose timeouts and breaker have all expired."""
        for origin, state in list(self._origins.items()):
            if (
                not state.in_flight
                and not state.queue
                and now >= state.open_until
                and not state.probing
                and all(t <= now - self.window for t in state.timeouts)
            ):
                del self._origins[origin]

    def _take(self, state: _OriginState, now: float) -> bool:
        """Count a slot taken (in the lane too, for a doubtful origin); True when it is laned."""
        state.in_flight += 1
        laned = self._laned(state)
        if laned:
            state.in_lane += 1
            self._in_lane += 1
        if state.in_flight >= self._cap(state):
            state.full_since = now
        return laned

    def _hand_on(self, state: _OriginState, now: float) -> None:
        """Give free slots to the oldest waiters (each counted as in flight at once)."""
        while (
            state.queue
            and state.in_flight < self._cap(state)
            and not (self._laned(state) and self._in_lane >= (self.lane or 0))
        ):
            waiter = state.queue.popleft()
            waiter.granted = True
            waiter.laned = self._take(state, now)
            waiter.cond.notify()

    def release(self, origin: Origin, probe: bool, timed_out: bool, took: float | None = None) -> None:
        """Free a slot. `took`: how long the attempt waited for its answer, when it got one (a
        timeout is no answer: it counts towards the breaker, not the origin's patience)."""
        with self._lock:
            state = self._origins[origin]
            now = self._now()
            state.in_flight -= 1
            if state.in_lane:
                state.in_lane -= 1
                self._in_lane -= 1
            answered_before = bool(state.answers)
            if timed_out:
                state.timeouts.append(now)
                state.trusted = False
            elif took is not None:
                state.answers.append(took)
                state.trusted = True
            while state.timeouts and state.timeouts[0] <= now - self.window:
                state.timeouts.popleft()
            was_open = bool(state.open_until)
            if probe:
                state.probing = False
                if timed_out:
                    state.open_until = now + self.cooloff
                else:
                    state.open_until = 0.0
                    state.timeouts.clear()
            elif (
                timed_out
                and not state.open_until
                and len(state.timeouts) >= (self.trip if answered_before else self.first_trip)
            ):
                state.open_until = now + self.cooloff
            if state.open_until:
                if not was_open:
                    for waiter in state.queue:
                        waiter.cond.notify()  # waiters learn of the breaker now, not at their deadline
            else:
                self._hand_on(state, now)  # the freed slot goes to the oldest waiter
            # An idle origin's answer times are kept (the next burst to a slow flow is judged by
            # them) until the table fills and `_forget_idle` sweeps it.
            if not (state.in_flight or state.queue or state.timeouts or state.open_until or state.answers):
                del self._origins[origin]  # keep the table to origins with something to remember
