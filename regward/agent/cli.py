"""The agent's commands: sign-in, status, and running or installing the agent.

    regward login --server URL --org ORG [--token-stdin] [--public-key KEY]
        without --token-stdin: prints a code to approve in the dashboard, and waits
    regward logout
    regward status [--json]
    regward agent run [--authz-socket PATH] [--proxy-listen HOST:PORT|off] [--policy FILE]
                      [--metrics-listen HOST:PORT] [--containers-policy FILE|off]
                      [--loopback on|off] [--transparent [--transparent-interfaces LIST]]
                      [--transparent-host] [--transparent-ports LIST|all]
                      [--transparent-listen PORT]
    regward agent install [--authz-socket PATH] [--proxy-listen HOST:PORT|off] [--policy FILE]
                          [--loopback on|off] [--transparent ...] [--containers-policy FILE|off]
                          [--root DIR] [--dry-run]

By default the agent takes this machine's own connections to registries on loopback addresses
(nftables; Go never sends those to a proxy, so builds would reach them unchecked); --transparent
takes the container networks' connections too, --transparent-host this machine's own
connections to any address.

The state directory is $REGWARD_AGENT_DIR (default /var/lib/regward as root) and registry.json
is read from $REGWARD_REGISTRY_JSON (default /usr/share/docker-desktop/registry/registry.json).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regward.errors import ConfigError

if TYPE_CHECKING:
    from regward.agent.guard import Enforcement
    from regward.agent.protection import EngineCheck
    from regward.agent.state import AgentState, Credentials


def add_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Register login, logout, status and agent on the top-level parser."""
    from regward.agent import containers_policy

    login = commands.add_parser(
        "login", help="sign this machine in to an organization of a Regward server"
    )
    login.add_argument("--server", required=True, help="the Regward server's URL")
    login.add_argument("--org", required=True, help="the organization to sign in to")
    login.add_argument(
        "--token-stdin",
        action="store_true",
        help="read an access token from standard input (for automation); without it, the "
        "command prints a code for a person to approve in the dashboard, and waits",
    )
    login.add_argument(
        "--public-key",
        help="the server's signing key (base64) to pin, from the dashboard; "
        "default: the key the server presents now",
    )
    login.set_defaults(run=_login)

    logout = commands.add_parser(
        "logout", help="drop the sign-in and the cached policy (applies at once)"
    )
    logout.set_defaults(run=_logout)

    status = commands.add_parser("status", help="who is signed in and what is enforced")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(run=_status)

    agent = commands.add_parser("agent", help="run or install the agent on this machine")
    actions = agent.add_subparsers(dest="agent_command", required=True, metavar="ACTION")
    run = actions.add_parser("run", help="run the AuthZ plugin, policy sync and egress proxy")
    _enforcement_flags(run, containers_policy="off")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--metrics-listen",
        default="off",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default off)",
    )
    from regward.agent.proxy.workers import DEFAULT_WORKERS, parse_workers

    run.add_argument(
        "--workers",
        "--proxy-workers",
        dest="proxy_workers",
        type=parse_workers,
        default=DEFAULT_WORKERS,
        metavar="N",
        help="processes serving the egress proxy, and as many the transparent listener, each "
        f"set sharing its address (default {DEFAULT_WORKERS}, the cores)",
    )
    run.set_defaults(run=_agent_run)
    install = actions.add_parser(
        "install", help="write the plugin spec, dockerd configuration and a systemd unit"
    )
    _enforcement_flags(install, containers_policy=str(containers_policy.DEFAULT_PATH))
    install.add_argument("--root", type=Path, default=Path("/"), help="install under this root")
    install.add_argument("--dry-run", action="store_true", help="print what would change")
    install.set_defaults(run=_agent_install)
    try:
        from regward.agent.proxy import add_proxy_command
    except ImportError:  # the proxy package is optional in a partial build
        return
    add_proxy_command(actions)


