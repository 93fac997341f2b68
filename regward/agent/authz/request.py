"""One AuthZReq envelope as dockerd sends it, read the way dockerd's Go code reads it.

dockerd POSTs each API call it receives to the plugin (`/AuthZPlugin.AuthZReq`) as JSON:

    {"RequestMethod": "POST",
     "RequestUri": "/v1.41/images/create?fromImage=ghcr.io%2Facme%2Fapi&tag=1.2",
     "RequestHeaders": {"Content-Type": "application/json"},
     "RequestBody": "<base64, only for small application/json bodies>"}

`AuthZRequest.parse` reads the envelope as Go's `encoding/json` would (`gojson`) and the target
as Go's `net/url` would (`gourl`: `#` belongs to the query, `+` is a space there, absolute-form
targets such as `http://d/v1.41/images/create?..` are routed on their path). The query and body
are decoded on first use. `param` gives the one value dockerd acts on (`r.Form.Get`), and
refuses a parameter given twice, or a query Go would read only in part.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
import re

from regward.agent.authz import gojson, gourl

MAX_QUERY_BYTES = 256 * 1024  # of a registry endpoint's query (dockerd accepts 1 MiB lines)

_VERSION = re.compile(r"^/v[0-9.]+(?=/)", re.IGNORECASE)  # moby's /v{version:[0-9.]+}


class Unreadable(Exception):
    """A registry endpoint whose request does not say clearly what it would fetch."""


class AuthZRequest:
    """One AuthZReq envelope. The query and body are decoded on first use, so requests to
    endpoints that name no registry cost one JSON parse and a path check."""

    __slots__ = ("_body", "_body_text", "_query", "_raw_query", "headers", "method", "path", "uri")

    def __init__(
        self, method: str, uri: str, headers: dict[str, str], body_text: str | None
    ) -> None:
        self.method = method
        self.uri = uri
        self.headers = headers  # keys lower-cased, last duplicate wins
        self._body_text = body_text
        self._body: bytes | None = None
        self._query: tuple[tuple[str, str], ...] | None = None
        # The plugin is given the target as the client wrote it (absolute form included); it
        # is read the way dockerd's Go server reads it.
        try:
            target = gourl.parse_request_uri(uri)
        except gourl.GoURLError as error:
            raise Unreadable(f"{error}, as dockerd would read it") from error
        if not target.path.startswith("/"):  # `*` or `scheme:opaque`: dockerd routes neither
            raise Unreadable(f"the request target {uri[:80]!r} names no path")
        self._raw_query = target.raw_query
        self.path = _clean_path(target.path)  # decoded, without the /vX.Y prefix

    @classmethod
    def parse(cls, data: bytes) -> AuthZRequest:
        """Read dockerd's request as Go would; raise Unreadable when it is not one."""
        try:
            obj = gojson.loads(data)
            if not gojson.is_object(obj):
                raise Unreadable("the AuthZ request is not a JSON object")
            fields: dict[str, str] = {}
            headers: dict[str, str] = {}
            for key, value in obj:
                name = gojson.fold(key)
                if name in _STRING_FIELDS:
                    if value is None:
                        continue  # null leaves a Go string as it was
                    if not isinstance(value, str):
                        raise gojson.GoJSONError(f"field {key} must be a string")
                    fields[name] = value
                elif name == "REQUESTHEADERS" and value is not None:
                    if not gojson.is_object(value):
                        raise gojson.GoJSONError("RequestHeaders must be an object")
                    for header, item in value:
                        if isinstance(item, str):
                            headers[header.lower()] = item
        except gojson.GoJSONError as error:
            raise Unreadable(f"the AuthZ request is unreadable: {error}") from error
        return cls(
            fields.get("REQUESTMETHOD", "").upper(),
            fields.get("REQUESTURI", ""),
            headers,
            fields.get("REQUESTBODY") or None,
        )

    @property
    def query(self) -> tuple[tuple[str, str], ...]:
        """The query's pairs as dockerd reads them; Unreadable where Go would drop a pair."""
        if self._query is None:
            if len(self._raw_query) > MAX_QUERY_BYTES:
                raise Unreadable(
                    f"its query is {len(self._raw_query)} bytes, more than the "
                    f"{MAX_QUERY_BYTES} Regward reads for a registry request"
                )
            pairs, error = gourl.parse_query(self._raw_query)
            if error is not None:
                raise Unreadable(
                    f"dockerd would skip part of its query ({error}); percent-encode ';' as "
                    "%3B and '%' as %25"
                )
            self._query = tuple(pairs)
        return self._query

    @property
    def body(self) -> bytes | None:
        """The forwarded body, or None; Unreadable when it is not base64 (Go's []byte form)."""
        if self._body is None and self._body_text:
            try:
                self._body = base64.b64decode(
                    self._body_text.replace("\r", "").replace("\n", ""), validate=True
                )
            except (binascii.Error, ValueError) as error:
                raise Unreadable("the request body is not valid base64") from error
        return self._body

    def param(self, name: str) -> str:
        """The value dockerd acts on (`r.Form.Get`: the first, "" when absent). A parameter
        given twice is refused: only one value can be checked, and it must be the one used."""
        values = [value for key, value in self.query if key == name]
        if len(values) > 1:
            raise Unreadable(
                f"its query gives {name} {len(values)} times; dockerd reads only the first, "
                "so give it once"
            )
        value = values[0] if values else ""
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise Unreadable(f"its query parameter {name} is not UTF-8 text") from error
        return value

    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


_STRING_FIELDS = frozenset({"REQUESTMETHOD", "REQUESTURI", "REQUESTBODY"})
_PLAIN_PATH = re.compile(r"^(?:/[A-Za-z0-9_.:@+-]+)+$")


def _clean_path(path: str) -> str:
    """What the Engine's router would match, from Go's decoded path: `//`, `.` and `..`
    resolved (gorilla/mux redirects such a path; resolving it checks at least as much)."""
    if (
        not _PLAIN_PATH.match(path)
        or "/./" in path
        or "/../" in path
        or path.endswith(("/.", "/.."))
    ):
        path = "/" + posixpath.normpath("/" + re.sub(r"/+", "/", path)).lstrip("/")
    return _VERSION.sub("", path)
