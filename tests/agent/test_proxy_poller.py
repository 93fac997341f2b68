"""The relay's own epoll set (`regward.agent.proxy.poller`) on both event loops the proxy
runs: callbacks as the loop's own, one registration per socket, none left behind."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvloop

from regward.agent.proxy.poller import Poller
from regward.agent.proxy.relay import Tunnels

Loop = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Loop:
    return asyncio.run if request.param == "asyncio" else uvloop.run


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair()
    left.setblocking(False)
    right.setblocking(False)
    yield left, right
    left.close()
    right.close()


async def next_call(calls: asyncio.Queue[str]) -> str:
    async with asyncio.timeout(10):
        return await calls.get()


def test_readers_and_writers_are_called_while_ready_and_not_after_removal(
    run: Loop, pair: tuple[socket.socket, socket.socket]
) -> None:
    left, right = pair

    async def main() -> None:
        poller = Poller(asyncio.get_running_loop())
        calls: asyncio.Queue[str] = asyncio.Queue()
        poller.add_writer(left.fileno(), calls.put_nowait, "writable")
        assert await next_call(calls) == "writable"  # an empty socket has room
        poller.remove_writer(left.fileno())
        poller.add_reader(left.fileno(), calls.put_nowait, "readable")
        assert poller.watched == 1
        right.send(b"x")
        assert await next_call(calls) == "readable"
        assert await next_call(calls) == "readable"  # level-triggered: still unread
        left.recv(1)
        poller.remove_reader(left.fileno())
        assert poller.watched == 0
        right.send(b"y")
        await asyncio.sleep(0)  # a turn of the loop, in which nothing may be called
        await asyncio.sleep(0)
        assert calls.empty()
        poller.close()

    run(main())


def test_a_peer_that_ends_wakes_both_a_reader_and_a_writer(
    run: Loop, pair: tuple[socket.socket, socket.socket]
) -> None:
    left, right = pair

    async def main() -> None:
        poller = Poller(asyncio.get_running_loop())
        calls: asyncio.Queue[str] = asyncio.Queue()
        fill = b"x" * 65536
        while True:  # no room left, so only the peer's end makes it writable or readable
            try:
                left.send(fill)
            except BlockingIOError:
                break
        poller.add_writer(left.fileno(), calls.put_nowait, "writer")
        right.close()
        assert await next_call(calls) == "writer"
        poller.remove_writer(left.fileno())
        poller.add_reader(left.fileno(), calls.put_nowait, "reader")
        assert await next_call(calls) == "reader"
        poller.remove_reader(left.fileno())
        poller.close()

    run(main())


def test_a_socket_closed_while_watched_leaves_its_number_usable(run: Loop) -> None:
    async def main() -> None:
        poller = Poller(asyncio.get_running_loop())
        calls: asyncio.Queue[str] = asyncio.Queue()
        first, peer = socket.socketpair()
        number = first.fileno()
        poller.add_reader(number, calls.put_nowait, "old")
        first.close()  # the kernel drops it from the set; the poller still has the number
        peer.close()
        again, other = socket.socketpair()
        try:
            assert number in (again.fileno(), other.fileno())
            reused = again if again.fileno() == number else other
            poller.add_writer(reused.fileno(), calls.put_nowait, "new")
            assert await next_call(calls) == "new"
            poller.remove_reader(number)
            poller.remove_writer(number)
            assert poller.watched == 0
        finally:
            again.close()
            other.close()
            poller.close()

    run(main())


def test_a_number_reused_for_the_same_kind_of_watch_is_watched_again(run: Loop) -> None:
    """A socket closed while watched for reading, its number reused by a new socket watched
    for reading too: the same mask, but a new socket the epoll set does not hold. It must be
    put in, or its reader never runs (a relay that stalls until its client gives up)."""

    async def main() -> None:
        poller = Poller(asyncio.get_running_loop())
        calls: asyncio.Queue[str] = asyncio.Queue()
        first, peer = socket.socketpair()
        number = first.fileno()
        poller.add_reader(number, calls.put_nowait, "old")
        first.close()
        peer.close()
        again, other = socket.socketpair()
        try:
            reused, sender = (again, other) if again.fileno() == number else (other, again)
            assert reused.fileno() == number
            poller.add_reader(number, calls.put_nowait, "new")
            sender.send(b"x")
            assert await next_call(calls) == "new"
            poller.remove_reader(number)
            assert poller.watched == 0
        finally:
            again.close()
            other.close()
            poller.close()

    run(main())


def test_a_failing_callback_is_reported_and_the_others_still_run(
    run: Loop, pair: tuple[socket.socket, socket.socket]
) -> None:
    left, _ = pair
    extra_left, extra_right = socket.socketpair()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        reported: list[BaseException] = []
        loop.set_exception_handler(lambda _, context: reported.append(context["exception"]))
        poller = Poller(loop)
        calls: asyncio.Queue[str] = asyncio.Queue()

        def fail() -> None:
            poller.remove_writer(left.fileno())
            raise RuntimeError("broken callback")

        poller.add_writer(left.fileno(), fail)
        poller.add_writer(extra_left.fileno(), calls.put_nowait, "other")
        assert await next_call(calls) == "other"
        poller.remove_writer(extra_left.fileno())
        assert [str(error) for error in reported] == ["broken callback"]
        poller.close()

    try:
        run(main())
    finally:
        extra_left.close()
        extra_right.close()


def test_a_tunnel_asked_to_wait_after_it_ended_watches_nothing(
    run: Loop, pair: tuple[socket.socket, socket.socket]
) -> None:
    """`Tunnel.readable` after `abort()` (the idle sweep, shutdown) says the tunnel ended at
    once: a watch added then would outlive the tunnel, on a number its owner closes next."""
    client, upstream = pair

    async def main() -> None:
        tunnels = Tunnels()
        try:
            with tunnels.opened(client, upstream) as tunnel:
                tunnel.abort()
                async with asyncio.timeout(10):
                    assert not await tunnel.readable(client)
                assert tunnels.poller.watched == 0
        finally:
            tunnels.close()

    run(main())


def test_a_relay_whose_task_is_cancelled_stops_watching_its_sockets(run: Loop) -> None:
    """A policy change ends a connection by cancelling its task, which cancels the future
    `Tunnel.wait` awaits: `abort()` must still stop both directions. Their watches otherwise
    outlived the sockets, and a later connection given the same numbers had its bytes spliced
    by the dead relay (or its watch removed by it: a stalled pull)."""

    async def main() -> None:
        tunnels = Tunnels()
        client, client_peer = socket.socketpair()
        upstream, upstream_peer = socket.socketpair()
        try:
            for sock in (client, upstream, upstream_peer):
                sock.setblocking(False)

            async def relay() -> None:
                with tunnels.opened(client, upstream) as tunnel:
                    tunnel.up.start()
                    tunnel.down.start()
                    await tunnel.wait()

            loop = asyncio.get_running_loop()
            task = loop.create_task(relay())
            client_peer.send(b"ping")
            async with asyncio.timeout(10):
                assert await loop.sock_recv(upstream_peer, 4) == b"ping"  # relayed: running
            assert tunnels.poller.watched == 2
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert tunnels.poller.watched == 0
            assert not tunnels.open
        finally:
            for sock in (client, client_peer, upstream, upstream_peer):
                sock.close()
            tunnels.close()

    run(main())
