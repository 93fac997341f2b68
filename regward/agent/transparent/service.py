"""The transparent listener and the nftables rules that feed it, kept in step.

    async with Transparent(settings, guard, workers=2) as transparent:
        transparent.status()      {"rules": "in place", "ports": [80, 443, 5000], ...}

With `workers` above 1 the listener's sockets are served by that many event loops, this
process's and `workers - 1` worker processes (`regward.agent.proxy.workers`, as the egress
proxy's), so every core carries container connections; a new policy reaches every one of them
before any decides under it.

Order matters, both ways: the listener is up before the rules send it anything, and the rules
are gone before it stops (a redirect to a closed port would refuse every container's
connection). The rules are rewritten (one nft transaction) when the enforced policy names
other ports, and put back within `CHECK_INTERVAL` seconds when someone deletes the table
(`nft flush ruleset`, a firewall reload). Container networks need no rewrite: the rules match
interface names (`br-*`) as packets arrive, so a network Docker creates later is covered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from regward.errors import ConfigError

from .listener import TransparentListener
from .rules import Nft, policy_ports, ruleset, taken_ports
from .settings import TransparentSettings, describe_taken

if TYPE_CHECKING:
    from regward.agent.guard import Guard
    from regward.agent.proxy.workers import ProxyWorkers

log = logging.getLogger("regward.agent.transparent")

CHECK_INTERVAL = 2.0


class Transparent:
    def __init__(
        self,
        settings: TransparentSettings,
        guard: Guard,
        nft: Nft | None = None,
        workers: int = 1,
    ) -> None:
        self.settings = settings
        self.guard = guard
        self.nft = nft or Nft()
        self.workers = workers
        self.listener: TransparentListener | ProxyWorkers
        if workers > 1:
            from regward.agent.proxy.workers import ProxyWorkers

            self.listener = ProxyWorkers(settings, guard, workers)
        else:
            self.listener = TransparentListener(settings, guard)
        self._applied: str | None = None
        self._in_place = False
        self._changed = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        self.applied_count = 0  # how many times the rules were written (tests, status)

    def _ports(self) -> frozenset[int]:
        return taken_ports(self.settings, policy_ports(self.guard.enforcement.policy))

    async def start(self) -> None:
        if not self.nft.available():
            raise ConfigError(
                "the agent needs nftables to take connections to loopback registries (and, "
                "with --transparent, containers'): install it (apt-get install nftables), or "
                "run with --loopback off and without --transparent (builds can then pull from "
                "registries on loopback addresses unchecked)"
            )
        await self.listener.start()
        try:
            await self._apply()
        except BaseException:
            await self.listener.close()
            raise
        self.guard.watch(self._policy_changed)
        self._keeper = asyncio.get_running_loop().create_task(
            self._keep(), name="transparent-rules-keeper"
        )

    def _policy_changed(self) -> None:
        self.listener.recheck()
        self._changed.set()

    async def _apply(self) -> None:
        script = ruleset(self.settings, policy_ports(self.guard.enforcement.policy))
        await self.nft.apply(script)
        self._applied, self._in_place = script, True
        self.applied_count += 1
        settings = self.settings
        taken = describe_taken(settings.interfaces, settings.loopback, self._ports(), settings.host)
        log.info("transparent rules in place: %s", taken)

    async def _keep(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHECK_INTERVAL):
                    await self._changed.wait()
            self._changed.clear()
            try:
                wanted = ruleset(self.settings, policy_ports(self.guard.enforcement.policy))
                present = await self.nft.present()
                if not present:
                    log.warning("the transparent rules were removed by someone; putting them back")
                if not present or wanted != self._applied:
                    await self._apply()
            except Exception as error:  # keep trying; status says the rules are missing
                self._in_place = False
                log.error("transparent rules: %s", error)

    def status(self) -> dict[str, Any]:
        ports = self._ports()
        return {
            "rules": "in place" if self._in_place else "missing",
            "interfaces": list(self.settings.interfaces),
            "loopback": self.settings.loopback,
            "host": self.settings.host,
            "ports": sorted(ports) if ports else "all",
            "listen_port": self.settings.listen_port,
            "connections": self.listener.connections,
            "probed_hosts": self.listener.probes,
            "workers": self.workers,
        }

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        try:
            if await self.nft.remove():
                log.info("transparent rules removed")
        finally:
            self._in_place = False
            await self.listener.close()

    async def __aenter__(self) -> Transparent:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
