"""The `initial-password` file in the data directory: the first owner's generated password.

`regward server init` writes `USER:PASSWORD` there (mode 0600) so `make run` can print it again
while it still works. The password is one-time: once that user's password changes (their own
choice on the Account page or `PUT /api/v1/user/password`, or a reset by an owner or with
`regward server reset-password`), the file is removed, so the data directory never keeps a
password, working or old, of anyone.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

NAME = "initial-password"
log = logging.getLogger(__name__)


def path_in(data_dir: Path) -> Path:
    return data_dir / NAME


def save(data_dir: Path, username: str, password: str) -> Path:
    """Write the file (only its owner may read it); its path."""
    path = path_in(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(f"{username}:{password}\n")
    return path


def read(data_dir: Path) -> tuple[str, str] | None:
    """(username, password) from the file, or None when there is none."""
    try:
        text = path_in(data_dir).read_text()
    except FileNotFoundError:
        return None
    username, _, password = text.strip().partition(":")
    return username, password


def forget(data_dir: Path, username: str) -> None:
    """Remove the file when it holds `username`'s password (it has just changed). A file that
    cannot be removed is logged, not raised: the change itself is done."""
    try:
        found = read(data_dir)
        if found is not None and found[0] == username:
            path_in(data_dir).unlink(missing_ok=True)
    except OSError as error:
        log.warning("cannot remove %s: %s; delete it by hand", path_in(data_dir), error)
