"""One attempt's deadline, kept as a whole: the `Exchange` of an attempt and the `Deadlines` thread
that cuts off an attempt still running when its time is up (`relay.outbound.transport` uses both)."""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time

from relay.outbound.connections import Key, Line
from relay.outbound.guard import Target, request_target


class Exchange:
    """One attempt: the checked target, its deadline, and the socket the deadline thread may cut."""

    def __init__(self, target: Target, deadline: float) -> None:
        self.target = target
        self.request_target = request_target(target.url)
        self.deadline = deadline
        self.connected = False  # a connection was made: from here on the request may have been sent
        self.held: tuple[Key, Line] | None = None  # set by the adapter once there is an answer
        self._lock = threading.Lock()
        # The twin of the connection's socket (see `Line`) while this attempt uses it: shutting it
        # down stops a blocked read on the original from another thread.
        self._twin: socket.socket | None = None
        self._expired = False
        self._finished = False

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.001)

    @property
    def expired(self) -> bool:
        with self._lock:
            return self._expired

    def attach(self, twin: socket.socket | None) -> None:
        """The connection whose socket `twin` duplicates carries this attempt from now on."""
        if twin is None:
            return
        with self._lock:
            if self._finished or self._twin is not None:
                return
            self._twin = twin
            if self._expired:
                _cut(twin)

    def detach(self) -> None:
        """The connection is no longer this attempt's (about to be closed, or back among the idle
        ones): from here on the deadline thread cannot cut it. The twin stays its line's."""
        with self._lock:
            self._twin = None

    def expire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self._expired = True
            if self._twin is not None:
                _cut(self._twin)

    def finish(self) -> None:
        with self._lock:
            self._finished = True
        self.detach()


def _cut(sock: socket.socket) -> None:
    # A TLS handshake needs no cut: CPython's do_handshake holds the socket timeout (what was left
    # of the attempt at connect) for the whole handshake, not per read.
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Deadlines:
    """One daemon thread per transport that cuts off attempts still running at their deadline.

    Why a watchdog remains: urllib3's timeouts bound each socket read, and http.client reads the
    status line and headers in many small reads, so a receiver that trickles a header byte more
    often than the read timeout would hold an attempt (and a delivery thread) for as long as it
    likes. Nothing in urllib3's or requests' API bounds that phase as a whole; shutting the
    attempt's socket from here does (the body is also read in chunks against the deadline).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Exchange]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def watch(self, exchange: Exchange) -> None:
        with self._cond:
            if self._stopped:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="relay-outbound-deadlines", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (exchange.deadline, next(self._order), exchange))
            if self._heap[0][2] is exchange:
                self._cond.notify()

    def stop(self) -> None:
        """Stop watching, and end the thread (it holds no lock while it cuts, so this is quick)."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                due = []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
            for exchange in due:
                exchange.expire()
