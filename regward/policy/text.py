"""Text people read as it stands: nicknames, hostnames, machine and token names.

Such text holds no character that is not shown as it is: a control character (a newline, NUL,
NEL), a format character (U+202E RIGHT-TO-LEFT OVERRIDE reverses what follows it, a zero-width
space hides a difference), a line or paragraph separator, or half of a surrogate pair.

    invisible_character("h\u202eost")  -> "U+202E (RIGHT-TO-LEFT OVERRIDE)"
    VISIBLE_TEXT_PATTERN               the same rule as a JSON Schema pattern
    refuse_invisible("h\u202eost", "nickname", InvalidPolicy)   raises, naming both
    shown("h\u202eost")                -> "h\\u202eost" (text stored before the check, shown
                                          escaped so it reads as what it holds)

New text is refused where it enters (policy core, API, dashboard, files, CLI); text stored
before the rule loads unchanged and is escaped only where it is shown.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from regward.errors import RegwardError, quote

INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Unicode general categories of the characters refused in text people read."""
INVISIBLE_RANGES = (
    (0x0000, 0x001F), (0x007F, 0x009F), (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C),
    (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E),
    (0x200B, 0x200F), (0x2028, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F), (0xD800, 0xDFFF),
    (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD),
    (0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)  # fmt: skip
"""Those characters as of Unicode 14.0 (Python 3.11), as ranges: one table for the check and
the API schema's pattern alike, the same whatever Python runs it (test_text.py compares it
with `unicodedata`)."""


def _escape(code: int) -> str:
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _class(ranges: Iterable[tuple[int, int]]) -> str:
    return "".join(
        _escape(low) if low == high else f"{_escape(low)}-{_escape(high)}" for low, high in ranges
    )


_SURROGATES = (0xD800, 0xDFFF)
INVISIBLE_CLASS = _class(INVISIBLE_RANGES)
"""The body of a regular expression's class of them (`[...]`), in escapes."""
SHOWN_CLASS = _class(r for r in INVISIBLE_RANGES if r != _SURROGATES)
"""The same without the surrogates, for the API schema: text sent as UTF-8 holds none, JSON
escapes of them are refused before any route, and schema-driven generators mishandle a class
that names them (schemathesis then ignores the whole pattern)."""
VISIBLE_TEXT_PATTERN = f"^[^{SHOWN_CLASS}]*$"
"""A regular expression for text holding none of them, as the API schema gives it (Python's
`re` syntax, which schemathesis and `jsonschema` read; `\\U` is not ECMA-262's)."""
_INVISIBLE = re.compile(f"[{INVISIBLE_CLASS}]")
_UNNAMED = {"Cc": "a control character", "Cs": "half of a surrogate pair"}
"""What to call the characters Unicode gives no name."""


def invisible_character(value: str) -> str | None:
    """The first character of `value` not shown as it is, as `U+202E (RIGHT-TO-LEFT
    OVERRIDE)`; None when there is none."""
    found = _INVISIBLE.search(value)
    if found is None:
        return None
    character = found.group()
    name = unicodedata.name(character, "") or _UNNAMED[unicodedata.category(character)]
    return f"U+{ord(character):04X} ({name})"


def refuse_invisible(value: str, field: str, error: type[RegwardError]) -> None:
    """Raise `error` (the caller's kind: InvalidPolicy in the core, InvalidInput in the server)
    naming `field` and the character when `value` holds one not shown as it is."""
    found = invisible_character(value)
    if found is not None:
        raise error(
            f"{quote(value)} holds {found}, which is not shown as it is; use visible "
            "characters only",
            field=field,
            value=value,
        )


def shown(value: str) -> str:
    """`value` with every character not shown as it is written as its escape (`\\u202e`,
    `\\n`, `\\x00`); `value` itself when it has none."""
    return _INVISIBLE.sub(lambda found: found.group().encode("unicode_escape").decode(), value)
