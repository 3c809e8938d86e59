"""The process's pools, owned by one object: the threads that make delivery attempts, the threads
that send queue messages or read rows side by side, and the one HTTP sender the attempts share.

Rules that keep them from starving:
- work running on a pool thread never submits to a pool and waits: an attempt sends its retry
  message itself, a queue send is one call. Only a function's own thread (a host invocation) or
  a kick (a fan-out started by a publish, relay.kick) submits, and waits for what it submitted,
  always to another pool than its own;
- the sender's connection pool holds as many connections as there are attempt threads, so an
  attempt never waits for a connection another attempt holds.

`get_pools()` builds them on first use (an invocation, not an import); `close_pools()` shuts them
down at host stop (the dev host calls it; in Azure the worker process exits, and `atexit` runs
it). A later `get_pools()` builds new ones.
"""

from __future__ import annotations

import atexit
import threading
from concurrent.futures import ThreadPoolExecutor

from . import signing
from .outbound import Sender
from .settings import Settings

# Delivery attempts (threads) and the share of them one receiver may hold are settings
# (RELAY_ATTEMPT_THREADS, RELAY_ORIGIN_SLOTS): they depend on the receivers an operator serves. The
# pools below serve storage requests the relay makes itself, sized to what one instance's own work
# needs, whoever the receivers are.
# Threads for queue sends done side by side (a batch of events, work items, a replay's messages).
SEND_THREADS = 16
# Threads for storage point reads done side by side (one owner's page of subscriptions).
READ_THREADS = 8
# Threads fanning out just-published events in the publishing process (relay.kick). A kick is an
# invocation of its own: it submits to the attempt and send pools, never to this one.
KICK_THREADS = 16


class Pools:
    def __init__(self, settings: Settings, send_threads: int = SEND_THREADS) -> None:
        attempt_threads = settings.attempt_threads
        self.attempts = ThreadPoolExecutor(max_workers=attempt_threads, thread_name_prefix="deliver")
        self.sends = ThreadPoolExecutor(max_workers=send_threads, thread_name_prefix="send")
        self.reads = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="read")
        self.kicks = ThreadPoolExecutor(max_workers=KICK_THREADS, thread_name_prefix="kick")
        self.sender = Sender(
            allow_private=settings.allow_private_targets,
            timeout=settings.delivery_timeout,
            user_agent=signing.USER_AGENT,
            pool_size=attempt_threads,
            origin_slots=settings.origin_slots,
        )

    def close(self) -> None:
        """Finish what was submitted, then release the threads and connections."""
        self.kicks.shutdown(wait=True)  # first: kicks submit to the pools below
        self.attempts.shutdown(wait=True)
        self.sends.shutdown(wait=True)
        self.reads.shutdown(wait=True)
        self.sender.close()


_lock = threading.Lock()
_pools: Pools | None = None


def get_pools(settings: Settings) -> Pools:
    """The process's pools, built on first use from the settings of that moment."""
    global _pools
    with _lock:
        if _pools is None:
            _pools = Pools(settings)
        return _pools


@atexit.register
def close_pools() -> None:
    """Shut the process's pools down (host stop); the next `get_pools` builds new ones."""
    global _pools
    with _lock:
        pools, _pools = _pools, None
    if pools is not None:
        pools.close()
