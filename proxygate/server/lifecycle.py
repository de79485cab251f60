"""Serving one app until a signal: listen, start, announce, drain, stop.

    open_listener (a taken port fails here, before the store opens)
    → server.json written → app startup (cleanup_ctx: store, pool, upstream) → GatedSite accepts
    → SIGINT/SIGTERM: "draining N streams (up to Ns)…" → stop accepting, idle connections close,
      requests in flight get drain_timeout_s → app cleanup (store flushed) → server.json removed

A second SIGINT/SIGTERM during the drain cuts what is still in flight at once (each cut
request's ``finally`` still releases its lease and records what it saw), says how many, and
the app's cleanup still runs, so the store is flushed either way.

A worker of ``serve --workers N`` (``WORKER_ENV`` names its supervisor, server/supervisor.py)
listens with SO_REUSEPORT beside its siblings and leaves server.json to the supervisor; any
number of SIGINT/SIGTERM start its drain and ``CUT_SIGNAL`` cuts it (a service manager signals
every process of the service as well as the supervisor); it drains and stops on its own when
the supervisor is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator

from aiohttp import web

from proxygate import __version__
from proxygate.config import Settings
from proxygate.server.connections import (
    GatedSite,
    connection_gate,
    handler_options,
    listen_address,
    open_listener,
    raise_open_file_limit,
)
from proxygate.server.guard import EdgeRunner, watch
from proxygate.server.runfile import RunningServer, remove_runfile, write_runfile

log = logging.getLogger("proxygate")

WORKER_ENV = "PROXYGATE_WORKER_OF"
"Set by the supervisor in each worker's environment: the supervisor's pid."
CUT_SIGNAL = signal.SIGUSR1
"The supervisor's second stop signal, passed on to its workers: cut what is still in flight."
PARENT_CHECK_S = 1.0
"How often a worker looks whether its supervisor is still there."


class InFlight:
    """How many requests are being answered now (a stream counts until its last byte)."""

    def __init__(self) -> None:
        self.count = 0

    # A guard.RequestWatch: the edge middleware tells it, with no coroutine layer of its own.
    def enter(self, request: web.Request) -> None:
        self.count += 1

    def leave(self, request: web.Request, entered: None, status: int) -> None:
        self.count -= 1


def serve(app: web.Application, settings: Settings) -> None:
    """Serve ``app`` on ``settings.addr`` until SIGINT/SIGTERM, then drain and stop.

    Raises:
        ProxyError: the address cannot be listened on (one line, no traceback), or startup failed.
    """
    raise_open_file_limit()
    supervisor_pid = supervisor_of_this_worker()
    sock = open_listener(settings.host, settings.port, reuse_port=supervisor_pid is not None)
    try:
        # Ctrl-C before our handlers are installed (early startup) ends quietly too.
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(app, settings, sock, supervisor_pid))
    finally:
        sock.close()


def supervisor_of_this_worker() -> int | None:
    """The supervisor's pid when this process is a worker of ``serve --workers N``; else None."""
    value = os.environ.get(WORKER_ENV, "")
    return int(value) if value.isdigit() else None


async def _watch_supervisor(supervisor_pid: int, stop: _Stop) -> None:
    """Drain and stop once the supervisor is gone (killed with SIGKILL: nobody forwards a signal)."""
    while os.getppid() == supervisor_pid:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.requested.wait(), PARENT_CHECK_S)
            return
    log.warning("the supervisor (pid %d) is gone: this worker stops", supervisor_pid)
    stop.on_signal()


