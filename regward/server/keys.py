"""The server's Ed25519 signing key, kept in the data directory with mode 0600.

Agents pin its public half (`GET /api/v1/signing-key`, `regward.policy.public_key_to_text`).
Several server processes on one database must share this file.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from regward.errors import ConfigError, SignatureError
from regward.policy import generate_key, private_key_from_pem, private_key_to_pem


def load_or_create(path: Path) -> Ed25519PrivateKey:
    """Read the key at `path`, creating it (0600, never overwritten) when it does not exist."""
    if not path.exists():
        # The data directory also holds the database: keep it to the server's user.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = generate_key()
        # Written whole under a temporary name, then linked into place: a process starting at
        # the same moment sees either no key or a complete one, never half a file.
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(private_key_to_pem(key))
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
