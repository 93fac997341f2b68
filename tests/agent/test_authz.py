"""What the AuthZ plugin reads from each Engine API request, and what it answers."""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regward.agent.authz.checks import (
    MAX_CHECKS,
    HostCheck,
    ImageCheck,
    LocalImageCheck,
    local_images,
    registry_checks,
)
from regward.agent.authz.images import ImageOrigin
from regward.agent.authz.plugin import authorize
from regward.agent.authz.request import MAX_QUERY_BYTES, AuthZRequest, Unreadable
from regward.agent.guard import Enforcement, Guard
from regward.policy import Action, Policy

# Captured from a real dockerd 20.10 with CLI 28 (pull, run, push, build, login, ...).
SAMPLES = Path(__file__).resolve().parent / "data" / "authz-samples.json"

POLICY = Policy.from_dict(
    {
        "organization": "acme",
        "enabled": True,
        "registries": [
            {"address": "allowed.registry.test:5000"},
            {"address": "pullonly.registry.test:5000", "actions": ["pull"]},
            {"address": "files.example"},
        ],
    }
)


def guard(policy: Policy = POLICY) -> Guard:
    return Guard(Enforcement(mode="local", policy=policy, organization=policy.organization))


def request(
    uri: str, body: Any = None, headers: dict[str, str] | None = None, method: str = "POST"
) -> bytes:
    obj: dict[str, Any] = {"RequestMethod": method, "RequestUri": uri}
    if headers is None and body is None and method == "POST":
        headers = {"Content-Length": "0"}  # what the docker CLI sends with query-only calls
    if headers is not None:
        obj["RequestHeaders"] = headers
    if body is not None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        obj["RequestBody"] = base64.b64encode(raw).decode()
        obj.setdefault("RequestHeaders", {"Content-Type": "application/json"})
    return json.dumps(obj).encode()


def checks(data: bytes) -> list[Any]:
    return list(registry_checks(AuthZRequest.parse(data)))


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "/v1.41/images/create?fromImage=allowed.registry.test%3A5000%2Fdemo%2Fhello&tag=v1",
            [ImageCheck(Action.PULL, "allowed.registry.test:5000/demo/hello:v1")],
        ),
        (
            "/v1.41/images/create?fromImage=alpine&tag=latest",
            [ImageCheck(Action.PULL, "alpine:latest")],
        ),
        (
            "/images/create?fromImage=docker.io/library/alpine&tag=sha256:" + "a" * 64,
            [ImageCheck(Action.PULL, "docker.io/library/alpine@sha256:" + "a" * 64)],
        ),
        (
            "/v1.47/images/create?fromImage=ghcr.io/acme/x",
            [ImageCheck(Action.PULL, "ghcr.io/acme/x")],
        ),
        (
            "/v1.41/images/create?fromSrc=http%3A%2F%2Fevil.example%3A8000%2Fx.tar&repo=x",
            [HostCheck("evil.example", 8000, "import from")],
        ),
        (
            "/v1.41/images/reg.example:5000/team/app/push?tag=v2",
            [ImageCheck(Action.PUSH, "reg.example:5000/team/app:v2")],
        ),
        (
            "/v1.41/plugins/privileges?remote=vieux/sshfs",
            [ImageCheck(Action.PULL, "vieux/sshfs")],
        ),
        (
            "/v1.41/plugins/pull?remote=vieux%2Fsshfs%3Alatest&name=x",
            [ImageCheck(Action.PULL, "vieux/sshfs:latest")],
        ),
        (
            "/v1.41/plugins/sshfs/upgrade?remote=ghcr.io/a/b",
            [ImageCheck(Action.PULL, "ghcr.io/a/b")],
        ),
        ("/v1.41/plugins/ghcr.io/a/b/push", [ImageCheck(Action.PUSH, "ghcr.io/a/b")]),
        ("/v1.41/distribution/quay.io/x/y/json", [ImageCheck(Action.PULL, "quay.io/x/y")]),
        (
            "/v1.41/build?remote=https%3A%2F%2Fgit.example%2Fa.git&t=x",
            [HostCheck("git.example", 443, "build context from")],
        ),
        (
            "/v1.41/build?remote=git%40github.com%3Aacme%2Fapp.git",
            [HostCheck("github.com", 22, "build context from")],
        ),
        (
            "/v1.41/build?cachefrom=%5B%22ghcr.io%2Fa%2Fcache%22%5D&version=1",
            [ImageCheck(Action.PULL, "ghcr.io/a/cache")],
        ),
        ("/v1.41/build?remote=client-session&version=2", []),
        ("/v1.41/containers/json", []),
        ("/v1.41/images/json", []),
        ("/_ping", []),
    ],
)
def test_endpoint_table(uri: str, expected: list[Any]) -> None:
    assert checks(request(uri)) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "/images/create?fromImage=allowed.registry.test:5000/x&fromImage=evil.example/y",
        "/images/create?fromImage=&fromImage=allowed.registry.test:5000/x",
        "/images/create?fromImage=allowed.registry.test:5000/x&tag=1&tag=2",
        "/images/create?fromSrc=https://files.example/a&fromSrc=https://files.example/b",
        "/images/allowed.registry.test:5000/x/push?tag=1&tag=1",
        "/plugins/pull?remote=allowed.registry.test:5000/p&remote=allowed.registry.test:5000/p",
        "/build?remote=https://files.example/a&remote=https://files.example/b",
        "/build?cachefrom=[]&cachefrom=[]",
    ],
)
def test_a_repeated_parameter_is_refused(uri: str) -> None:
    # dockerd's r.Form.Get reads the first value only: one value, the one used, is checked.
    decision, message = authorize(guard(), request(uri))
    assert decision is not None and not decision.allowed
    assert "times; dockerd reads only the first" in message


