"""JSON Schema for the policy's text, built from the parsers' own patterns and limits.

The server publishes these in its OpenAPI schema, so a client (or a fuzzer) learns the rules
without failing first. They describe the *canonical* form, the one the server stores and
answers with:

    ADDRESS     ghcr.io, registry.internal:5000, *.azurecr.io, 10.0.0.5, [::1]:5000
    REPOSITORY  *, acme/*, library/nginx

Every text the address pattern matches is one `Address.parse` accepts (and, for hostnames and
IPv4, gives back unchanged); the parser also takes uppercase, a trailing dot and Unicode
names, which it stores in this form. `tests/policy/test_schema.py` holds both directions.
"""

from __future__ import annotations

from typing import Any

from regward.policy.address import LABEL, MAX_HOST_LENGTH
from regward.policy.document import MAX_NICKNAME_LENGTH, Action
from regward.policy.reference import PATH_COMPONENT
from regward.policy.text import SHOWN_CLASS, VISIBLE_TEXT_PATTERN

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4 = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
_H = "[0-9a-f]{1,4}"
IPV6 = "|".join(
    (
        rf"(?:{_H}:){{7}}{_H}",
        rf"(?:{_H}:){{1,7}}:",
        rf"(?:{_H}:){{1,6}}:{_H}",
        *(rf"(?:{_H}:){{1,{6 - n}}}(?::{_H}){{1,{n + 1}}}" for n in range(1, 6)),
        rf":(?:(?::{_H}){{1,7}}|:)",
    )
)
# At most MAX_HOST_LENGTH characters; not all labels digits (inet_aton reads `127.1` as an IP).
HOSTNAME = (
    rf"(?=[a-z0-9.-]{{1,{MAX_HOST_LENGTH}}}(?::|$))(?![0-9]+(?:\.[0-9]+)*(?::|$))"
    rf"{LABEL}(?:\.{LABEL})*"
)
PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
ADDRESS_PATTERN = rf"^(?:{IPV4}|\[(?:{IPV6})\]|(?:\*\.)?{HOSTNAME})(?::{PORT})?$"
MAX_ADDRESS_LENGTH = len("*.") + MAX_HOST_LENGTH + len(":65535")
REPOSITORY_PATTERN = rf"^(?:\*|{PATH_COMPONENT}(?:/{PATH_COMPONENT})*(?:/\*)?)$"

ADDRESS: dict[str, Any] = {
    "type": "string",
    "pattern": ADDRESS_PATTERN,
    "maxLength": MAX_ADDRESS_LENGTH,
    "description": (
        "host, host:port, *.domain, IPv4 or [IPv6], in canonical form; uppercase, a trailing "
        "dot and Unicode names are accepted too and stored in this form"
    ),
    "examples": ["ghcr.io", "registry.internal:5000", "*.azurecr.io"],
}
REPOSITORY: dict[str, Any] = {
    "type": "string",
    "pattern": REPOSITORY_PATTERN,
    "description": "path components at '/' boundaries, optionally ending in '/*'; '*' is all",
    "examples": ["acme/*", "library/nginx"],
}


VISIBLE_TEXT: dict[str, Any] = {
    "pattern": VISIBLE_TEXT_PATTERN,
    "description": (
        "visible characters only: no control or format character (newline, NUL, U+202E "
        "RIGHT-TO-LEFT OVERRIDE, zero-width space), line or paragraph separator"
    ),
}
"""Text people read as it stands (regward.policy.text), as a schema's pattern."""
VISIBLE_WORDS: dict[str, Any] = {
    "pattern": f"^[^{SHOWN_CLASS}]*[^{SHOWN_CLASS}\\s][^{SHOWN_CLASS}]*$",
    "description": VISIBLE_TEXT["description"] + "; not only white space",
}
"""The same, for a name that must hold more than white space."""


def entry_schema() -> dict[str, Any]:
    """One registry entry as the policy file and the API take it."""
    properties: dict[str, Any] = {
        "address": ADDRESS,
        "nickname": {"type": "string", "maxLength": MAX_NICKNAME_LENGTH, **VISIBLE_TEXT},
        "allowed": {"type": "boolean"},
        "repositories": {"type": "array", "items": REPOSITORY},
        "actions": {
            "type": "array",
            "items": {"type": "string", "enum": [action.value for action in Action]},
            "minItems": 1,
        },
        "extra_hosts": {"type": "array", "items": ADDRESS},
    }
    return {
        "type": "object",
        "required": ["address"],
        "additionalProperties": False,
        "properties": properties,
    }
