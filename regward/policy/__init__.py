"""The policy core, shared by every part of Regward; pure, no I/O.

reference  image references as Docker parses and normalizes them
address    registry address patterns (host, host:port, *.domain, IP literals)
document   the policy document, its entries, the file format, canonical JSON
files      policy files (YAML or JSON) read with every problem's line, and written
catalog    well-known registries and the token and blob hosts they need
engine     evaluate() and evaluate_host(): decisions with reasons
signing    Ed25519 signatures over a policy revision
lint       risky or dead entries
text       text people read: characters not shown as they are refused, or shown escaped
"""

from typing import TYPE_CHECKING

from regward.policy.address import Address
from regward.policy.document import (
    Action,
    Policy,
    RegistryEntry,
    RepositoryPattern,
    canonical_json,
)
from regward.policy.engine import Decision, evaluate, evaluate_host, registry_access_off
from regward.policy.files import parse_policy_text, policy_file_text
from regward.policy.lint import LintWarning, lint
from regward.policy.reference import DOCKER_HUB, ImageReference

if TYPE_CHECKING:
    from regward.policy.signing import (
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


def __getattr__(name: str) -> object:
    """The signing names load `cryptography` on first use, not with the policy core: the
    proxy's worker processes decide but never verify, and stay that much smaller."""
    if name in __all__:  # every other name of it is imported above
        from regward.policy import signing

        return getattr(signing, name)
    raise AttributeError(f"module 'regward.policy' has no attribute {name!r}")


__all__ = [
    "DOCKER_HUB",
    "Action",
    "Address",
    "Decision",
    "ImageReference",
    "LintWarning",
    "Policy",
    "RegistryEntry",
    "RepositoryPattern",
    "SignedPolicy",
    "canonical_json",
    "endorse",
    "evaluate",
    "evaluate_host",
    "follow_chain",
    "generate_key",
    "lint",
    "parse_policy_text",
    "policy_file_text",
    "private_key_from_pem",
    "private_key_to_pem",
    "public_key_from_text",
    "public_key_to_text",
    "registry_access_off",
    "sign",
    "verify",
]
