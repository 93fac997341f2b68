"""The exceptions Regward raises on purpose.

    RegwardError                  every error meant for a user; str() is one clear line
    ├── InvalidReference          an image reference Docker would refuse
    ├── InvalidAddress            a registry address pattern or host we cannot accept
    ├── InvalidPolicy             a policy document or file that does not follow the format
    │   └── InvalidPolicyFile     a policy file's every problem, each with its line
    ├── SignatureError            a signed policy whose signature does not verify
    └── ConfigError               a setting, flag or file of the server or agent that is wrong

Every message names the bad value and, where it helps, what to do. Parsers raise these at the
edge, so callers never see a bare ValueError or KeyError from user input.

An error about one field carries it as data, as httpx's errors carry their request:
`error.field` is where (`registries[2].address`, or `address` for a lone entry), `error.value`
what was there, and `error.message` the sentence for a person, which quotes at most a short
prefix of a long value (`quote`). `str(error)` is `field: message`, for logs and the command
line; pages show `message` beside the field instead of taking the string apart.
"""

from __future__ import annotations

QUOTE_LIMIT = 60


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)`, or for a long value its first `limit` characters and its length:
    `'aaaa…' (300 characters)`, so one bad value cannot flood a page or a log line."""
    shown = repr(value)
    if len(shown) <= limit + 4:
        return shown
    closing = shown[0] if shown[0] in "'\"" else ""
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{shown[:limit]}…{closing}{size}"


class RegwardError(Exception):
    """Base of every error meant for a user."""

    def __init__(self, message: str, *, field: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.value = value

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidReference(RegwardError):
    """An image reference that does not follow Docker's reference grammar."""


class InvalidAddress(RegwardError):
    """A registry address pattern or host that cannot be matched safely."""


class InvalidPolicy(RegwardError):
    """A policy document that does not follow the policy format."""


class InvalidPolicyFile(InvalidPolicy):
    """A policy file with one or more problems; `problems` holds each as one line
    (`line 4: registries[1].address: ...`), and the message names the file and all of them."""

    def __init__(self, filename: str, problems: list[str]) -> None:
        self.problems = tuple(problems)
        shown = (
            problems[0]
            if len(problems) == 1
            else f"{len(problems)} problems: " + "; ".join(problems)
        )
        super().__init__(f"{filename}: {shown}", value=filename)


class SignatureError(RegwardError):
    """A signed policy whose signature does not verify against the pinned key."""


class ConfigError(RegwardError):
    """A wrong setting, flag or configuration file."""