def _enforcement_flags(parser: argparse.ArgumentParser, containers_policy: str) -> None:
    # Not from the runner: building the parser must not import httpx and the engine's clients
    # (`regward agent proxy` would carry them, ~10 MB, for nothing).
    from regward.agent.transparent import DEFAULT_INTERFACES, DEFAULT_LISTEN_PORT, DEFAULT_PORTS
    from regward.defaults import AUTHZ_SOCKET, PROXY_LISTEN

    parser.add_argument(
        "--authz-socket",
        type=Path,
        default=Path(AUTHZ_SOCKET),
        help=f"the AuthZ plugin's unix socket (default {AUTHZ_SOCKET})",
    )
    parser.add_argument(
        "--proxy-listen",
        default=PROXY_LISTEN,
        help=f"the egress proxy's address, or off (default {PROXY_LISTEN})",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        help="enforce this policy file (YAML or JSON) instead of a signed-in server's",
    )
    transparent = parser.add_argument_group(
        "transparent enforcement",
        "nftables rules send this machine's own connections to loopback registries (and, with "
        "--transparent, container networks' connections) to a listener of the agent that "
        "decides by the name the client sends; needs root and nftables",
    )
    transparent.add_argument(
        "--loopback",
        choices=["on", "off"],
        default="on",
        help="take this machine's connections to registries on loopback addresses, which "
        "Docker never sends to a proxy (default on; off leaves builds an open path to them)",
    )
    transparent.add_argument(
        "--transparent",
        action="store_true",
        help="take container networks' connections too",
    )
    transparent.add_argument(
        "--transparent-host",
        action="store_true",
        help="take this machine's own connections to any address too (containers run with "
        "--network host, clients that ignore the proxy variables), decided as a container's",
    )
    transparent.add_argument(
        "--transparent-interfaces",
        default=",".join(DEFAULT_INTERFACES),
        metavar="LIST",
        help=f"container interfaces taken, * as a suffix (default {','.join(DEFAULT_INTERFACES)})",
    )
    transparent.add_argument(
        "--transparent-ports",
        default=",".join(map(str, sorted(DEFAULT_PORTS))),
        metavar="LIST|all",
        help="destination ports taken, plus every port a policy entry names (default "
        f"{','.join(map(str, sorted(DEFAULT_PORTS)))}); all: every port (a client silent for a "
        "moment is passed untouched, so server-first protocols work)",
    )
    transparent.add_argument(
        "--transparent-listen",
        type=int,
        default=DEFAULT_LISTEN_PORT,
        metavar="PORT",
        help=f"the transparent listener's port (default {DEFAULT_LISTEN_PORT})",
    )
    parser.add_argument(
        "--containers-policy",
        default=containers_policy,
        metavar="FILE|off",
        help="keep this containers-policy.json (podman, buildah, skopeo, CRI-O) in step with "
        f"the enforced policy (default {containers_policy})",
    )


def _read_token() -> str:
    token = sys.stdin.readline().strip()
    if not token:
        raise ConfigError("no access token on standard input; create one in the dashboard (Tokens)")
    return token


def _login(args: argparse.Namespace) -> int:
    import httpx

    from regward.agent.device_login import client_for, device_sign_in
    from regward.agent.runner import agent_id
    from regward.agent.state import AgentState, Credentials
    from regward.errors import InvalidPolicy, SignatureError
    from regward.policy import SignedPolicy, public_key_from_text, verify

    server = args.server.rstrip("/")
    if not server.startswith(("http://", "https://")):
        raise ConfigError(f"--server {args.server!r} must be a URL like https://regward.example")
    org = args.org.strip().lower()
    state = AgentState()
    if args.token_stdin:
        token = _read_token()
    else:
        token = device_sign_in(server, org, socket.gethostname(), agent_id(state))
    try:
        with client_for(token) as client:
            user = client.get(f"{server}/api/v1/user")
            if user.status_code == 401:
                raise ConfigError("the server refused the token; create a new one and try again")
            _expect(user, "checking the token")
            organization = client.get(f"{server}/api/v1/orgs/{org}")
            if organization.status_code == 404:
                raise ConfigError(f"organization '{org}' does not exist or you are not a member")
            _expect(organization, f"reading organization '{org}'")
            key = client.get(f"{server}/api/v1/signing-key")
            _expect(key, "reading the server's signing key")
            presented = str(key.json().get("public_key", ""))
            policy = client.get(f"{server}/api/v1/orgs/{org}/policy")
    except httpx.HTTPError as error:
        raise ConfigError(f"cannot reach {server}: {error}") from error
    _check_registry_json(org, user.json())
    pinned = args.public_key or presented
    if args.public_key and args.public_key != presented:
        raise ConfigError(
            "the server presents a different signing key than --public-key; refusing to sign in"
        )
    try:
        public_key = public_key_from_text(pinned)
    except SignatureError as error:
        raise ConfigError(f"the server's signing key {pinned!r} is not valid: {error}") from error
    credentials = Credentials(
        server=server,
        organization=org,
        token=token,
        public_key=pinned,
        user=str(user.json().get("username", "")),
    )
    revision = "none applied yet"
    if policy.status_code == 200:
        try:
            verified = verify(SignedPolicy.from_json(policy.content), public_key)
        except (InvalidPolicy, SignatureError) as error:
            raise ConfigError(f"the server's policy does not verify: {error}") from error
        state.logout()  # the previous organization's cache must not survive
        state.save_policy(policy.content)
        revision = f"revision {verified.revision}"
    else:
        state.logout()
    state.save_credentials(credentials)
    print(f"Signed in to '{org}' at {server} as {credentials.user or 'token'} ({revision}).")
    print(f"Pinned signing key {pinned}; credentials in {state.credentials_path} (0600).")
    return 0


