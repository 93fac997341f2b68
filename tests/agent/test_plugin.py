"""The plugin's HTTP server on a real unix socket: keep-alive, framing, and hostile clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from regward.agent.authz.framing import MEDIA_TYPE
from regward.agent.authz.plugin import AuthZPlugin
from regward.agent.guard import Enforcement, Guard
from regward.policy import Policy

POLICY = Policy.from_dict(
    {"organization": "acme", "enabled": True, "registries": [{"address": "ok.example"}]}
)
PULL_OK = (
    b'{"RequestMethod":"POST","RequestUri":"/v1.41/images/create?fromImage=ok.example/a",'
    b'"RequestHeaders":{"Content-Length":"0"}}'
)
PULL_EVIL = (
    b'{"RequestMethod":"POST","RequestUri":"/v1.41/images/create?fromImage=evil.example/a",'
    b'"RequestHeaders":{"Content-Length":"0"}}'
)


def http(method: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {method} HTTP/1.1\r\nHost: plugin\r\nContent-Type: {MEDIA_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, object]]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return status, json.loads(await reader.readexactly(length))


def with_plugin(
    tmp_path: Path, body: Callable[[AuthZPlugin, Path], Awaitable[None]]
) -> AuthZPlugin:
    guard = Guard(Enforcement(mode="local", policy=POLICY, organization="acme"))
    plugin = AuthZPlugin(guard, tmp_path / "p.sock")

    async def main() -> None:
        await plugin.start()
        try:
            await body(plugin, tmp_path / "p.sock")
        finally:
            await plugin.close()

    asyncio.run(main())
    return plugin


def test_activate_authz_and_keep_alive(tmp_path: Path) -> None:
    async def body(plugin: AuthZPlugin, sock: Path) -> None:
        assert sock.stat().st_mode & 0o777 == 0o600
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(http("/Plugin.Activate", b""))
        assert await read_response(reader) == (200, {"Implements": ["authz"]})
        for _ in range(3):  # one connection, many calls
            writer.write(http("/AuthZPlugin.AuthZReq", PULL_OK))
            assert await read_response(reader) == (200, {"Allow": True})
            writer.write(http("/AuthZPlugin.AuthZReq", PULL_EVIL))
            status, answer = await read_response(reader)
            assert status == 200 and answer["Allow"] is False
            assert "evil.example" in str(answer["Msg"])
        writer.write(http("/AuthZPlugin.AuthZRes", PULL_EVIL))
        assert await read_response(reader) == (200, {"Allow": True})
        writer.write(http("/Nope", b""))
        assert (await read_response(reader))[0] == 404
        writer.close()

    plugin = with_plugin(tmp_path, body)
    assert plugin.stats.requests == 6 and plugin.stats.refused == 3
    assert not (tmp_path / "p.sock").exists()  # removed on close


def test_chunked_bodies_are_read(tmp_path: Path) -> None:
    async def body(plugin: AuthZPlugin, sock: Path) -> None:
        reader, writer = await asyncio.open_unix_connection(str(sock))
        half = len(PULL_EVIL) // 2
        chunks = b"".join(
            f"{len(part):x}\r\n".encode() + part + b"\r\n"
            for part in (PULL_EVIL[:half], PULL_EVIL[half:])
        )
        writer.write(
            b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunks
            + b"0\r\n\r\n"
        )
        _, answer = await read_response(reader)
        assert answer["Allow"] is False
        writer.close()

    with_plugin(tmp_path, body)


def test_hostile_clients_do_not_stop_the_plugin(tmp_path: Path) -> None:
    async def body(plugin: AuthZPlugin, sock: Path) -> None:
        attacks = [
            b"GARBAGE\r\n\r\n",
            b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
            b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort",
            b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nX: " + b"a" * 100_000 + b"\r\n\r\n",
            http("/AuthZPlugin.AuthZReq", b"\x00\xff{{{"),
        ]
        for attack in attacks:
            reader, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(attack)
            writer.write_eof()
            await reader.read()  # an answer or a close, never a hang
            writer.close()
        # Too large to check: refused, not read.
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n")
        _, answer = await read_response(reader)
        assert answer["Allow"] is False
        writer.close()
        # Still serving.
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(http("/AuthZPlugin.AuthZReq", PULL_OK))
        assert await read_response(reader) == (200, {"Allow": True})
        writer.close()

    with_plugin(tmp_path, body)


def test_bodies_are_never_logged(tmp_path: Path, caplog: object) -> None:
    import logging

    secret = (
        b'{"RequestMethod":"POST","RequestUri":"/v1.41/containers/create",'
        b'"RequestBody":"eyJJbWFnZSI6ImV2aWwuZXhhbXBsZS9zZWNyZXQtdG9rZW4ifQ=="}'
    )

    async def body(plugin: AuthZPlugin, sock: Path) -> None:
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(http("/AuthZPlugin.AuthZReq", secret))
        await read_response(reader)
        writer.close()

    with caplog.at_level(logging.DEBUG):  # type: ignore[attr-defined]
        with_plugin(tmp_path, body)
    logged = caplog.text  # type: ignore[attr-defined]
    assert "eyJJbWFnZSI6" not in logged
    assert "ERROR" not in logged
    assert "refused POST /containers/create" in logged


def test_pipelined_and_byte_by_byte_requests(tmp_path: Path) -> None:
    async def body(plugin: AuthZPlugin, sock: Path) -> None:
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(
            http("/AuthZPlugin.AuthZReq", PULL_OK) + http("/AuthZPlugin.AuthZReq", PULL_EVIL)
        )
        assert (await read_response(reader))[1] == {"Allow": True}
        assert (await read_response(reader))[1]["Allow"] is False
        for byte in http("/AuthZPlugin.AuthZReq", PULL_EVIL):
            writer.write(bytes([byte]))
            await writer.drain()
        assert (await read_response(reader))[1]["Allow"] is False
        writer.close()

    with_plugin(tmp_path, body)


def test_huge_requests_are_answered_with_bounded_work_and_others_keep_their_turn(
    tmp_path: Path,
) -> None:
    from tests.agent.test_authz import CountingGuard

    counting = CountingGuard()
    plugin = AuthZPlugin(counting, tmp_path / "p.sock")
    images = "&".join(f"fromImage=ok.example/x{i}" for i in range(2500))
    tags = "&".join(f"tag=t{i}" for i in range(2500))
    cache = ",".join(['"allowed.registry.test:5000/c"'] * 2000)
    huge = [
        json.dumps(
            {
                "RequestMethod": "POST",
                "RequestUri": f"/v1.41/images/create?{images}&{tags}",
                "RequestHeaders": {"Content-Length": "0"},
            }
        ).encode(),
        json.dumps({"RequestUri": f"/v1.41/build?cachefrom=[{cache}]"}).encode(),
    ]
    small = PULL_OK.replace(b"ok.example", b"allowed.registry.test:5000")

    async def main() -> None:
        await plugin.start()
        try:
            connections = [
                await asyncio.open_unix_connection(str(plugin.socket_path)) for _ in range(3)
            ]
            for (_, writer), data in zip(connections, [*huge, small], strict=True):
                writer.write(http("/AuthZPlugin.AuthZReq", data))
            answers = [await read_response(reader) for reader, _ in connections]
            for _, writer in connections:
                writer.close()
        finally:
            await plugin.close()
        assert [answer["Allow"] for _, answer in answers] == [False, False, True]
        assert "fromImage 2500 times" in str(answers[0][1]["Msg"])
        assert "more than 64 images or hosts" in str(answers[1][1]["Msg"])
        assert counting.asked == 64 + 1  # the bound for the list, one for the small pull

    asyncio.run(main())


def chunked(size_line: bytes, data: bytes) -> bytes:
    return size_line + b"\r\n" + data + b"\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    ("head", "body"),
    [
        # A chunk size is hex digits only: Python's int("0x3", 16) is 3, HTTP's is an error.
        (b"Transfer-Encoding: chunked\r\n", chunked(b"0x3", b"abc")),
        (b"Transfer-Encoding: chunked\r\n", chunked(b"+3", b"abc")),
        (b"Transfer-Encoding: chunked\r\n", chunked(b" 3", b"abc")),
        (b"Transfer-Encoding: chunked\r\n", chunked(b"3", b"abcX")),  # no CRLF after the data
        # A length is digits only: Python's int("1_0") is 10.
        (b"Content-Length: 1_0\r\n", b"0123456789"),
        (b"Content-Length: +10\r\n", b"0123456789"),
        (b"Content-Length: 10\r\nContent-Length: 11\r\n", b"0123456789a"),
        # Only "chunked" is chunked; "notchunked" is no coding the plugin reads.
        (b"Transfer-Encoding: notchunked\r\n", chunked(b"3", b"abc")),
        (b"Transfer-Encoding: gzip, chunked\r\n", chunked(b"3", b"abc")),
        (b"Transfer-Encoding: chunked\r\nContent-Length: 8\r\n", chunked(b"3", b"abc")),
    ],
)
def test_framing_two_parsers_could_read_differently_is_a_bad_request(
    tmp_path: Path, head: bytes, body: bytes
) -> None:
    async def check(plugin: AuthZPlugin, sock: Path) -> None:
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(
            b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nHost: plugin\r\n" + head + b"\r\n" + body
        )
        status, _ = await read_response(reader)
        assert status == 400
        assert await reader.read() == b""  # and the connection ends
        writer.close()

    with_plugin(tmp_path, check)
