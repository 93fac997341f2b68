"""How fast an applied change reaches agents, and what idle long-polls cost the server.

One `regward server run` process on SQLite (the embedded default), its own temporary data
directory, on a free loopback port. This script is the agents: each one keep-alive HTTP/1.1
connection long-polling `GET /api/v1/orgs/bench/policy?wait=...&after=N` through raw asyncio
streams (no HTTP library in the way, so the client is not the bottleneck), each with a token
of its own as real agents have (so no check can be shared between agents). An owner then
applies a change; for each agent we take the time from the apply request returning until that
agent holds the new revision (a response that arrived before the apply answer counts as 0).
Several rounds; p50, p99 and max over every agent and round. The same server process runs this
first with `BENCH_BASELINE_AGENTS` (1,000: the figure earlier versions were measured at), then
with `BENCH_AGENTS` (10,000), so the two figures are measured in the same run.

Before that, on the fresh process: `BENCH_IDLE` (10,000) idle long-polls, and the server's
resident memory (VmRSS) with all of them held.

The long-poll checks its token again when its wait ends (a credential revoked meanwhile gets
401), and an apply ends every wait at once. What that re-check costs is measured on the same
database: one check by itself (a session and a query, as each poll did before it was batched),
and per check when `BENCH_AGENTS` checks are made together (as `FeedAccess` batches them).

The baseline beside these is Docker's documented propagation: Docker Desktop refreshes its
Registry Access policy at start and then about every 24 hours ("changes ... can take up to 24
hours"). Targets: p99 <= 1 s at 10,000 agents; <= 150 MB resident with 10,000 idle polls.

Last, when PostgreSQL can be started here (tests/harness/postgres.py): two server processes on
one PostgreSQL, `BENCH_AGENTS` agents split over both, applies on the first; the time until the
agents on the second hold the revision (LISTEN/NOTIFY across processes).

The file descriptor limit is raised (within the hard limit) for the agents' sockets; every
connection is on loopback, and every phase ends by itself (a deadline per round).
`python bench/propagation.py --profile` instead holds `BENCH_IDLE` polls on a server traced by
tracemalloc (bench/traced_server.py) and prints what each held poll keeps allocated, by line.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness.postgres import PostgresCluster, unavailable_reason
from tests.harness.server import ServerProcess

AGENTS = int(os.environ.get("BENCH_AGENTS", "10000"))
BASELINE_AGENTS = int(os.environ.get("BENCH_BASELINE_AGENTS", "1000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
IDLE = int(os.environ.get("BENCH_IDLE", "10000"))
DOCKER_BASELINE_S = 24 * 3600
ORG = "bench"
PASSWORD = secrets.token_urlsafe(16)
SERVER_CLI = (sys.executable, "-m", "regward.cli", "server")


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, wanted)
    if hard != resource.RLIM_INFINITY and target > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
            return
        except (ValueError, OSError):
            target = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_s(server: ServerProcess) -> float:
    """CPU seconds (user and system) the server process has used: unlike wall-clock latency,
    not stretched by other work on a loaded machine."""
    assert server.process is not None
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(
    base: Path,
    name: str = "server",
    database_url: str | None = None,
    init: bool = True,
    traced: bool = False,
) -> ServerProcess:
    """`regward server run` on its own data directory, initialised first unless `init` is False;
    with `traced`, bench/traced_server.py (tracemalloc and its two routes)."""
    env = {"REGWARD_DATA_DIR": str(base / "data")}
    if database_url:
        env["REGWARD_DATABASE_URL"] = database_url
    server = ServerProcess(env, base / f"{name}.log", module=TRACED if traced else None)
    if init:
        subprocess.run(
            [*SERVER_CLI, "init", "--org", ORG, "--owner", "owner", "--password-stdin"],
            input=(PASSWORD + "\n").encode(),
            env=server.env,
            check=True,
            capture_output=True,
        )
    return server


TRACED = str(Path(__file__).resolve().parent / "traced_server.py")


class Agent(asyncio.Protocol):
    """One simulated agent: a keep-alive connection that long-polls and records arrivals.

    A protocol, not streams: each response is parsed where its bytes arrive (no coroutine per
    header line), so 10,000 of them cost the bench little beside the server. An arrival is
    the time the response to a poll has been read whole."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.revision = 0
        self.arrivals: dict[int, float] = {}
        self.polling = asyncio.Event()
        self._wait = 0
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._ended: asyncio.Future[None] | None = None

    async def run(self, wait: int) -> None:
        loop = asyncio.get_running_loop()
        self._wait = wait
        self._ended = loop.create_future()
        await loop.create_connection(lambda: self, "127.0.0.1", self.port)
        try:
            await self._ended
        finally:
            if self._transport is not None:
                self._transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._send("")

    def _send(self, query: str) -> None:
        assert self._transport is not None
        self._transport.write(
            f"GET /api/v1/orgs/{ORG}/policy{query} HTTP/1.1\r\nHost: bench\r\n"
            f"Authorization: Bearer {self.token}\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            lines = self._buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self._buffer) < end + 4 + length:
                return  # the body is still coming
            body = self._buffer[end + 4 : end + 4 + length]
            self._buffer = self._buffer[end + 4 + length :]
            self._answered(int(lines[0].split()[1]), headers, body)

    def _answered(self, status: int, headers: dict[str, str], body: bytes) -> None:
        received = time.perf_counter()
        if status not in (200, 304):
            self._end(RuntimeError(f"the feed answered {status}: {body[:200]!r}"))
            return
        revision = int(headers["x-regward-revision"])
        if status == 200 and self.polling.is_set():
            self.arrivals[revision] = received
        self.revision = revision
        self.polling.set()
        self._send(f"?wait={self._wait}&after={self.revision}")

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc or RuntimeError("the server closed the connection"))

    def _end(self, error: Exception) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_exception(error)


