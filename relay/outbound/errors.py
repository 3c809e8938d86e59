"""Why an attempt got no HTTP answer, as a class tree (encode/httpx's `_exceptions.py` is the model).

    DeliveryError                 an attempt that got no answer; `message` says why, for people
    ├── TransportError            something went wrong on the way to or from the receiver
    │   ├── DeliveryTimeout       no (complete) answer within the attempt's deadline, DNS included
    │   ├── NetworkError
    │   │   ├── ConnectError      nothing was sent: no connection (refused, unreachable, DNS unwell)
    │   │   └── ConnectionBroken  the connection was reset or closed before an answer
    │   ├── TLSError              the TLS handshake failed: a certificate that does not verify
    │   └── ProtocolError         what came back was not HTTP
    ├── BreakerOpen               nothing was sent: the origin's circuit breaker is open
    └── SenderClosed              nothing was sent: the client has been shut down

    OriginBusy                    not an attempt at all: every slot of the origin is taken
    TargetRefused                 (relay.core.errors) the guard will not call the URL

What each class means for a delivery (retry, fail) is decided in one table,
`relay.pipeline.delivery.OUTCOMES`. `kind` is the short label the delivery log's text starts with.
No message here ever quotes the URL's query, where the secrets live.
"""

from __future__ import annotations

from relay.core.errors import RelayError

__all__ = [
    "BreakerOpen",
    "ConnectError",
    "ConnectionBroken",
    "DeliveryError",
    "DeliveryTimeout",
    "NetworkError",
    "OriginBusy",
    "ProtocolError",
    "SenderClosed",
    "TLSError",
    "TransportError",
]


class DeliveryError(RelayError):
    """An attempt that got no HTTP answer."""

    kind = "other"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TransportError(DeliveryError):
    """The exchange with the receiver failed."""


class DeliveryTimeout(TransportError):
    """No complete answer within the attempt's deadline (resolving, connecting, or reading)."""

    kind = "timeout"


class NetworkError(TransportError):
    """The network failed us: no connection, or one that broke."""


class ConnectError(NetworkError):
    """No connection was made, so nothing was sent; the next checked address may be tried."""

    kind = "connect"


class ConnectionBroken(NetworkError):
    """The connection was reset or closed without an answer."""

    kind = "reset"


class TLSError(TransportError):
    """The TLS handshake failed (a certificate that does not verify, a protocol mismatch)."""

    kind = "tls"


class ProtocolError(TransportError):
    """The receiver answered, but not with valid HTTP."""


class BreakerOpen(DeliveryError):
    """Nothing was sent: the origin timed out repeatedly just before, so it is left alone for a
    while; worth retrying on the schedule like a timeout."""

    kind = "breaker"


class SenderClosed(DeliveryError):
    """Nothing was sent: the HTTP client has been closed (the process is shutting down)."""


class OriginBusy(RelayError):
    """Nothing was sent: every slot of the origin is taken by attempts that are not finishing.
    Not an attempt; the caller puts the delivery back in its queue for a little while."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
