"""JSON read the way Go's `encoding/json` reads it into a struct, so nothing is smuggled past us.

dockerd and the Engine API decode with `encoding/json.Unmarshal`. Where Python and Go disagree, an
attacker could send a body whose image Python reads as `allowed/x` and Go as `evil/x`. The rules
we follow:

- Object keys match struct fields case-insensitively, with Go's folding: ASCII letters fold to
  upper case, U+212A KELVIN SIGN folds to `K` and U+017F LONG S to `S` (the only non-ASCII runes
  whose fold orbit holds an ASCII letter). `{"image": ..}`, `{"IMAGE": ..}` and `{"\u212aey": ..}`
  all set the field.
- Duplicate keys are all applied in order, so the last one wins for a plain field; a nested struct
  met twice is merged. Rather than replay Go's merging exactly, `strings_at` returns every string
  that any occurrence puts at a path, and the callers refuse when any of them is refused: whatever
  Go ends up with, it is one of the candidates.
- Invalid UTF-8 is replaced with U+FFFD, as Go does; anything that is not JSON is an error.

    pairs = loads(b'{"Image": "a", "image": "b"}')
    last_string(pairs, "Image")         -> "b"
    strings_at(pairs, ("Image",))       -> ["a", "b"]
"""

from __future__ import annotations

import json
from typing import Any


class Pairs(list[tuple[str, Any]]):
    """A JSON object as Go's decoder walks it: every key, duplicates included, in order."""


class GoJSONError(ValueError):
    """The bytes are not JSON Go would accept, or a field has the wrong type."""


def _pairs(items: list[tuple[str, Any]]) -> Pairs:
    return Pairs(items)


def loads(data: bytes | str) -> Any:
    """Parse JSON keeping every key of every object, in order, as a list of pairs."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", errors="replace")
    try:
        return json.loads(data, object_pairs_hook=_pairs, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise GoJSONError(f"not valid JSON: {error}") from error


def _reject_constant(name: str) -> Any:
    raise GoJSONError(f"{name} is not JSON")


def fold(name: str) -> str:
    """Go's `foldName`: the key every case variant of `name` maps to."""
    if name.isascii():
        return name.upper()
    return "".join(
        _FOLD_SPECIAL.get(char, char.upper() if char.isascii() else char) for char in name
    )


_FOLD_SPECIAL = {"\u212a": "K", "\u017f": "S"}


def is_object(value: Any) -> bool:
    return isinstance(value, Pairs)


def values(obj: Pairs, field: str) -> list[Any]:
    """Every value given to `field`, in document order (case-insensitive key match)."""
    wanted = fold(field)
    return [value for key, value in obj if fold(key) == wanted]


def last_string(obj: Any, field: str) -> str | None:
    """The string Go leaves in a string field: the last non-null value; wrong types raise."""
    if not is_object(obj):
        raise GoJSONError("expected a JSON object")
    result: str | None = None
    for value in values(obj, field):
        if value is None:
            continue
        if not isinstance(value, str):
            raise GoJSONError(f"field {field} must be a string")
        result = value
    return result


def strings_at(obj: Any, path: tuple[str, ...]) -> list[str]:
    """Every string any occurrence of the field path assigns (see the module docstring)."""
    if not path:
        if obj is None:
            return []
        if not isinstance(obj, str):
            raise GoJSONError("expected a string")
        return [obj]
    if obj is None:
        return []
    if not is_object(obj):
        raise GoJSONError(f"expected an object at {path[0]}")
    found: list[str] = []
    for value in values(obj, path[0]):
        found.extend(strings_at(value, path[1:]))
    return found


def to_python(value: Any) -> Any:
    """Plain dicts and lists from pairs (last duplicate wins), for logging and tests."""
    if isinstance(value, Pairs):
        return {key: to_python(item) for key, item in value}
    if isinstance(value, list):
        return [to_python(item) for item in value]
    return value