@pytest.mark.parametrize(
    "uri",
    [
        "/v1.41//images/./create?fromImage=evil.example/x",
        "/v1.41/images/../images/create?fromImage=evil.example/x",
        "/v1.41/images%2Fcreate?fromImage=evil.example/x",
        "/V1.41/IMAGES/CREATE?fromImage=evil.example/x",
        "/images/create?fromImage=evil.example%2Fx",
    ],
)
def test_odd_paths_are_normalized_before_matching(uri: str) -> None:
    decision, message = authorize(guard(), request(uri))
    assert decision is not None
    assert "evil.example" in message


def test_container_and_service_bodies() -> None:
    create = request("/v1.41/containers/create", {"Image": "evil.example/x", "Cmd": ["sh"]})
    assert checks(create) == [LocalImageCheck("evil.example/x")]
    by_id = request("/v1.41/containers/create", {"Image": "sha256:" + "b" * 64})
    assert checks(by_id) == [LocalImageCheck("sha256:" + "b" * 64)]
    service = request(
        "/v1.41/services/create",
        {"TaskTemplate": {"ContainerSpec": {"Image": "evil.example/x"}}},
    )
    assert checks(service) == [ImageCheck(Action.PULL, "evil.example/x")]
    update = request(
        "/v1.41/services/abc/update?version=3",
        {"taskTemplate": {"containerSpec": {"image": "evil.example/y"}}},
    )
    assert checks(update) == [ImageCheck(Action.PULL, "evil.example/y")]


@pytest.mark.parametrize(
    "data",
    [
        request("/v1.41/containers/create"),  # no body reached the plugin
        request("/v1.41/containers/create", headers={"Content-Length": "0"}),
        request("/v1.41/containers/create", b"{not json"),
        request("/v1.41/containers/create", {"Image": 5}),
        request("/v1.41/services/create", {"TaskTemplate": "x"}),
        request(
            "/v1.41/images/create?fromImage=allowed.registry.test:5000/x",
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        ),
        request("/v1.41/build?cachefrom=not-json"),
        request("/v1.41/build?remote=ftp://x.example/ctx"),
        request("/v1.41/plugins/pull?name=x"),
        b'{"RequestUri": "/v1.41/containers/create", "RequestBody": "***"}',
        b"{",
        b"[]",
        b'{"RequestUri": 1}',
    ],
)
def test_unreadable_requests_are_refused(data: bytes) -> None:
    decision, message = authorize(guard(), data)
    assert decision is not None and not decision.allowed
    assert message.startswith("Regward refused this request because")


