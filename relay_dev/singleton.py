"""The Functions host's rule for timer triggers, kept by the dev host: one instance at a time.

When an app runs on several instances, "only a single instance of a timer-triggered function is
run across all instances" (https://learn.microsoft.com/azure/azure-functions/functions-bindings-timer#scale-out):
the host's listener for the timer holds a blob lease in the app's storage
(`azure-webjobs-hosts/locks/{host id}/{function}.Listener`), and an instance without it does not
fire. Two dev hosts on one storage account are two instances of one app (the scale-out and rate
tests run them so). Without this lease both ran the due timer, moved the same due rows to the
queue twice, and a rate-limited subscription's deliveries went out two to four times each.

The lease is short (15 s, renewed every 5 s by a thread of its own, whatever the timer's run is
doing) so that a dev host that was killed hands the timer over soon. Its id is derived from the
dev host's address, so a dev host restarted on the same port takes its lock back at once, as the
same instance would.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobLeaseClient, BlobServiceClient

__all__ = ["ListenerLock"]

CONTAINER = "azure-webjobs-hosts"
HOST_ID = "relay-dev"
LEASE_SECONDS = 15
RENEW_AFTER = 5.0
# An instance without the lock asks again this often, not at each of the timer's 0.2 s ticks.
ACQUIRE_EVERY = 1.0
log = logging.getLogger("relay.devhost")


class ListenerLock:
    """Whether this instance may fire one timer function now (it holds its listener's lease). Once
    taken, a thread of its own renews the lease, so a run of the timer that takes longer than the
    lease (a stalled machine) does not let another instance fire it meanwhile."""

    def __init__(self, blobs: BlobServiceClient, function: str, instance: str) -> None:
        self._blobs = blobs
        self._function = function
        self._blob = blobs.get_blob_client(CONTAINER, f"locks/{HOST_ID}/{function}.Listener")
        self._id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"relay-dev:{instance}:{function}"))
        self._lock = threading.Lock()
        self._held = False
        self._asked_at = float("-inf")
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def held(self) -> bool:
        with self._lock:
            if self._held:
                return True
            now = time.monotonic()
            if now - self._asked_at < ACQUIRE_EVERY or self._stop.is_set():
                return False
            self._asked_at = now
        try:
            self._take()
        except HttpResponseError:
            return False  # another instance holds it
        with self._lock:
            self._held = True
            self._renewer = threading.Thread(target=self._renew, name=f"timer-lock-{self._function}", daemon=True)
            self._renewer.start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_AFTER):
            try:
                self._take()
            except Exception as exc:  # noqa: BLE001 - lost (run out and taken) or storage away: not ours now
                log.info("timer lock for %s lost: %s", self._function, getattr(exc, "reason", None) or exc)
                with self._lock:
                    self._held = False
                return

    def _take(self) -> None:
        """Acquire, or renew: with the lease's own id as the proposed one, acquiring a held lease
        renews it (and takes back the one a dead process of this address left)."""
        try:
            self._blob.acquire_lease(lease_duration=LEASE_SECONDS, lease_id=self._id)
        except ResourceNotFoundError:
            try:
                self._blobs.create_container(CONTAINER)
            except ResourceExistsError:
                pass
            try:
                self._blob.upload_blob(b"", overwrite=False)
            except ResourceExistsError:
                pass
            self._blob.acquire_lease(lease_duration=LEASE_SECONDS, lease_id=self._id)

    def release(self) -> None:
        """At a clean stop: the next instance need not wait for the lease to run out."""
        self._stop.set()
        with self._lock:
            held, self._held = self._held, False
            renewer = self._renewer
        if renewer is not None:
            renewer.join()
        if not held:
            return
        try:
            BlobLeaseClient(self._blob, lease_id=self._id).release()
        except HttpResponseError:
            pass  # run out or taken already: nothing to hand over
