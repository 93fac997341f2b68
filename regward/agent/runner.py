"""`regward agent run`: the AuthZ plugin, policy sync and the egress proxy in one process.

    AgentOptions(authz_socket=..., proxy_listen=("127.0.0.1", 3128) | None, policy_file=None)
    asyncio.run(run_agent(options))          # until SIGTERM or SIGINT, then a clean shutdown

The Docker Engine is checked at start and every minute (`regward.agent.protection`): whether it uses
the AuthZ plugin and the egress proxy. A change is checked in at once, so owners see a dockerd
restarted without them; until an engine answers, it is asked again sooner (1 s doubling to 60 s),
because at boot the agent starts before dockerd.

Sign-in changes made while the agent runs (`regward login`, `regward logout`, a new
registry.json, an edited policy file) are picked up within about a second: a watcher compares
the files' stamps and, once a change is complete (`regward.agent.watch`: never a half-written
file), rebuilds what is enforced, so a logout applies at once, as Docker's forced logout does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regward.agent import protection
from regward.agent.authz.images import ImageOrigins
from regward.agent.authz.plugin import AuthZPlugin
from regward.agent.containers_policy import ContainersPolicy
from regward.agent.guard import Enforcement, Guard
from regward.agent.state import AgentState, write_private
from regward.agent.sync import Syncer
from regward.agent.transparent import TransparentSettings
from regward.agent.watch import WATCH_INTERVAL, SettledFiles, Stamps
from regward.defaults import AUTHZ_SOCKET, LONG_POLL_SECONDS, PROXY_LISTEN, PROXY_PORT
from regward.errors import ConfigError, RegwardError
from regward.policy.address import join_host_port

if TYPE_CHECKING:
    from regward.agent.transparent.service import Transparent

log = logging.getLogger("regward.agent")

DEFAULT_AUTHZ_SOCKET = Path(AUTHZ_SOCKET)
DEFAULT_PROXY_LISTEN = PROXY_LISTEN
ENGINE_INTERVAL = 60.0
ENGINE_FIRST_RETRY = 1.0


@dataclass(frozen=True)
class AgentOptions:
    authz_socket: Path | None = DEFAULT_AUTHZ_SOCKET
    proxy_listen: tuple[str, int] | None = ("127.0.0.1", PROXY_PORT)
    policy_file: Path | None = None
    state_dir: Path | None = None
    registry_json: Path | None = None
    long_poll: int = LONG_POLL_SECONDS
    docker_socket: Path = protection.DEFAULT_DOCKER_SOCKET  # whose /info tells if it is protected
    metrics_listen: tuple[str, int] | None = None  # Prometheus metrics, off by default
    transparent: TransparentSettings | None = None  # loopback (the CLI default), containers
    containers_policy: Path | None = None  # the containers-policy.json(5) file kept in step
    proxy_workers: int = 1  # processes of the egress proxy, and of the transparent listener
    # (the command line: one per core)


def parse_listen(text: str, flag: str = "--proxy-listen") -> tuple[str, int] | None:
    """`HOST:PORT`, `[V6]:PORT` or `off` (None), read by the proxy's one `parse_listen`;
    raise ConfigError naming the flag and value otherwise."""
    if text.strip().lower() == "off":
        return None
    from regward.agent.proxy.settings import parse_listen as parse_address

    try:
        return parse_address(text)
    except ConfigError as error:
        raise ConfigError(f"{flag}: {error}, or off to turn it off") from None


def agent_id(state: AgentState) -> str:
    path = state.agent_id_path
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = str(uuid.uuid4())
        write_private(path, value.encode())
        return value


async def start_proxy(
    guard: Guard, host: str, port: int, mark: int | None = None, workers: int = 1
) -> Any:
    """Start the egress proxy (regward.agent.proxy, its own package) on host:port in `workers`
    processes; `mark` tags its upstream sockets so the transparent rules let them pass. A new
    revision or a logout also ends refused open tunnels."""
    try:
        from regward.agent.proxy import ProxySettings
        from regward.agent.proxy.workers import start_proxy as start
    except ImportError as error:
        raise ConfigError(
            f"the egress proxy cannot start ({error}); run with --proxy-listen off"
        ) from error
    return await start(ProxySettings(host=host, port=port, mark=mark), guard, workers)


class Agent:
    def __init__(self, options: AgentOptions) -> None:
        self.options = options
        self.state = AgentState(options.state_dir, options.registry_json)
        watched = [self.state.credentials_path, self.state.registry_json]
        # Stamped before the first read, so an edit made while the agent starts is seen.
        self._files = SettledFiles([*watched, *filter(None, [options.policy_file])])
        self.guard = Guard(self.state.enforcement(options.policy_file))
        self.plugin = (
            AuthZPlugin(self.guard, options.authz_socket, ImageOrigins(options.docker_socket))
            if options.authz_socket
            else None
        )
        self.containers = (
            ContainersPolicy(options.containers_policy, self.state.directory)
            if options.containers_policy
            else None
        )
        self.syncer: Syncer | None = None
        self._sync_tasks: list[asyncio.Task[None]] = []
        self._proxy: Any = None
        self._transparent: Transparent | None = None
        self.engine: protection.EngineCheck | None = None  # None until the first check
        self._engine_checked: float | None = None
        self.started = time.time()
        self.ready = asyncio.Event()  # set once the plugin, the proxy and the sync are up
        self.reloads = 0  # changes of the watched files handled so far
        self.metrics_address: tuple[str, int] | None = None  # once --metrics-listen serves

    async def run(self, stop: asyncio.Event) -> None:
        metrics = self._serve_metrics()
        try:
            await self._run(stop)
        finally:
            if metrics is not None:
                metrics.close()

    def _serve_metrics(self) -> Any:
        if self.options.metrics_listen is None:
            return None
        from regward.agent.metrics import AgentMetrics, Sources

        metrics = AgentMetrics(
            Sources(
                self.guard,
                last_sync=lambda: self.syncer.status.last_sync if self.syncer else None,
                proxy=lambda: self._proxy,
            )
        )
        self.metrics_address = metrics.serve(*self.options.metrics_listen)
        log.info("metrics on http://%s:%d/metrics", *self.metrics_address)
        return metrics

    async def _run(self, stop: asyncio.Event) -> None:
        if self.plugin is not None:
            try:
                await self.plugin.start()
            except OSError as error:
                raise ConfigError(
                    f"the AuthZ plugin cannot listen on {self.plugin.socket_path}: "
                    f"{error.strerror}; run as root or pick another --authz-socket"
                ) from error
            log.info("AuthZ plugin listening on %s", self.plugin.socket_path)
        if self.options.proxy_listen is not None:
            host, port = self.options.proxy_listen
            mark = self.options.transparent.mark if self.options.transparent else None
            workers = self.options.proxy_workers
            self._proxy = await start_proxy(self.guard, host, port, mark, workers)
        if self.options.transparent is not None:
            from regward.agent.transparent.service import Transparent

            self._transparent = Transparent(
                self.options.transparent, self.guard, workers=self.options.proxy_workers
            )
            await self._transparent.start()
        if self.containers is not None:
            self._start_containers_policy(self.containers)
        self._start_sync()
        self.write_status()
        self.ready.set()
        watchers = [
            asyncio.create_task(self._watch(stop), name="regward-agent-watch"),
            asyncio.create_task(self._watch_engine(), name="regward-agent-engine"),
        ]
        try:
            await stop.wait()
        finally:
            for watcher in watchers:
                watcher.cancel()
            for watcher in watchers:
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await self._stop_sync()
            if self._transparent is not None:
                await self._transparent.close()  # rules first: nothing redirected to a closed port
            if self._proxy is not None:
                await self._proxy.close()
            if self.plugin is not None:
                await self.plugin.close()
            self.write_status(running=False)
            log.info("agent stopped")

    def _start_containers_policy(self, containers: ContainersPolicy) -> None:
        """Write the containers policy now and after every change of what is enforced."""
        try:
            containers.update(self.guard.enforcement)
        except OSError as error:
            raise ConfigError(
                f"cannot write the containers policy {containers.path}: {error.strerror}; "
                "run as root or pick another --containers-policy"
            ) from error
        self.guard.watch(lambda: containers.update(self.guard.enforcement))
        log.info("containers policy kept in step at %s", containers.path)

    def _start_sync(self) -> None:
        if self.options.policy_file is not None:
            return
        try:
            credentials = self.state.credentials()
        except RegwardError as error:
            log.error("policy sync is off: %s", error)
            return
        if credentials is None:
            return
        self.syncer = Syncer(
            self.state,
            self.guard,
            credentials,
            agent_id(self.state),
            wait=self.options.long_poll,
            on_change=self.write_status,
            engine=self.engine_report,
            # The transparent rules skip marked sockets: the agent's way to its server.
            mark=self.options.transparent.mark if self.options.transparent else None,
        )
        self._sync_tasks = [
            asyncio.create_task(self.syncer.run(), name="regward-agent-sync"),
            asyncio.create_task(self.syncer.report_denials(), name="regward-agent-report"),
        ]

    async def _stop_sync(self) -> None:
        for task in self._sync_tasks:
            task.cancel()
        for task in self._sync_tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._sync_tasks = []
        if self.syncer is not None:
            await self.syncer.aclose()
            self.syncer = None

    async def _watch(self, stop: asyncio.Event) -> None:
        """Rebuild what is enforced when the sign-in, registry.json or policy file changes."""
        while not stop.is_set():
            await asyncio.sleep(WATCH_INTERVAL)
            stamps = self._files.changed()
            if stamps is None:
                continue
            try:
                await self._reload(stamps)
            except Exception:  # the watcher must outlive any surprise; enforcement is unchanged
                log.exception("reloading the agent's settings failed")
            self.reloads += 1

    def engine_report(self) -> protection.EngineReport | None:
        """What the agent checks in about the Docker Engine (None: no engine answered yet)."""
        return self.engine.report() if self.engine else None

    async def check_engine(self) -> protection.EngineCheck:
        """Look at the Docker Engine now; check in at once when what it says changed."""
        checked = await protection.check(
            self.options.docker_socket,
            protection.plugin_names(self.options.authz_socket),
            self.options.proxy_listen,
        )
        first, reported = self.engine is None, self.engine_report()
        self.engine, self._engine_checked = checked, time.time()
        self.write_status()
        if first or checked.report() != reported:
            found = checked.protection
            if found is not None and not found.protected:
                log.warning("Docker Engine: %s", checked.words())
            else:
                log.info("Docker Engine: %s", checked.words())
        if checked.report() != reported and self.syncer is not None:
            await self.syncer.check_in()
        return checked

    async def _watch_engine(self) -> None:
        delay = ENGINE_FIRST_RETRY
        while True:
            try:
                checked = await self.check_engine()
            except Exception:  # the watcher must outlive any surprise
                log.exception("checking the Docker Engine failed")
                checked = None
            if checked is not None and checked.protection is not None:
                delay = ENGINE_INTERVAL
            await asyncio.sleep(delay)
            delay = min(ENGINE_INTERVAL, delay * 2)

    async def _reload(self, stamps: Stamps) -> None:
        try:
            enforcement = self.state.enforcement(self.options.policy_file)
        except RegwardError as error:
            # A broken policy or sign-in file keeps what is enforced now, never opens up;
            # registry.json still applies.
            log.error("cannot reload the agent's settings (%s); keeping the current", error)
            enforcement = dataclasses.replace(
                self.guard.enforcement, required_orgs=self.state.required_orgs()
            )
        if not self._files.applied(stamps):
            log.info("sign-in or settings written again while being read; reading them again")
            return
        log.info("sign-in or settings changed; now enforcing: %s", describe(enforcement))
        await self._stop_sync()
        self.guard.update(enforcement)
        gc.freeze()
        self._start_sync()
        self.write_status()

    def write_status(self, running: bool = True) -> None:
        enforcement = self.guard.enforcement
        status: dict[str, Any] = {
            "pid": os.getpid(),
            "running": running,
            "started": self.started,
            "updated": time.time(),
            "mode": enforcement.mode,
            "organization": enforcement.organization,
            "revision": enforcement.policy.revision if enforcement.policy else None,
            "blocked": enforcement.blocked_reason,
            "authz_socket": str(self.plugin.socket_path) if self.plugin else None,
            "proxy_listen": (
                join_host_port(*self.options.proxy_listen) if self.options.proxy_listen else None
            ),
            "policy_file": str(self.options.policy_file) if self.options.policy_file else None,
            "denials_queued": len(self.guard.denials),
            "denials_dropped": self.guard.denials.dropped,
        }
        if self._transparent is not None:
            status["transparent"] = self._transparent.status()
        if self.engine is not None:
            status["docker_engine"] = {**self.engine.to_dict(), "checked": self._engine_checked}
        if self.syncer is not None:
            status["sync"] = self.syncer.status.to_dict()
        try:
            self.state.write_status(status)
        except (OSError, ConfigError) as error:  # a read-only or full disk: keep enforcing
            log.warning("cannot write %s: %s", self.state.status_path, error)


def describe(enforcement: Enforcement) -> str:
    blocked = enforcement.blocked_reason
    if blocked:
        return f"nothing (fail closed): {blocked}"
    if enforcement.policy is None:
        return "nothing (no organization manages this machine)"
    return (
        f"revision {enforcement.policy.revision} of '{enforcement.policy.organization}'"
        f" from {enforcement.source}"
    )


async def run_agent(options: AgentOptions) -> None:
    """Run until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    agent = Agent(options)
    # The policy's lookup tables live as long as the process: keep the collector off them, so a
    # large policy never makes a decision wait for a full collection.
    gc.freeze()
    log.info("enforcing %s", describe(agent.guard.enforcement))
    await agent.run(stop)