def _check_registry_json(org: str, user: Any) -> None:
    """Where registry.json names organizations, sign-in must be to the first one the user
    belongs to (Docker's rule: with several, the first one's policy is enforced)."""
    from regward.agent.state import default_registry_json, read_registry_json

    path = default_registry_json()
    required = read_registry_json(path)
    if not required:
        return
    if org not in required:
        raise ConfigError(
            f"{path} allows sign-in only to {', '.join(repr(o) for o in required)}; "
            f"'{org}' would leave every pull refused. Use --org {required[0]}"
        )
    memberships = user.get("organizations", []) if isinstance(user, dict) else []
    mine = {str(m.get("name")) for m in memberships if isinstance(m, dict)}
    first = next((name for name in required if name in mine), org)
    if first != org:
        raise ConfigError(
            f"{path} lists '{first}' before '{org}' and you belong to both; the first "
            f"organization's policy is the one enforced. Use --org {first}"
        )


def _expect(response: Any, what: str) -> None:
    if response.status_code >= 400:
        raise ConfigError(f"{what} failed: the server answered {response.status_code}")


def _logout(args: argparse.Namespace) -> int:
    from regward.agent.state import AgentState

    state = AgentState()
    credentials = state.credentials()
    if state.logout(forget_machine=True):
        where = f" from '{credentials.organization}'" if credentials else ""
        print(f"Signed out{where}; the cached policy is gone.")
    else:
        print("Not signed in.")
    return 0


