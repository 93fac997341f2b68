"""Benchmark of transparent enforcement (`regward agent run --transparent`) from a container,
beside the same container's direct connections (no rules) and the explicit egress proxy.

Everything runs in the e2e bed's private network namespace (tests/harness/bed.py) with a real
dockerd on `docker0`:

    origin server   10.77.0.2:5000  plain HTTP, `bench-reg.test:5000` (an entry of the policy):
                                    GET /blob sends 1 GiB with sendfile(2) from a sparse file,
                                    GET /v2/ answers like a registry (200, its API header)
    TLS web server  10.77.0.3:443   any server name; not a registry (the probe's case)
    agent           regward agent run --policy F [--transparent] --workers N, proxy on
                    0.0.0.0:3128; the proxy and the transparent listener each served by N
                    processes (N: the cores, as the agent's default)
    client          Python, run with nsenter in a busybox container's network namespace, so its
                    packets leave through docker0 like any container's

Measured in one run, each throughput the median of RUNS rounds in which the paths take turns:
a 1 GiB download direct (agent without --transparent), through the explicit proxy
(absolute-form GET to 172.17.0.1:3128) and transparently (rules on, same URL as direct);
connection setup (connect, `GET /v2/`, response head) p50/p99 over SETUPS sequential connections
direct and transparent; SETUPS requests on one kept-alive connection, each timed, direct and
transparent (plain HTTP keeps its connection through the listener); and the first TLS
connection to an unknown host (the agent probes it with GET /v2/) beside a host already probed.
Targets (issue 12): transparent throughput at least the explicit proxy's; setup p99 at most
2 ms above direct. Prints a table, then one JSON line.

Needs root, dockerd, nftables and busybox (scripts/setup.sh). Bounded: fixed counts, every
process started here stopped by PID (the bed's teardown).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BLOB = 1 << 30
RUNS = 3
SETUPS = 400
PROBES = 20
WORKERS = os.cpu_count() or 1
ORIGIN = ("10.77.0.2", 5000)
TLS_WEB = ("10.77.0.3", 443)
NAME = "bench-reg.test"
PROXY_PORT = 3128
GATEWAY = "172.17.0.1"
POLICY = f"organization: bench\nrevision: 1\nregistries:\n  - address: {NAME}:{ORIGIN[1]}\n"


# ---- the servers and the client (run as subcommands inside the namespaces) -------------------


def serve(blob: str, cert: str, key: str) -> None:
    """The origin (plain HTTP) and the TLS web server, threaded, until killed."""
    import http.server
    import threading

    class Origin(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Its head and body are two writes: with Nagle the body would wait for the client's
        # delayed ACK (40 ms) on a kept-alive connection, whatever the path.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            if self.path.startswith("/v2/"):
                self.send_response(200)
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(BLOB))
            self.end_headers()
            self.wfile.flush()
            with open(blob, "rb") as stream:
                self.connection.sendfile(stream)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Web(Origin):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    origin = http.server.ThreadingHTTPServer(ORIGIN, Origin)
    web = http.server.ThreadingHTTPServer(TLS_WEB, Web)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    web.socket = context.wrap_socket(web.socket, server_side=True)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    origin.serve_forever()


def _head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("closed before a response head")
        data += chunk
    return data


def download(via_proxy: str) -> None:
    """GET the blob (direct, or absolute-form through the proxy at HOST:PORT); prints seconds."""
    target = via_proxy.split(":") if via_proxy else ORIGIN
    path = f"http://{NAME}:{ORIGIN[1]}/blob" if via_proxy else "/blob"
    started = time.perf_counter()
    with socket.create_connection((target[0], int(target[1])), timeout=60) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {NAME}:{ORIGIN[1]}\r\n\r\n".encode())
        head = _head(sock)
        received = len(head) - head.index(b"\r\n\r\n") - 4
        buffer = bytearray(1 << 20)
        view = memoryview(buffer)
        while received < BLOB:
            count = sock.recv_into(view)
            if not count:
                raise OSError(f"closed after {received} bytes")
            received += count
    print(time.perf_counter() - started)


def setups(count: int) -> None:
    """`count` sequential connections: connect, GET /v2/, read the head; prints ms, JSON."""
    times = []
    request = f"GET /v2/ HTTP/1.1\r\nHost: {NAME}:{ORIGIN[1]}\r\nConnection: close\r\n\r\n"
    for _ in range(count):
        started = time.perf_counter()
        with socket.create_connection(ORIGIN, timeout=10) as sock:
            sock.sendall(request.encode())
            _head(sock)
        times.append((time.perf_counter() - started) * 1000)
    print(json.dumps(times))


def kept(count: int) -> None:
    """`count` sequential `GET /v2/` on one kept-alive connection, each timed to the end of
    its response; prints ms, JSON."""
    times = []
    request = f"GET /v2/ HTTP/1.1\r\nHost: {NAME}:{ORIGIN[1]}\r\n\r\n".encode()
    with socket.create_connection(ORIGIN, timeout=10) as sock:
        for _ in range(count):
            started = time.perf_counter()
            sock.sendall(request)
            data = _head(sock)
            while len(data) - data.index(b"\r\n\r\n") - 4 < 2:  # the body, "{}"
                chunk = sock.recv(65536)
                if not chunk:
                    raise OSError("the connection was not kept alive")
                data += chunk
            times.append((time.perf_counter() - started) * 1000)
    print(json.dumps(times))


def tls_setups(count: int, fresh: bool) -> None:
    """`count` TLS handshakes to the web server, each with a new server name (`fresh`: the
    agent probes every one) or always the same one; prints ms, JSON."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    times = []
    for index in range(count):
        name = f"n{index}-{os.getpid()}.unknown.test" if fresh else "known.unknown.test"
        started = time.perf_counter()
        with socket.create_connection(TLS_WEB, timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=name):
                pass
        times.append((time.perf_counter() - started) * 1000)
    print(json.dumps(times))


