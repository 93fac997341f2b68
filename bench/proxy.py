"""Benchmark of the registry egress proxy beside a direct connection and Debian's squid.

Everything runs on loopback (127.0.0.1, the name `localhost` from /etc/hosts; no DNS):

    docker-registry  127.0.0.1:R  with a 1 GiB blob pushed by this script
    docker-registry  127.0.0.1:T  the same storage over TLS (a certificate for `localhost`
                                  from tests/harness/pki.py): CONNECT carries TLS in real pulls
    regward proxy    127.0.0.1:P  `regward agent proxy --policy F --workers 1`, F allowing only
                                  localhost:R (and the ping server, the TLS registry)
    regward proxy    127.0.0.1:W  the same with `--workers N`, N the number of cores
    squid            127.0.0.1:S  the same allowlist (dstdomain localhost, port R), no cache,
                                  hosts_file /etc/hosts, pinger off
    C splice relays  127.0.0.1:C  the least a CONNECT relay can do (reference ceiling), one
                                  to each registry
    C ping server    127.0.0.1:G  answers GET /v2/ with 200 {} and closes, for the rate test
                                  (docker-registry itself tops out near 800/s here)

Measured in one run, each figure the median of RUNS runs in which the paths take turns (so a
change in machine load touches all alike): 1 GiB blob download with curl (direct; CONNECT and
absolute-form through each proxy and the C relay; then over TLS: direct and CONNECT), with the
CPU time the whole machine spent per GiB (every process and the kernel, from /proc/stat: what
the extra hop costs on 2 cores); CONNECT + GET /v2/ rate with 100 concurrent
clients (a C client, bench/proxy_load.c, compiled here with gcc); tunnel setup latency p99 at 10
concurrent; then resident memory with 1,000 open tunnels, summed over the processes both as RSS
(shared pages counted in each) and as PSS (shared pages split). Prints a table, then one JSON line.

`--connections-only` skips the 1 GiB downloads (rate, setup latency and memory only).
`--against REV` also runs the proxy of git revision REV (its `regward/`, exported into the
temporary directory), 1 and N workers, in the same rate and latency rounds: the code before a
change beside the code after, under the same load.

Needs docker-registry, squid, gcc, curl and openssl. Bounded: each phase stops after a fixed
count or time; every process started here is stopped by PID and waited for.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness.pki import make_certificate

HERE = Path(__file__).resolve().parent
BLOB_MIB = 1024
RUNS = 5
WORKERS = os.cpu_count() or 1


def wait_workers(log: Path, count: int) -> None:
    """Wait until the proxy logging to `log` says its `count` workers all listen."""
    deadline = time.monotonic() + 60
    while f"{count} workers on the same address" not in log.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the proxy's {count} workers did not start (see {log})")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port}")


@contextmanager
def started(
    argv: list[str],
    what: str,
    port: int,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        wait_port(port, process, what)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def push_blob(port: int, path: Path) -> str:
    """Write BLOB_MIB MiB of incompressible bytes and upload them; return the digest."""
    digest = hashlib.sha256()
    chunk = os.urandom(1 << 20)
    with path.open("wb") as out:
        for i in range(BLOB_MIB):
            block = chunk[i % 251 :] + chunk[: i % 251]
            digest.update(block)
            out.write(block)
    name = "sha256:" + digest.hexdigest()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", "/v2/bench/blob/blobs/uploads/")
    response = conn.getresponse()
    response.read()
    location = response.getheader("Location") or ""
    separator = "&" if "?" in location else "?"
    with path.open("rb") as body:
        conn.request(
            "PUT",
            f"{location}{separator}digest={name}",
            body=body,
            headers={"Content-Length": str(path.stat().st_size)},
        )
        response = conn.getresponse()
        response.read()
    if response.status != 201:
        raise RuntimeError(f"blob upload failed: {response.status}")
    path.unlink()
    return name


Path_ = tuple[str, str | None, bool]
"""A download: the URL, the proxy (None: direct) and whether to tunnel with CONNECT."""


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (all processes, kernel and interrupts)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def curl_speed(path: Path_, cacert: Path) -> tuple[float, float]:
    """Download speed in bytes/s, once, and the machine's busy CPU seconds per GiB."""
    url, proxy, tunnel = path
    argv = ["curl", "-sS", "--max-time", "120", "-o", "/dev/null", "-w", "%{speed_download}"]
    argv += ["--cacert", str(cacert)]
    if proxy:
        argv += ["-x", proxy] + (["-p"] if tunnel else [])
    before = busy_cpu_seconds()
    result = subprocess.run([*argv, url], capture_output=True, text=True, env=clean_env())
    if result.returncode:
        raise RuntimeError(f"{' '.join(argv)} {url}: {result.stderr.strip()}")
    cpu = busy_cpu_seconds() - before
    return float(result.stdout), cpu / (BLOB_MIB / 1024)


