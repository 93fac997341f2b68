"""End to end with the real Regward server: sign-in, sync, apply, offline enforcement, logout.

One bed for the module: the namespace, two registries, `regward server init` + `regward server
run` (SQLite), `regward login` with a personal access token, `regward agent run`, and a real
dockerd using the agent as its authorization plugin. The test process drives the server's REST
API over the namespace's veth, as an owner would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.bed import PYTHON, unavailable_reason
from tests.harness.scenario import ALLOWED, BLOCKED, SERVER_PORT, Scene
from tests.harness.wait import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]


class Owner:
    """The organization's owner, over the REST API."""

    def __init__(self, scene: Scene) -> None:
        server = scene.server
        assert server is not None
        self.org = server.org
        self.client = httpx.Client(base_url=server.api + "/api/v1", timeout=30, trust_env=False)
        token = self.client.post(
            "/auth/token", json={"username": server.owner, "password": server.password}
        )
        token.raise_for_status()
        self.client.headers["Authorization"] = f"Bearer {token.json()['token']}"

    def token(self, name: str) -> str:
        created = self.client.post("/tokens", json={"name": name, "scope": "read"})
        created.raise_for_status()
        return str(created.json()["token"])

    def apply(self, registries: list[dict[str, Any]], enabled: bool = True) -> int:
        draft = self.client.get(f"/orgs/{self.org}/registry-access")
        draft.raise_for_status()
        body = {"enabled": enabled, "registries": registries, "version": draft.json()["version"]}
        self.client.put(f"/orgs/{self.org}/registry-access", json=body).raise_for_status()
        applied = self.client.post(f"/orgs/{self.org}/registry-access/apply", json={})
        applied.raise_for_status()
        return int(applied.json()["revision"])

    def get(self, path: str) -> Any:
        response = self.client.get(f"/orgs/{self.org}{path}")
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    created = Scene.create("s")
    try:
        created.start_server()
        yield created
    finally:
        created.close()


@pytest.fixture(scope="module")
def owner(scene: Scene) -> Iterator[Owner]:
    owner = Owner(scene)
    owner.apply([{"address": ALLOWED}])
    yield owner
    owner.client.close()


@pytest.fixture(scope="module")
def signed_in(scene: Scene, owner: Owner) -> Scene:
    assert scene.server is not None
    token = owner.token("ci-runner")
    login = scene.regward(
        "login",
        "--server",
        scene.server.url,
        "--org",
        owner.org,
        "--token-stdin",
        input=token.encode() + b"\n",
    )
    assert login.returncode == 0, login.stderr
    assert f"Signed in to '{owner.org}'" in login.stdout
    scene.start_agent([])
    scene.bed.start_dockerd([f"--authorization-plugin={scene.plugin_name}"])
    return scene


def denial(registry: str, revision: int) -> str:
    return (
        f"Access to registry {registry} is restricted by your organization 'acme' "
        f"(policy revision {revision})"
    )


def tamper_with_cache(scene: Scene) -> tuple[Path, bytes, bytes]:
    """Add an entry to the agent's cached revision without signing it again: the cache, its
    bytes before (to put back) and the tampered bytes."""
    cache = scene.agent_dir / "policy.json"
    original = cache.read_bytes()
    document = json.loads(original)
    document["policy"]["registries"].append({"address": BLOCKED})
    tampered = json.dumps(document).encode()
    cache.write_bytes(tampered)
    return cache, original, tampered


def test_login_stores_secrets_private_and_pins_the_key(signed_in: Scene, owner: Owner) -> None:
    credentials = signed_in.agent_dir / "credentials.json"
    assert credentials.stat().st_mode & 0o777 == 0o600
    assert (signed_in.agent_dir / "policy.json").stat().st_mode & 0o777 == 0o600
    stored = json.loads(credentials.read_text())
    key = owner.client.get("/signing-key").json()["public_key"]
    assert stored["public_key"] == key
    assert stored["organization"] == "acme"