def test_unreadable_non_registry_request_is_refused_only_when_the_envelope_is_bad() -> None:
    assert authorize(guard(), request("/v1.41/containers/json", b"{bad"))[0] is None
    with pytest.raises(Unreadable):
        AuthZRequest.parse(b"not json")


def test_duplicate_and_cased_envelope_keys_follow_go() -> None:
    data = (
        b'{"RequestUri": "/v1.41/images/create?fromImage=allowed.registry.test:5000/x",'
        b' "requesturi": "/v1.41/images/create?fromImage=evil.example/x",'
        b' "RequestHeaders": {"Content-Length": "0"}}'
    )
    decision, message = authorize(guard(), data)
    assert decision is not None and "evil.example" in message


def test_duplicate_image_keys_in_a_body_refuse_if_any_is_refused() -> None:
    raw = b'{"Image": "evil.example/x", "image": "allowed.registry.test:5000/x"}'
    decision, _ = authorize(guard(), request("/v1.41/containers/create", raw))
    assert decision is not None


def test_push_to_a_pull_only_entry_is_refused_but_pull_is_allowed() -> None:
    push = request("/v1.41/images/pullonly.registry.test:5000/x/push?tag=1")
    decision, message = authorize(guard(), push)
    assert decision is not None
    assert "Push to pullonly.registry.test:5000/x is restricted" in message
    pull = request("/v1.41/images/create?fromImage=pullonly.registry.test:5000/x&tag=1")
    assert authorize(guard(), pull)[0] is None


def test_import_from_an_allowed_host_is_allowed() -> None:
    ok = request("/v1.41/images/create?fromSrc=https://files.example/rootfs.tar")
    assert authorize(guard(), ok)[0] is None


def test_the_reference_samples_get_the_expected_answers() -> None:
    samples = json.loads(SAMPLES.read_text())
    answers = {}
    for name, sample in samples.items():
        if sample.get("_endpoint") != "/AuthZPlugin.AuthZReq":
            continue
        data = {k: v for k, v in sample.items() if not k.startswith("_") and k[0].isupper()}
        if "RequestBody_decoded" in sample and sample["RequestBody_decoded"].endswith("}"):
            data["RequestBody"] = base64.b64encode(sample["RequestBody_decoded"].encode()).decode()
        decision, _ = authorize(guard(), json.dumps(data).encode())
        answers[name] = decision is None
    assert answers["pull (CLI 28)"] is True
    assert answers["pull denied"] is False
    assert answers["push"] is False
    assert answers["pull short name (CLI 20.10 does not normalise)"] is False
    assert answers["login"] is True
    assert answers["load"] is True


def test_auth_bodies_are_never_read() -> None:
    secret = request("/v1.41/auth", {"username": "u", "password": "hunter2"})
    assert checks(secret) == []


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(
            ["RequestUri", "requesturi", "RequestBody", "RequestHeaders", "RequestMethod", "X"]
        ),
        st.one_of(
            st.text(max_size=80),
            st.integers(),
            st.none(),
            st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3),
            st.sampled_from(
                [
                    "/v1.41/images/create?fromImage=evil.example/x",
                    "/v1.41/containers/create",
                    "/images/a/push",
                    base64.b64encode(b'{"Image":"evil.example/x"}').decode(),
                ]
            ),
        ),
    )
)
def test_arbitrary_requests_never_raise_and_never_allow_evil(data: dict[str, Any]) -> None:
    decision, message = authorize(guard(), json.dumps(data).encode())
    if decision is None:
        # Whatever was allowed named no refused registry.
        assert "evil.example" not in json.dumps(data) or not _names_registry(data)
    else:
        assert message