def speeds(paths: dict[str, Path_], cacert: Path) -> dict[str, tuple[float, float]]:
    """Median speed and CPU per GiB per path over RUNS rounds; the paths take turns within
    each round, so a change in machine load touches all of them alike."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    for _ in range(RUNS):
        for name, path in paths.items():
            samples[name].append(curl_speed(path, cacert))
    return {
        name: (statistics.median(v[0] for v in values), statistics.median(v[1] for v in values))
        for name, values in samples.items()
    }


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}


def load(
    binary: Path, proxy_port: int, target_port: int, conc: int, total: int
) -> dict[str, float]:
    argv = [str(binary), "rate", str(proxy_port), "localhost", str(target_port)]
    result = subprocess.run(
        [*argv, str(conc), str(total), "10"], capture_output=True, text=True, check=True
    )
    return dict(json.loads(result.stdout))


def loads(
    binary: Path, runs: dict[str, tuple[int, int, int]], target_port: int
) -> dict[str, dict[str, float]]:
    """Each (proxy port, concurrency, connections) load RUNS times, taking turns so a change
    in machine load touches all alike; per name, the median of each figure, errors summed."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for _ in range(RUNS):
        for name, (port, conc, total) in runs.items():
            samples[name].append(load(binary, port, target_port, conc, total))
    merged = {}
    for name, values in samples.items():
        merged[name] = {key: statistics.median(value[key] for value in values) for key in values[0]}
        merged[name]["errors"] = sum(value["errors"] for value in values)
    return merged


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its children, summed: pages they share (the interpreter,
    libraries) count once per process."""
    return _summed(pid, Path("status"), "VmRSS:")


def pss_mb(pid: int) -> float:
    """Proportional resident memory of `pid` and its children: a page shared by n processes
    counts 1/n in each, so the sum is what they cost the machine together."""
    return _summed(pid, Path("smaps_rollup"), "Pss:")


def _summed(pid: int, name: Path, field: str) -> float:
    total = 0
    for candidate in [pid, *children(pid)]:
        for line in (Path(f"/proc/{candidate}") / name).read_text().splitlines():
            if line.startswith(field):
                total += int(line.split()[1])
    return total / 1024


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    found = [int(child) for child in text.split()]
    return found + [grand for child in found for grand in children(child)]


def hold_tunnels(proxy_port: int, target_port: int, count: int) -> list[socket.socket]:
    """Open `count` tunnels, each used for one keep-alive GET /v2/, and keep them open."""
    socks = []
    connect = f"CONNECT localhost:{target_port} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    get = f"GET /v2/ HTTP/1.1\r\nHost: localhost:{target_port}\r\n\r\n".encode()
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
        socks.append(sock)
        sock.sendall(connect)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"tunnel refused: {head[:80]!r}")
        sock.sendall(get)
        response = b""
        while not response.endswith(b"{}"):
            response += sock.recv(4096)
    return socks


def squid_config(directory: Path, port: int, registry_ports: str) -> Path:
    config = directory / "squid.conf"
    config.write_text(
        f"""http_port 127.0.0.1:{port}
