"""The agent: sign-in, policy sync, the Docker AuthZ plugin and the registry egress proxy.

Map of the package (it never imports regward.server; it talks to the server over HTTP)::

    guard.py    Guard: the enforced policy snapshot and the one place decisions are made
                (decide, decide_host; fail closed for registry.json and missing policies);
                the bounded denial queue
    state.py    the state directory: credentials (0600), the verified policy cache, status,
                registry.json; atomic writes
    sync.py     Syncer: long-poll the feed, verify against the pinned key, cache, check in,
                report denials in batches
    authz/      the AuthZ plugin: request model (read as Go reads it), the table of endpoint
                checks, the plugin's answer and its unix-socket server
    protection.py  whether this machine's Docker Engine uses the plugin and the proxy (its /info)
    runner.py   `regward agent run`: plugin + sync + proxy in one process, live reload
    install.py  `regward agent install`: plugin spec, daemon.json, systemd unit, proxy settings
    proxy/      the registry egress proxy (its own package)
    cli.py      login, logout, status, agent run|install (|proxy)
"""