async def connect(agents: list[Agent], wait: int, batch: int) -> list[asyncio.Task[None]]:
    """Start every agent, `batch` at a time (the listen backlog is finite), until all poll;
    an agent that fails stops the bench with its error."""
    tasks: list[asyncio.Task[None]] = []
    for start in range(0, len(agents), batch):
        group = agents[start : start + batch]
        started = [
            asyncio.create_task(a.run(wait), name=f"agent-{start + i}") for i, a in enumerate(group)
        ]
        tasks += started
        polling: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*(a.polling.wait() for a in group))
        )
        failed: asyncio.Future[None] = asyncio.ensure_future(_first_failure(started))
        done, _ = await asyncio.wait(
            {polling, failed}, timeout=120, return_when=asyncio.FIRST_COMPLETED
        )
        failed.cancel()
        if polling not in done:
            polling.cancel()
            await stop(tasks)
            raise RuntimeError(f"agents {start}..{start + len(group)} did not all start polling")
    return tasks


async def _first_failure(tasks: list[asyncio.Task[None]]) -> None:
    for finished in asyncio.as_completed(tasks):
        await finished  # raises the first agent's error


async def stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def propagation(
    pollers: list[ServerProcess], applier: ServerProcess, tokens: list[str], owner: str
) -> Result:
    """One agent per token, spread over `pollers`; the owner applies through `applier`."""
    agents = [Agent(pollers[i % len(pollers)].port, token) for i, token in enumerate(tokens)]
    tasks = await connect(agents, wait=120, batch=200)
    latencies: list[float] = []
    from_sent: list[float] = []
    cross: list[float] = []
    cpu: list[float] = []
    apply_s: list[float] = []
    early = 0
    headers = {"Authorization": f"Bearer {owner}"}
    try:
        async with httpx.AsyncClient(base_url=applier.url, headers=headers, timeout=60) as client:
            for round_ in range(ROUNDS):
                await asyncio.sleep(2.0)  # let every long-poll reach its wait
                dead = [t for t in tasks if t.done()]
                if dead:
                    await dead[0]  # raises the agent's error
                    raise RuntimeError(f"{len(dead)} agents stopped polling")
                cpu_before = sum(cpu_s(p) for p in pollers)
                answer = await client.post(
                    f"/api/v1/orgs/{ORG}/registry-access/registries",
                    json={"address": f"r{round_}-{len(tokens)}.example.com"},
                )
                answer.raise_for_status()
                sent = time.perf_counter()
                answer = await client.post(f"/api/v1/orgs/{ORG}/registry-access/apply")
                answer.raise_for_status()
                returned = time.perf_counter()
                revision = int(answer.json()["revision"])
                deadline = time.monotonic() + 60
                while not all(revision in a.arrivals for a in agents):
                    if time.monotonic() > deadline:
                        missing = sum(revision not in a.arrivals for a in agents)
                        raise RuntimeError(f"{missing} agents never got revision {revision}")
                    await asyncio.sleep(0.01)
                latencies += [max(0.0, a.arrivals[revision] - returned) for a in agents]
                from_sent += [a.arrivals[revision] - sent for a in agents]
                cross += [a.arrivals[revision] - sent for a in agents if a.port != applier.port]
                early += sum(a.arrivals[revision] < returned for a in agents)
                apply_s.append(returned - sent)
                cpu.append(sum(cpu_s(p) for p in pollers) - cpu_before)
    finally:
        await stop(tasks)
    return Result(len(tokens), latencies, from_sent, apply_s, early, cross, cpu)


