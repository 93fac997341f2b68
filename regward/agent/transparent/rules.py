"""The agent's nftables table: which new TCP connections go to the transparent listener.

    text = ruleset(settings, policy_ports(policy))    # pure: the nft script, replace included
    await Nft().apply(text)                            # one transaction: old rules out, new in
    await Nft().present()                              # is the table there?
    await Nft().remove()                               # clean exit

The table (`inet regward`) has up to two chains:

    prerouting   (--transparent) from the container interfaces (`docker0`, `br-*`), TCP to the
                 taken ports: redirected to the listener (the address of the interface they
                 came in on)
    output       (by default) this machine's own connections to loopback (127.0.0.0/8, ::1),
                 same ports, except the agent's (marked `settings.mark`): dockerd's pulls from a
                 registry on a loopback address, which Go never sends to a proxy; with
                 `settings.host` (--transparent-host) its connections to any address: containers
                 on the host's network and clients that ignore the proxy variables

The taken ports are the settings' ports plus every port an entry of the policy names, or every
port (`all`) but the listener's and the agent's proxy's. The script deletes and re-creates the
table in one `nft -f` transaction, so a change of policy never leaves a moment without rules.
"""

from __future__ import annotations

import asyncio
import shutil

from regward.errors import ConfigError
from regward.policy import Policy

from .settings import TransparentSettings

TABLE = "regward"
FAMILY = "inet"


def policy_ports(policy: Policy | None) -> frozenset[int]:
    """Every port an entry of `policy` (its address or an extra host) names."""
    if policy is None:
        return frozenset()
    ports = set()
    for entry in policy.registries:
        for address in (entry.address, *entry.extra_hosts):
            if address.port is not None:
                ports.add(address.port)
    return frozenset(ports)


def taken_ports(settings: TransparentSettings, extra: frozenset[int]) -> frozenset[int]:
    """The ports redirected: ALL_PORTS (empty) for `all`, else settings' plus `extra`."""
    if settings.all_ports:
        return settings.ports
    return (settings.ports | extra) - {settings.listen_port}


def ruleset(settings: TransparentSettings, extra_ports: frozenset[int] = frozenset()) -> str:
    """The nft script that replaces the agent's table with one for `settings`."""
    ports = taken_ports(settings, extra_ports)
    skip = sorted(settings.skip_ports | {settings.listen_port})
    if settings.all_ports:
        match = f"tcp dport != {{ {', '.join(map(str, skip))} }}"
    else:
        match = f"tcp dport {{ {', '.join(map(str, sorted(ports)))} }}"
    redirect = f"{match} redirect to :{settings.listen_port}"
    lines = [
        f"table {FAMILY} {TABLE}",  # so that the delete below never fails
        f"delete table {FAMILY} {TABLE}",
        f"table {FAMILY} {TABLE} {{",
    ]
    if settings.interfaces:
        lines += [
            "  chain prerouting {",
            "    type nat hook prerouting priority dstnat; policy accept;",
        ]
        lines += [f'    iifname "{name}" {redirect}' for name in settings.interfaces]
        lines += ["  }"]
    if settings.loopback or settings.host:
        lines += [
            "  chain output {",
            "    type nat hook output priority -100; policy accept;",
            f"    meta mark {settings.mark:#x} return",
        ]
        if settings.host:
            lines += [f"    {redirect}"]
        else:
            lines += [f"    ip daddr 127.0.0.0/8 {redirect}", f"    ip6 daddr ::1 {redirect}"]
        lines += ["  }"]
    lines += ["}"]
    return "\n".join(lines) + "\n"


class Nft:
    """The `nft` command, run for the agent's table only."""

    def __init__(self, binary: str = "nft") -> None:
        self.binary = binary

    def available(self) -> bool:
        return shutil.which(self.binary) is not None

    async def apply(self, script: str) -> None:
        """Run `script` as one transaction; ConfigError with nft's words when it fails."""
        code, _, error = await self._run(["-f", "-"], script)
        if code != 0:
            raise ConfigError(
                f"nftables refused the transparent rules: {error.strip()}; check that the "
                "kernel has nf_tables with nat (modprobe nft_nat nft_redirect) and that the "
                "agent runs as root"
            )

    async def present(self) -> bool:
        code, _, _ = await self._run(["list", "table", FAMILY, TABLE])
        return code == 0

    async def remove(self) -> bool:
        """Delete the table; False when there was none."""
        code, _, _ = await self._run(["delete", "table", FAMILY, TABLE])
        return code == 0

    async def _run(self, args: list[str], stdin: str | None = None) -> tuple[int, str, str]:
        if not self.available():
            raise ConfigError(
                f"`{self.binary}` is not installed: transparent enforcement needs nftables "
                "(apt-get install nftables)"
            )
        process = await asyncio.create_subprocess_exec(
            self.binary,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate(stdin.encode() if stdin is not None else None)
        return process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
