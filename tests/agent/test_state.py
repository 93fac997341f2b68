"""The agent's files: private, atomic, and read back only when they verify."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from regward.agent.state import AgentState, Credentials, read_registry_json, write_private
from regward.errors import ConfigError
from regward.policy import Policy, generate_key, public_key_to_text, sign

POLICY = Policy.from_dict(
    {"organization": "acme", "revision": 3, "enabled": True, "registries": [{"address": "x.io"}]}
)


def signed_in(tmp_path: Path) -> tuple[AgentState, Credentials, Ed25519PrivateKey]:
    key = generate_key()
    state = AgentState(tmp_path / "state", tmp_path / "registry.json")
    credentials = Credentials(
        "http://s", "acme", "tok", public_key_to_text(key.public_key()), "alice"
    )
    state.save_credentials(credentials)
    return state, credentials, key


def test_files_are_private_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "d" / "f.json"
    write_private(path, b"one")
    write_private(path, b"two")
    assert path.read_bytes() == b"two"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["f.json"]  # no temporary left


def test_a_verified_cache_is_enforced(tmp_path: Path) -> None:
    state, _, key = signed_in(tmp_path)
    state.save_policy(sign(POLICY, key).to_json())
    enforcement = state.enforcement()
    assert enforcement.mode == "signed-in"
    assert enforcement.policy == POLICY
    assert enforcement.dashboard_url == "http://s/orgs/acme/registry-access"
    assert enforcement.blocked_reason is None


def test_a_tampered_or_foreign_cache_is_not(tmp_path: Path) -> None:
    state, _, key = signed_in(tmp_path)
    document = json.loads(sign(POLICY, key).to_json())
    document["policy"]["registries"].append({"address": "evil.example"})
    state.save_policy(json.dumps(document).encode())
    assert state.enforcement().policy is None
    other = Policy.from_dict({**POLICY.to_dict(), "organization": "globex"})
    state.save_policy(sign(other, key).to_json())
    assert state.enforcement().policy is None
    state.save_policy(b"garbage")
    enforcement = state.enforcement()
    assert enforcement.policy is None
    assert enforcement.blocked_reason is not None


def test_logout_drops_token_and_cache(tmp_path: Path) -> None:
    state, _, key = signed_in(tmp_path)
    state.save_policy(sign(POLICY, key).to_json())
    assert state.logout() is True
    assert state.credentials() is None
    assert not state.policy_path.exists()
    assert state.logout() is False
    assert state.enforcement().mode == "unmanaged"


def test_logout_keeps_the_agent_id_unless_the_machine_is_forgotten(tmp_path: Path) -> None:
    """`regward login` signs out first and keeps the id its device token is bound to;
    `regward logout` forgets it, so whoever signs in next gets a device of their own."""
    state, _, _ = signed_in(tmp_path)
    state.agent_id_path.write_text("machine-1")
    state.logout()
    assert state.agent_id_path.read_text() == "machine-1"
    assert state.logout(forget_machine=True) is False
    assert not state.agent_id_path.exists()


@pytest.mark.parametrize(
    ("text", "orgs"),
    [
        ('{"allowedOrgs": ["Acme", "globex"]}', ("acme", "globex")),
        ('{"allowedOrgs": []}', ()),
        ('{"allowedOrgs": ["acme"], "other": 1}', ("acme",)),
    ],
)
def test_registry_json(tmp_path: Path, text: str, orgs: tuple[str, ...]) -> None:
    path = tmp_path / "registry.json"
    path.write_text(text)
    assert read_registry_json(path) == orgs


@pytest.mark.parametrize("text", ["", "{", '{"allowedOrgs": "acme"}', '{"orgs": ["a"]}', "[]"])
def test_a_broken_registry_json_fails_closed(tmp_path: Path, text: str) -> None:
    path = tmp_path / "registry.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match="allowedOrgs"):
        read_registry_json(path)
    state = AgentState(tmp_path / "state", path)
    assert state.enforcement().blocked_reason is not None


def test_missing_registry_json_requires_nothing(tmp_path: Path) -> None:
    assert read_registry_json(tmp_path / "absent.json") == ()


def test_policy_file_mode(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("organization: acme\nenabled: true\nregistries:\n  - address: x.io\n")
    state = AgentState(tmp_path / "state", tmp_path / "registry.json")
    enforcement = state.enforcement(policy)
    assert enforcement.mode == "local"
    assert enforcement.policy is not None and enforcement.organization == "acme"
    with pytest.raises(ConfigError, match=r"absent\.yaml"):
        state.enforcement(tmp_path / "absent.yaml")


def test_unreadable_credentials_name_the_file(tmp_path: Path) -> None:
    state = AgentState(tmp_path / "state", tmp_path / "registry.json")
    write_private(state.credentials_path, b"{}")
    with pytest.raises(ConfigError, match=r"credentials\.json"):
        state.credentials()


@given(st.binary(max_size=200))
def test_registry_json_raises_only_our_error(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "registry.json"
        path.write_bytes(data)
        try:
            orgs = read_registry_json(path)
        except ConfigError:
            return
        assert all(isinstance(org, str) and org == org.lower() for org in orgs)


@given(st.text(max_size=40))
def test_proxy_listen_raises_only_our_error(text: str) -> None:
    from regward.agent.runner import parse_listen

    try:
        parsed = parse_listen(text)
    except ConfigError as error:
        assert repr(text) in str(error)
        return
    assert parsed is None or (parsed[0] and 0 < parsed[1] < 65536)
