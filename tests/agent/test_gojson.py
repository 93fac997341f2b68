"""regward.agent.authz.gojson reads JSON the way Go's encoding/json fills a struct."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regward.agent.authz import gojson


@pytest.mark.parametrize(
    ("key", "matches"),
    [
        ("Image", True),
        ("image", True),
        ("IMAGE", True),
        ("iMaGe", True),
        ("Imag", False),
        ("Images", False),
        ("Ímage", False),  # an accented I is not in I's fold orbit
        ("\u0130mage", False),  # dotted capital I neither (Go's SimpleFold keeps it apart)
    ],
)
def test_keys_fold_like_go(key: str, matches: bool) -> None:
    obj = gojson.loads(json.dumps({key: "x"}))
    assert (gojson.last_string(obj, "Image") == "x") is matches


def test_kelvin_sign_and_long_s_fold_to_ascii() -> None:
    obj = gojson.loads('{"\\u212aey": "k", "\\u017fecret": "s"}')
    assert gojson.last_string(obj, "Key") == "k"
    assert gojson.last_string(obj, "Secret") == "s"


def test_last_duplicate_wins_for_a_plain_field_and_null_keeps_the_value() -> None:
    obj = gojson.loads('{"Image": "a", "image": "b", "IMAGE": null}')
    assert gojson.last_string(obj, "Image") == "b"
    assert gojson.strings_at(obj, ("Image",)) == ["a", "b"]


def test_nested_duplicates_are_all_candidates() -> None:
    obj = gojson.loads(
        '{"TaskTemplate": {"ContainerSpec": {"Image": "evil/x"}},'
        ' "taskTemplate": {"containerSpec": {"Other": 1}}}'
    )
    assert gojson.strings_at(obj, ("TaskTemplate", "ContainerSpec", "Image")) == ["evil/x"]


@pytest.mark.parametrize("text", ['{"Image": 5}', '{"Image": ["a"]}', '{"Image": {"a": 1}}'])
def test_wrong_types_are_errors(text: str) -> None:
    with pytest.raises(gojson.GoJSONError):
        gojson.strings_at(gojson.loads(text), ("Image",))


@pytest.mark.parametrize("text", ["", "{", "NaN", '{"a": Infinity}', "[1,]", "{'a': 1}"])
def test_invalid_json_is_an_error(text: str) -> None:
    with pytest.raises(gojson.GoJSONError):
        gojson.loads(text)


def test_invalid_utf8_is_replaced_like_go() -> None:
    obj = gojson.loads(b'{"Image": "a\xffb"}')
    assert gojson.last_string(obj, "Image") == "a\ufffdb"


def test_empty_object_and_empty_array_differ() -> None:
    assert gojson.is_object(gojson.loads("{}"))
    assert not gojson.is_object(gojson.loads("[]"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_round_trips_what_json_dumps(value: Any) -> None:
    assert gojson.to_python(gojson.loads(json.dumps(value))) == value


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_our_error(data: bytes) -> None:
    try:
        obj = gojson.loads(data)
        gojson.strings_at(obj, ("Image",))
    except gojson.GoJSONError:
        pass


@given(
    st.lists(
        st.tuples(st.sampled_from(["Image", "image", "IMAGE", "Other"]), st.text()), max_size=6
    )
)
def test_last_string_is_the_last_matching_value(pairs: list[tuple[str, str]]) -> None:
    text = "{" + ",".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}"
    expected = [v for k, v in pairs if k.lower() == "image"]
    assert gojson.last_string(gojson.loads(text), "Image") == (expected[-1] if expected else None)
    assert gojson.strings_at(gojson.loads(text), ("Image",)) == expected
