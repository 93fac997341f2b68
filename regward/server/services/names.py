"""Checks of names, numbers and times that several services take from clients.

Names of users and organizations are Docker-style: lowercase letters, digits, `-` and `_`.
Times are ISO 8601 with a time zone (`2026-12-02T06:00:00Z`, `2026-12-02T07:00+01:00`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from regward.errors import quote
from regward.server.errors import InvalidInput
from regward.server.models import MAX_REVISION

NAME_PATTERN = "^[a-z0-9][a-z0-9_-]{0,62}[a-z0-9]$"
_NAME = re.compile(NAME_PATTERN.strip("^$"))
NAME_SCHEMA: dict[str, Any] = {
    "pattern": NAME_PATTERN,
    "maxLength": 64,
    "description": "2-64 lowercase letters, digits, '-' or '_'",
}
"""How the API's schema describes a user or organization name (what `check_name` accepts)."""
MAX_PAGE = 1_000_000
"""Pages count from 1 to this (a page beyond it would be empty anyway)."""


def check_name(value: object, field: str) -> str:
    """Return `value` when it is a valid user or organization name, else raise InvalidInput."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInput(
            f"{quote(value)} is not a valid name; use 2-64 lowercase letters, digits, "
            "'-' or '_', starting and ending with a letter or digit",
            field=field,
            value=value,
        )
    return value


def check_revision(value: object, field: str) -> int:
    """Return `value` when it is a revision number (0 for none), else raise InvalidInput."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REVISION:
        raise InvalidInput(
            f"{quote(value)} must be a whole number from 0 to {MAX_REVISION}",
            field=field,
            value=value,
        )
    return value


def check_page(page: object, page_size: object, max_size: int) -> tuple[int, int]:
    """(page, page_size) when both are in range, else InvalidInput naming the bad one."""
    if isinstance(page, bool) or not isinstance(page, int) or not 1 <= page <= MAX_PAGE:
        raise InvalidInput(f"page: {page!r} must be a whole number from 1 to {MAX_PAGE}")
    if isinstance(page_size, bool) or not isinstance(page_size, int):
        page_size = 0
    if not 1 <= page_size <= max_size:
        raise InvalidInput(f"page_size: {page_size!r} must be a whole number from 1 to {max_size}")
    return page, page_size


def check_time(value: object, field: str, *, naive_is_utc: bool = False) -> datetime:
    """`value` (ISO 8601 text) as an aware UTC datetime, else InvalidInput naming the value.

    A time without a zone is refused (whose 09:00?) unless `naive_is_utc` (a browser's
    date-time field, which the page labels UTC); so is one that leaves the calendar in UTC
    (`0001-01-01T00:00+01:00`)."""
    example = "like 2026-01-31T09:30:00Z or 2026-01-31T10:30:00+01:00"
    if not isinstance(value, str) or "T" not in value.upper():
        raise InvalidInput(f"{field}: {value!r} is not a date and time {example}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{field}: {value!r} is not a date and time {example}") from None
    if moment.tzinfo is None:
        if not naive_is_utc:
            raise InvalidInput(f"{field}: {value!r} needs a time zone, {example}")
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(
            f"{field}: {value!r} is outside the years 1 to 9999 in UTC; {example}"
        ) from None


def revision_text(value: str, field: str) -> int | None:
    """A revision typed in a filter (`7`, surrounding blanks ignored): None when left empty,
    else a revision number, or InvalidInput naming the value."""
    text = value.strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise InvalidInput(
            f"{quote(value)} is not a revision; type a whole number such as 7",
            field=field,
            value=value,
        )
    return check_revision(int(text), field)


def filter_text(value: str, field: str, limit: int = 255) -> str:
    """A filter's text without surrounding blanks ("" matches everything), at most `limit`
    characters, else InvalidInput naming the value."""
    text = value.strip()
    if len(text) > limit:
        raise InvalidInput(
            f"{quote(value)} is too long for a filter; type at most {limit} characters",
            field=field,
            value=value,
        )
    return text