def _names_registry(data: dict[str, Any]) -> bool:
    uri = ""
    for key, value in data.items():
        if key.lower() == "requesturi" and isinstance(value, str):
            uri = value
    return any(part in uri for part in ("images/create", "containers/create", "/push"))


@given(
    st.lists(
        st.sampled_from(
            ["v1.41", "images", "create", ".", "..", "", "a:b", "x/y", "push", "v.", "%41"]
        ),
        min_size=1,
        max_size=6,
    )
)
def test_the_fast_path_cleaning_agrees_with_the_full_one(parts: list[str]) -> None:
    import posixpath
    import re

    from regward.agent.authz.request import _VERSION, _clean_path

    raw = "/" + "/".join(parts)
    slow = "/" + posixpath.normpath("/" + re.sub(r"/+", "/", raw)).lstrip("/")
    assert _clean_path(raw) == _VERSION.sub("", slow)


def test_an_absolute_form_target_is_routed_on_its_path() -> None:
    # Go's server routes `POST http://d/v1.41/images/create?..` like `/v1.41/images/create?..`.
    evil = request("http://d/v1.41/images/create?fromImage=evil.example/x&tag=1")
    decision, message = authorize(guard(), evil)
    assert decision is not None and "evil.example" in message
    ok = request("http://d/v1.41/images/create?fromImage=allowed.registry.test:5000/x&tag=1")
    assert authorize(guard(), ok)[0] is None
    assert authorize(guard(), request("*"))[0] is not None  # no path: nothing to route on


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json", "Content-Length": "35"},  # the first was a form
        {"Content-Type": "application/json"},  # chunked: no Content-Length at all
        {"Content-Type": "application/x-tar"},
    ],
)
def test_a_body_hidden_from_the_plugin_refuses_query_driven_calls(headers: dict[str, str]) -> None:
    # dockerd parses a form body (first Content-Type) over the query but reports the last one.
    for uri in (
        "/v1.41/images/create?fromImage=allowed.registry.test:5000/x&tag=1",
        "/v1.41/images/allowed.registry.test:5000/x/push?tag=1",
        "/v1.41/plugins/pull?remote=allowed.registry.test:5000/p",
    ):
        decision, message = authorize(guard(), request(uri, headers=headers))
        assert decision is not None, uri
        assert "not shown to authorization plugins" in message


def test_docker_import_of_a_file_is_refused_with_the_reason_and_what_to_do() -> None:
    # `docker import rootfs.tar` and `docker import -` both send fromSrc=- with the archive as
    # the body (the CLI's own Content-Type for it is text/plain).
    for content_type in ("text/plain", "application/x-tar"):
        data = request(
            "/v1.41/images/create?fromSrc=-&repo=x", headers={"Content-Type": content_type}
        )
        decision, message = authorize(guard(), data)
        assert decision is not None
        assert "docker import sends its archive (a file or standard input)" in message
        assert "'FROM scratch' and 'ADD rootfs.tar /'" in message
    # Not an import: a hidden body on a pull says so, without the import's advice.
    pull = request(
        "/v1.41/images/create?fromImage=allowed.registry.test:5000/x&fromSrc=-",
        headers={"Content-Type": "text/plain"},
    )
    decision, message = authorize(guard(), pull)
    assert decision is not None and "not shown to authorization plugins" in message
    assert "docker import" not in message


def test_a_plugin_pull_with_its_json_body_shown_is_checked_on_the_query() -> None:
    privileges = [{"Name": "network", "Value": ["host"]}]
    ok = request("/v1.41/plugins/pull?remote=allowed.registry.test:5000/p", privileges)
    assert authorize(guard(), ok)[0] is None
    evil = request("/v1.41/plugins/pull?remote=evil.example/p", privileges)
    assert authorize(guard(), evil)[0] is not None


