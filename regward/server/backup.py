"""`regward server backup FILE` and `regward server restore FILE [--force]`.

A backup is a tar archive (mode 0600: it holds the signing key and password hashes) of:

    manifest.json             {"format": 1, "regward": version, "schema": migration, "database"}
    regward.db                a consistent copy of the SQLite database (SQLite's online backup,
                              safe while the server runs and writes); absent on PostgreSQL,
                              whose database pg_dump saves (docs/operators.md#backups)
    signing-key.pem           the signing key, and after a rotation
    signing-key-chain.json    its endorsement chain and
    signing-key.retired.pem   the key before it

`restore` writes them back into the data directory (and the SQLite file of
REGWARD_DATABASE_URL), refusing to overwrite anything there without `--force`. A restored server
serves the same revisions with the same signatures.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import tarfile
import tempfile
import time
from pathlib import Path

from sqlalchemy import make_url

from regward import __version__
from regward.errors import ConfigError
from regward.server import keys
from regward.server.health import head_revision
from regward.server.settings import Settings

FORMAT = 1
DATABASE = "regward.db"
MANIFEST = "manifest.json"


def _key_files(settings: Settings) -> list[Path]:
    path = settings.signing_key_path
    return [path, keys.chain_path(path), keys.retired_path(path)]


def _names() -> set[str]:
    """What an archive may hold."""
    key = Settings(data_dir=Path(), database_url="").signing_key_path
    return {MANIFEST, DATABASE, key.name, keys.chain_path(key).name, keys.retired_path(key).name}


def _sqlite_file(settings: Settings) -> Path | None:
    if not settings.is_sqlite:
        return None
    database = make_url(settings.database_url).database
    if not database or database == ":memory:":
        raise ConfigError(f"REGWARD_DATABASE_URL={settings.database_url!r} has no file to back up")
    return Path(database)


def backup(settings: Settings, target: Path) -> list[str]:
    """Write the archive to `target` (0600, replaced whole); returns the names it holds."""
    key = settings.signing_key_path
    if not key.exists():
        raise ConfigError(f"no signing key at {key}: is REGWARD_DATA_DIR right?")
    database = _sqlite_file(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".regward-backup-") as work:
        members: list[tuple[str, Path]] = []
        if database is not None:
            if not database.exists():
                raise ConfigError(f"no database at {database}: is REGWARD_DATABASE_URL right?")
            copy = Path(work) / DATABASE
            _copy_sqlite(database, copy)
            members.append((DATABASE, copy))
        members += [(path.name, path) for path in _key_files(settings) if path.exists()]
        manifest = {
            "format": FORMAT,
            "regward": __version__,
            "schema": head_revision(),
            "database": "sqlite" if database is not None else "postgresql (use pg_dump)",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        partial = Path(work) / "archive.tar"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file, tarfile.open(fileobj=file, mode="w") as archive:
            _add_bytes(archive, MANIFEST, json.dumps(manifest, indent=2).encode())
            for name, path in members:
                _add_bytes(archive, name, path.read_bytes())
        os.replace(partial, target)
    return [MANIFEST, *(name for name, _ in members)]


def _copy_sqlite(source: Path, copy: Path) -> None:
    """SQLite's online backup: a consistent snapshot while other connections write."""
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    src, dst = sqlite3.connect(source, timeout=30), sqlite3.connect(copy)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
    archive.addfile(info, io.BytesIO(data))


def restore(settings: Settings, source: Path, *, force: bool) -> list[Path]:
    """Write the archive's files into place; returns the paths written."""
    contents = _read(source)
    database = _sqlite_file(settings)
    if DATABASE in contents and database is None:
        raise ConfigError(
            f"{source} holds a SQLite database but REGWARD_DATABASE_URL is PostgreSQL; unset it "
            "to restore onto SQLite, or restore PostgreSQL with pg_restore"
        )
    if DATABASE not in contents and database is not None:
        raise ConfigError(f"{source} holds no database (it was made on PostgreSQL)")
    destinations = {path.name: path for path in _key_files(settings)}
    if database is not None:
        destinations[DATABASE] = database
    planned = {destinations[name]: data for name, data in contents.items() if name != MANIFEST}
    present = [
        path for path in destinations.values() if path.exists() or Path(f"{path}-wal").exists()
    ]
    if present and not force:
        shown = ", ".join(str(path) for path in present)
        raise ConfigError(f"{shown} already exist(s); pass --force to overwrite with {source}")
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in destinations.values():
        if path not in planned:  # a retired key or chain the backup did not have
            path.unlink(missing_ok=True)
    if database is not None:
        database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for stale in (Path(f"{database}-wal"), Path(f"{database}-shm")):
            stale.unlink(missing_ok=True)  # they belong to the file being replaced
    for path, data in planned.items():
        keys.write_private(path, data)
    return list(planned)


def _read(source: Path) -> dict[str, bytes]:
    allowed = _names()
    try:
        with tarfile.open(source, mode="r") as archive:
            contents: dict[str, bytes] = {}
            for member in archive.getmembers():
                if member.name not in allowed or not member.isfile():
                    raise ConfigError(
                        f"{source}: unexpected entry {member.name!r}; not a Regward backup"
                    )
                extracted = archive.extractfile(member)
                if extracted is None:  # pragma: no cover - isfile() above
                    raise ConfigError(f"{source}: cannot read {member.name!r}")
                contents[member.name] = extracted.read()
    except (OSError, tarfile.TarError) as error:
        raise ConfigError(f"cannot read the backup {source}: {error}") from None
    try:
        manifest = json.loads(contents.get(MANIFEST, b""))
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"{source} is not a Regward backup (no manifest of format {FORMAT})")
    if "signing-key.pem" not in contents:
        raise ConfigError(f"{source} holds no signing key; not a complete Regward backup")
    return contents
