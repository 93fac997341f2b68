"""Signed revisions: verification, tampering, key formats."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regward.errors import InvalidPolicy, SignatureError
from regward.policy import (
    Policy,
    SignedPolicy,
    endorse,
    follow_chain,
    generate_key,
    private_key_from_pem,
    private_key_to_pem,
    public_key_from_text,
    public_key_to_text,
    sign,
    verify,
)
from tests.policy.strategies import policy_dict

KEY = generate_key()
PUBLIC = KEY.public_key()


def test_wire_round_trip_verifies() -> None:
    policy = Policy.from_dict(
        {"organization": "acme", "revision": 3, "registries": [{"address": "ghcr.io"}]}
    )
    wire = sign(policy, KEY).to_json()
    assert verify(SignedPolicy.from_json(wire), PUBLIC) == policy
    # Whitespace and key order in transit do not matter.
    pretty = json.dumps(json.loads(wire), indent=2).encode()
    assert verify(SignedPolicy.from_json(pretty), PUBLIC) == policy


def test_another_key_is_refused() -> None:
    policy = Policy.from_dict({"organization": "acme"})
    with pytest.raises(SignatureError, match="does not match the pinned server key"):
        verify(sign(policy, KEY), generate_key().public_key())


def test_key_text_forms_round_trip() -> None:
    assert public_key_to_text(
        public_key_from_text(public_key_to_text(PUBLIC))
    ) == public_key_to_text(PUBLIC)
    again = private_key_from_pem(private_key_to_pem(KEY))
    assert public_key_to_text(again.public_key()) == public_key_to_text(PUBLIC)
    with pytest.raises(SignatureError):
        public_key_from_text("not base64!")
    with pytest.raises(SignatureError):
        public_key_from_text(base64.b64encode(b"short").decode())
    with pytest.raises(SignatureError):
        private_key_from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"[]",
        b'{"policy": {}}',
        b'{"policy": {"organization": "acme"}, "signature": 5}',
        b'{"policy": {"organization": "acme"}, "signature": "@@"}',
        b'{"policy": {"organization": "acme"}, "signature": "", "x": 1}',
    ],
)
def test_malformed_wire_forms_are_refused(wire: bytes) -> None:
    with pytest.raises(InvalidPolicy):
        SignedPolicy.from_json(wire)


def _mutations(data: dict[str, Any]) -> list[dict[str, Any]]:
    changed = [
        {**data, "revision": data["revision"] + 1},
        {**data, "enabled": not data["enabled"]},
        {**data, "organization": data["organization"] + "x"},
        {**data, "registries": [*data["registries"], {"address": "evil.example"}]},
    ]
    if data["registries"]:
        first = dict(data["registries"][0])
        first["allowed"] = not first.get("allowed", True)
        changed.append({**data, "registries": [first, *data["registries"][1:]]})
        changed.append({**data, "registries": data["registries"][1:]})
    return changed


@settings(max_examples=50)
@given(policy_dict, st.data())
def test_signature_fails_after_any_change(data: dict[str, Any], draw: st.DataObject) -> None:
    signed = sign(Policy.from_dict(data), KEY)
    for changed in _mutations(data):
        policy = Policy.from_dict(changed)
        if policy == signed.policy:
            continue  # e.g. re-adding an entry that makes no difference to the document
        with pytest.raises(SignatureError):
            verify(dataclasses.replace(signed, policy=policy), PUBLIC)
    flipped = bytearray(signed.signature)
    index = draw.draw(st.integers(0, len(flipped) - 1))
    flipped[index] ^= 1 << draw.draw(st.integers(0, 7))
    with pytest.raises(SignatureError):
        verify(dataclasses.replace(signed, signature=bytes(flipped)), PUBLIC)


# --- key rotation ----------------------------------------------------------------------------


def _text(key: Any) -> str:
    return public_key_to_text(key.public_key())


def test_a_chain_of_endorsements_leads_to_the_newest_key() -> None:
    a, b, c = generate_key(), generate_key(), generate_key()
    chain = [endorse(b, c.public_key()), endorse(a, b.public_key())]  # any order
    assert follow_chain(_text(a), chain, _text(c)) == _text(c)
    assert follow_chain(_text(b), chain, _text(c)) == _text(c)
    assert follow_chain(_text(c), [], _text(c)) == _text(c)


def test_an_endorsement_by_another_key_is_refused() -> None:
    a, b, attacker = generate_key(), generate_key(), generate_key()
    forged = endorse(attacker, b.public_key())
    forged["previous"] = _text(a)
    with pytest.raises(SignatureError, match="is not signed by key"):
        follow_chain(_text(a), [forged], _text(b))
    with pytest.raises(SignatureError, match="no endorsement leads from the pinned key"):
        follow_chain(_text(a), [endorse(attacker, b.public_key())], _text(b))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=60),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
_PINNED, _PRESENTED = generate_key(), generate_key()


@given(
    chain=st.lists(
        st.fixed_dictionaries(
            {"previous": st.sampled_from([_text(_PINNED), "x"]), "key": json_values},
            optional={"signature": json_values, "extra": json_values},
        )
        | json_values,
        max_size=5,
    )
    | json_values
)
def test_no_chain_without_the_pinned_keys_signature_is_followed(chain: object) -> None:
    """Whatever the server sends as a chain, the agent never reaches a key that its pinned key
    did not endorse: a domain error, never a crash or an acceptance."""
    with pytest.raises(SignatureError):
        follow_chain(_text(_PINNED), chain, _text(_PRESENTED))
