"""The end-to-end bed: a private network namespace with registries, a real dockerd, and whatever
else a test starts inside it (the Regward server, the agent).

Layout (NAME = rwag<pid>, N = a free 10.234.N.0/24 subnet):

    netns NAME  lo 127.0.0.1/8, veth NAME-n 10.234.N.2/24 (+ .3 .. for more services)
       /etc/netns/NAME/hosts        every test name; written in place, so bind mounts follow it
       /etc/netns/NAME/resolv.conf  nameserver 127.0.0.1: a stray lookup stays inside
       no default route: nothing inside can reach off the machine
    host side   veth NAME-h 10.234.N.1/24, so the test process can reach services bound to
                10.234.N.x (the Regward server), and nothing else changes on the host
    files       /tmp/rwag-XXXX/ (logs, registry data, dockerd data and exec roots)

Plain-HTTP registries listen on 127.0.0.x inside the namespace (dockerd treats 127/8 as an
insecure registry, so no flags are needed); a TLS registry on a 10.234.N.x address is verified
for real against the CA given to `trust_ca` (`make_certificate` makes both). dockerd is entered
with nsenter --net + unshare --mount (not `ip netns exec`, which remounts /sys and hides the
cgroup mounts dockerd needs), with the namespace's hosts, resolv.conf and the bed's own
/etc/docker (certs.d) bound over the host's.

    with Bed.create() as bed:
        bed.add_host("allowed.registry.test", "127.0.0.2")
        bed.start_registry("allowed", "127.0.0.2:5000")
        bed.push("http://allowed.registry.test:5000", "demo/hello", "v1")
        bed.start_dockerd(["--authorization-plugin=rwag-x"], env={"HTTPS_PROXY": ...})
        bed.docker("pull", "allowed.registry.test:5000/demo/hello:v1")

Teardown stops what it started by PID (newest first), unmounts what it mounted, deletes the
namespace and veth, and removes only the paths it created.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import pki, wait

PREFIX = "rwag"
REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
HOST_CONTAINERS = Path("/etc/containers")  # copied, never written: see Bed.containers_dir
HELLO_C = r"""
#include <unistd.h>
int main(void) { static const char m[] = "hello from regward test image\n";
  write(1, m, sizeof m - 1); return 0; }
