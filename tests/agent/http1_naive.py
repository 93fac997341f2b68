"""A naive, obviously correct HTTP/1 head reader: the proxy's former line-by-line one.

tests/agent/test_http1.py compares `regward.agent.http1.parse_head` (two regular expressions
over the whole field block) with it on generated and mutated heads.
"""

from __future__ import annotations

import re

from regward.agent.http1 import MAX_FIELDS, Head, ProtocolError

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[!-~]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def naive_parse_head(head: bytes) -> Head:
    lines = head.split(b"\r\n")
    if len(lines) < 3 or lines[-1] or lines[-2]:
        raise ProtocolError(400, "request head does not end with an empty line")
    if len(lines) - 3 > MAX_FIELDS:
        raise ProtocolError(431, "too many fields")
    fields = []
    for line in lines[1:-2]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise ProtocolError(400, "malformed field")
        fields.append((name, value.strip(b" \t")))
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise ProtocolError(400, "request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method) or version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise ProtocolError(400, "request line")
    if not _TARGET.fullmatch(target):
        raise ProtocolError(400, "target")
    return Head(method.decode(), target.decode(), version.decode(), tuple(fields))
