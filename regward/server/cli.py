"""The server's commands, and the owners' scriptable registry list.

    regward server init --org ORG --owner USER [--password-stdin]
    regward server run [--host 127.0.0.1] [--port 8080]
    regward server reset-password USER [--password-stdin]
    regward server rotate-key | retire-key
    regward server backup FILE | restore FILE [--force]
    regward server db upgrade
    regward registries list|add|update|remove|enable|disable|apply --org ORG
                       [--server URL] [--token TOKEN]
    regward registries update|remove ADDRESS [--for-repositories PATTERNS] ...

The server commands read REGWARD_DATA_DIR (default ./var) and REGWARD_DATABASE_URL. The
`registries` commands talk to a running server over its REST API: --server (or REGWARD_SERVER,
default http://127.0.0.1:8080) and --token (or REGWARD_TOKEN), a personal access token with
read-write scope (read scope is enough for `list`). An address may have several entries that
differ in repositories; `--for-repositories acme/*,acme/x` (or '' for the entry without
repositories) says which one `update` and `remove` change. FastAPI, SQLAlchemy and uvicorn are
imported inside the command functions, so the agent-only install keeps working.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from regward.defaults import SERVER_PORT, SERVER_URL
from regward.errors import ConfigError, RegwardError
from regward.policy.address import join_host_port
from regward.policy.text import shown

if TYPE_CHECKING:
    from regward.server.settings import Settings


def add_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Register `server` and `registries` on the top-level parser."""
    server = commands.add_parser("server", help="run and set up the policy server")
    actions = server.add_subparsers(dest="server_command", required=True, metavar="ACTION")

    init = actions.add_parser(
        "init",
        help="create the database, signing key, first owner and organization (idempotent)",
    )
    init.add_argument("--org", required=True, help="the organization to create, e.g. acme")
    init.add_argument("--owner", required=True, help="the first owner's username, e.g. admin")
    init.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the owner's password from standard input instead of generating one",
    )
    init.set_defaults(run=_server_command(_init))

    run = actions.add_parser("run", help="serve the API and the dashboard")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    run.add_argument(
        "--port", type=int, default=SERVER_PORT, help=f"port to listen on ({SERVER_PORT})"
    )
    run.set_defaults(run=_server_command(_run))

    reset = actions.add_parser(
        "reset-password",
        help="give a user who forgot their password a new one and sign them out everywhere",
    )
    reset.add_argument("username", help="the user, e.g. alice")
    reset.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the new password from standard input instead of generating one",
    )
    reset.set_defaults(run=_server_command(_reset_password))

    backup = actions.add_parser(
        "backup", help="save the SQLite database (consistent, while running) and signing key"
    )
    backup.add_argument("file", type=Path, help="the archive to write (mode 0600)")
    backup.set_defaults(run=_server_command(_backup))
    restore = actions.add_parser(
        "restore", help="put a backup's database and signing key back (stop the server first)"
    )
    restore.add_argument("file", type=Path, help="an archive written by `server backup`")
    restore.add_argument(
        "--force", action="store_true", help="overwrite the database and key that are there"
    )
    restore.set_defaults(run=_server_command(_restore))

    rotate = actions.add_parser(
        "rotate-key",
        help="make a new signing key endorsed by the current one (agents follow by themselves)",
    )
    rotate.set_defaults(run=_server_command(_rotate_key))
    retire = actions.add_parser(
        "retire-key",
        help="after a rotation, stop serving the old key's endorsement and delete the old key",
    )
    retire.set_defaults(run=_server_command(_retire_key))

    db = actions.add_parser("db", help="database maintenance")
    db_actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_actions.add_parser("upgrade", help="apply the schema migrations")
    upgrade.set_defaults(run=_server_command(_upgrade))

    registries = commands.add_parser(
        "registries", help="an organization's allowed registries, over the server's API"
    )
    verbs = registries.add_subparsers(dest="registries_command", required=True, metavar="ACTION")
    listing = _api_parser(verbs, "list", "show the draft settings and what Apply would change")
    listing.add_argument("--json", action="store_true", help="print the draft as JSON")
    listing.set_defaults(run=_list)
    add = _api_parser(verbs, "add", "add a registry to the draft")
    add.add_argument("address", help="host, host:port or *.domain")
    _entry_flags(add)
    add.set_defaults(run=_add)
    update = _api_parser(verbs, "update", "change a registry in the draft (given fields only)")
    update.add_argument("address", help="the entry's current address")
    update.add_argument("--address", dest="new_address", help="a new address for the entry")
    _selector_flag(update)
    _entry_flags(update)
    update.set_defaults(run=_update)
    remove = _api_parser(verbs, "remove", "remove a registry from the draft")
    remove.add_argument("address")
    _selector_flag(remove)
    remove.set_defaults(run=_remove)
    enable = _api_parser(verbs, "enable", "turn Registry Access on in the draft")
    enable.set_defaults(run=_enable, enabled=True)
    disable = _api_parser(verbs, "disable", "turn Registry Access off in the draft")
    disable.set_defaults(run=_enable, enabled=False)
    apply = _api_parser(verbs, "apply", "Save & Apply: publish the draft as a new revision")
    apply.set_defaults(run=_apply)


