"""Signed policy revisions: Ed25519 over the policy's canonical JSON.

Wire form (what the server's feed returns and the agent caches):

    {"policy": {...the policy document...}, "signature": "<base64 of 64 bytes>"}

A verifier recomputes the canonical JSON from the parsed document, so whitespace or key order
in transit do not matter, and any change to a value does. Keys travel as base64 of their raw
32 bytes (public) or as PKCS#8 PEM (private, in the server's data directory).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from regward.errors import InvalidPolicy, SignatureError
from regward.policy.document import Policy, canonical_json


@dataclass(frozen=True, slots=True)
class SignedPolicy:
    policy: Policy
    signature: bytes

    def to_json(self) -> bytes:
        return canonical_json(
            {
                "policy": self.policy.to_dict(),
                "signature": base64.b64encode(self.signature).decode(),
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> SignedPolicy:
        """Parse the wire form without verifying it; raise InvalidPolicy."""
        try:
            document = json.loads(data)
        except ValueError as error:
            raise InvalidPolicy(f"signed policy is not valid JSON: {error}") from None
        if not isinstance(document, dict) or set(document) != {"policy", "signature"}:
            raise InvalidPolicy("signed policy must be an object with 'policy' and 'signature'")
        signature = document["signature"]
        if not isinstance(signature, str):
            raise InvalidPolicy(f"signature: {signature!r} must be base64 text")
        try:
            raw = base64.b64decode(signature, validate=True)
        except binascii.Error:
            raise InvalidPolicy(f"signature: {signature[:20]!r}... is not base64") from None
        # A published revision loads as it was signed, whatever rule came after it.
        return cls(policy=Policy.from_dict(document["policy"], stored=True), signature=raw)


def sign(policy: Policy, private_key: Ed25519PrivateKey) -> SignedPolicy:
    return SignedPolicy(policy=policy, signature=private_key.sign(policy.canonical_json()))


def verify(signed: SignedPolicy, public_key: Ed25519PublicKey) -> Policy:
    """Return the policy when its signature verifies; raise SignatureError otherwise."""
    try:
        public_key.verify(signed.signature, signed.policy.canonical_json())
    except InvalidSignature:
        raise SignatureError(
            f"policy revision {signed.policy.revision} of '{signed.policy.organization}' has a "
            "signature that does not match the pinned server key; keeping the last verified policy"
        ) from None
    return signed.policy


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def private_key_from_pem(data: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise SignatureError(f"signing key is not a PEM private key: {error}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("signing key is not an Ed25519 key")
    return key


def public_key_to_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def public_key_from_text(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise SignatureError(
            f"public key {text[:16]!r}... is not base64 of 32 raw Ed25519 bytes"
        ) from None


# --- key rotation ------------------------------------------------------------------------
#
# A new signing key is published with an endorsement by the key before it:
#
#     {"previous": <base64 public key>, "key": <base64 public key>, "signature": <base64>}
#
# signed by `previous` over the canonical JSON of {"purpose": ENDORSEMENT, "previous", "key"}.
# An agent that pinned key A follows A -> B -> ... to the key the server presents, each step
# verified by the key before it; anything else is refused and A stays pinned.

ENDORSEMENT = "regward-signing-key-endorsement"


def _endorsed_bytes(previous: str, key: str) -> bytes:
    return canonical_json({"purpose": ENDORSEMENT, "previous": previous, "key": key})


def endorse(previous: Ed25519PrivateKey, key: Ed25519PublicKey) -> dict[str, str]:
    """`previous`'s endorsement of `key` as the next signing key."""
    old, new = public_key_to_text(previous.public_key()), public_key_to_text(key)
    signature = previous.sign(_endorsed_bytes(old, new))
    return {"previous": old, "key": new, "signature": base64.b64encode(signature).decode()}


def follow_chain(pinned: str, chain: object, presented: str) -> str:
    """`presented` when endorsements in `chain` lead there from `pinned`, each signed by the
    key before it; raise SignatureError naming the step that fails otherwise."""
    if not isinstance(chain, list):
        raise SignatureError(f"key chain: {chain!r} must be a list of endorsements")
    current = pinned
    for _ in range(len(chain) + 1):
        if current == presented:
            return presented
        step = next(
            (e for e in chain if isinstance(e, dict) and e.get("previous") == current), None
        )
        if step is None:
            break
        key, signature = step.get("key"), step.get("signature")
        if set(step) != {"previous", "key", "signature"} or not isinstance(key, str):
            raise SignatureError(f"key chain: {step!r} is not an endorsement")
        try:
            raw = base64.b64decode(str(signature), validate=True)
            public_key_from_text(current).verify(raw, _endorsed_bytes(current, key))
        except (binascii.Error, InvalidSignature):
            raise SignatureError(
                f"the endorsement of key {key[:12]}... is not signed by key {current[:12]}...; "
                "keeping the pinned key"
            ) from None
        public_key_from_text(key)  # a well-formed key, or SignatureError
        current = key
    raise SignatureError(
        f"no endorsement leads from the pinned key {pinned[:12]}... to the server's key "
        f"{presented[:12]}...; sign in again (`regward login`) if the server really changed "
        "its key"
    )