"""
REGISTRY_CONFIG = """version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
"""
# Prints the HTTP status of a URL (certificate not checked: only "is it up yet?").
_PROBE = (
    "import ssl, sys, urllib.request as u\n"
    "try:\n"
    "    r = u.urlopen(sys.argv[1], context=ssl._create_unverified_context(), timeout=2)\n"
    "    print(r.status, end='')\n"
    "except Exception as e:\n"
    "    print(getattr(e, 'code', 0), end='')\n"
)
DIND_PROGRAMS = (
    "dockerd",
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "docker-init",
    "docker",
)
TOOLS = ("ip", "nsenter", "unshare", "dockerd", "docker", "docker-registry", "gcc", "openssl")
"""What every bed needs; `nft` and `busybox` only the transparent tests (which skip without)."""


def unavailable_reason() -> str | None:
    """Why the bed cannot run here, or None."""
    if sys.platform != "linux":
        return "the end-to-end bed needs Linux network namespaces"
    if os.geteuid() != 0:
        return (
            "the end-to-end bed needs root (network namespaces, dockerd); run `make test` as root"
        )
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools {missing}; `scripts/setup.sh` installs them when run as root"
    return None


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    grace: float = 15  # seconds between SIGTERM and SIGKILL at teardown

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Dockerd:
    process: Process
    socket: Path
    data_root: Path
    exec_root: Path

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"


@dataclass
class Bed:
    name: str
    subnet: int
    directory: Path
    hosts: dict[str, str] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)
    dockerd: Dockerd | None = None
    _created: list[Path] = field(default_factory=list)
    _netns_thread: concurrent.futures.ThreadPoolExecutor | None = None

    # ---- set-up -------------------------------------------------------------------------
    @classmethod
    def create(cls, tag: str = "") -> Bed:
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        name = f"{PREFIX}{tag}{os.getpid() % 100000}"
        directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
        directory.chmod(0o755)
        bed = cls(name=name, subnet=_free_subnet(), directory=directory)
        try:
            bed._up()
        except BaseException:
            bed.close()
            raise
        return bed

    def __enter__(self) -> Bed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def netns_dir(self) -> Path:
        return Path("/etc/netns") / self.name

    @property
    def host_ip(self) -> str:
        """The host side of the veth: how services inside see the test process."""
        return f"10.234.{self.subnet}.1"

    def ip(self, index: int = 2) -> str:
        """A non-loopback address inside the namespace (index 2 is the veth's own)."""
        return f"10.234.{self.subnet}.{index}"

    def _up(self) -> None:
        for path in (Path("/etc/netns"), Path("/run/netns")):
            if not path.exists():
                self._created.append(path)
        _run(["ip", "netns", "add", self.name])
        self.netns_dir.mkdir(parents=True, exist_ok=True)
        self._created.append(self.netns_dir)
        (self.netns_dir / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        self._write_hosts()
        host_side, ns_side = f"{self.name}-h", f"{self.name}-n"
        _run(["ip", "link", "add", host_side, "type", "veth", "peer", "name", ns_side])
        _run(["ip", "link", "set", ns_side, "netns", self.name])
        _run(["ip", "addr", "add", f"{self.host_ip}/24", "dev", host_side])
        _run(["ip", "link", "set", host_side, "up"])
        _run(["ip", "-n", self.name, "addr", "add", f"{self.ip(2)}/24", "dev", ns_side])
        _run(["ip", "-n", self.name, "link", "set", ns_side, "up"])
        _run(["ip", "-n", self.name, "link", "set", "lo", "up"])

    def add_ip(self, index: int) -> str:
        """Add 10.234.N.index to the namespace's veth (for another TLS service)."""
        address = self.ip(index)
        _run(["ip", "-n", self.name, "addr", "add", f"{address}/24", "dev", f"{self.name}-n"])
        return address

    def add_local_ip(self, address: str) -> str:
        """Put `address` (/32) on the namespace's `lo`: it exists only in the namespace, and
        containers on a bridge reach it through their gateway (the kernel has no dummy
        interfaces for this)."""
        _run(["ip", "-n", self.name, "addr", "add", f"{address}/32", "dev", "lo"])
        return address

    def add_host(self, hostname: str, address: str) -> None:
        """Make `hostname` resolve to `address` inside the namespace (and for dockerd)."""
        self.hosts[hostname] = address
        self._write_hosts()

    def _write_hosts(self) -> None:
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost"]
        lines += [f"{address} {hostname}" for hostname, address in self.hosts.items()]
        path = self.netns_dir / "hosts"
        # In place, never replaced: dockerd and `ip netns exec` bind-mount this very inode.
        with open(path, "a+") as stream:
            stream.seek(0)
            stream.truncate()
            stream.write("\n".join(lines) + "\n")

    def containers_dir(self) -> Path:
        """The namespace's own /etc/containers (a copy of the host's): `ip netns exec` binds it
        over /etc/containers, so podman, skopeo and the agent read and write it there, and the
        host's containers policy is never touched."""
        path = self.netns_dir / "containers"
        if not path.exists():
            if HOST_CONTAINERS.is_dir():
                shutil.copytree(HOST_CONTAINERS, path, symlinks=True)
            else:
                path.mkdir()
        return path

    # ---- processes ----------------------------------------------------------------------
    def ns_command(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float = 120,
        env: Mapping[str, str] | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and wait for it."""
        return subprocess.run(
            self.ns_command(argv),
            input=input.decode() if input else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self._env(env),
            check=check,
        )

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
    ) -> Process:
        """Start a long-running command inside the namespace; stopped at teardown."""
        return self._spawn(name, self.ns_command(argv), env, stdin)

    def _spawn(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None, stdin: bytes | None
    ) -> Process:
        log = self.directory / f"{name}.log"
        with open(log, "ab") as stream:
            popen = subprocess.Popen(
                list(argv),
                stdout=stream,
                stderr=subprocess.STDOUT,
                env=self._env(env),
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                cwd=REPO_ROOT,
            )
        if stdin is not None and popen.stdin is not None:
            popen.stdin.write(stdin)
            popen.stdin.close()
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def claim(self, *paths: Path) -> None:
        """Note directories about to be made by something the bed starts, so teardown removes
        them (when empty) if they did not exist before."""
        for path in paths:
            if not path.exists() and path not in self._created:
                self._created.append(path)

    def stop(self, process: Process, timeout: float = 15) -> None:
        process.stop(timeout)
        if process in self.processes:
            self.processes.remove(process)

    @staticmethod
    def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.upper().endswith("_PROXY") and not key.startswith(("DOCKER_", "REGWARD_"))
        }
        env["PYTHONPATH"] = str(REPO_ROOT)
        env.update(extra or {})
        return env

    # ---- registries and images ----------------------------------------------------------
    def start_registry(
        self, name: str, listen: str, tls: tuple[Path, Path] | None = None
    ) -> Process:
        """A docker-registry inside the namespace on `listen` (ip:port), optionally with TLS."""
        config = self.directory / "registry.yml"
        if not config.exists():
            config.write_text(REGISTRY_CONFIG)
        env = {
            "REGISTRY_HTTP_ADDR": listen,
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(self.directory / f"registry-{name}"),
        }
        if tls:
            env["REGISTRY_HTTP_TLS_CERTIFICATE"] = str(tls[0])
            env["REGISTRY_HTTP_TLS_KEY"] = str(tls[1])
        process = self.spawn(f"registry-{name}", ["docker-registry", "serve", str(config)], env)
        scheme = "https" if tls else "http"
        probe = [str(PYTHON), "-c", _PROBE, f"{scheme}://{listen}/v2/"]
        self.wait_for(f"registry {name}", lambda: self.run(probe).stdout == "200", process)
        return process

    def hello_binary(self) -> Path:
        binary = self.directory / "hello"
        if not binary.exists():
            source = self.directory / "hello.c"
            source.write_text(HELLO_C)
            _run(["gcc", "-static", "-Os", "-s", "-o", str(binary), str(source)])
        return binary

    def push(
        self,
        base: str,
        repository: str,
        tag: str,
        *,
        random_mb: int = 0,
        cafile: Path | None = None,
    ) -> str:
        """Push a one-layer image holding /hello (and `random_mb` MiB of filler); its digest."""
        argv = [
            str(PYTHON),
            "-m",
            "tests.harness.pusher",
            base,
            repository,
            tag,
            "--file",
            f"{self.hello_binary()}:/hello:755",
        ]
        if random_mb:
            argv += ["--random-mb", str(random_mb)]
        if cafile:
            argv += ["--cafile", str(cafile)]
        result = self.run(argv, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"push to {base} failed: {result.stderr[-2000:]}")
        return result.stdout.strip()

    @property
    def root(self) -> Path:
        """A file-system root whose etc/docker dockerd sees as /etc/docker (in its own mount
        namespace): certs.d, daemon.json and plugins/*.spec placed there apply to the bed's
        dockerd only (`regward agent install --root` writes into it)."""
        return self.directory / "root"

    @property
    def certs_dir(self) -> Path:
        return self.root / "etc" / "docker" / "certs.d"

    def trust_ca(self, registry_host: str, ca_file: Path) -> None:
        """Make dockerd trust `ca_file` for `registry_host` (HOST, or HOST:PORT unless 443).

        The host's /etc/docker/certs.d is untouched: dockerd's private mount namespace gets the
        bed's directory bound over it. Classic pulls read it on every pull; BuildKit only when
        dockerd starts, so call this before `start_dockerd` where builds matter.
        """
        target = self.certs_dir / registry_host
        target.mkdir(parents=True, exist_ok=True)
        (target / "ca.crt").write_bytes(ca_file.read_bytes())

    def make_certificate(self, *hostnames: str, ip: str | None = None) -> tuple[Path, Path, Path]:
        """A CA (made once per bed) and a server certificate for `hostnames` (and `ip`):
        (ca.crt, server.crt, server.key), files in the bed's directory."""
        return pki.make_certificate(self.directory / "pki", *hostnames, ip=ip)

    # ---- dockerd ------------------------------------------------------------------------
    def docker_socket(self, name: str = "dockerd") -> Path:
        """Where `start_dockerd(name=name)` has dockerd listen (DOCKER_HOST=unix://...)."""
        return self.directory / name / "docker.sock"

    def start_dockerd(
        self,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        name: str = "dockerd",
        *,
        bridge: bool = False,
    ) -> Dockerd:
        """A real dockerd inside the namespace (one per bed; stop the old one first). With
        `bridge`, containers get Docker's default bridge (`docker0`, 172.17.0.1/16, inside the
        namespace only; dockerd leaves iptables alone) and reach the namespace's addresses
        through it; without, `--bridge=none`."""
        if self.dockerd is not None:
            raise RuntimeError("this bed already runs a dockerd; stop_dockerd() first")
        self.claim(Path("/run/docker"), Path("/run/docker/plugins"))
        root = self.directory / name
        data_root, exec_root = root / "data", root / "exec"
        data_root.mkdir(parents=True, exist_ok=True)
        exec_root.mkdir(parents=True, exist_ok=True)
        sock = self.docker_socket(name)
        hosts, resolv = self.netns_dir / "hosts", self.netns_dir / "resolv.conf"
        dockerd = [
            "dockerd",
            "--iptables=false",
            "--ip6tables=false",
            *(() if bridge else ("--bridge=none",)),
            "--storage-driver=vfs",
            f"--data-root={data_root}",
            f"--exec-root={exec_root}",
            f"--pidfile={root / 'docker.pid'}",
            f"--host=unix://{sock}",
            *args,
        ]
        # The bed's own /etc/docker (certs.d; the key.json and daemon.json dockerd would read or
        # write) bound over the host's, inside dockerd's private mount namespace only.
        self.claim(Path("/etc/docker"))
        Path("/etc/docker").mkdir(exist_ok=True)
        self.certs_dir.mkdir(parents=True, exist_ok=True)
        script = (
            f"mount --bind {hosts} /etc/hosts && mount --bind {resolv} /etc/resolv.conf && "
            f"mount --bind {self.certs_dir.parent} /etc/docker && "
            'exec "$@"'
        )
        argv = [
            "nsenter",
            f"--net=/run/netns/{self.name}",
            "--",
            "unshare",
            "--mount",
            "--propagation",
            "slave",
            "--",
            "sh",
            "-c",
            script,
            "dockerd",
            *dockerd,
        ]
        process = self._spawn(name, argv, env, None)
        daemon = Dockerd(process, sock, data_root, exec_root)
        self.dockerd = daemon
        self.wait_for(
            "dockerd",
            lambda: self.docker("version", timeout=10).returncode == 0,
            process,
            timeout=60,
        )
        return daemon

    def busybox_image(self, tag: str = "rwag-busybox:1") -> str:
        """An image holding only Debian's static busybox (`docker import`, no registry): its
        `wget` speaks HTTP and TLS and reads /etc/hosts by itself. Run applets as
        `busybox wget ...`; wrap fetches in `busybox timeout`, as `wget -T` crashes."""
        if self.docker("image", "inspect", tag).returncode == 0:
            return tag
        busybox = shutil.which("busybox")
        if busybox is None:
            raise RuntimeError("busybox is missing; `scripts/setup.sh` installs busybox-static")
        tree = self.directory / "busybox-image"
        (tree / "bin").mkdir(parents=True, exist_ok=True)
        (tree / "tmp").mkdir(exist_ok=True)
        shutil.copy(busybox, tree / "bin" / "busybox")
        archive = self.directory / "busybox.tar"
        _run(["tar", "-C", str(tree), "-cf", str(archive), "."])
        result = self.docker("import", "--change", 'ENTRYPOINT ["/bin/busybox"]', str(archive), tag)
        if result.returncode != 0:
            raise RuntimeError(f"docker import of busybox failed: {result.stderr}")
        return tag

    def dind_image(self, tag: str = "rwag-dind:1") -> str:
        """An image holding this machine's own dockerd, containerd, runc and docker CLI (with
        the libraries they load) and busybox, made by `docker import`: a docker-in-docker CI
        job's inner engine, with no registry involved. Run it `--privileged`."""
        if self.docker("image", "inspect", tag).returncode == 0:
            return tag
        tree = self.directory / "dind-image"
        programs = [shutil.which(name) for name in DIND_PROGRAMS]
        missing = [name for name, path in zip(DIND_PROGRAMS, programs, strict=True) if not path]
        if missing:
            raise RuntimeError(f"cannot make a docker-in-docker image: {missing} missing")
        files = {Path(path) for path in programs if path}
        for program in list(files):
            ldd = subprocess.run(["ldd", str(program)], capture_output=True, text=True)
            for line in ldd.stdout.splitlines():
                parts = line.split()
                library = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
                if library.startswith("/"):
                    files.add(Path(library))
        for path in files:
            target = tree / str(path).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path.resolve(), target)
        busybox = shutil.which("busybox")
        if busybox is None:
            raise RuntimeError("busybox is missing; `scripts/setup.sh` installs busybox-static")
        (tree / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy(busybox, tree / "bin" / "busybox")
        for applet in ("sh", "mount", "mkdir", "cat", "sleep"):
            (tree / "bin" / applet).symlink_to("busybox")
        for directory in ("tmp", "run", "var/lib", "etc"):
            (tree / directory).mkdir(parents=True, exist_ok=True)
        archive = self.directory / "dind.tar"
        _run(["tar", "-C", str(tree), "-cf", str(archive), "."])
        env = "ENV PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin"
        result = self.docker("import", "--change", env, str(archive), tag)
        if result.returncode != 0:
            raise RuntimeError(f"docker import of the dind image failed: {result.stderr}")
        return tag

    def stop_dockerd(self) -> None:
        if self.dockerd is None:
            return
        self.stop(self.dockerd.process)
        self._unmount_under(self.directory / self.dockerd.process.name)
        self.dockerd = None

    def docker(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The docker CLI against the bed's dockerd (the client itself needs no namespace)."""
        if self.dockerd is None:
            raise RuntimeError("no dockerd in this bed")
        return subprocess.run(
            ["docker", "-H", self.dockerd.host, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self._env({"DOCKER_CONFIG": str(self.directory / "docker-cli")}),
        )

    # ---- helpers ------------------------------------------------------------------------
    def connect(self, address: str, port: int, timeout: float = 30) -> socket.socket:
        """A TCP connection made from inside the namespace (as a process there makes it: the
        agent's nftables rules see it), for the test process to use. Sockets belong to the
        namespace they are created in, so a thread of ours that entered it creates them."""
        if self._netns_thread is None:
            self._netns_thread = concurrent.futures.ThreadPoolExecutor(
                1, f"{self.name}-netns", initializer=enter_netns, initargs=(self.name,)
            )
        future = self._netns_thread.submit(socket.create_connection, (address, port), timeout)
        return future.result(timeout + 5)

    def wait_for(
        self, what: str, ready: object, process: Process | None = None, timeout: float = 30
    ) -> None:
        def answered() -> bool:
            if process is not None and not process.alive():
                raise RuntimeError(f"{what} exited early:\n{process.tail()}")
            with contextlib.suppress(Exception):
                return bool(ready())  # type: ignore[operator]
            return False

        try:
            wait.wait_for(answered, timeout, f"{what} to be ready")
        except AssertionError as error:
            raise RuntimeError(f"{error}\n{process.tail() if process else ''}") from None

    def close(self) -> None:
        """Stop everything this bed started and remove what it created; safe to call twice."""
        if self._netns_thread is not None:
            self._netns_thread.shutdown()
            self._netns_thread = None
        self.stop_dockerd()
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop(process.grace)
        self.processes.clear()
        subprocess.run(["ip", "link", "del", f"{self.name}-h"], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
        self._unmount_under(self.directory)
        for path in reversed(self._created):
            if path == Path("/run/netns"):
                # `ip netns add` bind-mounts /run/netns on itself; undo it only if we made it
                # and no other namespace lives there now.
                if path.exists() and not any(path.iterdir()):
                    subprocess.run(["umount", str(path)], capture_output=True, check=False)
            if path == self.netns_dir:
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.rmdir()  # only when empty: another user may have put things there
        self._created.clear()
        if self.directory.exists() and not os.environ.get("RWAG_KEEP"):
            shutil.rmtree(self.directory, ignore_errors=True)

    def _unmount_under(self, root: Path) -> None:
        prefix = str(root) + "/"
        with open("/proc/self/mounts") as stream:
            targets = [line.split()[1] for line in stream]
        for target in sorted((t for t in targets if t.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def _run(argv: Sequence[str]) -> None:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")


_CLONE_NEWNET = 0x40000000


def enter_netns(name: str) -> None:
    """Move the calling thread (only) into the network namespace `name`: the sockets it makes
    and the processes it starts are the namespace's."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/run/netns/{name}") as namespace:
        if libc.setns(namespace.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name} failed")


def _free_subnet() -> int:
    used = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    start = os.getpid() % 200 + 20
    for offset in range(200):
        candidate = (start + offset) % 230 + 20
        if f"10.234.{candidate}." not in used:
            return candidate
    raise RuntimeError("no free 10.234.N.0/24 subnet for the bed")


@contextlib.contextmanager
def bed(tag: str = "") -> Iterator[Bed]:
    with Bed.create(tag) as created:
        yield created
