"""The server's edge for raw input: request bodies read once, checked, and shown safely.

`InputGuard` (ASGI middleware, outermost) reads every request body before the application sees
it and refuses, with one line naming the problem:

- a body over the limit: 413;
- NUL anywhere (raw; `%00` in a query or form; the JSON escape `\\u0000`): 422, since
  PostgreSQL text cannot hold it and no name, address or reference may contain it;
- a JSON body (`application/json`, `*+json`, or no content type: FastAPI reads those as JSON)
  that is not UTF-8, not JSON, nested deeper than `MAX_JSON_DEPTH`, or holds text that is not
  Unicode (a lone surrogate escape such as `\\ud800`, which no database or response can
  encode): 422.

So the routes and services only ever see JSON that can be stored and echoed. `shown` is how
an error message quotes a client's value: short, and safe however odd the value is;
`declare_text` writes the same rule into the API's schema.
"""

from __future__ import annotations

import json
import re
import reprlib
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_JSON_DEPTH = 32
"""Arrays and objects nest at most this deep; Regward's own bodies need 4."""

NUL_MESSAGE = "text must not contain NUL characters"

# NUL as it can arrive: raw; percent-encoded in a query or form; as the escape `\u0000` in
# JSON text (after an even run of backslashes: `\\u0000` is a backslash and the text "u0000").
_PERCENT_NUL = re.compile(rb"\x00|%00")
_JSON_NUL = re.compile(rb"\x00|(?<!\\)(?:\\\\)*\\u0000")
_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")
_FORM = b"application/x-www-form-urlencoded"
TEXT_PATTERN = "^[^\\x00]*$"
"""Text any request may carry, as a JSON Schema pattern: no NUL (a lone surrogate is refused
too, but cannot be sent as UTF-8 text, and a class naming surrogates makes schemathesis
ignore the pattern)."""
WORDS_PATTERN = "^[^\\x00]*[^\\x00\\s][^\\x00]*$"
"""The same for text that is not only white space."""
ANY_JSON = "JsonWithoutNul"
"""The schema component of any JSON value without NUL, the fields a route ignores."""

_repr = reprlib.Repr()
_repr.maxlevel = 2
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlist = _repr.maxdict = _repr.maxtuple = 4


def shown(value: object) -> str:
    """`value` as an error message quotes it: a repr of at most about 80 characters, ASCII for
    anything unprintable (a lone surrogate shows as its escape), never deeper than 2 levels."""
    text = _repr.repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def has_nul(path: str, query_string: bytes) -> bool:
    """Whether a request's path or query holds NUL (raw, or `%00` in the query): 422."""
    return "\x00" in path or _PERCENT_NUL.search(query_string) is not None


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return not media or media == b"application/json" or media.endswith(b"+json")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def json_problem(body: bytes) -> str | None:
    """Why `body` is not acceptable JSON (one line naming where), or None when it is."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"body: byte {error.start} is not UTF-8; send JSON text encoded as UTF-8"
    if "\x00" in text:  # JSON would call it a control character; say what it is
        return f"body: {NUL_MESSAGE}"
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        return f"body: not JSON: {error.msg} at line {error.lineno} column {error.colno}"
    except ValueError as error:
        return f"body: not JSON: {error}"
    except RecursionError:
        return f"body: nested deeper than {MAX_JSON_DEPTH} levels; send a flatter document"
    return _text_problem(document)


def _text_problem(document: object) -> str | None:
    """Depth and text checks without recursion (the document may be deeply nested)."""
    pending: list[tuple[object, str, int]] = [(document, "", 0)]
    while pending:
        value, where, depth = pending.pop()
        if isinstance(value, dict | list):
            if depth >= MAX_JSON_DEPTH:
                return (
                    f"{where or 'body'}: nested deeper than {MAX_JSON_DEPTH} levels; "
                    "send a flatter document"
                )
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    bad = _bad_text(key, f"{where}.{shown(key)}" if where else shown(key))
                    if bad:
                        return bad
                    place = f"{where}.{key}" if where else key
                else:
                    place = f"{where}[{key}]"
                pending.append((item, place, depth + 1))
        elif isinstance(value, str):
            bad = _bad_text(value, where or "body")
            if bad:
                return bad
    return None


def _bad_text(value: str, where: str) -> str | None:
    found = _NOT_TEXT.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return f"{where}: {NUL_MESSAGE}"
    return (
        f"{where}: {shown(value)} is not Unicode text (it holds {found.group()!r}, half of a "
        "UTF-16 surrogate pair); send UTF-8 text"
    )


class InputGuard:
    """Refuse oversized request bodies (413) and bodies or queries no route may see (422).

    A declared Content-Length over the limit is refused up front; otherwise the body is read
    (up to the limit) before the application sees it, checked, and handed over unchanged."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if has_nul(scope["path"], scope["query_string"]):
            await refuse(send, 422, NUL_MESSAGE)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        too_large = f"request body too large; the limit is {self.limit} bytes"
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await refuse(send, 413, too_large)
            return
        if not chunked and (length is None or length == b"0"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await refuse(send, 413, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = _body_problem(headers.get(b"content-type", b""), body)
        if problem:
            await refuse(send, 422, problem)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _body_problem(content_type: bytes, body: bytes) -> str | None:
    if not body:
        return None
    if content_type.lower().startswith(_FORM):
        return NUL_MESSAGE if _PERCENT_NUL.search(body) else None
    if _is_json(content_type):
        return json_problem(body)
    # Other types (multipart, text) reach no route as JSON; NUL in them is refused all the same.
    return NUL_MESSAGE if _JSON_NUL.search(body) else None


async def refuse(send: Send, status: int, detail: str) -> None:
    """Answer `status` with `{"detail": detail}` and close the connection."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps({"detail": detail}).encode()})


def declare_text(schema: dict[str, Any]) -> None:
    """Give every text a request carries in the OpenAPI `schema` (parameters and bodies) that
    declares no pattern, enumeration or format of its own the pattern of what this guard lets
    through (`TEXT_PATTERN`), so a client generating requests from the schema meets no refusal
    the schema does not describe. Text with a pattern of its own already excludes NUL."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components[ANY_JSON] = {
        "description": "any JSON value without NUL in its text",
        "anyOf": [
            {"type": "string", "pattern": TEXT_PATTERN},
            {"type": ["number", "boolean", "null"]},
            {"type": "array", "items": {"$ref": f"#/components/schemas/{ANY_JSON}"}},
            {
                "type": "object",
                "propertyNames": {"pattern": TEXT_PATTERN},
                "additionalProperties": {"$ref": f"#/components/schemas/{ANY_JSON}"},
            },
        ],
    }
    seen: set[int] = set()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict) or id(node) in seen:
            return
        seen.add(id(node))
        reference = node.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/components/schemas/"):
            walk(components.get(reference.rsplit("/", 1)[-1]))
        if node.get("type") == "string" and not {"pattern", "enum", "const"} & set(node):
            if node.get("format") not in ("date-time", "binary"):  # neither holds NUL
                node["pattern"] = TEXT_PATTERN
        if node.get("type") == "object" and node.get("additionalProperties", True) in (True, {}):
            # Fields a route does not know are ignored, but NUL in them is refused too.
            node["additionalProperties"] = {"$ref": f"#/components/schemas/{ANY_JSON}"}
            node["propertyNames"] = {"pattern": TEXT_PATTERN}
        for key, value in node.items():
            if key not in ("examples", "example", "default", "description"):
                walk(value)

    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict):
                walk(operation.get("parameters", []))
                walk(operation.get("requestBody", {}))
