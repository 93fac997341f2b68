"""The registry egress proxy: builds and daemon-less clients cannot route around the policy.

dockerd (classic and BuildKit builds), skopeo, podman and containerd send registry traffic
through `HTTPS_PROXY`/`HTTP_PROXY`. The proxy serves two request forms and nothing else:

    CONNECT ghcr.io:443 HTTP/1.1              a TLS tunnel (the registry's certificate is
                                              checked by the client, end to end)
    GET http://reg.local:5000/v2/ HTTP/1.1    plain-HTTP registries, one request per connection

Each connection's host and port go to `decide_host(host, port) -> Decision` (the agent's
`Guard.decide_host`, or `regward.policy.evaluate_host` on a policy file) before any name is
resolved; inside a tunnel, a TLS ClientHello naming another server needs that name allowed
too (no domain fronting). A refusal is `403 Forbidden (<the product's denial sentence>)` with
a registry-style body `{"errors":[{"code":"DENIED","message":...}]}`: Go clients print only
the status line for CONNECT, and docker prints the body's message for plain-HTTP registries.
Malformed requests get 400, slow ones 408, oversized heads 431, an unreachable registry 502/504.

Entry points for the agent (`regward agent run`):

    await serve("127.0.0.1:3128", guard.decide_host, stop_event, describe=guard.message)

    async with ProxyServer.for_guard(ProxySettings(port=3128), guard) as px:
        ...                       # px.address is the bound (host, port); close() is graceful

and for `regward agent install`: `configure_dockerd(listen)` (in `.dockerd`) writes dockerd's
proxy settings and returns what it changed. `add_proxy_command(agent_commands)` adds
`regward agent proxy [--policy FILE] [--listen HOST:PORT] [--workers N] [--loop L]`.

Layout, mitmproxy-style, one job per module:

    settings   ProxySettings (where, limits), parse_listen, the HostDecider type
    protocol   parses and renders bytes (no I/O)
    upstream   dials an allowed registry, with a short-lived resolver cache
    relay      moves tunnel bytes with `os.splice` (they never enter Python); open tunnels
               and their idle sweep
    tunnel     a CONNECT tunnel: the ClientHello check, then the relay
    forward    one absolute-form request to a plain-HTTP registry
    repository a plain-HTTP request's repository and action, decided as an image reference
               (the proxy's and the transparent listener's)
    server     the accept loop: read a head, decide, hand over; recheck
    workers    N event loops on one listening socket (this process's and N-1 workers'), one
               policy revision, dead workers replaced
    worker     one worker process (`python -m regward.agent.proxy.worker`)
    loop       the event loop a proxy process runs: uvloop, or asyncio's own
"""

from __future__ import annotations

from .cli import add_proxy_command, decider_for_policy
from .dockerd import configure_dockerd
from .server import ProxyServer, serve
from .settings import DEFAULT_LISTEN, HostDecider, ProxySettings, parse_listen

__all__ = [
    "DEFAULT_LISTEN",
    "HostDecider",
    "ProxyServer",
    "ProxySettings",
    "add_proxy_command",
    "configure_dockerd",
    "decider_for_policy",
    "parse_listen",
    "serve",
]
