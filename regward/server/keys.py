"""The server's Ed25519 signing key, kept in the data directory with mode 0600.

Agents pin its public half (`GET /api/v1/signing-key`, `regward.policy.public_key_to_text`).
Several server processes on one database must share this file.

Rotation (`regward server rotate-key`) keeps, beside it until `retire-key`:

    signing-key.pem               the new key, which signs from the next start on
    signing-key.retired.pem       the key before it (0600), deleted by retire-key
    signing-key-chain.json        [the old key's endorsement of the new one], served with the
                                  public key so pinned agents can follow; emptied by retire-key
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from regward.errors import ConfigError, SignatureError
from regward.policy import (
    endorse,
    generate_key,
    private_key_from_pem,
    private_key_to_pem,
    public_key_to_text,
)


def load_or_create(path: Path) -> Ed25519PrivateKey:
    """Read the key at `path`, creating it (0600, never overwritten) when it does not exist."""
    if not path.exists():
        # The data directory also holds the database: keep it to the server's user.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = generate_key()
        # Written whole under a temporary name, then linked into place: a process starting at
        # the same moment sees either no key or a complete one, never half a file.
        temporary = _write_temporary(path, private_key_to_pem(key))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process created it first: use theirs
        else:
            return key
        finally:
            temporary.unlink()
    try:
        return private_key_from_pem(path.read_bytes())
    except (OSError, SignatureError) as error:
        raise ConfigError(f"cannot read the signing key {path}: {error}") from None


def _write_temporary(path: Path, data: bytes) -> Path:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return temporary


def write_private(path: Path, data: bytes) -> None:
    """Write `path` (0600) whole: readers see the old file or the new one."""
    os.replace(_write_temporary(path, data), path)


def chain_path(path: Path) -> Path:
    return path.with_name("signing-key-chain.json")


def retired_path(path: Path) -> Path:
    return path.with_name("signing-key.retired.pem")


def load_chain(path: Path) -> list[dict[str, str]]:
    """The endorsements served beside the key at `path` (empty when it was never rotated)."""
    try:
        chain = json.loads(chain_path(path).read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read the key chain {chain_path(path)}: {error}") from None
    if not isinstance(chain, list):
        raise ConfigError(f"the key chain {chain_path(path)} is not a list of endorsements")
    return chain


def rotate(path: Path) -> tuple[Ed25519PrivateKey, Ed25519PrivateKey]:
    """Make a new signing key endorsed by the current one; returns (old, new)."""
    if not path.exists():
        raise ConfigError(f"no signing key at {path}; `regward server init` makes one")
    if retired_path(path).exists():
        raise ConfigError(
            f"the previous rotation's old key is still kept ({retired_path(path)}); once every "
            "agent follows the current key, run `regward server retire-key`, then rotate again"
        )
    old = load_or_create(path)
    new = generate_key()
    chain = [*load_chain(path), endorse(old, new.public_key())]
    # Old key kept first, chain second, new key last: a crash in between leaves the old key in
    # force, and agents follow the chain only to a key the server presents.
    write_private(retired_path(path), private_key_to_pem(old))
    write_private(chain_path(path), json.dumps(chain, indent=2).encode())
    write_private(path, private_key_to_pem(new))
    return old, new


def retire(path: Path) -> str:
    """Stop serving the old key's endorsement and delete the old key; returns its public half."""
    retired = retired_path(path)
    if not retired.exists():
        raise ConfigError(f"no retired key at {retired}: nothing to retire")
    try:
        old = private_key_from_pem(retired.read_bytes())
    except SignatureError as error:
        raise ConfigError(f"cannot read {retired}: {error}") from None
    write_private(chain_path(path), b"[]")
    retired.unlink()
    return public_key_to_text(old.public_key())