@dataclass
class Result:
    agents: int
    latencies: list[float]  # from the apply answer (0 when the agent had it first)
    from_sent: list[float]  # from sending the apply request
    apply_s: list[float]  # the apply request itself
    early: int  # agents that held the revision before the owner's answer arrived
    cross: list[float]  # from sending, agents polling another process than the applier's
    cpu: list[float]  # the server processes' CPU seconds per round (apply to last arrival)

    def figures(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}p50_s": round(percentile(self.latencies, 0.5), 4),
            f"{prefix}p99_s": round(percentile(self.latencies, 0.99), 4),
            f"{prefix}max_s": round(max(self.latencies), 4),
            f"{prefix}from_sent_p99_s": round(percentile(self.from_sent, 0.99), 4),
            f"{prefix}server_cpu_per_apply_s": round(statistics.median(self.cpu), 3),
        }


async def idle_memory(server: ServerProcess, tokens: list[str]) -> tuple[float, float]:
    """The server's RSS before, and at most while, one idle long-poll per token is held."""
    assert server.process is not None
    before = rss_mb(server.process.pid)
    agents = [Agent(server.port, token) for token in tokens]
    tasks = await connect(agents, wait=600, batch=500)
    await asyncio.sleep(3.0)  # every request past authentication and waiting
    held = 0.0
    for _ in range(4):
        held = max(held, rss_mb(server.process.pid))
        await asyncio.sleep(0.5)
    await stop(tasks)
    return before, held


def database_url(server: ServerProcess) -> str:
    """The server's database, as `regward server run` finds it from its environment."""
    from regward.server.settings import Settings

    return Settings.from_env(server.env).database_url


def owner_token(server: ServerProcess) -> str:
    answer = httpx.post(
        f"{server.url}/api/v1/auth/token", json={"username": "owner", "password": PASSWORD}
    )
    answer.raise_for_status()
    token: str = answer.json()["token"]
    return token


def agent_tokens(database_url: str, count: int) -> list[str]:
    """`count` read tokens of the owner, one per simulated agent, made in one transaction."""
    from regward.server.db import Database
    from regward.server.services import auth, tokens

    database = Database(database_url)
    try:
        with database.session(write=True) as session:
            user = auth.get_user(session, "owner")
            assert user is not None
            return [tokens.create(session, user, f"agent-{i}", "read")[1] for i in range(count)]
    finally:
        database.dispose()


