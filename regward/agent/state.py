"""What the agent keeps on disk: the sign-in, the pinned key, the verified policy cache.

    $REGWARD_AGENT_DIR (default /var/lib/regward as root, ~/.local/state/regward otherwise)
    ├── credentials.json   {"server", "organization", "token", "public_key", "user"}   0600
    ├── policy.json        the last verified signed policy, exactly as the server sent it  0600
    └── status.json        what the running agent last did (sync time, revision, listeners)

`registry.json` ({"allowedOrgs": ["acme"]}) is read from
/usr/share/docker-desktop/registry/registry.json, or $REGWARD_REGISTRY_JSON.
Every write goes to a temporary file in the same directory, then `os.replace`, so a reader sees
the old file or the new one, never half of either.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regward.agent.guard import Enforcement
from regward.errors import ConfigError, InvalidPolicy, SignatureError
from regward.policy import (
    Policy,
    SignedPolicy,
    parse_policy_text,
    public_key_from_text,
    verify,
)

DEFAULT_REGISTRY_JSON = Path("/usr/share/docker-desktop/registry/registry.json")


def default_state_dir() -> Path:
    configured = os.environ.get("REGWARD_AGENT_DIR")
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/lib/regward")
    return Path.home() / ".local" / "state" / "regward"


def default_registry_json() -> Path:
    configured = os.environ.get("REGWARD_REGISTRY_JSON")
    return Path(configured) if configured else DEFAULT_REGISTRY_JSON


def write_private(path: Path, data: bytes) -> None:
    """Atomically replace `path` with `data`, readable by the owner only."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as error:
        raise ConfigError(
            f"cannot write {path}: {error.strerror}; run as root or set REGWARD_AGENT_DIR"
        ) from error
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Credentials:
    server: str
    organization: str
    token: str
    public_key: str  # base64 of the raw Ed25519 key, pinned at login
    user: str = ""

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: Path) -> Credentials:
        try:
            obj = json.loads(data)
            return cls(
                server=str(obj["server"]),
                organization=str(obj["organization"]),
                token=str(obj["token"]),
                public_key=str(obj["public_key"]),
                user=str(obj.get("user", "")),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(
                f"the sign-in file {where} is unreadable ({error}); run `regward login` again"
            ) from error


def read_registry_json(path: Path) -> tuple[str, ...]:
    """The organizations registry.json requires, or () when the file does not exist.

    A file that exists but cannot be read is not a reason to enforce nothing: it is reported as a
    ConfigError, and the caller fails closed.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error}") from error
    try:
        obj = json.loads(data)
        orgs = obj["allowedOrgs"]
        if not isinstance(orgs, list) or not all(isinstance(org, str) for org in orgs):
            raise TypeError("allowedOrgs must be a list of names")
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f'{path} must look like {{"allowedOrgs": ["myorg"]}}: {error}') from error
    return tuple(org.strip().lower() for org in orgs if org.strip())


class AgentState:
    """The agent's directory; every method reads or writes whole files."""

    def __init__(self, directory: Path | None = None, registry_json: Path | None = None) -> None:
        self.directory = directory or default_state_dir()
        self.registry_json = registry_json or default_registry_json()

    @property
    def credentials_path(self) -> Path:
        return self.directory / "credentials.json"

    @property
    def policy_path(self) -> Path:
        return self.directory / "policy.json"

    @property
    def status_path(self) -> Path:
        return self.directory / "status.json"

    def credentials(self) -> Credentials | None:
        try:
            data = self.credentials_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ConfigError(
                f"cannot read {self.credentials_path}: {error.strerror}; run as root or set "
                "REGWARD_AGENT_DIR"
            ) from error
        return Credentials.from_json(data, self.credentials_path)

    def save_credentials(self, credentials: Credentials) -> None:
        write_private(self.credentials_path, credentials.to_json())

    def cached_policy(self, credentials: Credentials) -> Policy | None:
        """The cached revision if its signature verifies against the pinned key, else None."""
        try:
            data = self.policy_path.read_bytes()
        except OSError:  # missing or unreadable: nothing verified
            return None
        try:
            signed = SignedPolicy.from_json(data)
            policy = verify(signed, public_key_from_text(credentials.public_key))
        except (InvalidPolicy, SignatureError):
            return None
        if policy.organization != credentials.organization:
            return None
        return policy

    def save_policy(self, raw: bytes) -> None:
        write_private(self.policy_path, raw)

    @property
    def agent_id_path(self) -> Path:
        """This machine's id in check-ins and device sign-ins, made when first needed and
        kept until `regward logout` (the server ties a device to the user who first checked
        it in, so a machine signed in as someone else needs a new id)."""
        return self.directory / "agent-id"

    def logout(self, *, forget_machine: bool = False) -> bool:
        """Drop the token and the cached policy, and with `forget_machine` the agent id;
        True when something was removed."""
        removed = False
        for path in (self.credentials_path, self.policy_path):
            try:
                path.unlink()
                removed = True
            except FileNotFoundError:
                pass
        if forget_machine:
            self.agent_id_path.unlink(missing_ok=True)
        return removed

    def write_problem(self) -> str | None:
        """Why files cannot be written in the directory now (a read-only or full disk, no
        permission), or None when a write works (or there is no directory yet); tried with a
        small temporary file."""
        if not self.directory.is_dir():
            return None
        try:
            write_private(self.directory / ".write-check", b"ok\n")
            (self.directory / ".write-check").unlink()
        except ConfigError as error:
            return str(error)
        except OSError as error:
            return f"cannot write {self.directory}: {error.strerror}"
        return None

    def write_status(self, status: dict[str, Any]) -> None:
        write_private(self.status_path, json.dumps(status, indent=2).encode() + b"\n")

    def read_status(self) -> dict[str, Any] | None:
        try:
            obj = json.loads(self.status_path.read_bytes())
        except (OSError, ValueError):
            return None
        return obj if isinstance(obj, dict) else None

    def required_orgs(self) -> tuple[str, ...]:
        """registry.json's organizations; an unreadable file requires one nobody can sign in to."""
        try:
            return read_registry_json(self.registry_json)
        except ConfigError:
            return ("(unreadable registry.json)",)

    def enforcement(self, policy_file: Path | None = None) -> Enforcement:
        """What to enforce now, from registry.json, the sign-in and the cache (or a policy file).

        An unreadable registry.json counts as requiring an organization nobody is signed in to,
        so the machine fails closed rather than open.
        """
        required = self.required_orgs()
        if policy_file is not None:
            policy = load_policy_file(policy_file)
            return Enforcement(
                mode="local",
                policy=policy,
                organization=policy.organization,
                required_orgs=required,
                source=str(policy_file),
            )
        credentials = self.credentials()
        if credentials is None:
            return Enforcement(mode="unmanaged", required_orgs=required)
        return Enforcement(
            mode="signed-in",
            policy=self.cached_policy(credentials),
            organization=credentials.organization,
            required_orgs=required,
            dashboard_url=f"{credentials.server}/orgs/{credentials.organization}/registry-access",
            source=credentials.server,
        )


def load_policy_file(path: Path) -> Policy:
    """Read and parse a policy file; every failure is a RegwardError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read the policy file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read the policy file {path}: not UTF-8 text") from None
    return parse_policy_text(text, str(path))