def test_search_asks_the_index_the_term_names() -> None:
    evil = request("/v1.41/images/search?term=evil.example%3A5007%2Ffoo", method="GET")
    decision, message = authorize(guard(), evil)
    assert decision is not None and "evil.example:5007" in message
    allowed = request("/v1.41/images/search?term=allowed.registry.test:5000/foo", method="GET")
    assert authorize(guard(), allowed)[0] is None
    assert checks(request("/v1.41/images/search?term=nginx", method="GET")) == [
        HostCheck("index.docker.io", 443, "search")
    ]


# Every query-reading sink, with the characters where urllib.parse and Go's net/url disagree.
# {q} is what hides the evil parameter from a reader that stops at "#" or splits on ";".
SINKS = [
    ("POST", "/images/create?x={q}fromImage=evil.example/demo&tag=v1", "evil.example"),
    ("POST", "/images/create?x={q}fromSrc=http://evil.example/a.tar&repo=x", "evil.example"),
    ("POST", "/images/create?fromImage=allowed.registry.test:5000/x&x={q}tag=@evil", ":@evil"),
    ("POST", "/images/allowed.registry.test:5000/x/push?x={q}tag=v1%25", "x:v1%"),
    ("POST", "/plugins/pull?x={q}remote=evil.example/p&name=p", "evil.example"),
    ("POST", "/plugins/privileges?x={q}remote=evil.example/p", "evil.example"),
    ("POST", "/plugins/p/upgrade?x={q}remote=evil.example/p", "evil.example"),
    ("POST", "/build?x={q}remote=https://evil.example/ctx.git", "evil.example"),
    ("POST", "/build?x={q}cachefrom=%5B%22evil.example%2Fc%22%5D", "evil.example"),
    ("GET", "/images/search?x={q}term=evil.example/foo", "evil.example"),
]
READ_THROUGH = ["#&", "%23&", "a#b&"]  # Go reads the pair after these; urlsplit did not
DROPPED = [";&", "%zz&", "%&"]  # Go drops the pair holding these, and reports an error


@pytest.mark.parametrize("hider", READ_THROUGH + DROPPED)
@pytest.mark.parametrize("form", ["/v1.41", "http://d/v1.41", "HTTP://d:2375/v1.41", "x:///v1.41"])
@pytest.mark.parametrize(("method", "sink", "named"), SINKS)
def test_every_query_sink_reads_its_query_as_go_does(
    method: str, sink: str, named: str, form: str, hider: str
) -> None:
    data = request(form + sink.format(q=hider), method=method)
    decision, message = authorize(guard(), data)
    assert decision is not None and not decision.allowed, (form, sink, hider)
    if hider in READ_THROUGH:
        assert named in message  # the value dockerd acts on is the one checked
    else:
        assert "dockerd would skip part of its query" in message


@pytest.mark.parametrize(
    "uri",
    [
        # the issue's reproductions, as the plugin receives them
        "http://d/v1.41/images/create?x=#&fromImage=blocked.registry.test:5000/demo/evil&tag=v1",
        "http://d/v1.41/images/create?x=#&fromSrc=http://blocked.registry.test:5000/x&repo=r",
    ],
)
def test_the_hash_reproductions_are_refused_naming_the_registry(uri: str) -> None:
    decision, message = authorize(guard(), request(uri))
    assert decision is not None
    assert "blocked.registry.test" in message


def test_plus_is_a_space_and_semicolons_refuse() -> None:
    plus = request("/v1.41/images/create?fromImage=allowed.registry.test:5000/x+y&tag=v1")
    decision, message = authorize(guard(), plus)
    assert decision is not None and "allowed.registry.test:5000/x y" in message
    semi = request("/v1.41/images/create?fromImage=allowed.registry.test:5000/x&tag=v1;")
    decision, message = authorize(guard(), semi)
    assert decision is not None and "dockerd would skip part of its query" in message
    encoded = request("/v1.41/images/create?fromImage=allowed.registry.test%3A5000%2Fx&tag=v1")
    assert authorize(guard(), encoded)[0] is None


