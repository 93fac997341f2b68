"""`regward agent install`: the files that make dockerd ask the agent before it touches a registry.

    ROOT/etc/docker/plugins/regward.spec               unix://<the AuthZ socket>
    ROOT/etc/docker/daemon.json                        "authorization-plugins" gains "regward"
    ROOT/etc/systemd/system/regward-agent.service      runs `regward agent run`, before docker
    (proxy on) dockerd's proxy settings, written by regward.agent.proxy.configure_dockerd

Existing settings in daemon.json are kept; each change is reported in one line. dockerd refuses to
start while an authorization plugin it names is down, which is why the unit starts first.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from regward.agent.protection import PLUGIN_NAME
from regward.agent.runner import AgentOptions
from regward.errors import ConfigError
from regward.policy.address import join_host_port

RESTART_SECONDS = 1
"""The unit restarts a stopped or crashed agent after this long. dockerd retries a plugin it
cannot reach for about 30 s (moby's plugin client), so a docker call made during a crash waits
for the restarted agent's decision instead of failing."""


def _under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def unit_text(options: AgentOptions) -> str:
    command = [sys.executable, "-m", "regward.cli", "agent", "run"]
    command += ["--authz-socket", str(options.authz_socket)]
    listen = options.proxy_listen
    command += ["--proxy-listen", join_host_port(*listen) if listen else "off"]
    if options.policy_file:
        command += ["--policy", str(options.policy_file.resolve())]
    transparent = options.transparent
    if transparent is None:
        command += ["--loopback", "off"]
    else:
        if not transparent.loopback:
            command += ["--loopback", "off"]
        if transparent.interfaces:
            command += ["--transparent", "--transparent-interfaces"]
            command += [",".join(transparent.interfaces)]
        if transparent.host:
            command += ["--transparent-host"]
        command += ["--transparent-ports", ",".join(map(str, sorted(transparent.ports))) or "all"]
        command += ["--transparent-listen", str(transparent.listen_port)]
    if options.containers_policy:
        command += ["--containers-policy", str(options.containers_policy)]
    return (
        "[Unit]\n"
        "Description=Regward agent: Docker AuthZ plugin, policy sync, registry egress proxy\n"
        "Before=docker.service\n"
        "After=network-online.target\n\n"
        "[Service]\n"
        f"ExecStart={shlex.join(command)}\n"
        "Restart=always\n"
        f"RestartSec={RESTART_SECONDS}\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
        "RequiredBy=docker.service\n"
    )


def install(options: AgentOptions, root: Path = Path("/"), dry_run: bool = False) -> list[str]:
    """Write (or with dry_run, describe) every file; one line per change."""
    changes: list[str] = []

    def write(path: Path, text: str, what: str) -> None:
        if path.exists() and path.read_text() == text:
            changes.append(f"{path}: unchanged ({what})")
            return
        changes.append(f"{path}: {'would write' if dry_run else 'wrote'} {what}")
        if not dry_run:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    if options.authz_socket is None:
        raise ConfigError("--authz-socket is required for install")
    write(
        _under(root, f"/etc/docker/plugins/{PLUGIN_NAME}.spec"),
        f"unix://{options.authz_socket}\n",
        "the AuthZ plugin spec",
    )
    daemon_json = _under(root, "/etc/docker/daemon.json")
    config: dict[str, object] = {}
    if daemon_json.exists():
        try:
            loaded = json.loads(daemon_json.read_text() or "{}")
        except ValueError as error:
            raise ConfigError(f"{daemon_json} is not valid JSON ({error}); fix it first") from error
        if not isinstance(loaded, dict):
            raise ConfigError(f"{daemon_json} must hold a JSON object")
        config = loaded
    plugins = config.get("authorization-plugins", [])
    if not isinstance(plugins, list):
        raise ConfigError(f"{daemon_json}: authorization-plugins must be a list")
    if PLUGIN_NAME not in plugins:
        config["authorization-plugins"] = [*plugins, PLUGIN_NAME]
    write(
        daemon_json,
        json.dumps(config, indent=2) + "\n",
        f'"authorization-plugins": {json.dumps(config.get("authorization-plugins"))}',
    )
    write(
        _under(root, "/etc/systemd/system/regward-agent.service"),
        unit_text(options),
        "the systemd unit regward-agent.service",
    )
    if options.proxy_listen is not None:
        host, port = options.proxy_listen
        if dry_run:
            changes.append(f"dockerd: would use the proxy http://{join_host_port(host, port)}")
        else:
            from regward.agent.proxy import configure_dockerd
            from regward.agent.proxy.dockerd import DAEMON_JSON, DROPIN

            changes += configure_dockerd(
                join_host_port(host, port),
                dropin=_under(root, str(DROPIN)),
                daemon_json=_under(root, str(DAEMON_JSON)),
            )
    if not dry_run:
        changes.append(
            "next: systemctl daemon-reload && systemctl enable --now regward-agent "
            "&& systemctl restart docker"
        )
    return changes