def test_login_follows_registry_json(signed_in: Scene, owner: Owner) -> None:
    assert signed_in.server is not None
    owner.client.post("/orgs", json={"name": "beta"}).raise_for_status()
    token = owner.token("registry-json")

    def login() -> str:
        assert signed_in.server is not None
        result = signed_in.regward(
            "login",
            "--server",
            signed_in.server.url,
            "--org",
            "acme",
            "--token-stdin",
            input=token.encode() + b"\n",
        )
        assert result.returncode == 2
        return result.stderr

    try:
        signed_in.registry_json.write_text('{"allowedOrgs": ["globex"]}')
        assert "allows sign-in only to 'globex'" in login()
        signed_in.registry_json.write_text('{"allowedOrgs": ["beta", "acme"]}')
        assert "lists 'beta' before 'acme'" in login()
    finally:
        signed_in.registry_json.unlink()
    # The running agent enforced those files too; it notices their removal.
    wait_for(
        lambda: signed_in.bed.docker("pull", Scene.image(ALLOWED)).returncode == 0,
        30,
        "an allowed pull to work",
    )
    stored = json.loads((signed_in.agent_dir / "credentials.json").read_text())
    assert stored["organization"] == "acme"  # a refused login changes nothing


def test_allowed_pull_works_and_disallowed_fails_with_the_message(signed_in: Scene) -> None:
    assert signed_in.bed.docker("pull", Scene.image(ALLOWED)).returncode == 0
    refused = signed_in.bed.docker("pull", Scene.image(BLOCKED))
    assert refused.returncode != 0
    assert "Access to registry blocked.registry.test:5000 is restricted" in refused.stderr
    assert "'acme'" in refused.stderr
    assert (
        "Allowed registries: http://regward.test:8080/orgs/acme/registry-access" in refused.stderr
    )
    ran = signed_in.bed.docker("run", "--rm", "--network", "none", Scene.image(BLOCKED))
    assert ran.returncode == 125
    assert "Access to registry blocked.registry.test:5000 is restricted" in ran.stderr


def test_status_reports_the_enforced_revision(signed_in: Scene, owner: Owner) -> None:
    def synced() -> bool:
        status = json.loads(signed_in.regward("status", "--json").stdout)
        return bool(status["agent_running"] and status["sync"] and status["sync"]["last_sync"])

    wait_for(synced, 30, "the agent's first sync")
    status = json.loads(signed_in.regward("status", "--json").stdout)
    current = owner.get("/policy")["policy"]["revision"]
    assert status["organization"] == "acme"
    assert status["revision"] == current
    assert status["enforcement_points"]["authz"]["up"] is True

    def on_record() -> bool:  # a revision from a long-poll is checked in within 0-5 s
        return any(d["applied_revision"] == current for d in owner.get("/devices")["devices"])

    wait_for(on_record, 30, f"the device's check-in of revision {current}")