def _status(args: argparse.Namespace) -> int:
    from regward.agent.runner import describe
    from regward.agent.state import AgentState

    state = AgentState()
    credentials = state.credentials()
    enforcement = state.enforcement()
    running = state.read_status()
    alive = bool(running and running.get("running") and _pid_alive(int(running.get("pid", 0))))
    points: dict[str, Any] = {"authz": None, "proxy": None}
    if alive and running:
        sock = running.get("authz_socket")
        points["authz"] = {"socket": sock, "up": bool(sock) and _unix_up(str(sock))}
        listen = running.get("proxy_listen")
        points["proxy"] = {"listen": listen, "up": bool(listen) and _tcp_up(str(listen))}
    engine = _engine_check(running)
    transparent = _transparent_status(running if alive else None)
    cache = _cache_status(state, credentials, enforcement)
    report: dict[str, Any] = {
        "signed_in": credentials is not None,
        "server": credentials.server if credentials else None,
        "organization": credentials.organization if credentials else None,
        "user": credentials.user if credentials else None,
        "required_orgs": list(enforcement.required_orgs),
        "enforced": describe(enforcement) if not (alive and running) else None,
        "agent_running": alive,
        "enforcement_points": points,
        "docker_engine": engine.to_dict(),
        "transparent": transparent,
        "cache": cache,
    }
    if alive and running:
        report["enforced"] = (
            f"revision {running['revision']} of '{running['organization']}'"
            if running.get("revision") is not None
            else describe(enforcement)
        )
        if running.get("policy_file"):
            report["enforced"] += f" (policy file {running['policy_file']})"
        report["revision"] = running.get("revision")
        report["sync"] = running.get("sync")
    else:
        report["revision"] = enforcement.policy.revision if enforcement.policy else None
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    rows: list[tuple[str, str]] = []
    if credentials:
        rows.append(("Signed in", f"{credentials.user or 'token'} to '{credentials.organization}'"))
        rows.append(("Server", credentials.server))
    else:
        rows.append(("Signed in", "no"))
    if enforcement.required_orgs:
        rows.append(("registry.json", f"requires {', '.join(enforcement.required_orgs)}"))
    rows.append(("Enforcing", report["enforced"]))
    sync = report.get("sync")
    if sync:
        last = sync.get("last_sync")
        error = f" ({sync['last_error']})" if sync.get("last_error") else ""
        rows.append(("Last sync", (_local_time(last) if last else "never") + error))
        if sync.get("refusal"):
            rows.append(("REFUSED", sync["refusal"]))
    if cache["error"]:
        rows.append(("CACHE", cache["error"]))
        if alive and running:
            rows.append(
                (
                    "",
                    "the agent enforces its newest verified revision from memory; this status "
                    f"is as of {_local_time(running.get('updated') or 0)}",
                )
            )
        after = (
            f"revision {cache['revision']} (the cached one)"
            if cache["revision"] is not None
            else "no cached policy (fail closed until it syncs)"
        )
        rows.append(("", f"after a restart: {after}"))
    rows.append(("Docker Engine", engine.words()))
    rows.append(("Transparent", _transparent_words(transparent)))
    if not alive:
        rows.append(("Agent", "not running (`regward agent run`)"))
    else:
        for label, point in (("AuthZ plugin", points["authz"]), ("Proxy", points["proxy"])):
            where = point and (point.get("socket") or point.get("listen"))
            rows.append(
                (label, f"{'up' if point['up'] else 'DOWN'} at {where}" if where else "off")
            )
    width = max(len(label) for label, _ in rows) + 1
    for label, value in rows:
        print(f"{label + ':' if label else '':<{width}} {value}")
    return 0


