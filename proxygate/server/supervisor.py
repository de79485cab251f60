"""``serve --workers N``: one supervisor process, N worker processes accepting on one port.

    supervisor: port check (a taken port: one line, exit 1) → admin.token → server.json
      → a fresh metrics dir → N × ``python -m proxygate serve`` with WORKER_ENV set
    each worker: the whole app, its own listening socket on the port (SO_REUSEPORT: the
      kernel spreads new connections across the workers), the shared LMDB env (or Redis)
    a worker that exits is started again (at once; with backoff when it keeps dying at start)
    SIGINT/SIGTERM: SIGTERM to every worker (a second one: CUT_SIGNAL, which cuts their drains),
      wait for them (bounded), server.json removed, exit 0

Workers run in their own session, so a terminal's Ctrl-C reaches only the supervisor, which
forwards it once. A worker whose supervisor is gone (SIGKILL) drains and stops by itself
(server/lifecycle.py). ``/metrics`` sums every worker's counters through prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, one file set per worker pid).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import multiprocess

from proxygate import __version__
from proxygate.config import Settings
from proxygate.errors import ProxyError
from proxygate.server.admin import load_or_create_admin_token
from proxygate.server.connections import listen_address, open_listener
from proxygate.server.lifecycle import CUT_SIGNAL, WORKER_ENV
from proxygate.server.runfile import RunningServer, remove_runfile, write_runfile
from proxygate.store.files import ensure_private_dir

log = logging.getLogger("proxygate")

METRICS_DIR = "metrics"
"Under the data dir: the workers' prometheus_client value files, emptied at each start."
QUICK_EXIT_S = 5.0
"A worker that exits sooner than this after its start died at start: the next start waits."
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)
"Waits before restarting a worker that keeps dying at start; a worker that ran longer restarts at once."
MAX_QUICK_EXITS = 8
"A worker that died at start this many times in a row: the supervisor gives up (exit 1)."
STOP_GRACE_S = 10.0
"After drain_timeout_s, how much longer workers get to flush their store before SIGKILL."


def can_share_port() -> bool:
    """SO_REUSEPORT spreads connections across listeners on Linux only (BSD and macOS hand them
    all to one socket), so elsewhere ``--workers N`` falls back to a single process."""
    return sys.platform.startswith("linux")


def worker_command(settings: Settings, addr: str, log_level: str | None) -> list[str]:
    """The command line of a worker: the same config file and flags, the port already resolved."""
    command = [sys.executable, "-m", "proxygate", "serve", "--addr", addr]
    if settings.config_path is not None:
        command += ["--config", str(settings.config_path.resolve())]
    if log_level is not None:
        command += ["--log-level", log_level]
    return command


def fresh_metrics_dir(data_dir: Path) -> Path:
    """``<data_dir>/metrics`` (0700) without value files left by an earlier run."""
    path = data_dir / METRICS_DIR
    ensure_private_dir(path)
    path.chmod(0o700)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    return path


def run_workers(settings: Settings, count: int, *, log_level: str | None = None) -> None:
    """Serve ``settings.addr`` with ``count`` worker processes until SIGINT/SIGTERM.

    Raises:
        ProxyError: the address cannot be listened on, or a worker keeps dying at start.
    """
    # Files the workers create without our helpers (prometheus_client's value files in the
    # metrics dir) are private too: 0600, as everything under the data dir.
    os.umask(0o077)
    # Bound without SO_REUSEPORT: fails when anything (another proxygate too) has the port.
    with open_listener(settings.host, settings.port) as probe:
        addr = listen_address(probe)  # the real port, also for --addr HOST:0
    ensure_private_dir(settings.data_dir)
    load_or_create_admin_token(settings)  # the workers read it; none of them writes it
    metrics_dir = fresh_metrics_dir(settings.data_dir)
    pid = os.getpid()
    write_runfile(
        settings.data_dir, RunningServer(addr=addr, pid=pid, started_at=int(time.time()), version=__version__)
    )
    env = {**os.environ, WORKER_ENV: str(pid), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    supervisor = Supervisor(worker_command(settings, addr, log_level), env, count, metrics_dir, settings)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(supervisor.run())
    finally:
        remove_runfile(settings.data_dir, pid)
    if supervisor.failure:
        raise ProxyError(supervisor.failure)
    log.info("stopped")


class Supervisor:
    """Keeps ``count`` workers running; forwards stop signals to them."""

    def __init__(
        self,
        command: Sequence[str],
        env: dict[str, str],
        count: int,
        metrics_dir: Path,
        settings: Settings,
    ) -> None:
        self.command = list(command)
        self.env = env
        self.count = count
        self.metrics_dir = metrics_dir
        self.stop_wait_s = settings.drain_timeout_s + STOP_GRACE_S
        self.stopping = asyncio.Event()
        self.workers: dict[int, asyncio.subprocess.Process] = {}
        "Slot → the worker process running in it now."
        self.failure = ""
        self._running_slots = count
        self._all_exited = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.on_signal, signum)
        try:
            async with asyncio.TaskGroup() as tasks:
                for slot in range(self.count):
                    tasks.create_task(self._keep_running(slot))
                tasks.create_task(self._kill_after_stop_wait())
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    def on_signal(self, signum: int) -> None:
        """The first signal starts the workers' drain; a second one cuts it."""
        if not self.stopping.is_set():
            log.info("stopping %d workers…", len(self.workers))
            self.stopping.set()
            self._signal_all(signal.SIGTERM)
        else:
            self._signal_all(CUT_SIGNAL)

    def _signal_all(self, signum: int) -> None:
        for proc in self.workers.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    async def _keep_running(self, slot: int) -> None:
        try:
            await self._restarting(slot)
        finally:
            self._running_slots -= 1
            if not self._running_slots:
                self._all_exited.set()

    async def _restarting(self, slot: int) -> None:
        quick_exits = 0
        while not self.stopping.is_set():
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *self.command, env=self.env, stdin=asyncio.subprocess.DEVNULL, start_new_session=True
            )
            self.workers[slot] = proc
            if self.stopping.is_set():  # the signal came while it was starting
                proc.send_signal(signal.SIGTERM)
            log.info("worker %d started (pid %d)", slot + 1, proc.pid)
            code = await proc.wait()
            # Its live gauges go; its counters stay in the sums.
            multiprocess.mark_process_dead(proc.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
            if self.stopping.is_set():
                break
            quick_exits = quick_exits + 1 if time.monotonic() - started < QUICK_EXIT_S else 0
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            if quick_exits >= MAX_QUICK_EXITS:
                self.failure = (
                    f"worker {slot + 1} {how} at start {quick_exits} times in a row; see the log above"
                )
                log.error("%s: stopping", self.failure)
                self.on_signal(signal.SIGTERM)
                break
            wait_s = RESTART_BACKOFF_S[min(quick_exits, len(RESTART_BACKOFF_S)) - 1] if quick_exits else 0.0
            log.warning("worker %d (pid %d) %s: restarting it in %gs", slot + 1, proc.pid, how, wait_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), wait_s)

    async def _kill_after_stop_wait(self) -> None:
        """Bound the stop: workers still running ``stop_wait_s`` after the signal are killed."""
        await self.stopping.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_exited.wait(), self.stop_wait_s)
            return
        if running := [p for p in self.workers.values() if p.returncode is None]:
            log.warning(
                "%d workers still running %gs after the stop signal: killing them",
                len(running),
                self.stop_wait_s,
            )
            self._signal_all(signal.SIGKILL)