# ---- the driver ----------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    from tests.harness.bed import PYTHON, Bed, Process, unavailable_reason

    reason = unavailable_reason()
    if reason:
        print(f"skipped: {reason}")
        return 1
    me = str(Path(__file__).resolve())
    with Bed.create("tb") as bed:
        for address in (ORIGIN[0], TLS_WEB[0]):
            bed.add_local_ip(address)
        bed.add_host(NAME, ORIGIN[0])
        blob = bed.directory / "blob"
        with open(blob, "wb") as stream:
            stream.truncate(BLOB)  # sparse: reads are zero pages, the disk is not the limit
        _, cert, key = bed.make_certificate("web.test")
        origin = bed.spawn("origin", [str(PYTHON), me, "serve", str(blob), str(cert), str(key)])
        check = [str(PYTHON), "-c", f"import socket; socket.create_connection({TLS_WEB})"]
        bed.wait_for("the origin", lambda: bed.run(check).returncode == 0, origin)
        policy = bed.directory / "policy.yaml"
        policy.write_text(POLICY)
        bed.start_dockerd(bridge=True)
        image = bed.busybox_image()
        started = bed.docker("run", "-d", "--rm", image, "sleep", "3600")
        container = started.stdout.strip()
        pid = bed.docker("inspect", "-f", "{{.State.Pid}}", container).stdout.strip()

        def client(*args: str) -> str:
            argv = ["nsenter", f"--net=/proc/{pid}/ns/net", str(PYTHON), me, *args]
            result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
            if result.returncode != 0:
                raise RuntimeError(f"client {args} failed: {result.stderr[-2000:]}")
            return result.stdout.strip()

        agent_state = bed.directory / "agent"

        def agent(transparent: bool) -> Process:
            argv = [str(PYTHON), "-m", "regward.cli", "agent", "run", "--policy", str(policy)]
            argv += ["--authz-socket", str(bed.directory / "authz.sock")]
            argv += ["--proxy-listen", f"0.0.0.0:{PROXY_PORT}", "--workers", str(WORKERS)]
            argv += ["--transparent"] if transparent else []
            process = bed.spawn("agent", argv, {"REGWARD_AGENT_DIR": str(agent_state)})
            probe = [
                str(PYTHON),
                "-c",
                f"import socket; socket.create_connection(('127.0.0.1', {PROXY_PORT}))",
            ]
            bed.wait_for("the agent", lambda: bed.run(probe).returncode == 0, process)
            if transparent:
                listed = ["nft", "list", "table", "inet", "regward"]
                bed.wait_for("the rules", lambda: bed.run(listed).returncode == 0, process)
            return process

        seconds: dict[str, list[float]] = {"direct": [], "proxy": [], "transparent": []}
        setup: dict[str, list[float]] = {}
        probe: dict[str, list[float]] = {}
        alive: dict[str, list[float]] = {}
        for round_ in range(RUNS):
            print(f"round {round_ + 1} of {RUNS} ...", flush=True)
            process = agent(transparent=False)
            seconds["direct"].append(float(client("download", "")))
            seconds["proxy"].append(float(client("download", f"{GATEWAY}:{PROXY_PORT}")))
            if round_ == 0:
                setup["direct"] = json.loads(client("setups", str(SETUPS)))
                alive["direct"] = json.loads(client("kept", str(SETUPS)))
                probe["direct"] = json.loads(client("tls", str(PROBES), "same"))
            bed.stop(process)
            process = agent(transparent=True)
            seconds["transparent"].append(float(client("download", "")))
            if round_ == 0:
                client("setups", "5")  # the name's first resolution, not part of the figure
                setup["transparent"] = json.loads(client("setups", str(SETUPS)))
                alive["transparent"] = json.loads(client("kept", str(SETUPS)))
                probe["first"] = json.loads(client("tls", str(PROBES), "fresh"))
                probe["known"] = json.loads(client("tls", str(PROBES), "same"))
            bed.stop(process)
        bed.docker("rm", "-f", container)

    gib = {path: BLOB / statistics.median(times) / (1 << 30) for path, times in seconds.items()}
    p50 = {path: percentile(times, 0.5) for path, times in setup.items()}
    p99 = {path: percentile(times, 0.99) for path, times in setup.items()}
    tls = {path: statistics.median(times) for path, times in probe.items()}
    figures = {
        "throughput_gib_s": {path: round(value, 3) for path, value in gib.items()},
        "transparent_vs_proxy": round(gib["transparent"] / gib["proxy"], 3),
        "transparent_vs_direct": round(gib["transparent"] / gib["direct"], 3),
        "setup_ms": {
            path: {"p50": round(p50[path], 3), "p99": round(p99[path], 3)} for path in setup
        },
        "setup_p99_extra_ms": round(p99["transparent"] - p99["direct"], 3),
        "kept_alive_request_ms": {
            path: {"p50": round(percentile(t, 0.5), 3), "p99": round(percentile(t, 0.99), 3)}
            for path, t in alive.items()
        },
        "tls_handshake_ms_median": {path: round(value, 3) for path, value in tls.items()},
        "probe_cost_ms": round(tls["first"] - tls["known"], 3),
        "targets_met": {
            "throughput_at_least_proxy": gib["transparent"] >= gib["proxy"],
            "setup_p99_within_2ms": p99["transparent"] - p99["direct"] <= 2.0,
        },
        "workers": WORKERS,
        "runs": RUNS,
        "setups": SETUPS,
        "blob_bytes": BLOB,
    }
    print()
    print(f"the agent's proxy and transparent listener: {WORKERS} processes each")
    print(f"{'measure':<46}{'transparent':>14}{'baseline':>14}  baseline is")
    print("-" * 92)
    print(
        f"{'1 GiB download from a container, GiB/s':<46}{gib['transparent']:>14.2f}"
        f"{gib['proxy']:>14.2f}  explicit proxy (direct {gib['direct']:.2f})"
    )
    print(
        f"{'setup p50 (connect, GET /v2/, head), ms':<46}{p50['transparent']:>14.3f}"
        f"{p50['direct']:>14.3f}  direct, no rules"
    )
    print(
        f"{'setup p99, ms':<46}{p99['transparent']:>14.3f}{p99['direct']:>14.3f}  direct, no rules"
    )
    for share, label in ((0.5, "p50"), (0.99, "p99")):
        print(
            f"{'request on a kept-alive connection ' + label + ', ms':<46}"
            f"{percentile(alive['transparent'], share):>14.3f}"
            f"{percentile(alive['direct'], share):>14.3f}  direct, no rules"
        )
    print(
        f"{'TLS to an unknown host, first (probe), ms':<46}{tls['first']:>14.3f}"
        f"{tls['known']:>14.3f}  a host already probed (direct {tls['direct']:.3f})"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(*sys.argv[2:5])
    elif len(sys.argv) > 1 and sys.argv[1] == "download":
        download(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "setups":
        setups(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "kept":
        kept(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "tls":
        tls_setups(int(sys.argv[2]), sys.argv[3] == "fresh")
    else:
        sys.exit(main())
