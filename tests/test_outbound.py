"""The outbound guard and the pinned HTTP client, against real loopback servers (no mocks of requests/urllib3)."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import struct
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme

from relay.core.errors import TargetRefused
from relay.outbound.sender import (
    BreakerOpen,
    ConnectError,
    ConnectionBroken,
    DeliveryError,
    DeliveryTimeout,
    ProtocolError,
    Reply,
    Sender,
    SenderClosed,
    Target,
    TLSError,
    check_target,
    is_public_address,
    parse_host_literal,
    redact_url,
    system_resolver,
)
from tests.helpers import FakeResolver

SECRET = "s3cr3tSIG"
PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800::1"


# ---- helpers ------------------------------------------------------------------------------------


class Recorded:
    def __init__(self, requestline: bytes, headers: dict[str, str], body: bytes, client: tuple[str, int]) -> None:
        self.requestline = requestline
        self.headers = headers
        self.body = body
        self.client = client


class LoopbackHTTP(ThreadingHTTPServer):
    """A loopback HTTP(S) server whose `answer` callable writes each response; records what arrives."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self, answer: Callable[[BaseHTTPRequestHandler, Recorded], None], tls: ssl.SSLContext | None = None
    ) -> None:
        self.answer = answer
        self.tls = tls
        self.records: list[Recorded] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.release = threading.Event()  # handlers that hold a connection open wait on this
        super().__init__(("127.0.0.1", 0), _Handler)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def verify_request(self, request: Any, client_address: Any) -> bool:
        # Runs on the accept loop, in accept order.
        with self.lock:
            self.connections += 1
        return True

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return  # the client turned our certificate down: expected in the TLS tests
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up mid-answer are the point of several tests

    def probe(self) -> None:
        """A request of our own on a fresh connection; connections are accepted in arrival order, so
        once it is answered, any connection made before it has been counted."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/probe")
            conn.getresponse().read()
        finally:
            conn.close()

    def stop(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LoopbackHTTP

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        record = Recorded(
            self.raw_requestline, dict(self.headers.items()), self.rfile.read(length), self.client_address
        )
        with self.server.lock:
            self.server.records.append(record)
        self.server.answer(self, record)

    def do_GET(self) -> None:
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def answer_ok(handler: BaseHTTPRequestHandler, record: Recorded) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "2")
    handler.end_headers()
    handler.wfile.write(b"ok")


class RawServer:
    """A bare TCP listener whose `serve` callable gets each accepted socket, for misbehaving peers."""

    def __init__(self, serve: Callable[[socket.socket], None] | None = None) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        if serve is not None:
            threading.Thread(target=self._accept_loop, args=(serve,), daemon=True).start()

    def _accept_loop(self, serve: Callable[[socket.socket], None]) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_one, args=(serve, conn), daemon=True).start()

    @staticmethod
    def _serve_one(serve: Callable[[socket.socket], None], conn: socket.socket) -> None:
        try:
            serve(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        self.stopped.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept()
        except OSError:
            pass
        self.sock.close()


def read_request_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_whole_request(conn: socket.socket) -> bytes:
    data = read_request_head(conn)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return data


def trickle_after(server: RawServer, conn: socket.socket, start: bytes, byte: bytes) -> None:
    """Send `start`, then `byte` again and again. Pacing, not synchronisation: one byte per 0.1 s
    for up to 10 s, well inside each 0.5 s socket timeout; ends as soon as the test tears the
    server down."""
    conn.sendall(start)
    for _ in range(100):
        if server.stopped.wait(0.1):
            return
        conn.sendall(byte)


def no_secret_anywhere(exc: BaseException) -> bool:
    text = "".join(traceback.format_exception(exc))
    return SECRET not in text and SECRET not in str(exc)


@pytest.fixture
def servers() -> Iterator[Callable[..., LoopbackHTTP]]:
    made: list[LoopbackHTTP] = []

    def make(
        answer: Callable[[BaseHTTPRequestHandler, Recorded], None] = answer_ok, tls: ssl.SSLContext | None = None
    ) -> LoopbackHTTP:
        server = LoopbackHTTP(answer, tls)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def raw_servers() -> Iterator[Callable[..., RawServer]]:
    made: list[RawServer] = []

    def make(serve: Callable[[socket.socket], None] | None = None) -> RawServer:
        server = RawServer(serve)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_tls(ca: trustme.CA, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return context


# ---- the guard: refusals ------------------------------------------------------------------------

GUARD_TABLE: dict[str, list[str]] = {
    "example.com": [PUBLIC_V4],
    "db.internal.test": ["127.0.0.1"],
    "mixed.example.test": [PUBLIC_V4, "10.0.0.7", PUBLIC_V6],
    "nothing.example.test": [],
    "garbage.example.test": ["not-an-ip"],
    "mapped.example.test": ["::ffff:169.254.169.254"],
}

HOSTILE_URLS = [
    pytest.param("http://example.com/hook", id="plain-http"),
    pytest.param("https://127.0.0.1/hook", id="loopback"),
    pytest.param("https://localhost/hook", id="localhost-name"),
    pytest.param("https://api.localhost/hook", id="localhost-subdomain"),
    pytest.param("https://db.internal.test/hook", id="name-resolving-to-loopback"),
    pytest.param("https://[::1]/hook", id="ipv6-loopback"),
    pytest.param("https://0.0.0.0/hook", id="unspecified"),
    pytest.param("https://[::]/hook", id="ipv6-unspecified"),
    pytest.param("https://169.254.169.254/latest/meta-data", id="metadata-service"),
    pytest.param("https://168.63.129.16/machine?comp=goalstate", id="azure-wireserver"),
    pytest.param("https://10.0.0.1/hook", id="private-10"),
    pytest.param("https://172.16.0.1/hook", id="private-172"),
    pytest.param("https://192.168.1.1/hook", id="private-192"),
    pytest.param("https://100.64.0.1/hook", id="shared-address-space"),
    pytest.param("https://[fc00::1]/hook", id="unique-local"),
    pytest.param("https://[fe80::1]/hook", id="ipv6-link-local"),
    pytest.param("https://[fec0::1]/hook", id="site-local"),
    pytest.param("https://[::ffff:127.0.0.1]/hook", id="mapped-dotted"),
    pytest.param("https://[::ffff:7f00:1]/hook", id="mapped-hex"),
    pytest.param("https://[::127.0.0.1]/hook", id="ipv4-compatible"),
    pytest.param("https://2130706433/hook", id="decimal-integer"),
    pytest.param("https://0177.0.0.1/hook", id="octal"),
    pytest.param("https://0x7f.0.0.1/hook", id="hex-part"),
    pytest.param("https://0x7f000001/hook", id="hex-integer"),
    pytest.param("https://127.1/hook", id="short-two-parts"),
    pytest.param("https://127.0.1/hook", id="short-three-parts"),
    pytest.param("https://0x7f.1/hook", id="mixed-hex-short"),
    pytest.param("https://127.0.0.1./hook", id="trailing-dot"),
    pytest.param("https://0/hook", id="zero"),
    pytest.param("https://256.0.0.1/hook", id="numeric-not-an-address"),
    pytest.param("https://224.0.0.1/hook", id="multicast"),
    pytest.param("https://255.255.255.255/hook", id="broadcast"),
    pytest.param("https://192.0.2.10/hook", id="documentation-v4"),
    pytest.param("https://198.18.0.1/hook", id="benchmark"),
    pytest.param("https://[2001:db8::1]/hook", id="documentation-v6"),
    pytest.param("https://[2001::1]/hook", id="teredo"),
    pytest.param("https://[64:ff9b::7f00:1]/hook", id="nat64-loopback"),
    pytest.param("https://[2002:7f00:1::]/hook", id="6to4-loopback"),
    pytest.param("https://[ff02::1]/hook", id="ipv6-multicast"),
    pytest.param("https://[fe80::1%25eth0]/hook", id="zone-id"),
    pytest.param("https://[v1.fe]/hook", id="ipvfuture"),
    pytest.param("https://%31%32%37.0.0.1/hook", id="percent-encoded-host"),
    pytest.param("ftp://example.com/file", id="ftp"),
    pytest.param("file:///etc/passwd", id="file"),
    pytest.param("gopher://example.com:70/_x", id="gopher"),
    pytest.param("https:example.com/hook", id="no-slashes"),
    pytest.param("https://user:pass@example.com/hook", id="userinfo"),
    pytest.param("https://example.com@127.0.0.1/hook", id="userinfo-confusion"),
    pytest.param("https:///nohost", id="no-host"),
    pytest.param("https://example.com:0/hook", id="port-zero"),
    pytest.param("https://example.com:99999/hook", id="port-out-of-range"),
    pytest.param("https://example.com/" + "a" * 16_365, id="too-long"),
    pytest.param("https://example.com/a b", id="space"),
    pytest.param("https://example.com/\r\nX-Injected: 1", id="crlf"),
    pytest.param("https://b\u00fccher.example/hook", id="non-ascii"),
    pytest.param("https://mixed.example.test/hook", id="one-private-among-public"),
    pytest.param("https://mapped.example.test/hook", id="resolves-to-mapped-metadata"),
    pytest.param("https://nothing.example.test/hook", id="resolves-to-nothing"),
    pytest.param("https://garbage.example.test/hook", id="resolver-garbage"),
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_hostile_url_is_refused(url: str) -> None:
    """Each hostile URL is refused by the guard, and IP literals are judged without asking the resolver."""
    resolver = FakeResolver(GUARD_TABLE)
    with pytest.raises(TargetRefused) as refused:
        check_target(url + ("&" if "?" in url else "?") + f"sig={SECRET}", allow_private=False, resolver=resolver)
    assert refused.value.reason
    assert SECRET not in refused.value.reason
    assert all(host in GUARD_TABLE for host, _ in resolver.calls)


@pytest.mark.parametrize(
    "url",
    [
        "https://[2606:4700:4700::1111]!?sig=S",
        "https://[2606:4700:4700::1111]x/hook",
        "https://[2606:4700:4700::1111]:443!/hook",
    ],
)
def test_url_the_sender_cannot_parse_is_refused_by_guard_and_sender(url: str, senders: Callable[..., Sender]) -> None:
    """`urlsplit` finds a public host in these, requests' prepare does not: the guard refuses them
    at subscribe, and the sender refuses them as the guard does (never an InvalidURL to retry)."""
    with pytest.raises(TargetRefused, match="parsed"):
        check_target(url, allow_private=False, resolver=FakeResolver({}))
    with pytest.raises(TargetRefused) as refused:
        senders(allow_private=False).post(url, b"{}", {})
    assert "sig=S" not in refused.value.reason


def test_too_long_url_is_measured_at_16384() -> None:
    """A URL of exactly 16,384 characters passes the length rule; one more character is refused."""
    resolver = FakeResolver(GUARD_TABLE)
    base = "https://example.com/"
    check_target(base + "a" * (16_384 - len(base)), allow_private=False, resolver=resolver)
    with pytest.raises(TargetRefused, match="longer"):
        check_target(base + "a" * (16_385 - len(base)), allow_private=False, resolver=resolver)


def test_unavailable_dns_is_a_refusal_at_check_time() -> None:
    """A resolver that fails (rather than finding no name) is reported as a refusal by check_target."""

    def failing(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(TargetRefused, match="resolved"):
        check_target("https://example.com/hook", allow_private=False, resolver=failing)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("ftp://127.0.0.1/x", id="ftp"),
        pytest.param("file:///etc/passwd", id="file"),
        pytest.param("http://user:pw@127.0.0.1/x", id="userinfo"),
        pytest.param("http:///x", id="no-host"),
    ],
)
def test_allow_private_still_requires_http_and_a_plain_host(url: str) -> None:
    """With private targets allowed, the scheme must still be http(s) and the URL must still carry no credentials."""
    with pytest.raises(TargetRefused):
        check_target(url, allow_private=True, resolver=FakeResolver({}))


# ---- the guard: acceptance ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, answers, expected",
    [
        pytest.param(
            "https://hooks.example.test/api?sig=x",
            [PUBLIC_V4, PUBLIC_V6],
            Target("https://hooks.example.test/api?sig=x", "https", "hooks.example.test", 443, PUBLIC_V4),
            id="name-v4-first",
        ),
        pytest.param(
            "https://hooks.example.test:8443/api",
            [PUBLIC_V6, PUBLIC_V4],
            Target("https://hooks.example.test:8443/api", "https", "hooks.example.test", 8443, PUBLIC_V6),
            id="name-v6-first",
        ),
        pytest.param(
            "HTTPS://Hooks.Example.TEST/api",
            [PUBLIC_V4],
            Target("HTTPS://Hooks.Example.TEST/api", "https", "hooks.example.test", 443, PUBLIC_V4),
            id="upper-case",
        ),
        pytest.param(
            f"https://{PUBLIC_V4}/api",
            None,
            Target(f"https://{PUBLIC_V4}/api", "https", PUBLIC_V4, 443, PUBLIC_V4),
            id="v4-literal",
        ),
        pytest.param(
            f"https://[{PUBLIC_V6}]:8443/api",
            None,
            Target(f"https://[{PUBLIC_V6}]:8443/api", "https", PUBLIC_V6, 8443, PUBLIC_V6),
            id="v6-literal",
        ),
        pytest.param(
            f"https://[::ffff:{PUBLIC_V4}]/api",
            None,
            Target(f"https://[::ffff:{PUBLIC_V4}]/api", "https", f"::ffff:{PUBLIC_V4}", 443, PUBLIC_V4),
            id="mapped-public",
        ),
    ],
)
def test_public_target_is_accepted(url: str, answers: list[str] | None, expected: Target) -> None:
    """A host whose every address is public is accepted, and the target names the first address."""
    resolver = FakeResolver({"hooks.example.test": answers or []})
    assert check_target(url, allow_private=False, resolver=resolver) == expected
    assert len(resolver.calls) == (1 if answers else 0)


def test_allow_private_accepts_loopback_http() -> None:
    """With private targets allowed, plain http to loopback (by literal or by name) is accepted."""
    resolver = FakeResolver({"localhost": ["127.0.0.1"]})
    assert check_target("http://127.0.0.1:7071/api/hook", allow_private=True, resolver=resolver) == Target(
        "http://127.0.0.1:7071/api/hook", "http", "127.0.0.1", 7071, "127.0.0.1"
    )
    assert check_target("http://localhost/x", allow_private=True, resolver=resolver) == Target(
        "http://localhost/x", "http", "localhost", 80, "127.0.0.1"
    )


@pytest.mark.parametrize(
    "host, expected",
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0X7F.0.0.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7f.0.1", "127.0.0.1"),
        ("0177.1", "127.0.0.1"),
        ("0xa9.254.0xa9fe", "169.254.169.254"),
        ("1.2.3.4.", "1.2.3.4"),
        ("0", "0.0.0.0"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("example.com", None),
        ("256.0.0.1", None),
        ("1.2.3.4.5", None),
        ("08.0.0.1", None),
        ("127.0.0.0x1", "127.0.0.1"),
        ("1.2.3.256", None),
        ("1.16777216", None),
        ("[1.2.3.4]", None),
        ("", None),
    ],
)
def test_parse_host_literal_reads_every_spelling(host: str, expected: str | None) -> None:
    """Host literals are read the way inet_aton reads them, and real names are not mistaken for addresses."""
    result = parse_host_literal(host)
    assert (None if result is None else str(result)) == expected


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "2130706433",
        "0177.0.0.1",
        "0x7f.0.0.1",
        "0x7f000001",
        "127.1",
        "127.0.1",
        "0x7f.1",
        "00000000000177.1",
        "0x000000000007f.1",
        "1.0xfff",
        "1.16777215",
        "1.16777216",
        "4294967295",
        "4294967296",
        "0xffffffff",
        "0x100000000",
        "08.0.0.1",
        "1..2",
        ".1.2",
        "1.2.3.4.5",
        "1e1",
        "0",
        "0.0",
        "0.0.0.0",
        "example.com",
        "12345678901234567890",
    ],
)
def test_parse_host_literal_agrees_with_inet_aton(host: str) -> None:
    """For IPv4 spellings the parser reaches the same verdict as the C library's inet_aton."""
    try:
        expected: str | None = str(ipaddress.IPv4Address(socket.inet_aton(host)))
    except OSError:
        expected = None
    result = parse_host_literal(host)
    assert (None if result is None else str(result)) == expected


