"""Dialing registries: concurrent connections to one name share one resolver lookup."""

from __future__ import annotations

import asyncio

import pytest

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