visible_hostname rwpx-bench-squid
pid_filename {directory}/squid.pid
access_log none
cache_log {directory}/cache.log
cache_store_log none
coredump_dir {directory}
cache deny all
cache_mem 8 MB
hosts_file /etc/hosts
dns_nameservers 127.0.0.1
max_filedescriptors 8192
acl registry_ports port {registry_ports}
acl allowed_registries dstdomain localhost
http_access deny !registry_ports
http_access allow allowed_registries
http_access deny all
forwarded_for delete
via off
shutdown_lifetime 1 seconds
pinger_enable off
"""
    )
    return config


def row(name: str, value: str, baseline: str, ratio: str, target: str) -> str:
    return f"{name:<42} {value:>14} {baseline:>20} {ratio:>8} {target:>9}"


def main() -> int:
    tools = ("docker-registry", "squid", "gcc", "curl", "openssl")
    missing = [tool for tool in tools if not which(tool)]
    if missing:
        print(f"bench/proxy.py needs {', '.join(missing)} (apt-get install docker-registry squid)")
        return 1
    with tempfile.TemporaryDirectory(prefix="rwpx-bench-") as temp, ExitStack() as stack:
        work = Path(temp)
        binary = work / "proxy_load"
        subprocess.run(
            ["gcc", "-O2", "-o", str(binary), str(HERE / "proxy_load.c"), "-lpthread"], check=True
        )
        ports = [free_port() for _ in range(10)]
        registry_port, tls_port, ping_port, proxy_port, squid_port, relay_port = ports[:6]
        tls_relay_port, workers_port, against_port, against_workers_port = ports[6:]
        cacert, cert, key = make_certificate(work / "pki", "localhost")
        for port, tls in (
            (registry_port, ""),
            (tls_port, f"  tls:\n    certificate: {cert}\n    key: {key}\n"),
        ):
            (work / f"registry-{port}.yml").write_text(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                f"    rootdirectory: {work}/registry\nhttp:\n  addr: 127.0.0.1:{port}\n{tls}"
            )
            stack.enter_context(
                started(
                    ["docker-registry", "serve", str(work / f"registry-{port}.yml")],
                    "docker-registry",
                    port,
                    work / f"registry-{port}.log",
                )
            )
        stack.enter_context(
            started(
                [str(binary), "serve", str(ping_port)], "ping server", ping_port, work / "p.log"
            )
        )
        quick = "--connections-only" in sys.argv
        if not quick:
            print(f"pushing a {BLOB_MIB} MiB blob ...", flush=True)
        digest = "" if quick else push_blob(registry_port, work / "blob")
        policy = work / "policy.yaml"
        policy.write_text(
            "organization: bench\nregistries:\n"
            f"  - address: localhost:{registry_port}\n  - address: localhost:{ping_port}\n"
            f"  - address: localhost:{tls_port}\n"
        )
        env = {
            **clean_env(),
            "REGWARD_AGENT_DIR": str(work / "agent"),
            "REGWARD_REGISTRY_JSON": str(work / "no-registry.json"),
        }
        regward = [sys.executable, "-m", "regward.cli", "agent", "proxy", "--policy", str(policy)]
        ours = stack.enter_context(
            started(
                [*regward, "--listen", f"127.0.0.1:{proxy_port}", "--workers", "1"],
                "regward proxy",
                proxy_port,
                work / "proxy.log",
                env,
            )
        )
        ours_n = stack.enter_context(
            started(
                [*regward, "--listen", f"127.0.0.1:{workers_port}", "--workers", str(WORKERS)],
                f"regward proxy, {WORKERS} workers",
                workers_port,
                work / "proxy-workers.log",
                env,
            )
        )
        if WORKERS > 1:
            wait_workers(work / "proxy-workers.log", WORKERS)
        against = against_revision()
        if against is not None:
            source = export_revision(against, work / "against")
            for port, count in ((against_port, 1), (against_workers_port, WORKERS)):
                log = work / f"proxy-against-{count}.log"
                stack.enter_context(
                    started(
                        [*regward, "--listen", f"127.0.0.1:{port}", "--workers", str(count)],
                        f"regward proxy at {against}, {count} workers",
                        port,
                        log,
                        {**env, "PYTHONPATH": str(source)},
                        cwd=source,  # `python -m` puts the working directory first
                    )
                )
                if count > 1:
                    wait_workers(log, count)
        config = squid_config(work, squid_port, f"{registry_port} {ping_port} {tls_port}")
        squid = stack.enter_context(
            started(["squid", "-N", "-f", str(config)], "squid", squid_port, work / "squid.log")
        )
        for listen, upstream in ((relay_port, registry_port), (tls_relay_port, tls_port)):
            stack.enter_context(
                started(
                    [str(binary), "relay", str(listen), str(upstream)],
                    "C splice relay",
                    listen,
                    work / f"relay-{listen}.log",
                )
            )
        rss_idle = rss_mb(ours.pid)
        url = f"http://localhost:{registry_port}/v2/bench/blob/blobs/{digest}"
        tls_url = f"https://localhost:{tls_port}/v2/bench/blob/blobs/{digest}"
        ours_url, squid_url = f"http://127.0.0.1:{proxy_port}", f"http://127.0.0.1:{squid_port}"
        if not quick:
            print(f"downloading (curl, median of {RUNS}) ...", flush=True)
        measured = (
            {}
            if quick
            else speeds(
                {
                    "direct": (url, None, False),
                    "connect": (url, ours_url, True),
                    "squid_connect": (url, squid_url, True),
                    "relay_connect": (url, f"http://127.0.0.1:{relay_port}", True),
                    "absolute": (url, ours_url, False),
                    "squid_absolute": (url, squid_url, False),
                    "tls_direct": (tls_url, None, False),
                    "tls_connect": (tls_url, ours_url, True),
                    "tls_squid_connect": (tls_url, squid_url, True),
                    "tls_relay_connect": (tls_url, f"http://127.0.0.1:{tls_relay_port}", True),
                },
                cacert,
            )
        )
        speed = {name: value[0] for name, value in measured.items()}
        cpu = {name: value[1] for name, value in measured.items()}
        print("connection rate and setup latency (C client) ...", flush=True)
        runs = {
            "direct": (0, 100, 15000),
            "ours": (proxy_port, 100, 15000),
            "ours_n": (workers_port, 100, 15000),
            "squid": (squid_port, 100, 15000),
            "ours_10": (proxy_port, 10, 5000),
            "squid_10": (squid_port, 10, 5000),
        }
        if against is not None:
            runs["before"] = (against_port, 100, 15000)
            runs["before_n"] = (against_workers_port, 100, 15000)
            runs["before_10"] = (against_port, 10, 5000)
        rate = loads(binary, runs, ping_port)
        print("memory with 1,000 open tunnels ...", flush=True)
        rss, pss = {}, {}
        for name, pid, port in (
            ("ours", ours.pid, proxy_port),
            ("ours_n", ours_n.pid, workers_port),
            ("squid", squid.pid, squid_port),
        ):
            socks = hold_tunnels(port, registry_port, 1000)
            time.sleep(0.5)
            rss[name] = rss_mb(pid)
            pss[name] = pss_mb(pid)
            for sock in socks:
                sock.close()
            time.sleep(0.5)

    gb = 1e9
    figures: dict[str, float | int | str] = {"workers": WORKERS}
    if not quick:
        figures.update(
            {
                "blob_mib": BLOB_MIB,
                "direct_gbps": speed["direct"] / gb,
                "connect_gbps": speed["connect"] / gb,
                "squid_connect_gbps": speed["squid_connect"] / gb,
                "c_relay_connect_gbps": speed["relay_connect"] / gb,
                "absolute_gbps": speed["absolute"] / gb,
                "squid_absolute_gbps": speed["squid_absolute"] / gb,
                "connect_vs_direct": speed["connect"] / speed["direct"],
                "c_relay_vs_direct": speed["relay_connect"] / speed["direct"],
                "connect_vs_squid": speed["connect"] / speed["squid_connect"],
                "connect_vs_c_relay": speed["connect"] / speed["relay_connect"],
                "cpu_s_per_gib_direct": cpu["direct"],
                "cpu_s_per_gib_connect": cpu["connect"],
                "cpu_s_per_gib_squid_connect": cpu["squid_connect"],
                "cpu_s_per_gib_c_relay_connect": cpu["relay_connect"],
                "tls_direct_gbps": speed["tls_direct"] / gb,
                "tls_connect_gbps": speed["tls_connect"] / gb,
                "tls_squid_connect_gbps": speed["tls_squid_connect"] / gb,
                "tls_c_relay_connect_gbps": speed["tls_relay_connect"] / gb,
                "tls_connect_vs_direct": speed["tls_connect"] / speed["tls_direct"],
                "tls_connect_vs_squid": speed["tls_connect"] / speed["tls_squid_connect"],
                "tls_c_relay_vs_direct": speed["tls_relay_connect"] / speed["tls_direct"],
                "absolute_vs_squid": speed["absolute"] / speed["squid_absolute"],
            }
        )
    figures.update(
        {
            "rate_per_s": rate["ours"]["rate"],
            "rate_per_s_workers": rate["ours_n"]["rate"],
            "squid_rate_per_s": rate["squid"]["rate"],
            "direct_rate_per_s": rate["direct"]["rate"],
            "rate_vs_squid": rate["ours"]["rate"] / rate["squid"]["rate"],
            "rate_vs_squid_workers": rate["ours_n"]["rate"] / rate["squid"]["rate"],
            "rate_errors": rate["ours"]["errors"] + rate["ours_n"]["errors"],
            "squid_rate_errors": rate["squid"]["errors"],
            "setup_p50_ms": rate["ours_10"]["setup_p50_ms"],
            "setup_p99_ms": rate["ours_10"]["setup_p99_ms"],
            "squid_setup_p99_ms": rate["squid_10"]["setup_p99_ms"],
            "setup_p50_ms_at_100": rate["ours"]["setup_p50_ms"],
            "setup_p99_ms_at_100": rate["ours"]["setup_p99_ms"],
            "setup_p50_ms_at_100_workers": rate["ours_n"]["setup_p50_ms"],
            "setup_p99_ms_at_100_workers": rate["ours_n"]["setup_p99_ms"],
            "squid_setup_p50_ms_at_100": rate["squid"]["setup_p50_ms"],
            "squid_setup_p99_ms_at_100": rate["squid"]["setup_p99_ms"],
            "rss_mb_idle": rss_idle,
            "rss_mb_1000_tunnels": rss["ours"],
            "rss_mb_1000_tunnels_workers": rss["ours_n"],
            "squid_rss_mb_1000_tunnels": rss["squid"],
            "pss_mb_1000_tunnels": pss["ours"],
            "pss_mb_1000_tunnels_workers": pss["ours_n"],
            "squid_pss_mb_1000_tunnels": pss["squid"],
        }
    )
    figures = {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
    before: dict[str, float] = {}
    if against is not None:
        before = {
            "rate_per_s": rate["before"]["rate"],
            "rate_per_s_workers": rate["before_n"]["rate"],
            "rate_vs_squid": rate["before"]["rate"] / rate["squid"]["rate"],
            "rate_vs_squid_workers": rate["before_n"]["rate"] / rate["squid"]["rate"],
            "setup_p99_ms": rate["before_10"]["setup_p99_ms"],
            "setup_p50_ms_at_100": rate["before"]["setup_p50_ms"],
            "setup_p99_ms_at_100": rate["before"]["setup_p99_ms"],
            "setup_p50_ms_at_100_workers": rate["before_n"]["setup_p50_ms"],
            "setup_p99_ms_at_100_workers": rate["before_n"]["setup_p99_ms"],
            "rate_errors": rate["before"]["errors"] + rate["before_n"]["errors"],
        }
        figures["against"] = against
        figures.update({f"against_{k}": round(v, 3) for k, v in before.items()})
    print()
    print(row("measure", "regward", "baseline", "ratio", "target"))
    print("-" * 97)
    f = figures
    if not quick:
        print(
            row(
                "1 GiB CONNECT (GB/s) vs direct",
                f"{f['connect_gbps']:.2f}",
                f"direct {f['direct_gbps']:.2f}",
                f"{f['connect_vs_direct']:.2f}x",
                ">= 0.8x",
            )
        )
        print(
            row(
                "1 GiB CONNECT (GB/s) vs squid",
                f"{f['connect_gbps']:.2f}",
                f"squid {f['squid_connect_gbps']:.2f}",
                f"{f['connect_vs_squid']:.2f}x",
                ">= 1.5x",
            )
        )
        print(
            row(
                "1 GiB CONNECT (GB/s) vs the C splice relay",
                f"{f['connect_gbps']:.2f}",
                f"C relay {f['c_relay_connect_gbps']:.2f}",
                f"{f['connect_vs_c_relay']:.2f}x",
                ">= 0.95x",
            )
        )
        print(
            row(
                "  reference: C splice relay (GB/s)",
                f"{f['c_relay_connect_gbps']:.2f}",
                f"direct {f['direct_gbps']:.2f}",
                f"{f['c_relay_vs_direct']:.2f}x",
                "",
            )
        )
        print(
            "  CPU s per GiB, whole machine: "
            f"direct {f['cpu_s_per_gib_direct']:.2f}, regward {f['cpu_s_per_gib_connect']:.2f}, "
            f"squid {f['cpu_s_per_gib_squid_connect']:.2f}, "
            f"C relay {f['cpu_s_per_gib_c_relay_connect']:.2f} (2 cores)"
        )
        print(
            row(
                "1 GiB CONNECT, TLS inside (GB/s) vs direct",
                f"{f['tls_connect_gbps']:.2f}",
                f"direct {f['tls_direct_gbps']:.2f}",
                f"{f['tls_connect_vs_direct']:.2f}x",
                ">= 0.8x",
            )
        )
        print(
            row(
                "1 GiB CONNECT, TLS inside (GB/s) vs squid",
                f"{f['tls_connect_gbps']:.2f}",
                f"squid {f['tls_squid_connect_gbps']:.2f}",
                f"{f['tls_connect_vs_squid']:.2f}x",
                ">= 1.5x",
            )
        )
        print(
            row(
                "  reference: C splice relay, TLS (GB/s)",
                f"{f['tls_c_relay_connect_gbps']:.2f}",
                f"direct {f['tls_direct_gbps']:.2f}",
                f"{f['tls_c_relay_vs_direct']:.2f}x",
                "",
            )
        )
        print(
            row(
                "1 GiB absolute-form HTTP (GB/s) vs squid",
                f"{f['absolute_gbps']:.2f}",
                f"squid {f['squid_absolute_gbps']:.2f}",
                f"{f['absolute_vs_squid']:.2f}x",
                ">= 1x",
            )
        )
    for label, suffix, setup in (
        ("1 worker", "", "_at_100"),
        (f"{WORKERS} workers", "_workers", "_at_100_workers"),
    ):
        print(
            row(
                f"CONNECT+GET/s, 100 concurrent, {label}",
                f"{f['rate_per_s' + suffix]:.0f}",
                f"squid {f['squid_rate_per_s']:.0f}",
                f"{f['rate_vs_squid' + suffix]:.2f}x",
                ">= 1.0x",
            )
        )
        print(
            row(
                f"  setup p50 / p99 (ms), {label}",
                f"{f['setup_p50_ms' + setup]:.1f} / {f['setup_p99_ms' + setup]:.1f}",
                f"squid {f['squid_setup_p50_ms_at_100']:.1f} / "
                f"{f['squid_setup_p99_ms_at_100']:.1f}",
                "",
                "p99 <= sq",
            )
        )
        if before:
            print(
                row(
                    f"  code at {against}: GET/s, p50 / p99 (ms)",
                    f"{before['rate_per_s' + suffix]:.0f}",
                    f"{before['setup_p50_ms' + setup]:.1f} / {before['setup_p99_ms' + setup]:.1f}",
                    f"{before['rate_vs_squid' + suffix]:.2f}x",
                    "",
                )
            )
    print(
        row(
            "  reference: direct GET/s, 100 concurrent", f"{f['direct_rate_per_s']:.0f}", "", "", ""
        )
    )
    print(
        row(
            "setup p99 (ms), 10 concurrent, 1 worker",
            f"{f['setup_p99_ms']:.2f}",
            f"squid {f['squid_setup_p99_ms']:.2f}",
            "",
            "<= 5 ms",
        )
    )
    if before:
        print(row(f"  code at {against}", f"{before['setup_p99_ms']:.2f}", "", "", ""))
    for label, suffix in (("1 worker", ""), (f"{WORKERS} workers", "_workers")):
        for kind in ("rss", "pss"):
            print(
                row(
                    f"{kind.upper()} (MB), 1,000 open tunnels, {label}",
                    f"{f[kind + '_mb_1000_tunnels' + suffix]:.1f}",
                    f"squid {f['squid_' + kind + '_mb_1000_tunnels']:.1f}",
                    "",
                    "<= 80 MB",
                )
            )
    print(
        f"(regward proxy idle RSS {f['rss_mb_idle']:.1f} MB; rate errors {f['rate_errors']}, "
        f"squid {f['squid_rate_errors']}; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores)"
    )
    print(json.dumps(figures))
    return 0


def against_revision() -> str | None:
    """`--against REV`: the revision, as a short commit id, or None without the flag."""
    if "--against" not in sys.argv:
        return None
    at = sys.argv.index("--against") + 1
    if at >= len(sys.argv):
        raise SystemExit("--against needs a git revision, as in --against main")
    result = subprocess.run(
        ["git", "rev-parse", "--short", f"{sys.argv[at]}^{{commit}}"],
        cwd=HERE,
        capture_output=True,
        text=True,
    )
    if result.returncode:
        raise SystemExit(f"--against {sys.argv[at]}: not a revision git knows here")
    return result.stdout.strip()


def export_revision(revision: str, directory: Path) -> Path:
    """The `regward/` package of `revision`, written under `directory` (for PYTHONPATH)."""
    directory.mkdir()
    archive = subprocess.run(
        ["git", "archive", revision, "regward"], cwd=HERE.parent, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive.stdout, check=True)
    return directory


def which(tool: str) -> bool:
    return shutil.which(tool) is not None


if __name__ == "__main__":
    sys.exit(main())