def _api_parser(verbs: argparse._SubParsersAction[Any], name: str, text: str) -> Any:
    parser = verbs.add_parser(name, help=text)
    parser.add_argument("--org", required=True, help="the organization")
    parser.add_argument(
        "--server",
        default=os.environ.get("REGWARD_SERVER", SERVER_URL),
        help=f"the server's URL (REGWARD_SERVER, default {SERVER_URL})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("REGWARD_TOKEN"),
        help="a personal access token (REGWARD_TOKEN)",
    )
    return parser


def _selector_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--for-repositories",
        dest="for_repositories",
        metavar="PATTERNS",
        help="which entry of ADDRESS, when it has several: its repositories, comma-separated "
        "(e.g. 'acme/*'; '' for the entry without repositories)",
    )


def _entry_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nickname", help="a name people recognise, e.g. 'GitHub'")
    parser.add_argument(
        "--repository",
        action="append",
        dest="repositories",
        metavar="PATTERN",
        help="allow only these repositories (repeatable), e.g. 'acme/*'",
    )
    parser.add_argument(
        "--action",
        action="append",
        dest="actions",
        choices=["pull", "push"],
        help="allow only these actions (repeatable; default pull and push)",
    )
    parser.add_argument(
        "--extra-host",
        action="append",
        dest="extra_hosts",
        metavar="HOST",
        help="another host the registry needs, e.g. its CDN (repeatable)",
    )
    allowed = parser.add_mutually_exclusive_group()
    allowed.add_argument(
        "--disallow", dest="allowed", action="store_false", default=None, help="list it, blocked"
    )
    allowed.add_argument("--allow", dest="allowed", action="store_true", help="allow it")


# --- server ------------------------------------------------------------------------------

# What `pip install "regward[server]"` adds, by the module each one installs.
SERVER_MODULES = ("fastapi", "uvicorn", "sqlalchemy", "alembic", "argon2", "jinja2", "multipart")


def _server_command(command: Callable[[argparse.Namespace], int]) -> Any:
    """`command`, run only where the server's dependencies are installed; elsewhere (an
    agent-only install) one line saying which extra to install."""

    @functools.wraps(command)
    def checked(args: argparse.Namespace) -> int:
        missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
        if missing:
            raise ConfigError(
                "the policy server is not installed here (no module "
                f"{', '.join(missing)}): install it with pip install 'regward[server]'"
            )
        return command(args)

    return checked


def _settings() -> Any:
    from regward.server.settings import Settings

    return Settings.from_env()


def _upgrade(_args: argparse.Namespace) -> int:
    from regward.server.db import Database

    settings = _settings()
    database = Database(settings.database_url)
    try:
        database.upgrade()
    finally:
        database.dispose()
    print(f"regward: database schema is up to date ({_safe_url(settings.database_url)})")
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


