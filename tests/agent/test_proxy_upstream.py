"""Dialing registries: concurrent connections to one name share one resolver lookup."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace

import pytest

from regward.agent.http1 import ProtocolError
from regward.agent.proxy.protocol import Target
from regward.agent.proxy.settings import ProxySettings
from regward.agent.proxy.upstream import Addresses, Dialer
from tests.agent.test_proxy import Upstream
from tests.harness.wait import until


def test_a_burst_of_connections_to_one_name_costs_one_lookup() -> None:
    upstream = Upstream()  # `localhost` comes from the hosts file, never DNS

    async def main() -> None:
        dialer = Dialer(ProxySettings(port=0))
        target = Target("localhost", upstream.port)
        socks = await asyncio.gather(*(dialer.connect(target) for _ in range(50)))
        assert dialer.lookups == 1
        for sock in socks:
            assert sock.getpeername()[1] == upstream.port
            sock.close()
        assert dialer._resolving == {}  # nothing left in flight

    try:
        asyncio.run(main())
    finally:
        upstream.close()


class HeldDialer(Dialer):
    """A dialer whose lookups wait for `release`, so a test can act while one is in flight."""

    def __init__(self) -> None:
        super().__init__(ProxySettings(port=0))
        self.release = asyncio.Event()

    async def _lookup(self, target: Target) -> Addresses:
        await self.release.wait()
        return await super()._lookup(target)


@pytest.mark.parametrize("cancelled", [1, 3])
def test_a_cancelled_connection_leaves_the_lookup_to_the_others(cancelled: int) -> None:
    upstream = Upstream()

    async def main() -> None:
        dialer = HeldDialer()
        target = Target("localhost", upstream.port)
        tasks = [asyncio.create_task(dialer.connect(target)) for _ in range(4)]
        await until(lambda: dialer._resolving, 10, "the one lookup to start")
        for task in tasks[:cancelled]:
            task.cancel()
        dialer.release.set()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(result, asyncio.CancelledError) for result in done[:cancelled])
        for sock in done[cancelled:]:
            assert not isinstance(sock, BaseException)
            sock.close()
        assert dialer.lookups == 1

    try:
        asyncio.run(main())
    finally:
        upstream.close()


def test_a_registry_that_never_answers_is_504_after_the_connect_timeout() -> None:
    """A listener whose accept queue is full drops new SYNs: the connect hangs until the
    dialer's deadline; so does a lookup that never ends (the deadline covers both)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued: list[socket.socket] = []

    async def main() -> None:
        dialer = Dialer(replace(ProxySettings(port=0), connect_timeout=0.3))
        for _ in range(8):  # fill the accept queue (never accepted)
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            queued.append(sock)
        with pytest.raises(ProtocolError) as refused:
            await dialer.connect(Target("127.0.0.1", port))
        assert refused.value.status == 504 and "in time" in refused.value.message
        held = HeldDialer()  # its lookup waits for a release that never comes
        held.settings = replace(held.settings, connect_timeout=0.3)
        with pytest.raises(ProtocolError) as unresolved:
            await held.connect(Target("localhost", port))
        assert unresolved.value.status == 504

    try:
        asyncio.run(main())
    finally:
        for sock in queued:
            sock.close()
        listener.close()


def test_a_registry_slow_to_answer_the_handshake_is_waited_for() -> None:
    """The handshake still under way after the connect (the registry's accept queue full, so
    its SYN is dropped and sent again): the dialer waits for it rather than failing, and the
    socket it returns is connected."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued: list[socket.socket] = []

    async def main() -> None:
        dialer = Dialer(replace(ProxySettings(port=0), connect_timeout=20))
        for _ in range(8):  # fill the accept queue
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            queued.append(sock)
        dialing = asyncio.ensure_future(dialer.connect(Target("127.0.0.1", port)))
        await asyncio.sleep(0)  # one turn: its connect went out and found the queue full
        assert not dialing.done()
        listener.setblocking(False)

        async def make_room() -> None:  # keep accepting: the queued sockets' SYNs come again
            while True:  # too, and the dialer's must find room among them at some retry
                (await asyncio.get_running_loop().sock_accept(listener))[0].close()

        room = asyncio.ensure_future(make_room())
        try:
            sock = await dialing
        finally:
            room.cancel()
        assert sock.getpeername() == ("127.0.0.1", port)
        sock.close()

    try:
        asyncio.run(main())
    finally:
        for sock in queued:
            sock.close()
        listener.close()