def test_the_agent_reports_whether_dockerd_uses_its_plugin_and_proxy(
    signed_in: Scene, owner: Owner
) -> None:
    def engines() -> list[object]:
        return [device["engine"] for device in owner.get("/devices")["devices"]]

    def status() -> tuple[dict[str, Any], str]:
        report = json.loads(signed_in.regward("status", "--json").stdout)
        return report["docker_engine"], signed_in.regward("status").stdout

    # This dockerd runs with the agent's plugin; the agent's proxy is off: protected.
    wait_for(
        lambda: engines() == [{"authz": True, "proxy": None}],
        30,
        "the check-in: protected, proxy off",
    )
    engine, text = status()
    assert engine["authz"] is True and engine["proxy"] is None and engine["protected"] is True
    assert engine["plugins"] == [signed_in.plugin_name]
    assert (
        f"Docker Engine: protected (AuthZ plugin {signed_in.plugin_name}, the agent's proxy is off)"
    ) in text
    # With the agent's proxy on, the same dockerd (never told to use it) lets builds past it.
    try:
        signed_in.start_agent([], proxy_listen="127.0.0.1:3128")
        wait_for(
            lambda: engines() == [{"authz": True, "proxy": False}],
            30,
            "the check-in: proxy not used",
        )
        engine, text = status()
        assert engine["authz"] is True and engine["proxy"] is False
        assert engine["protected"] is False
        assert (
            "Docker Engine: NOT protected: dockerd does not send registry traffic through the "
            "agent's proxy 127.0.0.1:3128 (HTTPS proxy not set, HTTP proxy not set), so pulls "
            "inside builds are not checked; run `regward agent install` and restart dockerd"
        ) in text
        agent_status = json.loads((signed_in.agent_dir / "status.json").read_text())
        assert agent_status["docker_engine"]["proxy"] is False  # what the agent checked in
    finally:
        signed_in.start_agent([])
    wait_for(
        lambda: engines() == [{"authz": True, "proxy": None}],
        30,
        "the check-in: protected, proxy off",
    )


def test_apply_flips_the_next_pull_without_logout(signed_in: Scene, owner: Owner) -> None:
    # How fast is bench/propagation.py's job (no timing assertions here: machines are noisy);
    # the bound only keeps a broken long-poll from hanging the suite.
    assert signed_in.bed.docker("pull", Scene.image(BLOCKED)).returncode != 0
    owner.apply([{"address": ALLOWED}, {"address": BLOCKED}])
    wait_for(
        lambda: signed_in.bed.docker("pull", Scene.image(BLOCKED)).returncode == 0,
        30,
        "the apply to allow the pull",
    )
    revision = owner.apply([{"address": ALLOWED}])
    wait_for(
        lambda: signed_in.bed.docker("pull", Scene.image(BLOCKED)).returncode != 0,
        30,
        "the apply to refuse the pull",
    )
    refused = signed_in.bed.docker("pull", Scene.image(BLOCKED))
    assert denial(BLOCKED, revision) in refused.stderr


def test_denials_reach_the_server(signed_in: Scene, owner: Owner) -> None:
    assert signed_in.bed.docker("pull", Scene.image(BLOCKED, "demo/reported")).returncode != 0
    assert signed_in.authz(b"{garbage")["Allow"] is False  # reported too, in the same batch

    def reported() -> bool:
        listed = json.dumps(owner.get("/denials")["denials"])
        return "demo/reported" in listed and "(unreadable request)" in listed

    wait_for(reported, 30, "the denials to reach the server")


