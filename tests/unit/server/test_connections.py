"""Connection limits and deadlines as values: the gate with a fake clock, the deadline arithmetic."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

from proxygate.config import Settings
from proxygate.errors import ProxyError
from proxygate.server.connections import (
    ConnectionGate,
    body_deadline_s,
    connection_gate,
    handler_options,
    listen_address,
    open_listener,
)
from proxygate.server.runfile import RunningServer, read_runfile, remove_runfile, runfile_path, write_runfile
from tests.conftest import FakeClock


def test_with_default_settings_a_stalled_body_is_closed_within_60_s() -> None:
    """Content-Length 100, 5 bytes, silence: the 408 at the body deadline, the close after lingering."""
    settings = Settings()
    options = handler_options(settings)
    deadline_s = body_deadline_s(
        5, header_timeout_s=settings.header_timeout_s, min_bytes_per_s=settings.body_min_bytes_per_s
    )
    assert deadline_s == 30 + 5 / 65536
    assert options == {"keepalive_timeout": 30.0, "lingering_time": 10.0}
    assert deadline_s + options["lingering_time"] < 60


def test_a_body_arriving_at_the_minimum_rate_always_has_time_left() -> None:
    """32 MB at exactly 64 KiB/s: each byte arrives before the deadline its predecessors set."""
    rate = 65536
    for received in (0, 1, rate, 32 * 1024 * 1024):
        arrives_at_s = received / rate
        assert body_deadline_s(received, header_timeout_s=30, min_bytes_per_s=rate) == 30 + arrives_at_s


def test_a_short_header_timeout_also_shortens_lingering() -> None:
    assert handler_options(Settings(header_timeout_s=1)) == {"keepalive_timeout": 1, "lingering_time": 1}


def test_the_gate_refuses_past_max_connections_and_admits_again_after_a_close() -> None:
    gate = ConnectionGate(2, None, clock=FakeClock())
    assert [gate.admit("127.0.0.1") for _ in range(3)] == [True, True, False]
    gate.release("127.0.0.1")
    assert (gate.open_count, gate.admit("127.0.0.1")) == (1, True)


def test_the_gate_caps_each_peer_when_asked() -> None:
    gate = ConnectionGate(10, 2, clock=FakeClock())
    assert [gate.admit("10.0.0.1") for _ in range(3)] == [True, True, False]
    assert gate.admit("10.0.0.2") is True
    gate.release("10.0.0.1")
    assert gate.admit("10.0.0.1") is True
    assert gate.open_count == 3


def test_refusals_are_logged_once_per_burst_and_summed_when_it_is_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="proxygate")
    clock = FakeClock()
    gate = ConnectionGate(1, None, clock=clock)
    gate.admit("127.0.0.1")
    for _ in range(50):
        clock.advance(0.1)
        assert gate.admit("127.0.0.1") is False
    gate.release("127.0.0.1")
    clock.advance(10)
    assert gate.admit("127.0.0.1") is True
    assert [r.getMessage() for r in caplog.records] == [
        "max_connections=1 reached (1 open): closing new connections at once",
        "connection limit: refused 50 connections over 5 s",
    ]


def test_a_peer_over_its_cap_is_named_in_its_own_burst(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxygate")
    clock = FakeClock()
    gate = ConnectionGate(100, 1, clock=clock)
    gate.admit("10.0.0.9")
    gate.admit("10.0.0.9")
    gate.admit("10.0.0.9")
    clock.advance(10)
    gate.admit("10.0.0.8")
    assert [r.getMessage() for r in caplog.records] == [
        "max_connections_per_peer=1 reached by 10.0.0.9 (1 open): closing new connections at once",
        "connection limit for 10.0.0.9: refused 2 connections over 0 s",
    ]


def test_per_peer_caps_apply_only_beyond_loopback() -> None:
    settings = Settings(max_connections=50, max_connections_per_peer=5)
    with socket.create_server(("127.0.0.1", 0)) as loopback, socket.create_server(("0.0.0.0", 0)) as anywhere:
        assert (
            connection_gate(settings, loopback).max_per_peer,
            connection_gate(settings, anywhere).max_per_peer,
        ) == (
            None,
            5,
        )


def test_max_connections_is_lowered_to_what_the_open_file_limit_holds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past the limit accept() fails and asyncio stops accepting for everyone: refuse instead."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        assert connection_gate(Settings(max_connections=4096), sock, open_files=1024).max_connections == 480
        assert connection_gate(Settings(max_connections=100), sock, open_files=1024).max_connections == 100
    assert [r.getMessage() for r in caplog.records] == [
        "max_connections lowered from 4096 to 480: the open file limit is 1024 "
        "(each connection may hold a client and an upstream socket)"
    ]


def test_a_taken_port_is_one_short_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(
            ProxyError,
            match=rf"^127\.0\.0\.1:{port} is in use \(another proxygate\?\); try --addr HOST:PORT$",
        ):
            open_listener("127.0.0.1", port)


def test_the_listener_reports_the_port_it_really_got() -> None:
    with open_listener("localhost", 0) as sock:
        assert listen_address(sock) == f"127.0.0.1:{sock.getsockname()[1]}"
    with open_listener("[::1]", 0) as sock:
        assert listen_address(sock) == f"[::1]:{sock.getsockname()[1]}"


def test_the_runfile_is_private_and_removed_only_by_its_own_server(tmp_path: Path) -> None:
    server = RunningServer(addr="127.0.0.1:4321", pid=os.getpid(), started_at=1_800_000_000, version="0.1.0")
    write_runfile(tmp_path, server)
    assert runfile_path(tmp_path).stat().st_mode & 0o777 == 0o600
    assert (read_runfile(tmp_path), server.is_alive()) == (server, True)
    remove_runfile(tmp_path, pid=server.pid + 1)  # a later server's file stays
    assert read_runfile(tmp_path) == server
    remove_runfile(tmp_path, pid=server.pid)
    assert (read_runfile(tmp_path), runfile_path(tmp_path).exists()) == (None, False)
