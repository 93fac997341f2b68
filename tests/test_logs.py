"""regward.logs: text or JSON lines, fields as keys, the request id on every line it caused."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regward import logs
from regward.errors import ConfigError
from tests.harness.server import free_port
from tests.harness.wait import wait_for


def _record(message: str = "hello %s", **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("regward.test", logging.WARNING, __file__, 1, message, ("x",), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_carry_message_fields_and_request_id() -> None:
    record = _record(fields={"route": "/healthz", "status": 200}, request_id="abc")
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "regward.test"
    assert entry["message"] == "hello x"
    assert entry["route"] == "/healthz"
    assert entry["status"] == 200
    assert entry["request_id"] == "abc"
    assert entry["time"].endswith("Z")


def test_a_traceback_stays_inside_its_json_line() -> None:
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        record = _record(exc_info=sys.exc_info())
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    assert "RuntimeError: boom" in json.loads(line)["exception"]


def test_text_lines_append_fields_after_the_message() -> None:
    record = _record(fields={"status": 404}, request_id="r1")
    line = logs.TextFormatter().format(record)
    assert line.endswith("WARNING regward.test: hello x status=404 request_id=r1")


def test_the_request_context_names_the_current_request() -> None:
    record = _record()
    token = logs.request_id.set("req-7")
    try:
        logs._RequestContext().filter(record)
    finally:
        logs.request_id.reset(token)
    assert json.loads(logs.JsonFormatter().format(record))["request_id"] == "req-7"


@pytest.mark.parametrize(
    ("given", "chosen"), [(None, "text"), ("JSON", "json"), (" text ", "text")]
)
def test_log_format_setting(given: str | None, chosen: str) -> None:
    env = {} if given is None else {"REGWARD_LOG_FORMAT": given}
    assert logs.log_format(env) == chosen


def test_an_unknown_log_format_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"REGWARD_LOG_FORMAT='yaml' .* use 'text' or 'json'"):
        logs.log_format({"REGWARD_LOG_FORMAT": "yaml"})


def _proxy(tmp_path: Path, log_format: str) -> tuple[list[str], dict[str, str]]:
    policy = tmp_path / "policy.yaml"
    policy.write_text("organization: acme\nregistries: []\n")
    env = {
        "REGWARD_AGENT_DIR": str(tmp_path / "agent"),
        "REGWARD_REGISTRY_JSON": str(tmp_path / "none.json"),
        "REGWARD_LOG_FORMAT": log_format,
        "PATH": os.environ["PATH"],
    }
    argv = [sys.executable, "-m", "regward.cli", "agent", "proxy", "--policy", str(policy)]
    return [*argv, "--listen", f"127.0.0.1:{free_port()}"], env


def test_the_agent_writes_json_lines(tmp_path: Path) -> None:
    argv, env = _proxy(tmp_path, "json")
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: b"listening" in log.read_bytes(), 30, "the proxy's first line")
    finally:
        process.terminate()
        assert process.wait(30) == 0
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert any("listening" in e["message"] for e in entries)
    assert {e["logger"] for e in entries} >= {"regward.agent.proxy"}


def test_the_agent_refuses_an_unknown_log_format(tmp_path: Path) -> None:
    argv, env = _proxy(tmp_path, "xml")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "REGWARD_LOG_FORMAT='xml' is not a log format; use 'text' or 'json'" in done.stderr


class _Writes(io.StringIO):
    """A stream that remembers each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_held_lines_go_out_in_one_write_in_order() -> None:
    stream = _Writes()
    handler = logs.make_handler(stream, "text")
    logger = logging.getLogger("regward.test.held")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with logs.held():
            for index in range(3):
                logger.warning("line %d", index)
            seen_inside = list(stream.writes)
            worker = threading.Thread(target=logger.warning, args=("from another thread",))
            worker.start()
            worker.join()
        logger.warning("after")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert seen_inside == []
    assert len(stream.writes) == 3  # the other thread's line, the three held, the one after
    assert stream.writes[0].endswith("from another thread\n")
    assert [line.rpartition(": ")[2] for line in stream.writes[1].splitlines()] == [
        "line 0",
        "line 1",
        "line 2",
    ]
    assert stream.writes[2].endswith("after\n")


@given(created=st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_text_times_read_as_logging_writes_them(created: float) -> None:
    record = _record()
    record.created, record.msecs = created, (created - int(created)) * 1000
    ours = logs.TextFormatter()
    assert ours.formatTime(record) == logging.Formatter().formatTime(record)
    assert ours.formatTime(record) == logging.Formatter().formatTime(record)  # the cached one
