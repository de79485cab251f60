"""Client connections: how many may be open, and how long a request may take to arrive.

A slow or hostile client must not hold the server (issue 10 §6). Three guards, one per phase:

- The request head: aiohttp's keep-alive timer closes a connection still waiting for a
  complete request line + headers, armed at connect and again after each answer. With
  ``keepalive_timeout=header_timeout_s`` (``handler_options``) it is the header deadline,
  for a keep-alive connection's next request too.
- The body: ``read_body`` replaces ``request.read()``. After a grace of ``header_timeout_s``
  the body must keep arriving at ``body_min_bytes_per_s``; otherwise the client gets a 408 in
  its format and the connection is closed. Nothing else bounds a read: a client that sends
  ``Content-Length: 100`` and 5 bytes would hold its connection (and its buffer) forever.
- The count: ``ConnectionGate`` closes new connections at once past ``max_connections``, and
  past ``max_connections_per_peer`` from one address when listening beyond loopback.
  ``GatedSite`` puts it in front of aiohttp's protocol; ``raise_open_file_limit`` makes room
  for that many sockets, so a thousand idle ones cannot starve ``accept()``.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from proxygate.config import Settings
from proxygate.errors import BodyTooLarge, ClientError, ProxyError

log = logging.getLogger("proxygate")

# aiohttp's lingering close: after an early answer (413, 401) it keeps reading a body still in
# flight this long, so the client reads the answer rather than a reset. Capped by
# header_timeout_s: a client silent that long has gone anyway.
LINGERING_S = 10.0

BURST_GAP_S = 10.0
"Refusals closer together than this are one burst: logged once when it starts, summed when it ends."

FILES_RESERVED = 64
"Open files kept for what is not a connection: the LMDB store, the pool watcher, logs, capture files."

LISTEN_BACKLOG = 1024
"Pending connections the kernel queues (aiohttp's default 128 drops SYNs in a burst of clients)."


def handler_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiohttp's RequestHandler (via AppRunner) that bound the request head."""
    return {
        # aiohttp closes a connection whose next request head is not complete in time
        # (web_protocol.RequestHandler._process_keepalive): our header deadline.
        "keepalive_timeout": settings.header_timeout_s,
        "lingering_time": min(LINGERING_S, settings.header_timeout_s),
    }


def body_deadline_s(received_bytes: int, *, header_timeout_s: float, min_bytes_per_s: int) -> float:
    """Seconds after the body began to be read by which more must come, having ``received_bytes``."""
    return header_timeout_s + received_bytes / min_bytes_per_s


async def read_body(request: web.Request, settings: Settings) -> bytes:
    """The whole request body, within ``max_body_mb`` and the body deadline.

    Raises:
        BodyTooLarge: over ``max_body_mb`` (announced or as it arrives, chunked included).
        ClientError: 408 when the body stopped keeping pace; the connection then closes.
    """
    limit = settings.max_body_bytes
    if (request.content_length or 0) > limit:
        raise BodyTooLarge(f"request body over the {settings.max_body_mb:g} MB limit (max_body_mb)")
    if request.content.is_eof():
        # The whole body came with the headers (the usual case on loopback): no deadline to keep,
        # so no timer is armed and cancelled for it.
        raw = request.content.read_nowait()
        if len(raw) > limit:
            raise BodyTooLarge(f"request body over the {settings.max_body_mb:g} MB limit (max_body_mb)")
        return raw
    chunks: list[bytes] = []
    received = 0
    start = asyncio.get_running_loop().time()

    def deadline() -> float:
        return start + body_deadline_s(
            received,
            header_timeout_s=settings.header_timeout_s,
            min_bytes_per_s=settings.body_min_bytes_per_s,
        )

    try:
        async with asyncio.timeout_at(deadline()) as timer:
            while chunk := await request.content.readany():
                chunks.append(chunk)
                received += len(chunk)
                if received > limit:
                    raise BodyTooLarge(
                        f"request body over the {settings.max_body_mb:g} MB limit (max_body_mb)"
                    )
                timer.reschedule(deadline())
    except TimeoutError:
        expected = f" of {request.content_length}" if request.content_length is not None else ""
        raise ClientError(
            f"request body stalled: {received}{expected} bytes arrived before the body deadline "
            f"(header_timeout_s={settings.header_timeout_s:g}, body_min_bytes_per_s={settings.body_min_bytes_per_s})",
            status=408,
        ) from None
    return b"".join(chunks)


@dataclass(slots=True)
class _Burst:
    started_s: float
    last_s: float
    refused: int = 1