def test_a_hash_that_hides_nothing_is_harmless() -> None:
    ok = request("http://d/v1.41/images/create?fromImage=allowed.registry.test:5000/x&tag=v1#")
    decision, message = authorize(guard(), ok)
    assert decision is not None and "v1#" in message  # Go pulls tag "v1#": an invalid reference
    path = request("/v1.41/images/create#?fromImage=evil.example/x")
    assert authorize(guard(), path)[0] is None  # the path is /images/create#: dockerd says 404


class CountingGuard(Guard):
    """A real guard that counts the references and hosts it is asked about."""

    def __init__(self) -> None:
        super().__init__(Enforcement(mode="local", policy=POLICY, organization="acme"))
        self.asked = 0

    def decide(
        self, action: Action, reference: Any, source: str = "authz", *, record: bool = True
    ) -> Any:
        self.asked += 1
        return super().decide(action, reference, source, record=record)

    def decide_host(
        self, host: str, port: int, source: str = "proxy", *, record: bool = True
    ) -> Any:
        self.asked += 1
        return super().decide_host(host, port, source, record=record)


def test_the_issues_n_by_m_pull_is_refused_before_any_reference_is_built() -> None:
    # 2,500 fromImage x 2,500 tag (a 144 KB request line) once took 111 s and 1.28 GB.
    images = "&".join(f"fromImage=allowed.registry.test:5000/x{i}" for i in range(2500))
    tags = "&".join(f"tag=t{i}" for i in range(2500))
    counting = CountingGuard()
    decision, message = authorize(counting, request(f"/v1.41/images/create?{images}&{tags}"))
    assert decision is not None and "fromImage 2500 times" in message
    assert counting.asked == 0


def test_a_long_list_is_checked_up_to_the_bound_then_refused() -> None:
    cache = json.dumps(["allowed.registry.test:5000/c"] * 4_000)
    counting = CountingGuard()
    uri = "/v1.41/build?cachefrom=" + urllib.parse.quote(cache)
    decision, message = authorize(counting, request(uri))
    assert decision is not None and f"more than {MAX_CHECKS} images or hosts" in message
    assert counting.asked == MAX_CHECKS
    body = (
        b'{"Image":"allowed.registry.test:5000/x"'
        + b',"Image":"allowed.registry.test:5000/x"' * 20_000
        + b"}"
    )
    counting = CountingGuard()
    decision, message = authorize(counting, request("/v1.41/containers/create", body))
    assert decision is not None and f"more than {MAX_CHECKS}" in message
    assert counting.asked == MAX_CHECKS


def test_the_first_refusal_ends_the_work() -> None:
    cache = json.dumps(["evil.example/c"] + ["allowed.registry.test:5000/c"] * 50)
    counting = CountingGuard()
    decision, message = authorize(
        counting, request("/v1.41/build?cachefrom=" + urllib.parse.quote(cache))
    )
    assert decision is not None and "evil.example" in message
    assert counting.asked == 1


def test_a_registry_request_with_a_huge_query_is_refused_unread() -> None:
    uri = "/v1.41/images/create?fromImage=allowed.registry.test:5000/x&x=" + "a" * MAX_QUERY_BYTES
    counting = CountingGuard()
    decision, message = authorize(counting, request(uri))
    assert decision is not None and f"more than the {MAX_QUERY_BYTES} Regward reads" in message
    assert counting.asked == 0
    other = request("/v1.41/containers/json?x=" + "a" * MAX_QUERY_BYTES, method="GET")
    assert authorize(counting, other)[0] is None  # endpoints that name no registry: unread


def run(image: str) -> bytes:
    return request("/v1.41/containers/create", {"Image": image})


DIGEST = "@sha256:" + "c" * 64
FULL_ID = "sha256:" + "d" * 64