def _local_time(epoch: float) -> str:
    """A moment in this machine's time zone, with the zone: `2026-12-02 10:31:07 CET (+0100)`."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z (%z)", time.localtime(epoch))


def _cache_status(
    state: AgentState, credentials: Credentials | None, enforcement: Enforcement
) -> dict[str, Any]:
    """Whether the agent can write its directory (policy cache, status), and the revision a
    restart would enforce; `error` names the directory and the reason when it cannot."""
    error = state.write_problem()
    if error is not None:
        error += "; free space or make it writable, the agent then writes it by itself"
    return {
        "directory": str(state.directory),
        "writable": error is None,
        "error": error,
        "revision": enforcement.policy.revision if credentials and enforcement.policy else None,
    }


def _transparent_status(running: dict[str, Any] | None) -> dict[str, Any] | None:
    """The running agent's transparent settings, with whether its nftables table is in place
    now (asked of nft, not of the agent); None when it runs without --transparent. A table
    left behind by an agent that is not running is reported too."""
    import asyncio

    from regward.agent.transparent.rules import Nft

    nft = Nft()
    try:
        present: bool | None = asyncio.run(nft.present()) if nft.available() else None
    except OSError:
        present = None
    settings = dict(running.get("transparent") or {}) if running else {}
    if not settings and not present:
        return None
    settings["rules"] = {True: "in place", False: "missing", None: "unknown"}[present]
    return settings


def _transparent_words(status: dict[str, Any] | None) -> str:
    if status is None:
        return "off"
    if "listen_port" not in status:
        return (
            f"rules {status['rules']}, left by an agent that is not running "
            "(remove them: nft delete table inet regward)"
        )
    from regward.agent.transparent import describe_taken

    ports = status["ports"]
    taken = describe_taken(
        status.get("interfaces") or (),
        status.get("loopback", True),  # an agent from before loopback was told
        () if isinstance(ports, str) else ports,  # "all"
        status.get("host", False),
    )
    rules = status["rules"] if status["rules"] != "missing" else "MISSING"
    served = _served_by(status.get("workers", 1))
    return f"rules {rules} ({taken}; listener port {status['listen_port']}{served})"


def _served_by(workers: int) -> str:
    return f", served by {workers} process{'es' if workers != 1 else ''}"


def _engine_check(running: dict[str, Any] | None) -> EngineCheck:
    """The Docker Engine checked now, against the agent's settings (its last run's, else the
    defaults)."""
    import asyncio

    from regward.agent import protection
    from regward.agent.runner import DEFAULT_AUTHZ_SOCKET, DEFAULT_PROXY_LISTEN, parse_listen

    authz_socket: Path | None = DEFAULT_AUTHZ_SOCKET
    listen = DEFAULT_PROXY_LISTEN
    if running is not None:
        authz_socket = Path(running["authz_socket"]) if running.get("authz_socket") else None
        listen = str(running.get("proxy_listen") or "off")
    try:
        proxy_listen = parse_listen(listen)
    except ConfigError:
        proxy_listen = parse_listen(DEFAULT_PROXY_LISTEN)
    return asyncio.run(
        protection.check(
            protection.docker_socket(os.environ),
            protection.plugin_names(authz_socket),
            proxy_listen,
        )
    )


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unix_up(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(1)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def _tcp_up(listen: str) -> bool:
    from regward.agent.proxy.settings import parse_listen

    try:
        with socket.create_connection(parse_listen(listen), timeout=1):
            return True
    except (OSError, ConfigError):
        return False


def _options(args: argparse.Namespace) -> Any:
    from regward.agent.protection import docker_socket
    from regward.agent.runner import AgentOptions, parse_listen
    from regward.agent.state import load_policy_file

    if args.policy is not None:
        load_policy_file(args.policy)  # a bad file is an error now, not a refused pull later
    proxy_listen = parse_listen(args.proxy_listen)
    return AgentOptions(
        authz_socket=args.authz_socket,
        proxy_listen=proxy_listen,
        policy_file=args.policy,
        docker_socket=docker_socket(os.environ),
        containers_policy=(
            None if args.containers_policy == "off" else Path(args.containers_policy).absolute()
        ),
        transparent=_transparent_settings(args, proxy_listen),
        proxy_workers=getattr(args, "proxy_workers", 1),  # `install` runs `run`'s default
    )


def _transparent_settings(args: argparse.Namespace, proxy_listen: tuple[str, int] | None) -> Any:
    from regward.agent.transparent import TransparentSettings, parse_interfaces, parse_ports

    interfaces = parse_interfaces(args.transparent_interfaces)
    ports = parse_ports(args.transparent_ports)
    loopback = args.loopback == "on"
    if args.transparent_host and not loopback:
        raise ConfigError(
            "--transparent-host takes this machine's connections to every address, loopback "
            "included: drop --loopback off, or drop --transparent-host"
        )
    if not (args.transparent or loopback):
        return None
    if not 0 < args.transparent_listen < 65536:
        raise ConfigError(
            f"--transparent-listen {args.transparent_listen} is not a port from 1 to 65535"
        )
    if proxy_listen is not None and proxy_listen[1] == args.transparent_listen:
        raise ConfigError(
            f"--transparent-listen {args.transparent_listen} is the egress proxy's port; "
            "pick another"
        )
    return TransparentSettings(
        interfaces=interfaces if args.transparent else (),
        loopback=loopback,
        host=args.transparent_host,
        ports=ports,
        listen_port=args.transparent_listen,
        skip_ports=frozenset({proxy_listen[1]}) if proxy_listen else frozenset(),
    )


def _agent_run(args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses

    from regward import logs
    from regward.agent.runner import parse_listen, run_agent

    logs.configure(args.log_level.upper())  # REGWARD_LOG_FORMAT=json: JSON lines
    metrics = parse_listen(args.metrics_listen, "--metrics-listen")
    asyncio.run(run_agent(dataclasses.replace(_options(args), metrics_listen=metrics)))
    return 0


def _agent_install(args: argparse.Namespace) -> int:
    from regward.agent.install import install

    options = _options(args)
    for line in install(options, root=args.root, dry_run=args.dry_run):
        print(line)
    return 0