@pytest.mark.parametrize(
    "address, public",
    [
        (PUBLIC_V4, True),
        ("8.8.8.8", True),
        (PUBLIC_V6, True),
        (f"::ffff:{PUBLIC_V4}", True),
        ("2002:5db8:d822::1", True),
        ("64:ff9b::5db8:d822", True),
        ("168.63.129.17", True),
        ("168.63.129.16", False),
        ("169.254.169.254", False),
        ("127.0.0.1", False),
        ("0.1.2.3", False),
        ("100.127.255.255", False),
        ("192.0.0.8", False),
        ("198.51.100.1", False),
        ("203.0.113.9", False),
        ("240.0.0.1", False),
        ("::", False),
        ("::1", False),
        ("::ffff:10.0.0.1", False),
        ("::10.0.0.1", False),
        ("2002:a00:1::", False),
        ("64:ff9b::a00:1", False),
        ("64:ff9b:1::1", False),
        ("2001:0:4136:e378::1", False),
        ("fd00::1", False),
        ("fe80::1", False),
        ("fec0::1", False),
        ("ff0e::1", False),
        ("3fff::1", False),
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    """Only ordinary global unicast addresses count as public; wrapped IPv4 addresses are judged by what they wrap."""
    assert is_public_address(ipaddress.ip_address(address)) is public


def test_system_resolver_reads_literals_without_dns() -> None:
    """The system resolver returns IP strings (a literal resolves to itself, without the network)."""
    assert system_resolver("127.0.0.1", 80) == ["127.0.0.1"]


# ---- pinning ------------------------------------------------------------------------------------


def test_dns_rebinding_between_subscribe_and_delivery_is_refused(
    servers: Callable[..., LoopbackHTTP], senders: Callable[..., Sender]
) -> None:
    """A name that was public at subscribe time but points at loopback at delivery is refused, and nothing connects."""
    server = servers()
    resolver = FakeResolver({"rebind.example.test": [[PUBLIC_V4], ["127.0.0.1"]]}, sequence=True)
    url = f"https://rebind.example.test:{server.port}/hook?sig={SECRET}"
    assert check_target(url, allow_private=False, resolver=resolver).address == PUBLIC_V4
    sender = senders(allow_private=False, resolver=resolver)
    with pytest.raises(TargetRefused) as refused:
        sender.post(url, b"{}", {})
    assert SECRET not in refused.value.reason
    assert len(resolver.calls) == 2
    server.probe()
    assert server.connections == 1 and server.records == []


def test_post_connects_to_the_checked_address_and_sends_the_target_byte_for_byte(
    servers: Callable[..., LoopbackHTTP], senders: Callable[..., Sender]
) -> None:
    """The request reaches the resolved address with the URL's Host header and its path and query unaltered."""
    server = servers()
    resolver = FakeResolver({"hooks.example.test": ["127.0.0.1"]})
    sender = senders(resolver=resolver)
    target = "/p%61th/./x/../a|b{c}^?sig=a%2Fb%41&lower=%2f&odd=%zz&plus=a+b&tilde=%7E~&q=?/\\"
    reply = sender.post(
        f"http://hooks.example.test:{server.port}{target}#fragment",
        b'{"n":1}',
        {
            "Content-Type": "application/json",
            "Host": "evil.example",
            "Content-Length": "999",
            "Transfer-Encoding": "chunked",
        },
    )
    assert reply == Reply(200, reply.headers, b"ok")
    assert reply.headers["content-length"] == "2"
    [record] = server.records
    assert record.requestline == f"POST {target} HTTP/1.1\r\n".encode()
    assert record.headers["Host"] == f"hooks.example.test:{server.port}"
    assert record.headers["Content-Length"] == "7" and "Transfer-Encoding" not in record.headers
    assert record.headers["User-Agent"] == "relay-test/1"
    assert record.headers["Content-Type"] == "application/json"
    assert record.body == b'{"n":1}'
    assert resolver.calls == [("hooks.example.test", server.port)]


def test_url_without_a_path_is_sent_as_slash(
    servers: Callable[..., LoopbackHTTP], senders: Callable[..., Sender]
) -> None:
    """A URL with a query but no path is sent as "/?query", with an empty body's Content-Length of 0."""
    server = servers()
    reply = senders().post(f"http://127.0.0.1:{server.port}?q=%41", b"", {})
    assert reply.status == 200
    [record] = server.records
    assert record.requestline == b"POST /?q=%41 HTTP/1.1\r\n"
    assert record.headers["Host"] == f"127.0.0.1:{server.port}"
    assert record.headers["Content-Length"] == "0"


def test_https_pins_the_address_but_verifies_the_url_host(
    servers: Callable[..., LoopbackHTTP], senders: Callable[..., Sender], ca: trustme.CA, ca_file: str
) -> None:
    """Over TLS the connection goes to the resolved address while SNI and the certificate check use the URL host."""
    seen_sni: list[str | None] = []
    context = server_tls(ca, "hooks.example.test")
    context.sni_callback = lambda sock, name, ctx: seen_sni.append(name)
    server = servers(tls=context)
    sender = senders(verify=ca_file)
    reply = sender.post(f"https://hooks.example.test:{server.port}/tls?sig=a%2Fb", b"x", {})
    assert reply.status == 200 and reply.body == b"ok"
    [record] = server.records
    assert record.requestline == b"POST /tls?sig=a%2Fb HTTP/1.1\r\n"
    assert record.headers["Host"] == f"hooks.example.test:{server.port}"
    assert seen_sni == ["hooks.example.test"]


def test_https_certificate_for_another_name_fails_as_tls(
    servers: Callable[..., LoopbackHTTP], senders: Callable[..., Sender], ca: trustme.CA, ca_file: str
) -> None:
    """A certificate that is valid but for a different name is a "tls" failure, and nothing is posted."""
    server = servers(tls=server_tls(ca, "other.example.test"))
    sender = senders(verify=ca_file)
    with pytest.raises(DeliveryError) as failed:
        sender.post(f"https://hooks.example.test:{server.port}/tls?sig={SECRET}", b"x", {})
    assert isinstance(failed.value, TLSError)
    assert "hooks.example.test" in failed.value.message
    assert no_secret_anywhere(failed.value)
    assert server.records == []


def test_https_untrusted_issuer_fails_as_tls(
    servers: Callable[..., LoopbackHTTP], senders: Callable[..., Sender], ca: trustme.CA
) -> None:
    """With the default trust store a certificate from a private CA is a "tls" failure."""
    server = servers(tls=server_tls(ca, "hooks.example.test"))
    sender = senders()
    with pytest.raises(DeliveryError) as failed:
        sender.post(f"https://hooks.example.test:{server.port}/tls?sig={SECRET}", b"x", {})
    assert isinstance(failed.value, TLSError)
    assert no_secret_anywhere(failed.value)


def test_redirects_are_returned_not_followed(
    servers: Callable[..., LoopbackHTTP], senders: Callable[..., Sender]
) -> None:
    """A 302 comes back as the reply; the server it points to receives nothing."""
    elsewhere = servers()

    def redirect(handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        handler.send_response(302)
        handler.send_header("Location", f"http://127.0.0.1:{elsewhere.port}/stolen")
        handler.send_header("Content-Length", "5")
        handler.end_headers()
        handler.wfile.write(b"moved")

    server = servers(redirect)
    reply = senders().post(f"http://hooks.example.test:{server.port}/hook", b"x", {})
    assert reply.status == 302
    assert reply.headers["location"] == f"http://127.0.0.1:{elsewhere.port}/stolen"
    assert reply.body == b"moved"
    elsewhere.probe()
    assert elsewhere.connections == 1 and elsewhere.records == []


def test_connections_are_pooled_and_reused(
    servers: Callable[..., LoopbackHTTP], senders: Callable[..., Sender]
) -> None:
    """Consecutive posts to one receiver share one kept-alive connection."""
    server = servers()
    sender = senders()
    for _ in range(3):
        assert sender.post(f"http://hooks.example.test:{server.port}/hook", b"x", {}).status == 200
    assert server.connections == 1
    assert len({record.client for record in server.records}) == 1


def test_next_address_is_tried_when_the_first_refuses(
    servers: Callable[..., LoopbackHTTP], senders: Callable[..., Sender]
) -> None:
    """When connecting to the first resolved address fails, the next checked address is used."""
    server = servers()
    resolver = FakeResolver({"hooks.example.test": ["127.0.0.2", "127.0.0.1"]})
    reply = senders(resolver=resolver).post(f"http://hooks.example.test:{server.port}/hook", b"x", {})
    assert reply.status == 200 and len(server.records) == 1


def test_cookies_are_not_kept_between_posts(
    servers: Callable[..., LoopbackHTTP], senders: Callable[..., Sender]
) -> None:
    """A receiver's Set-Cookie is not stored or sent back on later deliveries."""

    def cookie(handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        handler.send_response(200)
        handler.send_header("Set-Cookie", "session=abc; Path=/")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    server = servers(cookie)
    sender = senders()
    for _ in range(2):
        sender.post(f"http://hooks.example.test:{server.port}/hook", b"x", {})
    assert all("Cookie" not in record.headers for record in server.records)


def test_library_logs_never_see_the_query(
    raw_servers: Callable[..., RawServer], senders: Callable[..., Sender], caplog: pytest.LogCaptureFixture
) -> None:
    """urllib3's log lines name the request without its query, which only ever goes on the wire:
    an answer with a malformed header block makes urllib3 log a warning naming the request."""
    seen: list[bytes] = []

    def malformed(conn: socket.socket) -> None:
        seen.append(read_whole_request(conn))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nno colon here\r\n\r\nok")

    server = raw_servers(malformed)
    with caplog.at_level("DEBUG"):
        senders().post(f"http://hooks.example.test:{server.port}/hook?sig={SECRET}", b"x", {})
    assert seen[0].startswith(f"POST /hook?sig={SECRET} HTTP/1.1\r\n".encode())
    assert "Failed to parse headers" in caplog.text and "/hook?redacted" in caplog.text
    assert SECRET not in caplog.text


# ---- faults -------------------------------------------------------------------------------------


def test_refused_port_is_a_connect_error(senders: Callable[..., Sender]) -> None:
    """A port with nothing listening fails with ConnectError and a message without the query."""
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))  # bound, not listening: connections to it are refused
        port = reserved.getsockname()[1]
        with pytest.raises(DeliveryError) as failed:
            senders().post(f"http://hooks.example.test:{port}/hook?sig={SECRET}", b"x", {})
    assert isinstance(failed.value, ConnectError)
    assert "refused" in failed.value.message.lower()
    assert no_secret_anywhere(failed.value)


def test_unresolvable_at_delivery_is_a_retryable_connect_error(senders: Callable[..., Sender]) -> None:
    """A DNS failure during delivery is a "connect" DeliveryError (worth retrying), not a refusal."""

    def failing(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(DeliveryError) as failed:
        senders(resolver=failing).post(f"https://hooks.example.test/hook?sig={SECRET}", b"x", {})
    assert isinstance(failed.value, ConnectError)
    assert no_secret_anywhere(failed.value)


@pytest.mark.timeout(10)
def test_silent_server_is_a_timeout(raw_servers: Callable[..., RawServer], senders: Callable[..., Sender]) -> None:
    """A server that accepts and never answers fails with DeliveryTimeout once the timeout has passed."""
    silent = raw_servers()  # listening, never accepting: the kernel completes the handshake
    started = time.monotonic()
    with pytest.raises(DeliveryError) as failed:
        senders(timeout=0.5).post(f"http://hooks.example.test:{silent.port}/hook?sig={SECRET}", b"x", {})
    elapsed = time.monotonic() - started
    assert isinstance(failed.value, DeliveryTimeout)
    assert 0.4 <= elapsed < 3.0
    assert no_secret_anywhere(failed.value)


@pytest.mark.timeout(10)
def test_trickling_server_is_cut_off_at_the_deadline(
    raw_servers: Callable[..., RawServer], senders: Callable[..., Sender]
) -> None:
    """A server sending a header byte more often than the read timeout still cannot hold an attempt past its timeout."""

    def trickle(conn: socket.socket) -> None:
        read_whole_request(conn)
        trickle_after(trickler, conn, b"HTTP/1.1 200 OK\r\nX-Trickle: ", b"a")

    trickler = raw_servers(trickle)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as failed:
        senders(timeout=0.5).post(f"http://hooks.example.test:{trickler.port}/hook?sig={SECRET}", b"x", {})
    elapsed = time.monotonic() - started
    assert isinstance(failed.value, DeliveryTimeout)
    assert elapsed < 2.0
    assert no_secret_anywhere(failed.value)


@pytest.mark.timeout(10)
def test_trickling_answer_on_a_kept_alive_connection_is_cut_off_at_the_deadline(
    raw_servers: Callable[..., RawServer], senders: Callable[..., Sender]
) -> None:
    """The deadline cuts an attempt on a connection an earlier attempt left open, as on a new one
    (the socket twin the deadline thread shuts down belongs to the connection, not the attempt)."""
    accepted: list[socket.socket] = []

    def answer_then_trickle(conn: socket.socket) -> None:
        accepted.append(conn)
        read_whole_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        read_whole_request(conn)
        trickle_after(trickler, conn, b"HTTP/1.1 200 OK\r\nX-Trickle: ", b"a")

    trickler = raw_servers(answer_then_trickle)
    sender = senders(timeout=0.5)
    url = f"http://hooks.example.test:{trickler.port}/hook?sig={SECRET}"
    assert sender.post(url, b"x", {}).status == 200
    started = time.monotonic()
    with pytest.raises(DeliveryError) as failed:
        sender.post(url, b"x", {})
    assert isinstance(failed.value, DeliveryTimeout)
    assert time.monotonic() - started < 2.0
    assert len(accepted) == 1  # the second attempt went out on the kept-alive connection


@pytest.mark.timeout(10)
@pytest.mark.parametrize("how", ["the answer says close", "the sender is closed"])
def test_a_connection_given_up_is_closed_for_the_receiver(
    how: str, raw_servers: Callable[..., RawServer], senders: Callable[..., Sender]
) -> None:
    """When the sender lets a connection go, the receiver sees it end: no duplicate of its socket
    (the deadline thread's twin) outlives it and holds it open."""
    ended = threading.Event()

    def answer_and_watch(conn: socket.socket) -> None:
        read_whole_request(conn)
        close = b"Connection: close\r\n" if how == "the answer says close" else b""
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + close + b"\r\n")
        conn.settimeout(5)
        if conn.recv(1) == b"":
            ended.set()

    server = raw_servers(answer_and_watch)
    sender = senders()
    assert sender.post(f"http://hooks.example.test:{server.port}/hook", b"x", {}).status == 200
    if how == "the sender is closed":
        sender.close()
    assert ended.wait(3)


def test_a_host_name_is_resolved_again_on_every_attempt(
    servers: Callable[..., LoopbackHTTP], senders: Callable[..., Sender]
) -> None:
    """What the guard remembers of a URL is its own judgment, never where its name pointed."""
    server = servers()
    resolver = FakeResolver({"hooks.example.test": ["127.0.0.1"]})
    sender = senders(resolver=resolver)
    url = f"http://hooks.example.test:{server.port}/hook"
    for _ in range(3):
        assert sender.post(url, b"x", {}).status == 200
    assert len(resolver.calls) == 3


@pytest.mark.timeout(10)
def test_tls_handshake_that_never_completes_is_a_timeout(
    raw_servers: Callable[..., RawServer], senders: Callable[..., Sender], ca_file: str
) -> None:
    """A server that takes the connection but never answers the TLS handshake fails with DeliveryTimeout."""
    silent = raw_servers()
    started = time.monotonic()
    with pytest.raises(DeliveryError) as failed:
        senders(timeout=0.5, verify=ca_file).post(
            f"https://hooks.example.test:{silent.port}/hook?sig={SECRET}", b"x", {}
        )
    assert isinstance(failed.value, DeliveryTimeout)
    assert time.monotonic() - started < 3.0
    assert no_secret_anywhere(failed.value)


@pytest.mark.timeout(15)
def test_trickling_tls_handshake_is_cut_off_at_the_deadline(
    raw_servers: Callable[..., RawServer], senders: Callable[..., Sender], ca_file: str
) -> None:
    """A server that answers the TLS handshake a byte more often than the read timeout still cannot
    hold an attempt past its timeout: the handshake is inside the attempt's deadline too."""

    def trickle(conn: socket.socket) -> None:
        conn.recv(65536)  # the ClientHello
        trickle_after(trickler, conn, b"\x16\x03\x03\x40\x00", b"\x00")  # a 16 KiB handshake record…

    trickler = raw_servers(trickle)
    started = time.monotonic()
    with pytest.raises(DeliveryTimeout) as failed:
        senders(timeout=0.5, verify=ca_file).post(
            f"https://hooks.example.test:{trickler.port}/hook?sig={SECRET}", b"x", {}
        )
    assert time.monotonic() - started < 2.0
    assert no_secret_anywhere(failed.value)


@pytest.mark.timeout(10)
def test_reset_connection_is_a_reset(raw_servers: Callable[..., RawServer], senders: Callable[..., Sender]) -> None:
    """A server that reads the request and then resets the connection fails with ConnectionBroken."""

    def reset(conn: socket.socket) -> None:
        read_whole_request(conn)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    resetter = raw_servers(reset)
    with pytest.raises(DeliveryError) as failed:
        senders().post(f"http://hooks.example.test:{resetter.port}/hook?sig={SECRET}", b"x", {})
    assert isinstance(failed.value, ConnectionBroken)
    assert no_secret_anywhere(failed.value)


@pytest.mark.timeout(10)
def test_close_without_answer_is_a_reset(raw_servers: Callable[..., RawServer], senders: Callable[..., Sender]) -> None:
    """A server that reads the request and closes without a word fails with ConnectionBroken."""
    closer = raw_servers(read_whole_request)
    with pytest.raises(DeliveryError) as failed:
        senders().post(f"http://hooks.example.test:{closer.port}/hook?sig={SECRET}", b"x", {})
    assert isinstance(failed.value, ConnectionBroken)
    assert no_secret_anywhere(failed.value)


@pytest.mark.timeout(10)
def test_garbage_answer_is_other(raw_servers: Callable[..., RawServer], senders: Callable[..., Sender]) -> None:
    """An answer that is not HTTP fails with ProtocolError, without echoing what the server sent."""

    def garbage(conn: socket.socket) -> None:
        read_whole_request(conn)
        conn.sendall(f"SSH-2.0-OpenSSH {SECRET}\r\n\r\n".encode())

    server = raw_servers(garbage)
    with pytest.raises(DeliveryError) as failed:
        senders().post(f"http://hooks.example.test:{server.port}/hook?sig={SECRET}", b"x", {})
    assert isinstance(failed.value, ProtocolError)
    assert no_secret_anywhere(failed.value)


@pytest.mark.timeout(10)
def test_huge_body_is_cut_at_max_response_bytes(
    servers: Callable[..., LoopbackHTTP], senders: Callable[..., Sender]
) -> None:
    """A 10 MB answer is read only up to max_response_bytes and the call returns promptly."""

    def huge(handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(10 * 1024 * 1024))
        handler.end_headers()
        block = b"x" * 65536
        for _ in range(160):
            handler.wfile.write(block)

    server = servers(huge)
    sender = senders(max_response_bytes=65536)
    started = time.monotonic()
    reply = sender.post(f"http://hooks.example.test:{server.port}/hook", b"x", {})
    assert time.monotonic() - started < 2.0
    assert reply.status == 200 and len(reply.body) == 65536
    # The cut connection is not reused: the next post opens a fresh one and still succeeds.
    server.answer = answer_ok
    assert sender.post(f"http://hooks.example.test:{server.port}/hook", b"x", {}).body == b"ok"
    assert server.connections == 2


@pytest.mark.timeout(10)
def test_endless_chunked_body_is_cut(servers: Callable[..., LoopbackHTTP], senders: Callable[..., Sender]) -> None:
    """An answer whose chunked body never ends is cut at max_response_bytes."""

    def endless(handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        chunk = b"%x\r\n%s\r\n" % (4096, b"y" * 4096)
        while not handler.server.release.is_set():
            handler.wfile.write(chunk)

    server = servers(endless)
    started = time.monotonic()
    reply = senders(max_response_bytes=1000).post(f"http://hooks.example.test:{server.port}/hook", b"x", {})
    assert time.monotonic() - started < 2.0
    assert reply.status == 200 and reply.body == b"y" * 1000


@pytest.mark.timeout(10)
def test_stalled_body_keeps_what_arrived(servers: Callable[..., LoopbackHTTP], senders: Callable[..., Sender]) -> None:
    """A body that stalls after the status line ends at the deadline; the reply keeps the status and what came."""

    def stall(handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        handler.send_response(202)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"partial")
        handler.wfile.flush()
        handler.server.release.wait()

    server = servers(stall)
    started = time.monotonic()
    reply = senders(timeout=0.5).post(f"http://hooks.example.test:{server.port}/hook", b"x", {})
    assert time.monotonic() - started < 2.0
    assert reply.status == 202 and reply.body == b"partial"


@pytest.mark.timeout(30)
def test_concurrent_posts_from_many_threads(
    servers: Callable[..., LoopbackHTTP], senders: Callable[..., Sender]
) -> None:
    """Twenty threads posting at once through one sender all get their own answer."""

    def echo(handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(record.body)))
        handler.end_headers()
        handler.wfile.write(record.body)

    server = servers(echo)
    sender = senders(pool_size=8)
    start = threading.Barrier(20)
    results: dict[int, Reply | BaseException] = {}

    def worker(n: int) -> None:
        start.wait()
        try:
            results[n] = sender.post(f"http://hooks.example.test:{server.port}/hook/{n}?n={n}", str(n).encode(), {})
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            results[n] = exc

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {n: (r.status, r.body) if isinstance(r, Reply) else r for n, r in results.items()} == {
        n: (200, str(n).encode()) for n in range(20)
    }
    assert sorted(record.requestline for record in server.records) == sorted(
        f"POST /hook/{n}?n={n} HTTP/1.1\r\n".encode() for n in range(20)
    )


def test_closed_sender_fails_softly(senders: Callable[..., Sender]) -> None:
    """A post on a closed sender is SenderClosed (a DeliveryError), so an in-flight delivery is retried."""
    sender = senders()
    sender.close()
    with pytest.raises(DeliveryError) as failed:
        sender.post("http://hooks.example.test:1/hook", b"x", {})
    assert isinstance(failed.value, SenderClosed)


# ---- redaction ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, expected",
    [
        (
            "https://prod-00.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke"
            f"?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={SECRET}",
            "https://prod-00.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?…redacted",
        ),
        (f"https://user:{SECRET}@hooks.example.test/a", "https://…redacted@hooks.example.test/a"),
        (f"https://hooks.example.test/a#{SECRET}", "https://hooks.example.test/a#…redacted"),
        (f"https://hooks.example.test?sig={SECRET}", "https://hooks.example.test?…redacted"),
        ("https://hooks.example.test/a", "https://hooks.example.test/a"),
        (f"not a url ?sig={SECRET}", "not a url ?…redacted"),
    ],
)
def test_redact_url_removes_secrets(url: str, expected: str) -> None:
    """redact_url drops the query (where sig= lives), fragment and credentials but keeps where the URL points."""
    assert redact_url(url) == expected
    assert SECRET not in redact_url(url)


# ---- supported foundations ------------------------------------------------------------------------

# Names every class has; defining them is not overriding a library's internals.
_CLASS_MACHINERY = {
    "__init__",
    "__module__",
    "__qualname__",
    "__doc__",
    "__dict__",
    "__weakref__",
    "__annotations__",
    "__orig_bases__",
    "__parameters__",
    "__firstlineno__",
    "__static_attributes__",
    "__slots__",
    "__abstractmethods__",
    "_abc_impl",
}


def test_no_private_method_of_requests_or_urllib3_is_overridden() -> None:
    """No class in the relay package (or a mixin of one) defines an underscore name that a requests,
    urllib3 or http.client base class also has: the pinning must not rest on internals a minor
    release may change."""
    import importlib
    import inspect
    import pkgutil

    import relay

    library = ("requests", "urllib3", "http.client")
    found: list[str] = []
    for info in pkgutil.walk_packages(relay.__path__, "relay."):
        module = importlib.import_module(info.name)
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            bases = [k for k in cls.__mro__ if k.__module__.split(".")[0] in library or k.__module__ in library]
            if not bases:
                continue
            own = [k for k in cls.__mro__ if k.__module__.startswith("relay")]
            for klass in own:
                for name in vars(klass):
                    if (
                        name.startswith("_")
                        and name not in _CLASS_MACHINERY
                        and any(name in vars(base) for base in bases)
                    ):
                        found.append(f"{cls.__module__}.{cls.__qualname__}: {klass.__qualname__}.{name}")
    assert found == []


@pytest.mark.parametrize(
    "error, outcome",
    [
        (TargetRefused("the address is not public"), "failed"),
        (TLSError("TLS failed"), "failed"),
        (DeliveryTimeout("no answer"), "retry"),
        (ConnectError("refused"), "retry"),
        (ConnectionBroken("reset"), "retry"),
        (ProtocolError("not HTTP"), "retry"),
        (BreakerOpen("left alone"), "retry"),
        (SenderClosed("closed"), "retry"),
    ],
)
def test_each_error_class_has_one_delivery_outcome(error: Exception, outcome: str) -> None:
    """The one table in relay.pipeline.delivery: a certificate that does not verify and a refused URL fail
    for good, everything else that got no answer is retried on the schedule."""
    from relay.pipeline.delivery import outcome_of

    assert outcome_of(error).value == outcome
