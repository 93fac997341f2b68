"""Request targets and queries read as Go's net/url reads them (`url.ParseRequestURI`,
`url.ParseQuery`): generated targets against Go's rules, written here independently of the
parser, and against Python's `urllib.parse` where the two languages agree."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regward.agent.authz.gourl import GoURLError, parse_query, parse_request_uri, unescape

# Pieces of a path or a query with what Go decodes them to: (as written, path reading, query
# reading). "#" is an ordinary character to ParseRequestURI; "+" is a space in a query only.
PIECES = [
    ("a", b"a", b"a"),
    ("Z9", b"Z9", b"Z9"),
    ("#", b"#", b"#"),
    ("%23", b"#", b"#"),
    ("+", b"+", b" "),
    ("%2B", b"+", b"+"),
    ("%2F", b"/", b"/"),
    ("%2f", b"/", b"/"),
    ("%3F", b"?", b"?"),
    ("%3B", b";", b";"),
    ("%26", b"&", b"&"),
    ("%3D", b"=", b"="),
    ("%25", b"%", b"%"),
    ("%00", b"\x00", b"\x00"),
    ("%FF", b"\xff", b"\xff"),
    ("\u00e9", "\u00e9".encode(), "\u00e9".encode()),
    (":", b":", b":"),
    ("@", b"@", b"@"),
    ("!$'()*,", b"!$'()*,", b"!$'()*,"),
    (".", b".", b"."),
    ("~", b"~", b"~"),
]
# Only in a path ("&" and "=" and ";" are plain there).
PATH_ONLY = [("&", b"&"), ("=", b"="), (";", b";"), ("/", b"/")]
BAD_ESCAPES = ["%", "%2", "%zz", "%2g", "%g2", "%%41"]

piece = st.sampled_from(PIECES)
path_piece = st.one_of(
    st.sampled_from([(text, path) for text, path, _ in PIECES]), st.sampled_from(PATH_ONLY)
)
SCHEMES = st.from_regex(r"\A[A-Za-z][A-Za-z0-9+.\-]{0,8}\Z")
AUTHORITIES = st.from_regex(r"\A[A-Za-z0-9.\-:@\[\]%#]{0,20}\Z")


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


@st.composite
def paths(draw: st.DrawFn) -> tuple[str, bytes]:
    items = draw(st.lists(path_piece, max_size=8))
    return "/" + "".join(t for t, _ in items), b"/" + b"".join(d for _, d in items)


@st.composite
def queries(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]], bool]:
    """(raw query, the pairs Go keeps, whether Go reports an error)."""
    parts: list[str] = []
    kept: list[tuple[str, str]] = []
    error = False
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["pair", "pair", "pair", "key", "empty", "semi", "bad"]))
        key = draw(st.lists(piece, min_size=1, max_size=3))
        value = draw(st.lists(piece, max_size=4))
        key_text, key_raw = "".join(p[0] for p in key), b"".join(p[2] for p in key)
        value_text, value_raw = "".join(p[0] for p in value), b"".join(p[2] for p in value)
        if kind == "pair":
            parts.append(f"{key_text}={value_text}")
            kept.append((text(key_raw), text(value_raw)))
        elif kind == "key":
            parts.append(key_text)
            kept.append((text(key_raw), ""))
        elif kind == "empty":
            parts.append("")
        elif kind == "semi":  # Go 1.17+: the whole pair is dropped, with an error
            cut = draw(st.integers(0, len(value_text)))
            parts.append(f"{key_text}={value_text[:cut]};{value_text[cut:]}")
            error = True
        else:
            bad = draw(st.sampled_from(BAD_ESCAPES))
            parts.append(f"{key_text}={value_text}{bad}")
            error = True
    return "&".join(parts), kept, error


@given(paths(), st.one_of(st.none(), queries()))
def test_origin_form_targets_keep_hash_in_path_and_query(
    path: tuple[str, bytes], query: tuple[str, list[tuple[str, str]], bool] | None
) -> None:
    written, decoded = path
    target = written if query is None else f"{written}?{query[0]}"
    parsed = parse_request_uri(target)
    assert parsed.path == text(decoded)
    if query is None:
        assert parsed.raw_query == ""
    else:
        assert parsed.raw_query == query[0]  # "#" and all: a request target has no fragment
        pairs, error = parse_query(parsed.raw_query)
        assert pairs == query[1]
        assert (error is not None) == query[2]


@given(SCHEMES, AUTHORITIES, paths(), queries())
def test_absolute_form_is_routed_on_the_path_after_the_authority(
    scheme: str,
    authority: str,
    path: tuple[str, bytes],
    query: tuple[str, list[tuple[str, str]], bool],
) -> None:
    parsed = parse_request_uri(f"{scheme}://{authority}{path[0]}?{query[0]}")
    assert parsed.path == text(path[1])
    assert parsed.raw_query == query[0]


@given(queries())
def test_where_python_and_go_agree_the_pairs_are_the_same(
    query: tuple[str, list[tuple[str, str]], bool],
) -> None:
    raw, kept, error = query
    if error:
        return
    python = urllib.parse.parse_qsl(
        raw, keep_blank_values=True, separator="&", errors="surrogateescape"
    )
    assert parse_query(raw) == (python, None)
    assert python == kept


@given(st.text(max_size=40))
def test_any_text_either_parses_or_raises_a_go_url_error(target: str) -> None:
    try:
        parsed = parse_request_uri(target)
    except GoURLError:
        return
    assert parsed.path == "" or parsed.path.startswith("/") or parsed.path == "*"
    assert "?" not in target or parsed.raw_query in target


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/v1.41/images/create?x=#&fromImage=a", "/v1.41/images/create", "x=#&fromImage=a"),
        ("http://d/v1.41/images/create?x=#&f=a", "/v1.41/images/create", "x=#&f=a"),
        ("HTTP://d/v1.41/x", "/v1.41/x", ""),
        ("unix:///v1.41/x?y", "/v1.41/x", "y"),  # empty authority
        ("http:/v1.41/x", "/v1.41/x", ""),  # a scheme, no authority
        ("//d/v1.41/x", "//d/v1.41/x", ""),  # no scheme: a path, not an authority
        ("http://d?/v1.41/images/create", "", "/v1.41/images/create"),
        ("http://d", "", ""),
        ("/a#b?c#d", "/a#b", "c#d"),
        ("/a?", "/a", ""),
        ("/a??", "/a", "?"),
        ("/a%3Fb?c", "/a?b", "c"),
        ("/a+b", "/a+b", ""),
        ("http:opaque/x?q", "", "q"),
        ("*", "*", ""),
    ],
)
def test_targets_go_reads(target: str, path: str, query: str) -> None:
    parsed = parse_request_uri(target)
    assert (parsed.path, parsed.raw_query) == (path, query)


@pytest.mark.parametrize(
    "target",
    [
        "",
        "foo.html",  # from Go's parseRequestURLTests
        "../dir/",
        " http://foo.com",
        ":x",
        "1http://d/x",  # a scheme starts with a letter: this is a relative path
        "/a%zz",
        "/a%2",
        "/a\x00b",
        "/a\x7fb",
        "/a?b\tc",
        "/\ud800",
    ],
)
def test_targets_go_refuses(target: str) -> None:
    with pytest.raises(GoURLError):
        parse_request_uri(target)


@pytest.mark.parametrize(
    ("query", "pairs", "error"),
    [
        ("a=1&a=2", [("a", "1"), ("a", "2")], None),
        ("a=1;b=2", [], "invalid semicolon separator in query"),
        ("x=%zz&a=1", [("a", "1")], "invalid URL escape '%zz'"),
        ("a=%3B&b", [("a", ";"), ("b", "")], None),
        ("&&a==b&", [("a", "=b")], None),
        ("a=x+y%20z", [("a", "x y z")], None),
        ("k%=v&k=w", [("k", "w")], "invalid URL escape '%'"),  # the key ends at =
    ],
)
def test_queries_go_reads(query: str, pairs: list[tuple[str, str]], error: str | None) -> None:
    assert parse_query(query) == (pairs, error)


def test_unescape_modes() -> None:
    assert unescape(b"a+b%2B", query=True) == b"a b+"
    assert unescape(b"a+b%2B", query=False) == b"a+b+"
    for bad in BAD_ESCAPES:
        with pytest.raises(GoURLError):
            unescape(bad.encode(), query=False)
