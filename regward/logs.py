"""Log lines for the server and the agent: text for people, JSON lines for log collectors.

    REGWARD_LOG_FORMAT=text   2026-12-02 06:10:00,123 INFO regward.access: GET /healthz 200 ...
    REGWARD_LOG_FORMAT=json   {"time": "2026-12-02T06:10:00.123Z", "level": "INFO",
                               "logger": "regward.access", "message": "...", "request_id": ...}

`configure(level, environ)` installs one handler on the root logger, for Regward's loggers and
the libraries' alike. A record's `fields` (pass `extra={"fields": {...}}`) become JSON keys (or
`key=value` pairs in text), and the id of the request being served (`request_id`, set by the
server's request middleware) is added to every line logged while serving it, errors included.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from regward.errors import ConfigError

FORMATS = ("text", "json")

request_id: ContextVar[str | None] = ContextVar("regward_request_id", default=None)


def log_format(environ: Mapping[str, str] | None = None) -> str:
    """REGWARD_LOG_FORMAT, checked: `text` (the default) or `json`."""
    env = os.environ if environ is None else environ
    value = (env.get("REGWARD_LOG_FORMAT") or "text").strip().lower()
    if value not in FORMATS:
        raise ConfigError(
            f"REGWARD_LOG_FORMAT={env.get('REGWARD_LOG_FORMAT')!r} is not a log format; "
            "use 'text' or 'json'"
        )
    return value


def configure(level: int | str = logging.INFO, environ: Mapping[str, str] | None = None) -> None:
    """One handler on stderr for every logger, in the format REGWARD_LOG_FORMAT names."""
    handler = make_handler(sys.stderr, log_format(environ))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per agent request otherwise
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a dozen lines at every start


def make_handler(stream: TextIO, kind: str) -> logging.Handler:
    """A handler writing `kind` ("text" or "json") lines, with the request id, to `stream`."""
    handler = _LineHandler(stream)
    handler.addFilter(_RequestContext())
    handler.setFormatter(JsonFormatter() if kind == "json" else TextFormatter())
    return handler


_holding = threading.local()


@contextlib.contextmanager
def held() -> Iterator[None]:
    """The lines this thread logs inside go to each stream in one write at the end, in order,
    rather than one write (a system call) each: for the server answering thousands of requests
    at once. Other threads' lines are written as they come."""
    if getattr(_holding, "lines", None) is not None:
        yield  # already held further out
        return
    lines: dict[_LineHandler, list[str]] = {}
    _holding.lines = lines
    try:
        yield
    finally:
        _holding.lines = None
        for handler, texts in lines.items():
            handler.write("".join(texts))


class _LineHandler(logging.StreamHandler[TextIO]):
    def emit(self, record: logging.LogRecord) -> None:
        lines: dict[_LineHandler, list[str]] | None = getattr(_holding, "lines", None)
        if lines is None:
            super().emit(record)
            return
        try:
            lines.setdefault(self, []).append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)

    def write(self, text: str) -> None:
        with self.lock or contextlib.nullcontext():
            try:
                self.stream.write(text)
                self.flush()
            except Exception:
                self.handleError(_WRITE_FAILED)


_WRITE_FAILED = logging.makeLogRecord({"msg": "writing held log lines failed"})


class _RequestContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = dict(getattr(record, "fields", None) or {})
    identifier = getattr(record, "request_id", None)
    if identifier is not None:
        fields["request_id"] = identifier
    return fields


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`, the traceback below."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second: tuple[int, str] = (-1, "")  # the last second formatted, and its text

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """As logging formats it, the seconds part made once per second (not once per line)."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if self._second[0] != second:
            self._second = (second, time.strftime(self.default_time_format, self.converter(second)))
        return f"{self._second[1]},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        pairs = " ".join(f"{key}={value}" for key, value in _fields(record).items())
        if not pairs:
            return line
        first, newline, rest = line.partition("\n")
        return f"{first} {pairs}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback is the `exception` string."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
