"""`regward agent proxy [--policy FILE] [--listen HOST:PORT] [--workers N] [--loop uvloop|asyncio]`:
the proxy alone, on N event loops sharing the address, this process's and N-1 worker
processes' (default: one per core; `regward.agent.proxy.workers`), each a uvloop loop unless
`--loop asyncio` (`regward.agent.proxy.loop`).

Enforces the same policy `regward agent run` would (the policy file, else the signed-in
organization's verified cache), re-reading it within a second or two of a change on disk, once
the change is complete (`regward.agent.watch`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regward import logs
from regward.agent.watch import WATCH_INTERVAL, SettledFiles
from regward.policy import Decision, Policy, evaluate_host

from .loop import EVENT_LOOPS, run_on, settle_collector
from .settings import DEFAULT_LISTEN, HostDecider, ProxySettings
from .workers import DEFAULT_WORKERS, parse_workers, start_proxy

if TYPE_CHECKING:
    from regward.agent.guard import Enforcement, Guard


def decider_for_policy(policy: Policy) -> HostDecider:
    """The host decision of one fixed policy (tests, standalone use)."""

    def decide(host: str, port: int) -> Decision:
        return evaluate_host(policy, host, port)

    return decide


def add_proxy_command(agent_commands: argparse._SubParsersAction[Any]) -> None:
    """Add `proxy` to the `regward agent` subcommands."""
    parser = agent_commands.add_parser(
        "proxy",
        help="run only the registry egress proxy",
        description="Run the registry egress proxy alone: CONNECT and plain-HTTP requests "
        "reach only registries the policy allows.",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="enforce this policy file (JSON or YAML) instead of the signed-in organization's",
    )
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address to listen on (default {DEFAULT_LISTEN}; keep it on loopback)",
    )
    parser.add_argument(
        "--workers",
        type=parse_workers,
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"processes sharing the address (default {DEFAULT_WORKERS}, the cores)",
    )
    parser.add_argument(
        "--loop",
        choices=EVENT_LOOPS,
        default=EVENT_LOOPS[0],
        help=f"the event loop every process runs (default {EVENT_LOOPS[0]})",
    )
    parser.set_defaults(run=run_proxy_command)


def run_proxy_command(args: argparse.Namespace) -> int:
    from regward.agent.guard import Guard
    from regward.agent.state import AgentState

    settings = dataclasses.replace(ProxySettings.from_listen(args.listen), event_loop=args.loop)
    state = AgentState()
    policy_file: Path | None = args.policy
    watched = [policy_file] if policy_file else [state.credentials_path, state.policy_path]
    files = SettledFiles(watched)  # before the first read: an edit during start-up is seen
    guard = Guard(state.enforcement(policy_file))
    logs.configure()  # REGWARD_LOG_FORMAT=json: JSON lines
    if guard.enforcement.mode == "unmanaged":
        logging.getLogger("regward.agent.proxy").warning(
            "no organization manages this machine (not signed in, no --policy): the proxy "
            "allows every host until you run `regward login` or pass --policy FILE"
        )

    def read() -> Enforcement:
        return state.enforcement(policy_file)

    run_on(settings.event_loop, _run(settings, guard, files, read, args.workers))
    return 0


async def _run(
    settings: ProxySettings,
    guard: Guard,
    files: SettledFiles,
    read: Callable[[], Enforcement],
    workers: int,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    proxy = await start_proxy(settings, guard, workers)  # a reload also ends refused tunnels
    settle_collector()
    watcher = asyncio.create_task(_watch(files, read, guard), name="proxy-policy-watcher")
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await proxy.close()


async def _watch(files: SettledFiles, read: Callable[[], Enforcement], guard: Guard) -> None:
    """Enforce what `read` returns once one of `files` changed and the change is complete."""
    log = logging.getLogger("regward.agent.proxy")
    while True:
        await asyncio.sleep(WATCH_INTERVAL)
        stamps = files.changed()
        if stamps is None:
            continue
        try:
            enforcement = read()
        except Exception as error:  # keep the last good policy; say why
            files.applied(stamps)  # this version is broken; wait for the next change
            log.warning("policy not reloaded, keeping the previous one: %s", error)
            continue
        if files.applied(stamps):
            guard.update(enforcement)
            log.info("policy reloaded")
