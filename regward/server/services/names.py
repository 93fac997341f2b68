"""Docker-style names of users and organizations: lowercase letters, digits, `-` and `_`."""

from __future__ import annotations

import re

from regward.server.errors import InvalidInput

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}[a-z0-9]")


def check_name(value: object, field: str) -> str:
    """Return `value` when it is a valid user or organization name, else raise InvalidInput."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInput(
            f"{field}: {value!r} is not a valid name; use 2-64 lowercase letters, digits, "
            "'-' or '_', starting and ending with a letter or digit"
        )
    return value
