"""A soak: one `regward server run` (SQLite, the embedded default) under a steady, realistic
load for a bounded time, watched for leaks and slowdowns.

The load, all over loopback:

- `--agents` simulated agents (default 500), each with its own token and keep-alive HTTP/1.1
  connections through raw asyncio streams: long-poll the feed (`?wait=...&after=N`) on one; on
  each new revision, poll again at once and check in on a second connection after a random
  0-`--check-in-spread` seconds (default 5, regward/agent/sync.py's CHECK_IN_SPREAD: real
  agents spread the check-ins an apply releases), one check-in waiting at a time, telling the
  newest revision when it goes; every tenth agent also reports a denial with it;
- an owner who edits the draft (adds or removes one entry, so the policy keeps its size) and
  applies it every `--apply-every` seconds, and signs in with a password and out again on every
  apply.

Every `--sample-every` seconds: the server's resident memory (VmRSS) and open file descriptors
(/proc/PID/fd). For every apply: each agent's time from the apply answer until it holds that
revision (propagation; 0 for an agent that had it first).

The baseline is the same run's first window after warm-up (default: the first minute after a
one-minute warm-up) beside its last window (the last minute). Targets (issue 13): no server
error, resident memory growth under 10% after warm-up, no leaked descriptors (the last window
holds no more than the first, give or take 5), propagation p99 <= 1 s; no `database is
locked` in the server's log. The last line is JSON.

    make soak                                             # 500 agents, 10 minutes
    .venv/bin/python bench/soak.py --agents 50 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from propagation import (  # bench/propagation.py, beside this script
    ORG,
    PASSWORD,
    agent_tokens,
    owner_token,
    percentile,
    raise_fd_limit,
    rss_mb,
    start_server,
)

from regward.agent.sync import CHECK_IN_SPREAD

OWNER_TIMEOUT_S = 60.0
FD_SLACK = 5  # descriptors the server may hold more at the end (a log rotation, a pool slot)
MEMORY_TARGET = 0.10
P99_TARGET_S = 1.0


BROKEN = (ConnectionError, asyncio.IncompleteReadError, IndexError, ValueError)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Load:
    """What every simulated client saw: answers by status, and connections that broke."""

    statuses: Counter[int] = field(default_factory=Counter)
    broken: int = 0
    timeouts: int = 0  # the owner's requests that got no answer within OWNER_TIMEOUT_S

    def saw(self, status: int) -> None:
        self.statuses[status] += 1

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def refused(self) -> int:
        return sum(n for status, n in self.statuses.items() if 400 <= status < 500)


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class SoakAgent:
    """One simulated agent: long-poll; per revision, check in (and maybe report a denial)
    after a random part of `spread` seconds, on a second connection."""

    def __init__(self, number: int, port: int, token: str, load: Load, spread: float) -> None:
        self.agent_id = f"soak-{number}"
        self.reports = number % 10 == 0
        self.port = port
        self.token = token
        self.load = load
        self.spread = spread
        self.revision = 0
        self.arrivals: dict[int, float] = {}
        self.polling = asyncio.Event()
        self._reporter: Stream | None = None  # the check-ins' connection, kept alive
        self._waiting: asyncio.Task[None] | None = None  # the check-in waiting for its turn

    async def _request(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        path: str,
        body: object = None,
    ) -> tuple[int, dict[str, str]]:
        payload = b"" if body is None else json.dumps(body).encode()
        extra = f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        writer.write(
            f"{method} /api/v1/orgs/{ORG}{path} HTTP/1.1\r\nHost: soak\r\n"
            f"Authorization: Bearer {self.token}\r\n{extra if payload else ''}\r\n".encode()
            + payload
        )
        status = int((await reader.readline()).split()[1])
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length:
            await reader.readexactly(length)
        self.load.saw(status)
        return status, headers

    async def run(self, wait: int) -> None:
        try:
            while True:  # a broken connection is counted and opened again
                try:
                    await self._session(wait)
                except BROKEN:
                    self.load.broken += 1
                    await asyncio.sleep(0.5)
        finally:
            if self._waiting is not None:
                self._waiting.cancel()
            if self._reporter is not None:
                self._reporter[1].close()

    async def _session(self, wait: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            query = "" if not self.revision else f"?wait={wait}&after={self.revision}"
            while True:
                self.polling.set()
                status, headers = await self._request(reader, writer, "GET", f"/policy{query}")
                if status == 200:
                    self.revision = int(headers["x-regward-revision"])
                    self.arrivals[self.revision] = time.perf_counter()
                    if query:  # a long-poll an apply ended: spread, as the agent does
                        self._check_in_later(random.uniform(0, self.spread))
                    else:  # the first answer: at once
                        await self._check_in()
                query = f"?wait={wait}&after={self.revision}"
        finally:
            writer.close()

    def _check_in_later(self, delay: float) -> None:
        if self._waiting is not None and not self._waiting.done():
            return  # the waiting one tells the newest revision when it goes

        async def later() -> None:
            await asyncio.sleep(delay)
            await self._check_in()

        self._waiting = asyncio.create_task(later(), name=f"soak-check-in-{self.agent_id}")

    async def _check_in(self) -> None:
        try:
            if self._reporter is None:
                self._reporter = await asyncio.open_connection("127.0.0.1", self.port)
            await self._report(*self._reporter)
        except BROKEN:
            self.load.broken += 1
            if self._reporter is not None:
                self._reporter[1].close()
            self._reporter = None  # opened again for the next check-in

    async def _report(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        check_in = {"agent_id": self.agent_id, "revision": self.revision, "hostname": "soak"}
        await self._request(reader, writer, "POST", "/devices/check-in", check_in)
        if self.reports:
            denial = {
                "reference": "blocked.example/app:1",
                "action": "pull",
                "revision": self.revision,
                "agent_id": self.agent_id,
                "reason": "soak",
            }
            await self._request(reader, writer, "POST", "/denials", denial)


@dataclass
class Apply:
    at: float  # seconds since the soak began
    revision: int
    returned: float  # perf_counter when the apply answer arrived
    took: float  # seconds from sending the apply request to its answer


@dataclass
class Sample:
    at: float
    rss_mb: float
    fds: int


async def owner(
    url: str, token: str, every: float, stop: asyncio.Event, began: float, load: Load
) -> list[Apply]:
    """Edit, apply and sign in and out every `every` seconds until `stop`."""
    applies: list[Apply] = []
    headers = {"Authorization": f"Bearer {token}"}
    registries = f"/api/v1/orgs/{ORG}/registry-access/registries"
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=OWNER_TIMEOUT_S) as client:

        async def call(method: str, path: str, **options: Any) -> httpx.Response | None:
            try:
                answer = await client.request(method, path, **options)
            except httpx.HTTPError:
                load.timeouts += 1
                return None
            load.saw(answer.status_code)
            return answer

        n = 0
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), every)
            except TimeoutError:
                pass
            if stop.is_set():
                break
            if n % 2 == 0:
                await call("POST", registries, json={"address": "soak.example.com"})
            else:
                await call("DELETE", f"{registries}/soak.example.com")
            sent = time.perf_counter()
            answer = await call("POST", f"/api/v1/orgs/{ORG}/registry-access/apply")
            returned = time.perf_counter()
            if answer is not None and answer.status_code == 200:
                revision = answer.json()["revision"]
                applies.append(Apply(time.monotonic() - began, revision, returned, returned - sent))
            signed = await call(
                "POST",
                "/api/v1/auth/token",
                json={"username": "owner", "password": PASSWORD},
                headers={"Authorization": ""},
            )
            if signed is not None and signed.status_code == 200:
                session = {"Authorization": f"Bearer {signed.json()['token']}"}
                await call("DELETE", "/api/v1/auth/token", headers=session)
            n += 1
    return applies


async def sampler(pid: int, every: float, stop: asyncio.Event, began: float) -> list[Sample]:
    samples: list[Sample] = []
    while not stop.is_set():
        samples.append(Sample(time.monotonic() - began, rss_mb(pid), open_fds(pid)))
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass
    return samples


def arrival(agent: SoakAgent, revision: int) -> float | None:
    """When the agent first held `revision` or a newer one (a fast second apply may skip one)."""
    times = [at for number, at in agent.arrivals.items() if number >= revision]
    return min(times) if times else None


@dataclass
class Window:
    name: str
    start: float
    end: float
    rss_mb: float = 0.0
    fds: int = 0
    p99_s: float = 0.0
    applies: int = 0

    def holds(self, at: float) -> bool:
        return self.start <= at < self.end


def measure(
    args: argparse.Namespace, port: int, url: str, pid: int, tokens: list[str], owner_key: str
) -> tuple[list[Sample], list[Apply], list[SoakAgent], Load]:
    load = Load()

    async def run() -> tuple[list[Sample], list[Apply], list[SoakAgent]]:
        agents = [
            SoakAgent(n, port, tokens[n], load, args.check_in_spread) for n in range(args.agents)
        ]
        tasks = []
        for start in range(0, len(agents), 200):  # connect in batches: the backlog is finite
            batch = agents[start : start + 200]
            tasks += [
                asyncio.create_task(a.run(wait=60), name=f"soak-agent-{a.agent_id}") for a in batch
            ]
            await asyncio.gather(*(a.polling.wait() for a in batch))
        stop = asyncio.Event()
        began = time.monotonic()
        watching = asyncio.create_task(sampler(pid, args.sample_every, stop, began), name="sample")
        editing = asyncio.create_task(
            owner(url, owner_key, args.apply_every, stop, began, load), name="owner"
        )
        await asyncio.sleep(args.seconds)
        stop.set()
        applies = await editing
        samples = await watching
        # the last apply's revision reaches every agent before the soak ends
        if applies:
            last = applies[-1].revision
            deadline = time.monotonic() + 30
            while any(arrival(a, last) is None for a in agents) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return samples, applies, agents

    samples, applies, agents = asyncio.run(run())
    return samples, applies, agents, load


def summarize(
    window: Window, samples: list[Sample], applies: list[Apply], agents: list[SoakAgent]
) -> tuple[Window, int]:
    """Fill `window` from what fell in it; returns it and how many agent updates never came."""
    inside = [s for s in samples if window.holds(s.at)]
    if inside:
        window.rss_mb = statistics.median(s.rss_mb for s in inside)
        # the median, like memory: the pool opens and closes overflow connections (three
        # descriptors each on SQLite: the database, its WAL and shared memory) as load varies
        window.fds = int(statistics.median(s.fds for s in inside))
    latencies: list[float] = []
    missing = 0
    for apply in (a for a in applies if window.holds(a.at)):
        window.applies += 1
        for agent in agents:
            got = arrival(agent, apply.revision)
            if got is None:
                missing += 1
            else:
                latencies.append(max(0.0, got - apply.returned))
    window.p99_s = percentile(latencies, 0.99) if latencies else 0.0
    return window, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--apply-every", type=float, default=5.0)
    parser.add_argument("--sample-every", type=float, default=5.0)
    parser.add_argument(
        "--check-in-spread",
        type=float,
        default=CHECK_IN_SPREAD,
        help="seconds over which each apply's check-ins spread (0: all at once, as before)",
    )
    parser.add_argument(
        "--window",
        type=float,
        default=60.0,
        help="seconds of warm-up, and of each compared window (at most a quarter of the run)",
    )
    args = parser.parse_args(argv)
    window = min(args.window, args.seconds / 4)
    raise_fd_limit(args.agents * 2 + 1000)
    with (
        tempfile.TemporaryDirectory(prefix="rwsrv-soak-") as tmp,
        start_server(Path(tmp)) as server,
    ):
        assert server.process is not None
        database_url = f"sqlite:///{Path(tmp) / 'data' / 'regward.db'}"
        tokens = agent_tokens(database_url, args.agents)  # one per agent, as a fleet has
        pid = server.process.pid
        started_rss, started_fds = rss_mb(pid), open_fds(pid)
        samples, applies, agents, load = measure(
            args, server.port, server.url, pid, tokens, owner_token(server)
        )
        server_log = server.log.read_text(errors="replace")
        locked = server_log.count("database is locked")  # a writer that lost SQLite's lock
        if load.server_errors or load.timeouts:  # the server's own account, before it goes
            errors = [
                line
                for line in server_log.splitlines()
                if "Error" in line or "error" in line or "regward/" in line
            ]
            print(
                f"server log, errors (last 40 lines of {len(errors)}):", *errors[-40:], sep="\n  "
            )
    end = max([s.at for s in samples] + [args.seconds])
    first, missing_first = summarize(Window("first", window, 2 * window), samples, applies, agents)
    last, missing_last = summarize(Window("last", end - window, end + 1), samples, applies, agents)
    everything, missing = summarize(Window("all", 0.0, end + 1), samples, applies, agents)
    growth = (last.rss_mb - first.rss_mb) / first.rss_mb if first.rss_mb else 0.0
    leaked = last.fds - first.fds
    met = {
        "no_server_error": load.server_errors == 0 and load.timeouts == 0 and locked == 0,
        "memory_growth_under_10pct": growth < MEMORY_TARGET,
        "no_leaked_fds": leaked <= FD_SLACK,
        "p99_under_1s": everything.p99_s <= P99_TARGET_S,
        "every_agent_got_every_apply": missing == 0,
    }
    print(
        f"Soak: {args.agents} agents long-polling and checking in (spread over "
        f"{args.check_in_spread:g} s), one server process (SQLite), "
        f"{args.seconds:.0f} s, an apply and a sign-in every {args.apply_every:g} s"
    )
    print(f"  at start (before the load): {started_rss:.0f} MB resident, {started_fds} fds")
    head = f"first {window:.0f} s after warm-up (baseline)"
    print(f"{'':28}{head:>42}{'last ' + format(window, '.0f') + ' s':>16}{'change':>12}")
    print(
        f"{'resident memory (median)':28}{first.rss_mb:>39.1f} MB{last.rss_mb:>13.1f} MB"
        f"{growth * 100:>+11.1f}%"
    )
    print(f"{'open descriptors (median)':28}{first.fds:>42}{last.fds:>16}{leaked:>+12}")
    print(
        f"{'propagation p99':28}{first.p99_s:>41.3f}s{last.p99_s:>15.3f}s"
        f"{last.p99_s - first.p99_s:>+11.3f}s"
    )
    print(f"{'applies':28}{first.applies:>42}{last.applies:>16}")
    took = [a.took for a in applies] or [0.0]
    print(
        f"  the owner's apply request took {statistics.median(took):.3f}s (median), "
        f"{max(took):.3f}s (max); {len(applies)} applies of the "
        f"{int(args.seconds // args.apply_every)} the owner would make unhindered"
    )
    print(
        f"  whole run: {len(applies)} applies, propagation p99 {everything.p99_s:.3f}s; "
        f"{sum(load.statuses.values())} answers {dict(sorted(load.statuses.items()))}, "
        f"{load.server_errors} server errors, {load.refused} refused, "
        f"{load.broken} broken connections, {load.timeouts} owner requests unanswered within "
        f"{OWNER_TIMEOUT_S:.0f} s, {missing} agent updates missing, {locked} 'database is "
        "locked' in the server's log"
    )
    print(
        "  targets: "
        + ", ".join(
            f"{name.replace('_', ' ')}: {'met' if ok else 'NOT MET'}" for name, ok in met.items()
        )
    )
    print(
        json.dumps(
            {
                "agents": args.agents,
                "seconds": args.seconds,
                "check_in_spread_s": args.check_in_spread,
                "window_s": window,
                "applies": len(applies),
                "answers": sum(load.statuses.values()),
                "answers_by_status": {str(k): v for k, v in sorted(load.statuses.items())},
                "server_errors": load.server_errors,
                "refused": load.refused,
                "broken_connections": load.broken,
                "owner_timeouts": load.timeouts,
                "database_locked_lines": locked,
                "missing_updates": missing,
                "missing_updates_first": missing_first,
                "missing_updates_last": missing_last,
                "rss_start_mb": round(started_rss, 1),
                "rss_first_mb": round(first.rss_mb, 1),
                "rss_last_mb": round(last.rss_mb, 1),
                "rss_growth_pct": round(growth * 100, 2),
                "fds_start": started_fds,
                "fds_first": first.fds,
                "fds_last": last.fds,
                "p99_first_s": round(first.p99_s, 4),
                "p99_last_s": round(last.p99_s, 4),
                "p99_s": round(everything.p99_s, 4),
                "apply_median_s": round(statistics.median(took), 4),
                "apply_max_s": round(max(took), 4),
                "targets_met": met,
            }
        )
    )
    return 0 if load.server_errors == load.timeouts == missing == locked == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