def test_agent_metrics_count_decisions_sync_and_proxy(signed_in: Scene, owner: Owner) -> None:
    """`--metrics-listen`: scraped over the namespace's veth and read with prometheus_client's
    parser, after real pulls through the AuthZ plugin and real copies through the proxy."""
    address = f"{signed_in.bed.ip(2)}:9464"
    proxy = {"HTTP_PROXY": "http://127.0.0.1:3128", "HTTPS_PROXY": "http://127.0.0.1:3128"}

    def skopeo(registry: str) -> tuple[int, str]:
        argv = ["skopeo", "inspect", "--tls-verify=false", f"docker://{Scene.image(registry)}"]
        done = signed_in.bed.run(argv, env=proxy, timeout=60)
        return done.returncode, done.stderr

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"http://{address}/metrics", timeout=10).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    try:
        # Two proxy processes: their decisions are counted in the agent's own metrics.
        metrics = ["--metrics-listen", address, "--proxy-workers", "2"]
        signed_in.start_agent(metrics, proxy_listen="127.0.0.1:3128")
        assert signed_in.bed.docker("pull", Scene.image(ALLOWED)).returncode == 0
        assert signed_in.bed.docker("pull", Scene.image(BLOCKED)).returncode != 0
        allowed, blocked = skopeo(ALLOWED), skopeo(BLOCKED)
        assert allowed[0] == 0, allowed[1]
        assert blocked[0] != 0, blocked[1]
        revision = owner.get("/policy")["policy"]["revision"]
        wanted = [("regward_agent_seconds_since_last_sync", ())] + [
            ("regward_agent_decisions_total", (("point", "proxy"), ("result", result)))
            for result in ("allowed", "denied")
        ]
        wait_for(
            lambda: all(key in scrape() for key in wanted),
            30,
            "the sync figures and the proxy workers' decisions on the metrics page",
        )
        samples = scrape()
    finally:
        signed_in.start_agent([])

    def decisions(point: str, result: str) -> float:
        key = (("point", point), ("result", result))
        return samples.get(("regward_agent_decisions_total", key), 0)

    assert decisions("authz", "allowed") >= 1 and decisions("authz", "denied") >= 1
    assert decisions("proxy", "allowed") >= 1 and decisions("proxy", "denied") >= 1
    histogram = ("regward_agent_decision_duration_seconds_count", (("point", "authz"),))
    assert samples[histogram] >= 2
    assert samples[("regward_agent_policy_revision", ())] == revision
    assert 0 <= samples[("regward_agent_seconds_since_last_sync", ())] < 3600
    assert samples[("regward_agent_proxy_connections_open", ())] >= 0
    downstream = ("regward_agent_proxy_bytes_relayed_total", (("direction", "downstream"),))
    assert samples[downstream] > 0  # the allowed registry's answers
    assert ("regward_agent_denial_reports_queued", ()) in samples
    assert samples[("regward_agent_denial_reports_dropped_total", ())] == 0


def test_a_transparent_refusal_reaches_blocked_pulls_with_its_origin(
    signed_in: Scene, owner: Owner
) -> None:
    # dockerd's own loopback connections are taken by --transparent (Go never proxies them);
    # here a process of the machine asks the blocked loopback registry, as a build would.
    signed_in.start_agent(["--transparent"])
    try:
        fetch = (
            "import urllib.request as u, urllib.error as e\n"
            "try:\n"
            "    u.urlopen('http://127.0.0.3:5000/v2/demo/transp/manifests/v1', timeout=10)\n"
            "except e.HTTPError as error:\n"
            "    print(error.code, end='')\n"
        )
        signed_in.bed.wait_for(
            "a refusal by the transparent listener",
            lambda: signed_in.bed.run([str(PYTHON), "-c", fetch]).stdout == "403",
            signed_in.agent,
        )

        def reported() -> bool:
            listed = owner.get("/denials")["denials"]
            return any(
                item["reference"] == "127.0.0.3:5000/demo/transp:v1"
                and item["reason"].endswith("(transparent, from this machine)")
                for item in listed
            )

        wait_for(reported, 30, "the transparent refusal to reach the server")
    finally:
        signed_in.start_agent([])


def test_the_agents_own_server_connections_are_never_taken_by_its_rules(
    signed_in: Scene, owner: Owner
) -> None:
    """With --transparent-host and the server's port taken, the agent's own connections to its
    server (sync, check-ins, denial reports) must never pass through its listener: a policy
    that refuses the server's host (here, every host: the cached revision is tampered with, so
    nothing is enforced but a refusal) would cut the agent off from the very revision that
    would set it right, for good. They carry the agent's mark, which the rules skip."""
    cache, original, tampered = tamper_with_cache(signed_in)
    try:
        signed_in.start_agent(["--transparent-host", "--transparent-ports", str(SERVER_PORT)])
        table = ["nft", "list", "table", "inet", "regward"]
        signed_in.bed.wait_for(
            "the rules", lambda: signed_in.bed.run(table).returncode == 0, signed_in.agent
        )
        revision = owner.get("/policy")["policy"]["revision"]

        def enforced() -> object:
            status = json.loads(signed_in.regward("status", "--json").stdout)
            return status["revision"]

        wait_for(lambda: enforced() == revision, 60, "the server's revision to be enforced")
        newer = owner.apply([{"address": ALLOWED}, {"address": "newer.registry.test"}])
        wait_for(lambda: enforced() == newer, 60, f"revision {newer} to arrive")
    finally:
        if cache.read_bytes() == tampered:  # never replaced: put the original back
            cache.write_bytes(original)
        signed_in.start_agent([])


