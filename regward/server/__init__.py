"""The policy server: organizations, Registry Access settings, Save & Apply, Activity, the feed.

Map of the package (the dashboard and the REST API both call the services; neither touches the
models' tables directly)::

    settings.py   Settings.from_env(): REGWARD_DATA_DIR (default ./var), REGWARD_DATABASE_URL
                  (default sqlite under the data dir), session lifetime, body limits
    app.py        create_app(settings) -> FastAPI; error handlers, body limit, the dashboard
    health.py     GET /healthz (liveness) and GET /readyz (database, schema, signing key)
    metrics.py    ServerMetrics (prometheus_client), GET /metrics for REGWARD_METRICS_TOKEN
    observe.py    RequestObserver: X-Request-ID, one access-log line per request (regward.logs
                  formats it: REGWARD_LOG_FORMAT=text|json)
    runtime.py    Server, kept on app.state.server: settings, database, signing_key, notifier,
                  feed (the cache of signed documents), sign_in_limiter; server_of(request)
    db.py         Database: engine + sessions; `with db.session() as s` (read) and
                  `with db.session(write=True) as s` (commits on success, rolls back on error)
    models.py     SQLAlchemy 2 models: User, Organization, Membership, Token, Draft,
                  Revision, ActivityEvent, Device, Denial
    migrations/   Alembic scripts, shipped in the package; db.upgrade(url) runs them
    backup.py     regward server backup|restore: SQLite online copy + signing key, tar 0600
    keys.py       the Ed25519 signing key in the data dir (0600), created on first use;
                  rotate (new key endorsed by the old) and retire
    notify.py     Notifier protocol: LocalNotifier (one process, SQLite) and PostgresNotifier
                  (LISTEN/NOTIFY, several processes); services call notify.announce()
    feed.py       FeedCache: the newest signed revision per organization, shared by waiters
    errors.py     NotFound (404), PermissionDenied (403), Conflict (409), Unauthenticated (401),
                  InvalidInput (422); all RegwardError, str() is one line naming the value
    services/     the domain, typed and documented; every function takes a Session first
      auth.py             authenticate(s, username, password) -> User; sign_in(...) -> token text;
                          resolve_token(s, text) -> Caller; require_write(caller); sign_out;
                          create_user, set_password (argon2id); feed_access (the feed's query)
      names.py            check_name: Docker-style user and organization names
      tokens.py           personal access tokens: create (value shown once), list, revoke
      orgs.py             create, list_for_user, access(s, caller, org, need=Role.OWNER|MEMBER)
                          (outsiders get NotFound), members: list, add, set_role, remove
      registry_access.py  entries keyed by (address, repositories): entry_key, find_index;
                          get_draft, replace_draft, add_entry, update_entry, remove_entry,
                          set_enabled, apply (revision N+1, signed, with its
                          activity events in the same transaction), current_revision
      activity.py         record(...) and list(s, org, action=, actor=, since=, until=, page=, ...)
      devices.py          check_in(s, org, caller, agent_id, revision, hostname, refusal,
                          engine, by_device_token=), list (with compliance: applied
                          revision vs current, refusal, engine protection)
      denials.py          report(s, org, caller, ...), list(s, org, page=...)
    api/          REST routes under /api/v1 (OpenAPI schema at /api/v1/openapi.json);
                  api/feed.py serves the long-poll through a lean ASGI fast path
    cli.py        regward server run|init|db upgrade; regward registries ... (over the API)

REST contract (all JSON; `Authorization: Bearer TOKEN`, a session or personal access token)::

    POST   /api/v1/auth/token                       {"username","password"} -> {"token"}
                                                    (429 + Retry-After after repeated failures)
    DELETE /api/v1/auth/token                       sign out (revokes the token used)
    GET    /api/v1/user                             the caller
    GET    /api/v1/signing-key                      {"algorithm":"ed25519","public_key":<base64>,
                                                     "chain":[{"previous","key","signature"}]}
    GET    /api/v1/orgs | POST /api/v1/orgs         list mine | create {"name"} (caller is owner)
    GET    /api/v1/orgs/{org}
    GET    /api/v1/orgs/{org}/members               POST {"username","role"} (new user: one-time
    PUT|DELETE /api/v1/orgs/{org}/members/{user}    password in the answer); PUT {"role"}
    GET|POST /api/v1/tokens, DELETE /api/v1/tokens/{id}   personal access tokens {"name","scope"}
    GET|PUT /api/v1/orgs/{org}/registry-access      the draft {"enabled","registries","version"}
    PUT    /api/v1/orgs/{org}/registry-access/enabled            {"enabled","version"}
    POST   /api/v1/orgs/{org}/registry-access/registries         {"entry","version"}
    PUT|DELETE /api/v1/orgs/{org}/registry-access/registries/{address}  (?version= on DELETE;
                                                    ?repositories=a/*,b picks one of an
                                                    address's entries, "" the one without)
    POST   /api/v1/orgs/{org}/registry-access/apply              -> {"revision"}
    GET    /api/v1/orgs/{org}/activity?action=&actor=&from=&to=&page=&page_size=
    GET    /api/v1/orgs/{org}/policy[?wait=S&after=N]  SignedPolicy JSON; ETag / If-None-Match
    POST   /api/v1/orgs/{org}/devices/check-in      {"agent_id","revision","hostname","refusal",
                                                     "engine": {"authz","proxy"} or null}
    GET    /api/v1/orgs/{org}/devices               each with "refusal": the revision the agent
                                                    refused last, in its words, or null; and
                                                    "engine": {"authz": bool, "proxy": bool or
                                                    null (proxy off)}, null when unknown
    POST|GET /api/v1/orgs/{org}/denials             POST {"agent_id","reference","action",
                                                    "revision","reason"} or {"denials":[...]}

Roles: owners write; members (and read-only tokens) read the org, its draft and its feed and may
report check-ins and denials; anyone outside the organization gets 404 for it.
"""