def _init(args: argparse.Namespace) -> int:
    from regward.server import first_password, keys
    from regward.server.db import Database
    from regward.server.errors import ServiceError
    from regward.server.models import Role
    from regward.server.services import auth, orgs

    settings = _settings()
    password = _password_from_stdin(args)
    database = Database(settings.database_url)
    try:
        database.upgrade()
        key = keys.load_or_create(settings.signing_key_path)
        generated = False
        with database.session(write=True) as session:
            user = auth.get_user(session, args.owner)
            if user is None:
                if password is None:
                    password, generated = auth.generate_password(), True
                user = auth.create_user(session, args.owner, password, one_time=generated)
                created_user = True
            else:
                created_user = False
            organization = orgs.get(session, args.org)
            if organization is None:
                orgs.create(session, args.org, user, key)
                created_org = True
            else:
                created_org = False
                if orgs.role_of(session, user, organization) is None:
                    orgs.add_member(session, organization, user, args.owner, Role.OWNER)
    except ServiceError as error:
        raise ConfigError(str(error)) from None
    finally:
        database.dispose()
    password_file = first_password.path_in(settings.data_dir)
    if generated and password is not None:
        first_password.save(settings.data_dir, args.owner, password)
    print(f"regward: data directory {settings.data_dir}")
    print(f"regward: database {_safe_url(settings.database_url)}")
    print(f"regward: signing key {settings.signing_key_path}")
    print(
        f"regward: organization {args.org!r} "
        + ("created" if created_org else "already exists")
        + f", owner {args.owner!r} "
        + ("created" if created_user else "already exists")
    )
    if generated:
        print(f"regward: one-time password for {args.owner!r}: {password}")
        print(f"regward: (also saved in {password_file} until you change it)")
    else:
        _show_initial_password(settings)
    return 0


def _reset_password(args: argparse.Namespace) -> int:
    """For the server's administrator (it needs the database, not an owner's sign-in): owners
    of one organization must not take over an account that may belong to others too."""
    from regward.server import first_password
    from regward.server.db import Database
    from regward.server.services import auth

    settings = _settings()
    password = _password_from_stdin(args)
    database = Database(settings.database_url)
    try:
        database.upgrade()
        with database.session(write=True) as session:
            user = auth.get_user(session, args.username)
            if user is None:
                raise ConfigError(f"no user {args.username!r}; `regward server init` creates one")
            generated = password is None
            password = password or auth.generate_password()
            auth.set_password(session, user, password, keep=None, one_time=generated)
    finally:
        database.dispose()
    first_password.forget(settings.data_dir, args.username)
    print(f"regward: new password set for {args.username!r}; every sign-in of theirs is ended")
    if generated:
        print(f"regward: one-time password for {args.username!r}: {password}")
    return 0


def _backup(args: argparse.Namespace) -> int:
    from regward.server import backup

    settings = _settings()
    names = backup.backup(settings, args.file)
    print(f"regward: wrote {args.file} (mode 0600): {', '.join(names)}")
    if not settings.is_sqlite:
        print(
            "regward: the database is PostgreSQL: save it with pg_dump as well "
            "(docs/operators.md, Backups); this archive holds the signing key"
        )
    return 0


def _restore(args: argparse.Namespace) -> int:
    from regward.server import backup

    written = backup.restore(_settings(), args.file, force=args.force)
    for path in written:
        print(f"regward: restored {path}")
    print("regward: start the server; it serves the backed-up revisions and signatures")
    return 0


def _rotate_key(_args: argparse.Namespace) -> int:
    from regward.policy import public_key_to_text
    from regward.server import keys
    from regward.server.db import Database
    from regward.server.services import revisions

    settings = _settings()
    database = Database(settings.database_url)
    try:
        database.upgrade()
        old, new = keys.rotate(settings.signing_key_path)
        with database.session(write=True) as session:
            count = revisions.resign_newest(session, new)
    finally:
        database.dispose()
    print(f"regward: new signing key {public_key_to_text(new.public_key())}")
    print(f"regward: endorsed by the old key {public_key_to_text(old.public_key())}")
    print(f"regward: the current revision of {count} organization(s) is signed with the new key")
    print(
        "regward: start (or restart) every server process now; agents pin the new key at "
        "their next sync. Once they all have, run `regward server retire-key`."
    )
    return 0


def _retire_key(_args: argparse.Namespace) -> int:
    from regward.server import keys

    settings = _settings()
    old = keys.retire(settings.signing_key_path)
    print(f"regward: retired the old signing key {old}: its endorsement is no longer served")
    print(
        "regward: restart every server process; an agent that still pins the old key must "
        "sign in again (`regward login`)"
    )
    return 0


def _password_from_stdin(args: argparse.Namespace) -> str | None:
    """The password given on standard input with --password-stdin (checked), else None."""
    from regward.server.services import auth

    if not args.password_stdin:
        return None
    return auth.check_password(sys.stdin.readline().rstrip("\n"))


