"""A loopback webhook receiver that is not the bottleneck: asyncio, HTTP/1.1 keep-alive, 200 at once.

Every POST is recorded by the first path segment (the scenario's tag: `/{tag}/s/{n}`) with its
`webhook-id`, path and `time.monotonic()` of arrival (the monotonic clock is shared by every
process on the machine, so the bench compares it with times taken in other processes).
`expect(tag, n)` gives an event that is set once `n` distinct (webhook-id, path) pairs of that tag
have arrived; repeats (at-least-once) are counted separately. The first body seen for each
webhook-id is kept, so a plain sender can post exactly the same bytes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
_OK_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass
class TagStats:
    first: dict[tuple[str, str], float] = field(default_factory=dict)  # (webhook-id, path) -> arrival
    repeats: int = 0
    last_at: float = 0.0
    bodies: dict[str, bytes] = field(default_factory=dict)  # webhook-id -> first body
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # webhook-id -> first headers
    waiters: list[tuple[int, threading.Event]] = field(default_factory=list)


class Receiver:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._lock = threading.Lock()
        self._tags: dict[str, TagStats] = {}
        self.requests = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receiver", daemon=True)
        self._thread.start()
        self._ready.wait()
        self.port: int = self._server.sockets[0].getsockname()[1]

    # ---- the server ---------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, self.host, 0, backlog=1024, limit=1 << 20)
        )
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.split(b"\r\n")
                request_line = lines[0].split(b" ")
                if len(request_line) < 3:
                    writer.write(_BAD)
                    return
                length = 0
                chunked = close = False
                webhook_id = ""
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if not line:
                        continue
                    name, _, value = line.partition(b":")
                    key = name.strip().lower().decode("latin-1")
                    text = value.strip().decode("latin-1")
                    headers[key] = text
                    if key == "content-length":
                        length = int(text)
                    elif key == "webhook-id":
                        webhook_id = text
                    elif key == "transfer-encoding":
                        chunked = "chunked" in text.lower()
                    elif key == "connection":
                        close = "close" in text.lower()
                try:
                    body = await (self._chunked(reader) if chunked else reader.readexactly(length))
                except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                    return
                self._record(request_line[1].decode("latin-1"), webhook_id, body, headers, time.monotonic())
                writer.write(_OK_CLOSE if close else _OK)
                if close:
                    await writer.drain()
                    return
                if writer.transport.get_write_buffer_size() > 65536:
                    await writer.drain()
        finally:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the client may be gone already: closing is best effort
                pass

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    def _record(self, path: str, webhook_id: str, body: bytes, headers: dict[str, str], at: float) -> None:
        tag = path.split("/", 2)[1] if path.startswith("/") else ""
        with self._lock:
            self.requests += 1
            stats = self._tags.get(tag)
            if stats is None:
                stats = self._tags[tag] = TagStats()
            key = (webhook_id, path)
            if key in stats.first:
                stats.repeats += 1
                return
            stats.first[key] = at
            stats.last_at = at
            if webhook_id not in stats.bodies:
                stats.bodies[webhook_id] = body
                stats.headers[webhook_id] = headers
            if stats.waiters:
                n = len(stats.first)
                for count, event in stats.waiters:
                    if n >= count:
                        event.set()

    # ---- what the bench asks ------------------------------------------------------------------

    def url(self, tag: str, n: int) -> str:
        return f"http://{self.host}:{self.port}/{tag}/s/{n}"

    def expect(self, tag: str, count: int) -> threading.Event:
        event = threading.Event()
        with self._lock:
            stats = self._tags.setdefault(tag, TagStats())
            stats.waiters.append((count, event))
            if len(stats.first) >= count:
                event.set()
        return event

    def count(self, tag: str) -> int:
        with self._lock:
            stats = self._tags.get(tag)
            return len(stats.first) if stats else 0

    def stats(self, tag: str) -> TagStats:
        with self._lock:
            return self._tags.setdefault(tag, TagStats())

    def arrivals(self, tag: str) -> dict[tuple[str, str], float]:
        with self._lock:
            stats = self._tags.get(tag)
            return dict(stats.first) if stats else {}

    def close(self) -> None:
        def stop() -> None:
            self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(5)