def recheck_cost(database_url: str, tokens: list[str]) -> tuple[float, float]:
    """Microseconds per credential check: one at a time with a session each (how every poll
    checked before batching), and per token when all of `tokens` are checked in one batch."""
    from regward.server.db import Database
    from regward.server.services import auth

    database = Database(database_url)
    try:
        sample = tokens[: min(len(tokens), 2000)]
        started = time.perf_counter()
        for token in sample:
            with database.session() as session:
                auth.feed_access(session, token, ORG)
        one = (time.perf_counter() - started) / len(sample)
        started = time.perf_counter()
        with database.session() as session:
            grants = auth.feed_access_many(session, ORG, tokens)
        batched = (time.perf_counter() - started) / len(tokens)
        assert all(grant.error is None for grant in grants.values())
        return one * 1e6, batched * 1e6
    finally:
        database.dispose()


def two_processes(count: int) -> Result | None:
    """The same propagation with two server processes on one PostgreSQL (agents split over
    both, applies on the first): LISTEN/NOTIFY carries the change to the second."""
    if unavailable_reason() is not None or os.environ.get("BENCH_POSTGRES") == "0":
        return None
    cluster = PostgresCluster.start(prefix="rwsrv-bench-pg-")
    try:
        url = cluster.create_database("rwsrv_bench")
        with tempfile.TemporaryDirectory(prefix="rwsrv-bench-") as tmp:
            base = Path(tmp)
            with (
                start_server(base, "a", url) as first,
                start_server(base, "b", url, init=False) as second,
            ):
                tokens = agent_tokens(database_url(first), count)
                shared: Result = run(
                    propagation([first, second], first, tokens, owner_token(first))
                )
                return shared
    finally:
        cluster.stop()


def run(coroutine: Any) -> Any:
    """The client's event loop: uvloop (as the server's), so the agents are not the bottleneck."""
    import uvloop

    return uvloop.run(coroutine)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def load() -> float:
    return os.getloadavg()[0]


def profile() -> int:
    """Hold BENCH_IDLE polls on a traced server: what each keeps allocated, by source line."""
    with (
        tempfile.TemporaryDirectory(prefix="rwsrv-bench-") as tmp,
        start_server(Path(tmp), traced=True) as server,
    ):
        tokens = agent_tokens(database_url(server), IDLE)
        run(idle_memory(server, tokens[:50]))  # warm: imports, caches, threads
        httpx.post(f"{server.url}/_bench/mark", timeout=60).raise_for_status()
        before, held = run(idle_memory(server, tokens))
        # idle_memory stopped its agents; hold them again for the snapshot
        growth = run(_held_growth(server, tokens))
    per_poll = growth["total_bytes"] / IDLE
    print(f"Held long-polls: {IDLE}; RSS {before:.0f} MB before, {held:.0f} MB held (traced)")
    print(f"Python allocations still held per poll: {per_poll:,.0f} bytes; by line:")
    for item in growth["top"]:
        print(
            f"{item['bytes'] / IDLE:>8,.0f} B {item['blocks'] / IDLE:>5.1f} blocks  {item['where']}"
        )
    print(json.dumps({"idle_long_polls": IDLE, "traced_bytes_per_poll": round(per_poll)}))
    return 0


async def _held_growth(server: ServerProcess, tokens: list[str]) -> dict[str, Any]:
    agents = [Agent(server.port, token) for token in tokens]
    tasks = await connect(agents, wait=600, batch=500)
    await asyncio.sleep(3.0)
    async with httpx.AsyncClient(timeout=600) as client:
        answer = await client.get(f"{server.url}/_bench/growth?top=40")
    await stop(tasks)
    answer.raise_for_status()
    growth: dict[str, Any] = answer.json()
    return growth


