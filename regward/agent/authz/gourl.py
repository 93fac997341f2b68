"""Request targets and queries read the way Go's `net/url` reads them, so the plugin checks what
dockerd acts on.

dockerd (Go 1.19 in Debian's docker.io 20.10.24) reads a request's target with
`url.ParseRequestURI` and its parameters with `url.ParseQuery`; `r.Form.Get` then takes the first
value of a key. Where Python's `urllib.parse` differs, a client could show the plugin one image
and have dockerd pull another. The rules followed here:

- The query is everything after the first `?`, `#` included: a request target has no fragment
  (`/images/create?x=#&fromImage=evil` is two pairs, `x=#` and `fromImage=evil`).
- Absolute form (`http://d/v1.41/images/create?..`) names a scheme (a letter, then letters,
  digits, `+-.`) and an authority up to the next `/`; the path starts there. `//x/y` without a
  scheme is a path. A scheme followed by anything but `/` is opaque: no path at all.
- `%` must start two hex digits everywhere; the path keeps `+`, the query reads `+` as a space.
  Control characters (below 0x20, and 0x7f) make the target unreadable.
- A query pair is what lies between `&`s. A pair holding `;` is dropped with an error (Go 1.17
  and later), so is a pair with a bad escape; empty pairs are skipped; `k` alone is `k=""`.
  Go keeps the good pairs and reports the first error: `parse_query` does the same.

    parse_request_uri("http://d/v1.41/images/create?x=#&fromImage=a")
        -> RequestTarget(path="/v1.41/images/create", raw_query="x=#&fromImage=a")
    parse_query("a=1;b&c=%zz&d=x+y")
        -> ([("d", "x y")], "invalid semicolon separator in query")

Keys and values are text: decoded bytes that are not UTF-8 come back as lone surrogates
(`surrogateescape`), so nothing is lost or merged; callers refuse them where it matters. The
authority is cut off but not validated: Go refuses a bad one before any handler runs.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_SCHEME_FIRST = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SCHEME_REST = _SCHEME_FIRST | frozenset(b"0123456789+-.")


class GoURLError(ValueError):
    """The text is not a request target (or query) Go would read; the message says why."""


@dataclass(frozen=True)
class RequestTarget:
    """What `url.ParseRequestURI` makes of a request target: the decoded path and raw query."""

    path: str  # Go's URL.Path, decoded; "" for an opaque target
    raw_query: str  # Go's URL.RawQuery: after the first "?", "#" and all


def parse_request_uri(target: str) -> RequestTarget:
    """Go's `url.ParseRequestURI`; GoURLError where Go would fail."""
    try:
        raw = target.encode("utf-8")
    except UnicodeEncodeError as error:
        raise GoURLError(f"the request target {target[:80]!r} is not UTF-8") from error
    if _CONTROL.search(raw):
        raise GoURLError(f"the request target {target[:80]!r} has a control character")
    if not raw:
        raise GoURLError("the request target is empty")
    if raw == b"*":
        return RequestTarget("*", "")
    scheme, rest = _scheme(raw)
    if rest.endswith(b"?") and rest.count(b"?") == 1:
        rest, query = rest[:-1], b""
    else:
        rest, _, query = rest.partition(b"?")
    if not rest.startswith(b"/"):
        if scheme:
            return RequestTarget("", _text(query))  # opaque: nothing to route on
        raise GoURLError(f"the request target {target[:80]!r} is not a URL path")
    if scheme and rest.startswith(b"//"):
        slash = rest.find(b"/", 2)
        rest = rest[slash:] if slash >= 0 else b""
    return RequestTarget(_text(unescape(rest, query=False)), _text(query))


def _scheme(raw: bytes) -> tuple[bytes, bytes]:
    """Go's `getScheme`: (scheme, rest); no scheme unless a valid one ends at the first `:`."""
    for index, byte in enumerate(raw):
        if byte == 0x3A:  # ":"
            if index == 0:
                raise GoURLError("the request target starts with ':' (missing protocol scheme)")
            return raw[:index], raw[index + 1 :]
        if byte not in (_SCHEME_FIRST if index == 0 else _SCHEME_REST):
            return b"", raw
    return b"", raw


def unescape(raw: bytes, *, query: bool) -> bytes:
    """Go's `unescape` in path or query-component mode; GoURLError on a bad `%` escape."""
    if query and b"+" in raw:
        raw = raw.replace(b"+", b" ")  # before decoding: "%2B" stays a plus
    if b"%" not in raw:
        return raw
    bad = _BAD_ESCAPE.search(raw)
    if bad is not None:
        text = raw[bad.start() : bad.start() + 3].decode("utf-8", "replace")
        raise GoURLError(f"invalid URL escape {text!r}")
    return urllib.parse.unquote_to_bytes(raw)


def parse_query(raw_query: str) -> tuple[list[tuple[str, str]], str | None]:
    """Go's `url.ParseQuery`: the pairs it keeps, in order, and its error (None when clean)."""
    pairs: list[tuple[str, str]] = []
    error: str | None = None
    for part in raw_query.encode("utf-8", "surrogateescape").split(b"&"):
        if b";" in part:
            error = "invalid semicolon separator in query"  # Go overwrites with this one
            continue
        if not part:
            continue
        key, _, value = part.partition(b"=")
        try:
            pairs.append((_text(unescape(key, query=True)), _text(unescape(value, query=True))))
        except GoURLError as bad:
            error = error or str(bad)
    return pairs, error


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")