def _show_initial_password(settings: Settings) -> None:
    """Print the generated first password again while it is still the one-time one (for
    `make run`); forget it once it no longer is."""
    from regward.server import first_password
    from regward.server.db import Database
    from regward.server.errors import Unauthenticated
    from regward.server.services import auth

    found = first_password.read(settings.data_dir)
    if found is None:
        return
    username, password = found
    database = Database(settings.database_url)
    try:
        with database.session() as session:
            still = auth.authenticate(session, username, password).password_one_time
    except Unauthenticated:
        still = False
    finally:
        database.dispose()
    if not still:
        first_password.forget(settings.data_dir, username)
        return
    path = first_password.path_in(settings.data_dir)
    print(f"regward: sign in as {username!r} with password {password} (from {path})")


def _run(args: argparse.Namespace) -> int:
    import gc
    import logging

    import uvicorn

    from regward import logs
    from regward.server.app import create_app
    from regward.server.db import Database
    from regward.server.protocol import JsonErrors

    _limit_malloc_arenas()
    settings = _settings()
    logs.configure()  # REGWARD_LOG_FORMAT=json: one JSON object per line
    database = Database(settings.database_url)
    database.upgrade()
    app = create_app(settings, database=database)
    address = f"http://{join_host_port(args.host, args.port)}/"
    if logs.log_format() == "json":  # every line a JSON object, this one too
        logging.getLogger("regward.server").info(
            "policy server on %s",
            address,
            extra={"fields": {"url": address, "data_dir": str(settings.data_dir)}},
        )
    else:
        print(
            f"regward: policy server on {address} (API /api/v1, schema /api/v1/openapi.json); "
            f"data in {settings.data_dir}",
            flush=True,
        )
    # What start-up made (modules, the app, its routes and templates) lives as long as the
    # process: out of the collector's sight, so its passes over 10,000 held polls do not walk
    # it again each time.
    gc.collect()
    gc.freeze()
    # Long-polls would hold a graceful shutdown for minutes; agents simply poll again.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",  # its access log: ours (regward.access) names routes and callers
        log_config=None,  # its lines go through our handler and format
        timeout_keep_alive=75,
        timeout_graceful_shutdown=3,
        # uvicorn's httptools protocol: the feed's polls held as data (FeedProtocol), and its
        # own 400 for an unreadable request as JSON (JsonErrors).
        http=JsonErrors,
    )
    return 0


def _limit_malloc_arenas() -> None:
    """Two malloc arenas instead of glibc's eight per core: the request threads otherwise keep
    freed memory in arenas of their own (about 20 MB at 10,000 long-polls). Python holds the
    GIL anyway, so the threads gain nothing from separate arenas. No-op off glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        return


# --- registries, over the API -------------------------------------------------------------


def _request(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    import httpx

    if not args.token:
        raise ConfigError(
            "no token: pass --token or set REGWARD_TOKEN (create one under Tokens in the "
            "dashboard, or POST /api/v1/tokens)"
        )
    url = f"{args.server.rstrip('/')}/api/v1/orgs/{quote(args.org, safe='')}{path}"
    try:
        response = httpx.request(
            method,
            url,
            json=body,
            headers={"Authorization": f"Bearer {args.token}"},
            timeout=30,
        )
    except httpx.HTTPError as error:
        raise ConfigError(f"cannot reach the server at {args.server}: {error}") from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text.strip()[:200]
        raise RegwardError(f"{method} {path or '/'}: {response.status_code}: {detail}")
    return response.json() if response.content else None


def _address(text: str) -> str:
    return quote(text, safe="")


def _list(args: argparse.Namespace) -> int:
    draft = _request(args, "GET", "/registry-access")
    if args.json:
        print(json.dumps(draft, indent=2))
        return 0
    state = "on" if draft["enabled"] else "off (every registry is allowed)"
    print(f"Registry Access for {draft['organization']}: {state}")
    print(f"draft version {draft['version']}, applied revision {draft['applied_revision']}")
    rows = [("ADDRESS", "NICKNAME", "ALLOWED", "ACTIONS", "REPOSITORIES", "EXTRA HOSTS")]
    for entry in draft["registries"]:
        rows.append(
            (
                entry["address"],
                shown(entry.get("nickname") or ""),  # a terminal would obey control characters
                "yes" if entry.get("allowed", True) else "no",
                ",".join(entry.get("actions") or ["pull", "push"]),
                ",".join(entry.get("repositories") or []) or "all",  # the dashboard's word
                ",".join(entry.get("extra_hosts") or []),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    pending = draft.get("pending_changes") or []
    if pending:
        print(f"{len(pending)} change(s) not applied yet; run `regward registries apply`:")
        for change in pending:
            label = _label(change.get("address") or "", change.get("repositories") or [])
            print(f"  {change['action']} {label}".rstrip())
    return 0


def _entry_from_flags(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    entry = dict(base)
    for name in ("nickname", "repositories", "actions", "extra_hosts", "allowed"):
        value = getattr(args, name)
        if value is not None:
            entry[name] = value
    return entry


def _add(args: argparse.Namespace) -> int:
    entry = _entry_from_flags(args, {"address": args.address})
    draft = _request(args, "POST", "/registry-access/registries", {"entry": entry})
    print(f"added {entry['address']} to the draft (version {draft['version']}); apply to enforce")
    return 0


def _label(address: str, repositories: list[str]) -> str:
    return f"{address} ({', '.join(repositories)})" if repositories else address


def _entry_path(entry: dict[str, Any]) -> str:
    """The API path of one entry, with its key's repositories (empty: none) as the selector."""
    repositories = ",".join(sorted(entry.get("repositories") or []))
    return (
        f"/registry-access/registries/{_address(entry['address'])}"
        f"?repositories={quote(repositories, safe='')}"
    )


