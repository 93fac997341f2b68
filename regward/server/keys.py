"""The server's Ed25519 signing key, kept in the data directory with mode 0600."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from regward.errors import ConfigError


def load_or_create(path: Path) -> Ed25519PrivateKey:
    """Read the key at `path`, creating it (0600, never overwritten) when it does not exist."""
    if not path.exists():
        # The data directory also holds the database: keep it to the server's user.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: use theirs
        else:
            with os.fdopen(fd, "wb") as file:
                file.write(pem)
            return key
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read the signing key {path}: {error}") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigError(f"the signing key {path} is not an Ed25519 key")
    return loaded


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The public half as agents pin it: base64 of the raw 32 bytes."""
    import base64

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()