class ConnectionGate:
    """Counts open connections, in total and per peer address, and refuses those over the caps.

    Refusals are logged once per burst (when it starts, and its total when it is over), never
    once per connection: a flood must not become a flood of log lines.
    """

    def __init__(
        self,
        max_connections: int,
        max_per_peer: int | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self.open_count = 0
        self._per_peer: dict[str, int] = {}
        self._bursts: dict[str, _Burst] = {}  # "" is the global cap, else a peer address
        self._clock = clock

    def admit(self, peer: str) -> bool:
        """Count a new connection from ``peer``, or say it must be closed."""
        now = self._clock()
        if self.open_count >= self.max_connections:
            self._refused("", now, f"max_connections={self.max_connections} reached", self.open_count)
            return False
        per_peer = self._per_peer.get(peer, 0)
        if self.max_per_peer is not None and per_peer >= self.max_per_peer:
            self._refused(
                peer, now, f"max_connections_per_peer={self.max_per_peer} reached by {peer}", per_peer
            )
            return False
        if self._bursts:
            self._end_bursts(now)
        self.open_count += 1
        self._per_peer[peer] = per_peer + 1
        return True

    def release(self, peer: str) -> None:
        """A connection ``admit`` counted has closed."""
        self.open_count -= 1
        left = self._per_peer[peer] - 1
        if left:
            self._per_peer[peer] = left
        else:
            del self._per_peer[peer]

    def _refused(self, scope: str, now: float, why: str, open_count: int) -> None:
        burst = self._bursts.get(scope)
        if burst is not None and now - burst.last_s < BURST_GAP_S:
            burst.refused += 1
            burst.last_s = now
            return
        if burst is not None:
            self._log_end(scope, burst)
        self._bursts[scope] = _Burst(now, now)
        log.warning("%s (%d open): closing new connections at once", why, open_count)

    def _end_bursts(self, now: float) -> None:
        for scope, burst in list(self._bursts.items()):
            if now - burst.last_s >= BURST_GAP_S:
                del self._bursts[scope]
                self._log_end(scope, burst)

    def _log_end(self, scope: str, burst: _Burst) -> None:
        log.info(
            "connection limit%s: refused %d connections over %.0f s",
            f" for {scope}" if scope else "",
            burst.refused,
            burst.last_s - burst.started_s,
        )


class _GatedConnection(asyncio.Protocol):
    """One accepted socket: closed at once if the gate refuses it, else aiohttp's handler runs it."""

    __slots__ = ("_gate", "_handler", "_make_handler", "_peer")

    def __init__(self, gate: ConnectionGate, make_handler: Callable[[], asyncio.Protocol]) -> None:
        self._gate = gate
        self._make_handler = make_handler
        self._handler: asyncio.Protocol | None = None
        self._peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = _peer_address(transport.get_extra_info("peername"))
        if not self._gate.admit(peer):
            transport.close()
            return
        self._peer = peer
        self._handler = self._make_handler()
        self._handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handler is not None:
            self._gate.release(self._peer)
            self._handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._handler is None else self._handler.eof_received()

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()


def _peer_address(peername: Any) -> str:
    return str(peername[0]) if isinstance(peername, tuple) and peername else ""


class GatedSite(web.BaseSite):
    """aiohttp's SockSite with a ``ConnectionGate`` in front of every accepted connection."""

    __slots__ = ("_gate", "_sock")

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, gate: ConnectionGate) -> None:
        super().__init__(runner, backlog=LISTEN_BACKLOG)
        self._sock = sock
        self._gate = gate

    @property
    def name(self) -> str:
        return f"http://{listen_address(self._sock)}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None  # BaseSite.__init__ checked runner.setup() ran
        gate = self._gate
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _GatedConnection(gate, server), sock=self._sock, backlog=self._backlog
        )


def connection_gate(
    settings: Settings, sock: socket.socket, *, open_files: int | None = None
) -> ConnectionGate:
    """The gate for a server listening on ``sock``: per-peer caps only beyond loopback.

    ``max_connections`` is lowered to what the open-file limit (default: this process's) can
    hold: past it ``accept()`` fails with EMFILE and asyncio stops accepting for a second, for
    everyone; refusing the extra connections at once keeps the server answering.
    """
    if open_files is None:
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    max_connections = settings.max_connections
    most = (
        max_connections
        if open_files == resource.RLIM_INFINITY
        else max(1, (open_files - FILES_RESERVED) // 2)
    )
    if most < max_connections:
        log.warning(
            "max_connections lowered from %d to %d: the open file limit is %d "
            "(each connection may hold a client and an upstream socket)",
            max_connections,
            most,
            open_files,
        )
        max_connections = most
    host = sock.getsockname()[0]
    beyond_loopback = not ipaddress.ip_address(host).is_loopback
    return ConnectionGate(max_connections, settings.max_connections_per_peer if beyond_loopback else None)


def listen_address(sock: socket.socket) -> str:
    """``HOST:PORT`` the socket is bound to (IPv6 in brackets): the real port, also for port 0."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard one (one fd per connection); the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return soft
    # An unlimited hard limit is not a valid soft one everywhere (Linux caps at fs.nr_open,
    # macOS at OPEN_MAX): try the largest that usually holds, then a modest one.
    targets = [hard] if hard != resource.RLIM_INFINITY else [1 << 20, 10240]
    for target in targets:
        if target <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        soft = target
        break
    log.debug("open file limit: %d", soft)
    return soft


def open_listener(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A socket listening on ``host:port``, bound before the app starts so a taken port fails fast.

    ``reuse_port``: SO_REUSEPORT, so the workers of ``serve --workers N`` each listen on the port
    and the kernel spreads new connections across them.

    Raises:
        ProxyError: the port is in use, the address is not this machine's, or binding is not allowed;
            one line that names the address and what to do.
    """
    host = host.removeprefix("[").removesuffix("]")
    addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        # One socket: IPv4 when the name has one ("localhost" may list ::1 first; clients dial 127.0.0.1).
        family, _, _, _, sockaddr = min(found, key=lambda info: info[0] != socket.AF_INET)
        return socket.create_server(sockaddr, family=family, backlog=LISTEN_BACKLOG, reuse_port=reuse_port)
    except socket.gaierror:
        raise ProxyError(f"cannot listen on {addr}: unknown host {host!r}") from None
    except OSError as exc:
        # One short line: the CLI prints it in 80 columns, and scripts read it (issue 10 §8).
        if exc.errno == errno.EADDRINUSE:
            raise ProxyError(f"{addr} is in use (another proxygate?); try --addr HOST:PORT") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            why = "not an address of this machine"
        elif exc.errno == errno.EACCES:
            why = "permission denied (ports below 1024 need privileges)"
        else:
            why = exc.strerror or exc.__class__.__name__
        raise ProxyError(f"cannot listen on {addr}: {why}") from None