@pytest.mark.parametrize(
    ("image", "origin", "allowed", "named"),
    [
        # built or loaded here: no registry gave it, whatever its name would read as
        ("rt/app:v1", ImageOrigin(found=True), True, ""),
        ("e3b0c44298fc", ImageOrigin(found=True), True, ""),
        ("evil.example/x:1", ImageOrigin(found=True), True, ""),
        (FULL_ID, ImageOrigin(found=True), True, ""),
        # pulled from a registry: that registry decides, under any name or ID
        ("e3b0c44298fc", ImageOrigin(True, ("allowed.registry.test:5000/x" + DIGEST,)), True, ""),
        ("rt/app:v1", ImageOrigin(True, ("evil.example/x" + DIGEST,)), False, "evil.example"),
        (FULL_ID, ImageOrigin(True, ("evil.example/x" + DIGEST,)), False, "evil.example"),
        (
            "allowed.registry.test:5000/x:1",
            ImageOrigin(True, ("allowed.registry.test:5000/x" + DIGEST, "evil.example/y" + DIGEST)),
            False,
            "evil.example",
        ),
        # a push to a registry leaves its digest too: a pull from there must be allowed
        ("x:1", ImageOrigin(True, ("pullonly.registry.test:5000/x" + DIGEST,)), True, ""),
        # not on the machine: dockerd says "No such image", the client pulls; read as a pull
        ("evil.example/x:1", ImageOrigin(found=False), False, "evil.example"),
        ("allowed.registry.test:5000/x:1", ImageOrigin(found=False), True, ""),
        # the engine did not answer: names read as a pull, a full ID is refused
        ("rt/app:v1", None, False, "docker.io"),
        ("allowed.registry.test:5000/x:1", None, True, ""),
        (FULL_ID, None, False, "did not say where the image"),
    ],
)
def test_images_on_the_machine_are_decided_by_where_they_came_from(
    image: str, origin: ImageOrigin | None, allowed: bool, named: str
) -> None:
    data = run(image)
    assert local_images(AuthZRequest.parse(data)) == [LocalImageCheck(image)]
    decision, message = authorize(guard(), data, {LocalImageCheck(image): origin})
    assert (decision is None) is allowed, message
    assert named in message


def test_a_local_image_is_refused_where_nothing_may_pass() -> None:
    required = Guard(Enforcement(mode="signed-in", required_orgs=("acme",)))
    origins = {LocalImageCheck("rt/app:v1"): ImageOrigin(True)}
    decision, message = authorize(required, run("rt/app:v1"), origins)
    assert decision is not None and "Sign-in to organization 'acme' is required" in message


@pytest.mark.parametrize(
    ("origin", "allowed", "named"),
    [
        (ImageOrigin(found=True), True, ""),  # built here
        (ImageOrigin(True, ("allowed.registry.test:5000/x" + DIGEST,)), True, ""),
        (ImageOrigin(True, ("evil.example/x" + DIGEST,)), False, "evil.example"),
        (ImageOrigin(found=False), True, ""),  # no such container: dockerd says so
        (None, False, "did not say which image container web runs"),
    ],
)
@pytest.mark.parametrize("verb", ["start", "restart", "START"])
def test_starting_a_container_decides_the_image_it_holds(
    origin: ImageOrigin | None, allowed: bool, named: str, verb: str
) -> None:
    data = request(f"/v1.41/containers/web/{verb}")
    check = LocalImageCheck("web", container=True)
    assert local_images(AuthZRequest.parse(data)) == [check]
    decision, message = authorize(guard(), data, {check: origin})
    assert (decision is None) is allowed, message
    assert named in message


def test_only_container_creation_asks_the_engine() -> None:
    assert local_images(AuthZRequest.parse(request("/v1.41/images/create?fromImage=x"))) == []
    service = request(
        "/v1.41/services/create", {"TaskTemplate": {"ContainerSpec": {"Image": "rt/app"}}}
    )
    assert local_images(AuthZRequest.parse(service)) == []  # a swarm node pulls it
    assert local_images(AuthZRequest.parse(request("/v1.41/containers/create", b"{bad"))) == []
    for other in ("stop", "kill", "pause", "unpause", "json", "start/x"):
        assert local_images(AuthZRequest.parse(request(f"/v1.41/containers/web/{other}"))) == []