def main() -> int:
    if "--profile" in sys.argv[1:]:
        raise_fd_limit(IDLE + 1000)
        return profile()
    raise_fd_limit(max(IDLE, AGENTS) + 1000)
    loads = [load()]
    with (
        tempfile.TemporaryDirectory(prefix="rwsrv-bench-") as tmp,
        start_server(Path(tmp)) as server,
    ):
        url = database_url(server)
        tokens = agent_tokens(url, max(IDLE, AGENTS, BASELINE_AGENTS))
        owner = owner_token(server)
        # Memory first, on the fresh process; then the re-check; then propagation.
        before, held = run(idle_memory(server, tokens[:IDLE]))
        loads.append(load())
        one_us, batched_us = recheck_cost(url, tokens[:AGENTS])
        baseline = run(propagation([server], server, tokens[:BASELINE_AGENTS], owner))
        loads.append(load())
        result = run(propagation([server], server, tokens[:AGENTS], owner))
        loads.append(load())
    shared = two_processes(AGENTS)
    loads.append(load())
    print(f"Propagation: agents long-polling one server process (SQLite), {ROUNDS} applies each")
    print(f"{'from the apply answer':44}{'p50':>10}{'p99':>10}{'max':>10}")
    for measured in (baseline, result):
        f = measured.figures()
        print(
            f"{f'Regward, {measured.agents:,} agents':44}{f['p50_s']:>9.3f}s{f['p99_s']:>9.3f}s"
            f"{f['max_s']:>9.3f}s"
        )
    print(
        f"  server CPU per apply (from the apply to the last agent's receipt, median): "
        f"{baseline.figures()['server_cpu_per_apply_s']:.2f} s at {baseline.agents:,} agents, "
        f"{result.figures()['server_cpu_per_apply_s']:.2f} s at {result.agents:,}"
    )
    print(
        f"{'Docker RAM (documented refresh, baseline)':44}{'':>10}{'':>10}{DOCKER_BASELINE_S:>9}s"
    )
    print(
        f"  {result.early} of {len(result.latencies)} updates at {AGENTS:,} agents arrived before "
        f"the owner's apply answer (counted as 0 s); the apply request took "
        f"{statistics.median(result.apply_s):.3f}s (median); target p99 <= 1 s"
    )
    print(
        f"Credential re-check: {one_us:.0f} us per poll checked alone (a session and a query), "
        f"{batched_us:.0f} us per poll when {AGENTS:,} are checked in one batch"
    )
    print(
        f"Memory: server resident {before:.0f} MB idle, {held:.0f} MB with {IDLE:,} idle "
        f"long-polls held ({(held - before) * 1024 / IDLE:.1f} KB each; target <= 150 MB)"
    )
    figures: dict[str, object] = {}
    if shared is None:
        print("Two processes on PostgreSQL: skipped (cannot be started here, or BENCH_POSTGRES=0)")
    else:
        c50, c99, cmax = (
            percentile(shared.cross, 0.5),
            percentile(shared.cross, 0.99),
            max(shared.cross),
        )
        print(
            f"Two processes on one PostgreSQL, {AGENTS // 2:,} agents on the process that did not "
            f"apply, from sending the apply: p50 {c50:.3f}s, p99 {c99:.3f}s, max {cmax:.3f}s"
        )
        figures = {
            "pg_cross_process_p50_s": round(c50, 4),
            "pg_cross_process_p99_s": round(c99, 4),
            "pg_cross_process_max_s": round(cmax, 4),
        }
    print(
        "Load average (1 min) at start and after each phase: "
        + ", ".join(f"{x:.2f}" for x in loads)
    )
    print(
        json.dumps(
            {
                "agents": AGENTS,
                "rounds": ROUNDS,
                **result.figures(),
                "early_updates": result.early,
                "baseline_agents": BASELINE_AGENTS,
                **baseline.figures("baseline_"),
                "baseline_docker_s": DOCKER_BASELINE_S,
                "recheck_alone_us": round(one_us, 1),
                "recheck_batched_us": round(batched_us, 1),
                "idle_long_polls": IDLE,
                "rss_idle_mb": round(before, 1),
                "rss_with_idle_polls_mb": round(held, 1),
                **figures,
                "load_1min": [round(x, 2) for x in loads],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