def test_server_stopped_a_restarted_agent_still_enforces_the_last_revision(
    signed_in: Scene, owner: Owner
) -> None:
    revision = owner.get("/policy")["policy"]["revision"]
    signed_in.stop_server()
    try:
        signed_in.start_agent([])
        refused = signed_in.bed.docker("pull", Scene.image(BLOCKED))
        assert denial(BLOCKED, revision) in refused.stderr
        assert signed_in.bed.docker("pull", Scene.image(ALLOWED)).returncode == 0
        status = json.loads(signed_in.regward("status", "--json").stdout)
        assert status["revision"] == revision
    finally:
        signed_in.start_server()
        signed_in.start_agent([])
    wait_for(
        lambda: signed_in.bed.docker("pull", Scene.image(ALLOWED)).returncode == 0,
        30,
        "an allowed pull to work",
    )


def test_tampered_cache_is_not_enforced(signed_in: Scene, owner: Owner) -> None:
    cache, original, _ = tamper_with_cache(signed_in)
    try:
        signed_in.stop_server()
        signed_in.start_agent([])
        refused = signed_in.bed.docker("pull", Scene.image(ALLOWED))
        assert refused.returncode != 0
        assert "No verified policy of organization 'acme'" in refused.stderr
    finally:
        cache.write_bytes(original)
        signed_in.start_server()
        signed_in.start_agent([])
    assert signed_in.bed.docker("pull", Scene.image(ALLOWED)).returncode == 0


def test_revisions_signed_by_another_key_are_refused(signed_in: Scene) -> None:
    from regward.policy import generate_key, public_key_to_text

    credentials = signed_in.agent_dir / "credentials.json"
    original = credentials.read_text()
    stored = json.loads(original)
    stored["public_key"] = public_key_to_text(generate_key().public_key())  # not the server's
    credentials.write_text(json.dumps(stored))
    try:
        # Waited for by the pull itself: a refusal an earlier test left in the status is no
        # sign that the agent has read the new key yet.
        def pull_refused() -> bool:
            result = signed_in.bed.docker("pull", Scene.image(ALLOWED))
            return "No verified policy of organization 'acme'" in result.stderr

        wait_for(pull_refused, 30, "pulls refused for want of a verified policy")
        status = json.loads(signed_in.regward("status", "--json").stdout)
        refusals = (status.get("sync") or {}).get("refused_revisions", [])
        assert any("does not verify" in item for item in refusals), status
        shown = signed_in.regward("status").stdout
        assert "REFUSED:       refused" in shown and "does not verify" in shown
    finally:
        credentials.write_text(original)
    wait_for(
        lambda: signed_in.bed.docker("pull", Scene.image(ALLOWED)).returncode == 0,
        30,
        "an allowed pull to work",
    )


def test_registry_json_is_satisfied_by_sign_in_and_logout_applies_at_once(
    signed_in: Scene, owner: Owner
) -> None:
    signed_in.registry_json.write_text('{"allowedOrgs": ["acme", "globex"]}')
    try:
        wait_for(
            lambda: signed_in.bed.docker("pull", Scene.image(ALLOWED)).returncode == 0,
            30,
            "an allowed pull to work",
        )
        logout = signed_in.regward("logout")
        assert logout.returncode == 0
        assert not (signed_in.agent_dir / "policy.json").exists()

        def refused() -> bool:
            result = signed_in.bed.docker("pull", Scene.image(ALLOWED))
            return "Sign-in to organization 'acme' or 'globex' is required" in result.stderr

        wait_for(refused, 30, "the refusal")
    finally:
        signed_in.registry_json.unlink()