class _Stop:
    """The signals' side of the lifecycle: the first asks for a drain, the second cuts it short."""

    def __init__(self, settings: Settings, in_flight: InFlight) -> None:
        self.requested = asyncio.Event()
        self.drain_timeout_s = settings.drain_timeout_s
        self.in_flight = in_flight
        self.runner: web.AppRunner | None = None
        self._drain_timer: asyncio.TimerHandle | None = None

    def on_signal(self) -> None:
        if not self.requested.is_set():
            self.requested.set()
            log.info("draining %d streams (up to %gs)…", self.in_flight.count, self.drain_timeout_s)
            self._drain_timer = asyncio.get_running_loop().call_later(self.drain_timeout_s, self._drain_over)
            return
        log.warning("second signal: cut %d requests still in flight; stopping now", self.in_flight.count)
        self.cut()

    def drain_once(self) -> None:
        """A worker's SIGINT/SIGTERM: starts the drain; more of them change nothing."""
        if not self.requested.is_set():
            self.on_signal()

    def cut_now(self) -> None:
        """A worker's CUT_SIGNAL (the supervisor got a second signal): stop now."""
        self.drain_once()
        self.on_signal()

    def cut(self) -> None:
        """Close every client connection now (handler cancellation ends their requests)."""
        server = self.runner.server if self.runner is not None else None
        for connection in server.connections if server is not None else []:
            connection.force_close()

    def _drain_over(self) -> None:
        if self.in_flight.count:
            log.warning(
                "drain_timeout_s=%g passed: cutting %d requests still in flight",
                self.drain_timeout_s,
                self.in_flight.count,
            )

    def close(self) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()


@contextlib.asynccontextmanager
async def listening(
    app: web.Application, settings: Settings, sock: socket.socket
) -> AsyncIterator[web.AppRunner]:
    """``app`` started and accepting on ``sock`` behind the connection guards; drained and cleaned up on exit."""
    runner = EdgeRunner(  # parser errors answered as JSON with a request id (server/guard.py)
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=settings.drain_timeout_s,
        **handler_options(settings),
    )
    try:
        await runner.setup()  # the app's startup: store, pool, upstream session
        await GatedSite(runner, sock, connection_gate(settings, sock)).start()
        yield runner
    finally:
        await runner.cleanup()  # stop accepting, drain, then the app's cleanup (store flush)


async def _serve(
    app: web.Application, settings: Settings, sock: socket.socket, supervisor_pid: int | None
) -> None:
    loop = asyncio.get_running_loop()
    in_flight = InFlight()
    watch(app, in_flight)
    stop = _Stop(settings, in_flight)
    if supervisor_pid is None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.on_signal)
    else:
        # A service manager may signal every process of the service as the supervisor forwards
        # its own signal: for a worker a repeated SIGTERM is one; the supervisor cuts with CUT_SIGNAL.
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.drain_once)
        loop.add_signal_handler(CUT_SIGNAL, stop.cut_now)
    pid = os.getpid()
    addr = listen_address(sock)
    try:
        # The socket is bound and listening already (connections wait in its backlog), so the
        # file is written before the first request can be answered: a client that saw /healthz
        # answer always finds it (a worker's supervisor wrote it before starting the workers).
        server = RunningServer(addr=addr, pid=pid, started_at=int(time.time()), version=__version__)
        try:
            if supervisor_pid is None:
                await asyncio.to_thread(write_runfile, settings.data_dir, server)
        except OSError as exc:  # the store's own open names an unusable data dir clearly
            log.warning("cannot write %s/server.json: %s", settings.data_dir, exc.strerror or exc)
        async with listening(app, settings, sock) as runner, asyncio.TaskGroup() as tasks:
            stop.runner = runner
            if supervisor_pid is None:
                log.info("proxygate listening on http://%s", addr)
            else:
                log.info("worker (pid %d) listening on http://%s", pid, addr)
                tasks.create_task(_watch_supervisor(supervisor_pid, stop))
            await stop.requested.wait()
    finally:
        stop.close()
        for signum in (signal.SIGINT, signal.SIGTERM, CUT_SIGNAL):
            loop.remove_signal_handler(signum)
        if supervisor_pid is None:
            await asyncio.to_thread(remove_runfile, settings.data_dir, pid)
    log.info("stopped")
