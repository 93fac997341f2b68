"""Single sign-on settings over the API (both databases), their parser, "SSO required" for
password sign-ins, and the server's OIDC settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regward.errors import ConfigError
from regward.server.errors import InvalidInput
from regward.server.models import Role
from regward.server.services import sso
from regward.server.settings import OidcSettings
from tests.server.accounts import PASSWORD
from tests.server.conftest import World

ORG = "/api/v1/orgs/acme"


def test_settings_round_trip_and_are_in_activity(world: World) -> None:
    c, owner = world.client, world.headers("alice")
    assert c.get(f"{ORG}/sso", headers=owner).json() == {"join": [], "required": False}
    body = {
        "join": [
            {"email_domain": "Example.COM", "role": "member"},
            {"groups_claim": "platform", "role": "owner"},
        ],
        "required": True,
    }
    answer = c.put(f"{ORG}/sso", json=body, headers=owner)
    assert answer.status_code == 200, answer.text
    expected = {
        "join": [
            {"email_domain": "example.com", "role": "member"},
            {"groups_claim": "platform", "role": "owner"},
        ],
        "required": True,
    }
    assert answer.json() == expected
    assert c.get(f"{ORG}/sso", headers=owner).json() == expected
    event = c.get(f"{ORG}/activity", headers=owner).json()["logs"][0]
    assert event["action"] == "sso.settings_changed" and event["actor"] == "alice"
    assert event["data"] == {"before": {"join": [], "required": False}, "after": expected}


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"email_domain": "not a domain", "role": "member"}, "join[0].email_domain"),
        ({"email_domain": "a.com", "groups_claim": "g"}, "join[0]"),
        ({"role": "member"}, "join[0]"),
        ({"groups_claim": "g", "role": "admin"}, "join[0].role"),
        ({"groups_claim": "", "role": "member"}, "join[0].groups_claim"),
        ({"email_domain": "a.com", "extra": 1}, "join[0]"),
    ],
)
def test_bad_rules_name_the_field(world: World, rule: dict[str, object], field: str) -> None:
    answer = world.client.put(
        f"{ORG}/sso", json={"join": [rule], "required": False}, headers=world.headers("alice")
    )
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith(field + ":")


def test_sso_required_refuses_members_password_and_logs_owners(world: World) -> None:
    c = world.client
    c.put(f"{ORG}/sso", json={"join": [], "required": True}, headers=world.headers("alice"))
    bob = c.post("/api/v1/auth/token", json={"username": "bob", "password": PASSWORD})
    assert bob.status_code == 403
    assert bob.json()["detail"] == (
        "organization 'acme' requires single sign-on: use Sign in with SSO"
    )
    wrong = c.post("/api/v1/auth/token", json={"username": "bob", "password": "not it at all"})
    assert wrong.status_code == 401  # a wrong password learns nothing about SSO
    alice = c.post("/api/v1/auth/token", json={"username": "alice", "password": PASSWORD})
    assert alice.status_code == 200
    eve = c.post("/api/v1/auth/token", json={"username": "eve", "password": PASSWORD})
    assert eve.status_code == 200  # not a member of acme
    event = c.get(f"{ORG}/activity", headers=world.headers("alice")).json()["logs"][0]
    assert (event["action"], event["actor"]) == ("sso.break_glass_sign_in", "alice")
    # Existing access tokens keep working: only password sign-in is refused.
    assert c.get(f"{ORG}/policy", headers=world.headers("bob_read")).status_code == 200


RULES = st.dictionaries(
    st.sampled_from(["email_domain", "groups_claim", "role", "other"]),
    st.one_of(st.text(max_size=30), st.sampled_from(["member", "owner", "example.com"]), st.none()),
    max_size=3,
)


@given(RULES)
def test_rule_parser_gives_a_rule_or_names_the_field(value: dict[str, object]) -> None:
    try:
        rule = sso.Rule.parse(value, "join[0]")
    except InvalidInput as error:
        assert str(error).startswith("join[0]")
        return
    assert rule.role in (Role.MEMBER, Role.OWNER)
    assert (rule.email_domain is None) != (rule.groups_claim is None)
    assert sso.Rule.parse(rule.to_dict(), "join[0]") == rule


def test_rules_match_domains_exactly_and_groups_by_value() -> None:
    domain = sso.Rule(Role.MEMBER, email_domain="example.com")
    assert domain.matches("example.com", True, ())
    assert not domain.matches("example.com.evil.org", True, ())
    assert not domain.matches("sub.example.com", True, ())
    assert not domain.matches("example.com", False, ())  # the provider says: not verified
    group = sso.Rule(Role.OWNER, groups_claim="platform")
    assert group.matches("", True, ("dev", "platform"))
    assert not group.matches("", True, ("platform-admins",))


def test_oidc_settings_from_the_environment(tmp_path: Path) -> None:
    assert OidcSettings.from_env({}) is None
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    settings = OidcSettings.from_env(
        {
            "REGWARD_OIDC_ISSUER": "https://id.example.com/",
            "REGWARD_OIDC_CLIENT_ID": "regward",
            "REGWARD_OIDC_CLIENT_SECRET_FILE": str(secret),
        }
    )
    assert settings == OidcSettings("https://id.example.com", "regward", "from-a-file")
    bad = [
        ({"REGWARD_OIDC_ISSUER": "id.example.com", "REGWARD_OIDC_CLIENT_ID": "x"}, "must be a URL"),
        ({"REGWARD_OIDC_ISSUER": "https://id.example.com"}, "REGWARD_OIDC_CLIENT_ID"),
        (
            {
                "REGWARD_OIDC_ISSUER": "https://id.example.com",
                "REGWARD_OIDC_CLIENT_ID": "x",
                "REGWARD_OIDC_CLIENT_SECRET": "a",
                "REGWARD_OIDC_CLIENT_SECRET_FILE": str(secret),
            },
            "not both",
        ),
        (
            {
                "REGWARD_OIDC_ISSUER": "https://id.example.com",
                "REGWARD_OIDC_CLIENT_ID": "x",
                "REGWARD_OIDC_CLIENT_SECRET_FILE": str(tmp_path / "missing"),
            },
            "missing",
        ),
        (
            {
                "REGWARD_OIDC_ISSUER": "https://id.example.com",
                "REGWARD_OIDC_CLIENT_ID": "x",
                "REGWARD_OIDC_SCOPES": "email",
            },
            "openid",
        ),
    ]
    for env, words in bad:
        with pytest.raises(ConfigError, match=words):
            OidcSettings.from_env(env)
