"""The transport's keep-alive connections: a `Line` (a connection and the twin of its socket, which
the deadline thread may cut) and the idle ones by receiver (`IdleConnections`)."""

from __future__ import annotations

import socket
import threading
from collections import OrderedDict

from urllib3.connection import HTTPConnection

Key = tuple[str, str, int, str]  # (scheme, address, port, TLS server name or "")


class Line:
    """A connection and the twin of its socket: a duplicate descriptor made once, when the
    connection is first used, and closed only with the connection (`close`).

    The deadline thread cuts an attempt by shutting the twin down; since only the line closes it,
    and an attempt detaches (under the exchange's lock) before its line is closed, a cut can never
    land on a descriptor http.client closed and the process reused meanwhile. Duplicating the
    socket once per connection rather than once per attempt saves two system calls per attempt.
    """

    def __init__(self, conn: HTTPConnection) -> None:
        self.conn = conn
        self._twin: socket.socket | None = None

    def twin(self) -> socket.socket | None:
        sock = self.conn.sock
        if self._twin is None and sock is not None:
            self._twin = socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
        return self._twin

    def close(self) -> None:
        self.conn.close()
        twin, self._twin = self._twin, None
        if twin is not None:
            twin.close()


class IdleConnections:
    """Connections whose last answer was read whole, by (scheme, address, port, server name).

    At most `per_key` are kept per key and `keys` keys at all (the least recently used go first);
    a connection is either here or owned by exactly one attempt.
    """

    def __init__(self, per_key: int, keys: int) -> None:
        self._per_key, self._keys = per_key, keys
        self._lock = threading.Lock()
        self._idle: OrderedDict[Key, list[Line]] = OrderedDict()
        self._closed = False

    def take(self, key: Key) -> Line | None:
        while True:
            with self._lock:
                conns = self._idle.get(key)
                if not conns:
                    return None
                line = conns.pop()
                self._idle.move_to_end(key)
            # A peer may have closed it while it sat here; `is_connected` is urllib3's own check.
            if line.conn.is_connected:
                return line
            line.close()

    def put(self, key: Key, conn: Line) -> None:
        dropped: list[Line] = []
        with self._lock:
            conns = self._idle.setdefault(key, [])
            self._idle.move_to_end(key)
            if self._closed or len(conns) >= self._per_key:
                dropped.append(conn)
            else:
                conns.append(conn)
            while len(self._idle) > self._keys:
                dropped.extend(self._idle.popitem(last=False)[1])
        for extra in dropped:
            extra.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            every = [c for conns in self._idle.values() for c in conns]
            self._idle.clear()
        for conn in every:
            conn.close()
