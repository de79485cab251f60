"""The log formatter: one record is one line start whatever a client put in it (issue 10 §5)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from proxygate.features.metrics import REQUEST_SCOPE, RequestScope
from proxygate.server import logs

FORGED = "claude-x\r\n2026-12-05T00:00:00 INFO forged"
REQUEST_ID = "pg_" + "ab" * 12


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad model " + FORGED)
        except ValueError as e:
            exc_info = (type(e), e, e.__traceback__)
    return logging.LogRecord("proxygate.request", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_escape_control_writes_c0_c1_del_and_surrogates_as_escapes() -> None:
    assert logs.escape_control("a\r\nb\x00c\x1b[31m\x7f\x85\tz\udcff ok é") == (
        "a\\x0d\\x0ab\\x00c\\x1b[31m\\x7f\\x85\\x09z\\udcff ok é"
    )


def test_a_crlf_in_a_model_name_cannot_forge_a_text_line() -> None:
    line = logs.TextFormatter().format(record("%s model=%s status=%d", REQUEST_ID, FORGED, 200))
    assert line.count("\n") == 0
    assert line.endswith(
        f"WARNING proxygate.request: {REQUEST_ID} model=claude-x\\x0d\\x0a2026-12-05T00:00:00 INFO forged status=200"
    )


def test_a_traceback_is_indented_under_its_record() -> None:
    lines = logs.TextFormatter().format(record("failed %s", FORGED, exc=True)).split("\n")
    assert "\\x0d\\x0a2026-12-05T00:00:00 INFO forged" in lines[0]
    assert lines[1] == "    Traceback (most recent call last):"
    assert all(line.startswith("    ") for line in lines[1:])
    # an exception message spanning lines stays indented: it cannot pass for a record
    assert lines[-2:] == ["    ValueError: bad model claude-x\\x0d", "    2026-12-05T00:00:00 INFO forged"]


def test_json_is_one_object_per_line_with_the_request_id_named_in_the_message() -> None:
    line = logs.JsonFormatter().format(record("%s model=%s", REQUEST_ID, FORGED, exc=True))
    assert "\n" not in line and "\r" not in line
    entry = orjson.loads(line)
    assert sorted(entry) == ["exc", "level", "logger", "message", "request_id", "ts"]
    assert entry["message"] == f"{REQUEST_ID} model={FORGED}"
    assert entry["request_id"] == REQUEST_ID
    assert entry["level"] == "warning"
    assert entry["exc"].endswith("ValueError: bad model " + FORGED)


def test_json_takes_the_request_id_of_the_current_task_or_of_extra() -> None:
    token = REQUEST_SCOPE.set(RequestScope(request_id=REQUEST_ID))
    try:
        assert orjson.loads(logs.JsonFormatter().format(record("no id here")))["request_id"] == REQUEST_ID
    finally:
        REQUEST_SCOPE.reset(token)
    given = record("no id here")
    given.request_id = "pg_given"
    assert orjson.loads(logs.JsonFormatter().format(given))["request_id"] == "pg_given"
    assert "request_id" not in orjson.loads(logs.JsonFormatter().format(record("startup")))


def test_json_survives_a_lone_surrogate_from_an_undecodable_header() -> None:
    entry = orjson.loads(logs.JsonFormatter().format(record("session %s", "abc\udcff")))
    assert entry["message"] == "session abc\\udcff"


def test_setup_routes_warnings_and_every_logger_through_json(restore_root: None) -> None:
    out = io.StringIO()
    logs.setup("info", "json", stream=out)
    logging.getLogger("aiohttp.server").error("Error handling request %s", FORGED)
    logging.getLogger("proxygate").debug("not at info")
    logging.warning("root %s", "logger")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("something odd", UserWarning, stacklevel=1)
    entries = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["logger"], e["level"]) for e in entries] == [
        ("aiohttp.server", "error"),
        ("root", "warning"),
        ("py.warnings", "warning"),
    ]
    assert entries[0]["message"] == f"Error handling request {FORGED}"
    assert "UserWarning: something odd" in entries[2]["message"]


def test_log_file_is_0600_in_a_0700_dir_and_rotates(tmp_path: Path, restore_root: None) -> None:
    path = tmp_path / "logs" / "proxygate.log"
    logs.setup("info", "text", log_file=path, log_file_max_mb=0.001, log_file_count=2, stream=io.StringIO())
    log = logging.getLogger("proxygate.test")
    for i in range(60):
        log.info("line %d %s", i, "x" * 40)
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["proxygate.log", "proxygate.log.1", "proxygate.log.2"]
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()} == {0o600}
    assert path.read_text().splitlines()[-1].endswith("line 59 " + "x" * 40)


def test_an_existing_wider_log_file_is_narrowed(tmp_path: Path, restore_root: None) -> None:
    path = tmp_path / "proxygate.log"
    path.write_text("old\n")
    os.chmod(path, 0o644)
    logs.setup("info", "text", log_file=path, stream=io.StringIO())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


class CountingStream(io.StringIO):
    """A stream that counts its writes: each is a system call on a real stderr."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_lines_logged_in_one_loop_turn_leave_in_one_write(restore_root: None) -> None:
    out = CountingStream()
    logs.setup("info", "text", stream=out)
    log = logging.getLogger("proxygate.request")

    async def turn() -> tuple[str, int]:
        for i in range(5):
            log.info("request %d", i)
        held = out.getvalue(), out.writes  # nothing written while the turn goes on
        await asyncio.sleep(0)  # the turn ends: the flush scheduled by the first line runs
        return held

    held, writes_before = asyncio.run(turn())
    assert (held, writes_before) == ("", 0)
    assert out.writes == 1
    assert [line.split(": ", 1)[1] for line in out.getvalue().splitlines()] == [
        f"request {i}" for i in range(5)
    ]


def test_lines_off_the_loop_are_written_at_once_and_after_pending_ones(restore_root: None) -> None:
    out = CountingStream()
    logs.setup("info", "text", stream=out)
    log = logging.getLogger("proxygate.test")
    log.info("before the loop")
    assert out.getvalue().endswith("before the loop\n")

    async def mixed() -> None:
        log.info("on the loop")
        thread = threading.Thread(target=log.info, args=("from a thread",))
        thread.start()
        thread.join()  # the thread's line takes the loop's pending one along, in order

    asyncio.run(mixed())
    messages = [line.split(": ", 1)[1] for line in out.getvalue().splitlines()]
    assert messages == ["before the loop", "on the loop", "from a thread"]


def test_a_pending_line_is_written_when_the_handler_closes(restore_root: None) -> None:
    out = CountingStream()
    handler = logs.setup("info", "text", stream=out)[0]

    async def log_then_close() -> None:
        logging.getLogger("proxygate.test").warning("last words")
        handler.close()  # shutdown before the loop's turn ends

    asyncio.run(log_then_close())
    assert out.getvalue().endswith("last words\n")


def test_a_closed_stream_does_not_raise_into_the_server(restore_root: None) -> None:
    out = io.StringIO()
    logs.setup("info", "text", stream=out)
    out.close()
    logging.getLogger("proxygate.test").error("nowhere to go")  # no exception
