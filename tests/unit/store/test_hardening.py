"""The store starts for any user, takes any key, and one bad write never blocks the others (issue 10)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxygate.broker.pins import conversation_key
from proxygate.config import UsageSettings
from proxygate.store import COOLDOWNS, PINS, LMDBStore, UsageRecord
from proxygate.store.lmdb_store import MAX_PART_BYTES, key_part, utc_day
from proxygate.wire.ir import Format

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
DAY = 86400.0
ROOT = Path(__file__).parents[3]


def rec(n: int, model: str = "m", ts: float = T0, **fields: object) -> UsageRecord:
    return UsageRecord(f"pg_{n}", ts, "a", model, "anthropic", "anthropic", 200, 10, 5, **fields)  # type: ignore[arg-type]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_store_directories_are_0700_and_files_0600(tmp_path: Path) -> None:
    """lmdb.open(mode=0o600) alone made the environment directory 0600: no search bit."""
    store = LMDBStore(tmp_path / "data")
    store.record(rec(1))
    store.close()
    env = tmp_path / "data" / "proxygate.lmdb"
    assert (mode(tmp_path / "data"), mode(env)) == (0o700, 0o700)
    assert {p.name: mode(p) for p in env.iterdir()} == {"data.mdb": 0o600, "lock.mdb": 0o600}


def test_a_store_made_0600_by_an_older_version_is_repaired(tmp_path: Path) -> None:
    (tmp_path / "proxygate.lmdb").mkdir(mode=0o600)
    LMDBStore(tmp_path).close()
    assert mode(tmp_path / "proxygate.lmdb") == 0o700


def _python_for_others() -> str | None:
    """A Python of our version that another user can run (the venv's may live under /root)."""
    for candidate in (
        f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}",
        "/usr/bin/python3",
    ):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="the suite itself runs as a normal user: every test covers it")
