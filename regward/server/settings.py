"""The server's settings: one typed object, read from `REGWARD_*` environment variables.

REGWARD_DATA_DIR        directory for the SQLite file and the signing key (default ./var)
REGWARD_DATABASE_URL    SQLAlchemy URL; default sqlite:///<data dir>/regward.db;
                        postgresql://user@host/db selects PostgreSQL (driver psycopg 3)
REGWARD_SESSION_TTL     lifetime of sign-in tokens in seconds (default 30 days)
REGWARD_MAX_WAIT        longest long-poll a client may ask for, in seconds (default 300)
REGWARD_PUBLIC_URL      address users reach the server at (shown in messages), optional
REGWARD_METRICS_TOKEN   serve Prometheus metrics at /metrics to requests bearing this token
                        (`Authorization: Bearer ...`); unset, /metrics is 404
REGWARD_DEVICE_CODE_TTL lifetime of a `regward login` sign-in code in seconds (default 900)
REGWARD_DEVICE_POLL_INTERVAL  seconds a machine waits between polls for approval (default 5)
REGWARD_WEBHOOK_ATTEMPTS      tries per webhook delivery before it is marked failed (default 8)
REGWARD_WEBHOOK_BACKOFF       seconds before the first retry, doubled for each next one
                        (default 10)
REGWARD_WEBHOOK_BACKOFF_MAX   the longest wait between two tries, in seconds (default 3600)
REGWARD_OIDC_ISSUER     the OpenID provider's issuer URL: turns on "Sign in with SSO"
REGWARD_OIDC_CLIENT_ID  this server's client id at the provider (required with the issuer)
REGWARD_OIDC_CLIENT_SECRET, or REGWARD_OIDC_CLIENT_SECRET_FILE  its client secret (optional:
                        a public client sends PKCE only)
REGWARD_OIDC_SCOPES     scopes asked for (default "openid email profile")
REGWARD_OIDC_GROUPS_CLAIM  the ID token claim listing groups, for join rules (default groups)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from regward.defaults import MAX_LONG_POLL_SECONDS
from regward.errors import ConfigError


def normalize_database_url(url: str) -> str:
    """Select the psycopg 3 driver for plain `postgresql://` URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@dataclass(frozen=True)
class OidcSettings:
    """Single sign-on through one OpenID provider (authorization code flow with PKCE)."""

    issuer: str
    client_id: str
    client_secret: str | None = None
    scopes: str = "openid email profile"
    groups_claim: str = "groups"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OidcSettings | None:
        issuer = (env.get("REGWARD_OIDC_ISSUER") or "").rstrip("/")
        if not issuer:
            return None
        if not issuer.startswith(("https://", "http://")):
            raise ConfigError(f"REGWARD_OIDC_ISSUER={issuer!r} must be a URL (https://...)")
        client_id = env.get("REGWARD_OIDC_CLIENT_ID") or ""
        if not client_id:
            raise ConfigError("REGWARD_OIDC_ISSUER is set but REGWARD_OIDC_CLIENT_ID is not")
        secret = env.get("REGWARD_OIDC_CLIENT_SECRET") or None
        secret_file = env.get("REGWARD_OIDC_CLIENT_SECRET_FILE")
        if secret_file:
            if secret:
                raise ConfigError(
                    "set REGWARD_OIDC_CLIENT_SECRET or REGWARD_OIDC_CLIENT_SECRET_FILE, not both"
                )
            try:
                secret = Path(secret_file).read_text().strip() or None
            except OSError as error:
                raise ConfigError(
                    f"REGWARD_OIDC_CLIENT_SECRET_FILE={secret_file!r}: {error.strerror}"
                ) from None
        scopes = env.get("REGWARD_OIDC_SCOPES") or "openid email profile"
        if "openid" not in scopes.split():
            raise ConfigError(f"REGWARD_OIDC_SCOPES={scopes!r} must include openid")
        return cls(
            issuer=issuer,
            client_id=client_id,
            client_secret=secret,
            scopes=scopes,
            groups_claim=env.get("REGWARD_OIDC_GROUPS_CLAIM") or "groups",
        )


@dataclass(frozen=True)
class Settings:
    """Everything the server reads from its environment, resolved once at start."""

    data_dir: Path
    database_url: str
    session_ttl: int = 30 * 24 * 3600
    max_wait: int = MAX_LONG_POLL_SECONDS
    max_body_bytes: int = 1024 * 1024
    public_url: str | None = None
    metrics_token: str | None = None
    device_code_ttl: int = 900
    device_poll_interval: int = 5
    oidc: OidcSettings | None = None
    webhook_attempts: int = 8
    webhook_backoff: float = 10.0
    webhook_backoff_max: float = 3600.0
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("REGWARD_DATA_DIR") or "var").absolute()
        url = env.get("REGWARD_DATABASE_URL") or f"sqlite:///{data_dir / 'regward.db'}"
        return cls(
            data_dir=data_dir,
            database_url=normalize_database_url(url),
            session_ttl=_int(env, "REGWARD_SESSION_TTL", 30 * 24 * 3600),
            max_wait=_int(env, "REGWARD_MAX_WAIT", MAX_LONG_POLL_SECONDS),
            public_url=env.get("REGWARD_PUBLIC_URL") or None,
            metrics_token=env.get("REGWARD_METRICS_TOKEN") or None,
            device_code_ttl=_int(env, "REGWARD_DEVICE_CODE_TTL", 900),
            device_poll_interval=_int(env, "REGWARD_DEVICE_POLL_INTERVAL", 5),
            oidc=OidcSettings.from_env(env),
            webhook_attempts=_int(env, "REGWARD_WEBHOOK_ATTEMPTS", 8, unit="attempts"),
            webhook_backoff=_seconds(env, "REGWARD_WEBHOOK_BACKOFF", 10.0),
            webhook_backoff_max=_seconds(env, "REGWARD_WEBHOOK_BACKOFF_MAX", 3600.0),
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def signing_key_path(self) -> Path:
        return self.data_dir / "signing-key.pem"


def _int(env: Mapping[str, str], name: str, default: int, unit: str = "seconds") -> int:
    text = env.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a whole number of {unit}") from None
    if value <= 0:
        raise ConfigError(f"{name}={text!r} must be greater than zero")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise ConfigError(f"{name}={text!r} must be a number of seconds greater than zero")
    return value
