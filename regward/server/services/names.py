"""Checks of names and numbers that several services take from clients.

Names of users and organizations are Docker-style: lowercase letters, digits, `-` and `_`.
"""

from __future__ import annotations

import re

from regward.server.errors import InvalidInput
from regward.server.models import MAX_REVISION

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}[a-z0-9]")


def check_name(value: object, field: str) -> str:
    """Return `value` when it is a valid user or organization name, else raise InvalidInput."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInput(
            f"{field}: {value!r} is not a valid name; use 2-64 lowercase letters, digits, "
            "'-' or '_', starting and ending with a letter or digit"
        )
    return value


def check_revision(value: object, field: str) -> int:
    """Return `value` when it is a revision number (0 for none), else raise InvalidInput."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REVISION:
        raise InvalidInput(f"{field}: {value!r} must be a whole number from 0 to {MAX_REVISION}")
    return value