def test_an_unprivileged_user_opens_writes_and_reads_the_store() -> None:
    """Run as root, the other tests cannot see a permission bug: open the store as uid 65534."""
    python = _python_for_others()
    site = (
        Path(sys.prefix)
        / "lib"
        / f"python{sys.version_info.major}.{sys.version_info.minor}"
        / "site-packages"
    )
    if python is None or not site.is_dir():
        pytest.skip("no Python readable by another user")
    home = Path(tempfile.mkdtemp(prefix="proxygate-nobody-", dir="/tmp"))
    try:
        home.chmod(0o777)
        script = (
            "from pathlib import Path\n"
            "from proxygate.store import LMDBStore, UsageRecord\n"
            "s = LMDBStore(Path('data'))\n"
            "s.record(UsageRecord('pg_1', 1.8e9, 'a', 'm', 'chat', 'chat', 200, 3, 4))\n"
            "s.close()\n"
            "s = LMDBStore(Path('data'))\n"
            "print(s.recent_requests(1)[0]['request_id'], s.usage('2027-01-15')[0].totals.tokens)\n"
            "s.close()\n"
        )
        done = subprocess.run(
            [python, "-c", script],
            user=65534,
            group=65534,
            cwd=home,
            env={"PYTHONPATH": f"{ROOT}:{site}", "HOME": str(home), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (done.returncode, done.stdout, done.stderr) == (0, "pg_1 7\n", "")
        env = home / "data" / "proxygate.lmdb"
        assert (mode(home / "data"), mode(env), mode(env / "data.mdb")) == (0o700, 0o700, 0o600)
        assert env.stat().st_uid == 65534
    finally:
        shutil.rmtree(home)


def test_key_parts_are_bounded_in_bytes_and_always_encodable() -> None:
    assert key_part("claude-sonnet-4-5") == b"claude-sonnet-4-5"
    assert key_part("") == b""
    odd = ["é" * 300, "claude-" + "a" * 600, "abc\udcff", "a\0b", "x" * (MAX_PART_BYTES + 1)]
    parts = [key_part(value) for value in odd]
    assert all(len(p) <= MAX_PART_BYTES and b"\0" not in p for p in parts)
    assert len(set(parts)) == len(odd)  # distinct values stay distinct rows
    assert [key_part(value) for value in odd] == parts  # and the same value, the same row
    assert parts[1].startswith(b"claude-aaaaaaaaaaaaaaaaa~")
    assert parts[2].startswith(b"abc?~")


def test_a_non_utf8_session_header_gives_an_encodable_pin_key() -> None:
    """aiohttp decodes header byte 0xff as '\\udcff'; the pin key reached LMDB and crashed the committer."""
    headers = CIMultiDictProxy(CIMultiDict({"session_id": "abc\udcff"}))
    key = conversation_key(Format.responses, headers, {"input": "hi"})
    assert key.startswith("codex:") and key.isascii() and len(key.encode()) <= 64
    assert key != conversation_key(Format.responses, CIMultiDictProxy(CIMultiDict({"session_id": "abc"})), {})


def test_odd_models_sessions_and_tenants_are_stored_with_everything_else(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path)
    store.record(rec(1, model="é" * 300))  # 600 bytes: over LMDB's 511-byte key limit
    store.record(rec(2, model="claude-" + "a" * 600, tenant="t\0x"))
    store.record(rec(3, model="m\udcff", model_asked="m\udcff"))
    store.put_state(PINS, "codex:abc\udcff", {"account_id": "a", "expires_at": 5.0})
    store.put_state(PINS, "cache:" + "k" * 600, {"account_id": "a", "expires_at": 6.0})
    store.record(rec(4))
    store.flush()
    assert store.commit_failures == 0
    assert [e["request_id"] for e in store.recent_requests()] == ["pg_4", "pg_3", "pg_2", "pg_1"]
    assert store.requests(before="pg_4", limit=1)[0]["model_asked"] == "m?"
    models = sorted(row.model for row in store.usage(utc_day(T0)))
    assert len(models) == 4 and "m" in models
    assert all(len(m.encode()) <= MAX_PART_BYTES for m in models)
    assert sorted(v["expires_at"] for v in store.get_states(PINS).values()) == [5.0, 6.0]
    store.close()


def test_an_operation_lmdb_refuses_is_dropped_alone_and_later_writes_commit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused batch was re-queued at the head forever: nothing was saved again."""
    store = LMDBStore(tmp_path)
    store.record(rec(1))
    store.put_state(PINS, "", {"account_id": "a"})  # LMDB refuses an empty key (MDB_BAD_VALSIZE)
    store.put_state(COOLDOWNS, "a", {"until": 5})
    with caplog.at_level(logging.WARNING, logger="proxygate.store"):
        store.flush()
    assert store.queue_depth == 0
    assert store.commit_failures == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith(
        "usage store: dropped one state write that cannot be stored:"
    )
    assert [e["request_id"] for e in store.recent_requests()] == ["pg_1"]
    assert store.get_states(COOLDOWNS) == {"a": {"until": 5}}
    store.record(rec(2))
    store.close()  # a clean stop saves what is queued
    store = LMDBStore(tmp_path)
    assert [e["request_id"] for e in store.recent_requests()] == ["pg_2", "pg_1"]
    store.close()


def test_a_full_map_is_grown_and_nothing_is_lost(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, map_size=256 * 1024)
    for n in range(3000):
        store.record(rec(n, model=f"model-{n}"))
        if n % 500 == 499:
            store.flush()
    store.close()
    store = LMDBStore(tmp_path)
    assert (store.commit_failures, len(store.usage(utc_day(T0))), len(store.requests(10_000))) == (
        0,
        3000,
        3000,
    )
    store.close()


def test_retention_deletes_old_daily_and_hourly_rows_and_bounds_the_log(tmp_path: Path) -> None:
    store = LMDBStore(
        tmp_path, UsageSettings(retention_days=400, hourly_retention_days=31, request_log_max_rows=3)
    )
    for n, age_days in enumerate([500, 401, 399, 40, 30, 0]):
        store.record(rec(n, ts=T0 - age_days * DAY))
    store.flush()
    assert len(store.requests()) == 3  # bounded at commit already
    assert store.sweep(T0) is True
    days = [row.bucket for row in store.usage_rows(0, T0)]
    hours = [row.bucket for row in store.usage_rows(0, T0, hourly=True)]
    assert days == [utc_day(T0 - d * DAY) for d in (399, 40, 30, 0)]
    assert hours == ["2026-12-16T08", "2027-01-15T08"]
    store.close()


def test_a_sweep_does_bounded_work_and_reports_what_is_left(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, UsageSettings(retention_days=1, hourly_retention_days=1))
    for n in range(5):
        store.record(rec(n, model=f"m{n}", ts=T0 - 10 * DAY))
    store.flush()
    assert [store.sweep(T0, max_deletes=4) for _ in range(3)] == [False, False, True]
    assert store.usage_rows(0, T0) == [] and store.usage_rows(0, T0, hourly=True) == []
    store.close()


async def test_the_committer_sweeps_at_start(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, UsageSettings(retention_days=2, hourly_retention_days=1))
    store.record(rec(1, ts=T0 - 5 * DAY))
    store.flush()
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(store.run_committer(stop, clock=lambda: T0))
        store.record(rec(2, ts=T0))
        await asyncio.sleep(0.3)
        stop.set()
    assert [row.bucket for row in store.usage_rows(0, T0)] == [utc_day(T0)]
    store.close()


def test_extreme_ranges_and_retentions_read_and_sweep_without_error(tmp_path: Path) -> None:
    """A retention of a million days reached before year 1: datetime raised out of the sweep."""
    store = LMDBStore(tmp_path, UsageSettings(retention_days=10**6, hourly_retention_days=10**6))
    store.record(rec(1))
    store.record(rec(2, ts=float("nan")))  # a broken clock: kept, in 1970
    store.flush()
    assert store.sweep(T0) is True
    assert [row.bucket for row in store.usage_rows(-1e30, float("inf"))] == ["1970-01-01", utc_day(T0)]
    # The log lists requests as they were recorded, newest first, whatever their clock said.
    assert [e["request_id"] for e in store.requests()] == ["pg_2", "pg_1"]
    store.close()


def test_a_map_grown_by_another_process_is_adopted(tmp_path: Path) -> None:
    """A CLI command that grew the map made every later transaction of the server fail (MDB_MAP_RESIZED)."""
    store = LMDBStore(tmp_path, map_size=256 * 1024)
    store.record(rec(1))
    store.flush()
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from proxygate.store import LMDBStore, UsageRecord\n"
        "s = LMDBStore(Path(sys.argv[1]), map_size=256 * 1024)\n"
        "for n in range(3000):\n"
        "    s.record(UsageRecord(f'other_{n}', 1.8e9, 'b', f'model-{n}', 'chat', 'chat', 200))\n"
        "s.close()\n"
        "print(s.commit_failures)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "0\n", "")
    assert len(store.usage(utc_day(T0))) == 3001
    store.record(rec(2))
    store.flush()
    assert store.commit_failures == 0
    assert len(store.requests(10_000)) == 3002
    store.close()


def test_writes_queued_while_commits_fail_stay_bounded_newest_kept(tmp_path: Path) -> None:
    from proxygate.store.lmdb_store import MAX_QUEUED

    store = LMDBStore(tmp_path)
    for n in range(MAX_QUEUED + 150):  # no commit in between, as while the disk is full
        store.record(rec(n, ts=T0 + n))
    assert store.queue_depth <= MAX_QUEUED
    assert store.commit_failures == MAX_QUEUED + 150 - store.queue_depth  # each dropped write counted
    store.flush()
    [newest] = store.requests(1)
    assert newest["request_id"] == f"pg_{MAX_QUEUED + 149}"
    assert store.requests(1, before="pg_200") == []  # the oldest went first
    store.close()