def _update(args: argparse.Namespace) -> int:
    draft = _request(args, "GET", "/registry-access")
    wanted = _chosen_entry(args, draft)
    entry = _entry_from_flags(args, wanted)
    if args.new_address:
        entry["address"] = args.new_address
    draft = _request(
        args, "PUT", _entry_path(wanted), {"entry": entry, "version": draft["version"]}
    )
    label = _label(wanted["address"], wanted.get("repositories") or [])
    print(f"updated {label} in the draft (version {draft['version']}); apply to enforce")
    return 0


def _chosen_entry(args: argparse.Namespace, draft: dict[str, Any]) -> dict[str, Any]:
    """The draft's entry named by ADDRESS and --for-repositories; one line when there is none,
    or when ADDRESS has several entries and --for-repositories is missing."""
    from regward.policy import RegistryEntry

    repositories = None
    if args.for_repositories is not None:
        repositories = [p.strip() for p in args.for_repositories.split(",") if p.strip()]
    try:  # canonical, as the server stores them: `Docker.IO.` is docker.io, `nginx` library/nginx
        probe = RegistryEntry.from_dict(
            {"address": args.address, "repositories": repositories or []}, "ADDRESS"
        )
    except RegwardError as error:
        text = str(error).replace("ADDRESS.repositories", "--for-repositories")
        raise ConfigError(text.replace("ADDRESS.address", "ADDRESS")) from None
    address = str(probe.address)
    patterns = {str(p) for p in probe.repositories}
    same_address = [dict(e) for e in draft["registries"] if e["address"] == address]
    if repositories is None:
        found = same_address
    else:
        found = [e for e in same_address if set(e.get("repositories") or []) == patterns]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        choices = " or ".join(repr(",".join(sorted(e.get("repositories") or []))) for e in found)
        raise ConfigError(
            f"{address!r} has {len(found)} entries in {args.org!r}: add --for-repositories "
            f"{choices} ('' is the entry for every repository)"
        )
    if same_address:
        listed = " or ".join(
            repr(",".join(sorted(e.get("repositories") or []))) for e in same_address
        )
        raise ConfigError(
            f"{address!r} has no entry for repositories {args.for_repositories!r} in "
            f"{args.org!r}; its entries: --for-repositories {listed}"
        )
    known = ", ".join(sorted({e["address"] for e in draft["registries"]})) or "none"
    raise ConfigError(f"{args.address!r} is not in the list of {args.org!r} (listed: {known})")


def _remove(args: argparse.Namespace) -> int:
    wanted = _chosen_entry(args, _request(args, "GET", "/registry-access"))
    draft = _request(args, "DELETE", _entry_path(wanted))
    label = _label(wanted["address"], wanted.get("repositories") or [])
    print(f"removed {label} from the draft (version {draft['version']}); apply to enforce")
    return 0


def _enable(args: argparse.Namespace) -> int:
    draft = _request(args, "PUT", "/registry-access/enabled", {"enabled": args.enabled})
    state = "on" if args.enabled else "off"
    print(f"Registry Access {state} in the draft (version {draft['version']}); apply to enforce")
    return 0


def _apply(args: argparse.Namespace) -> int:
    answer = _request(args, "POST", "/registry-access/apply")
    print(f"applied revision {answer['revision']} ({len(answer['changes'])} change(s))")
    return 0
