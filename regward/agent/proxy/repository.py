"""What a plain-HTTP registry request names, decided as an image reference: the repository
of a `/v2/NAME/...` path and, by its method, a pull (GET, HEAD) or a push (PUT, POST, PATCH,
DELETE). TLS hides this; plain HTTP shows it, so an entry narrowed to repositories or to pull
holds plain-HTTP requests as the AuthZ plugin holds the engine's. A cross-repository blob
mount (`POST /v2/NAME/blobs/uploads/?mount=DIGEST&from=OTHER`) pushes to NAME and reads OTHER,
so it is also decided as a pull of OTHER. The egress proxy's absolute-form requests and the
transparent listener's origin-form ones ask this one function.

    refused = repository_refusal(decide, request, "reg.test", 5000)   # a Decision, or None
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from collections.abc import Callable

from regward.policy import Action, Decision
from regward.policy.address import join_host_port

from .protocol import Request

ReferenceDecider = Callable[[Action, str], Decision]
"""May this action be done on this image reference (`Guard.decide`, with its source)?"""

REPOSITORY_PATH = re.compile(r"/v2/([^?]+)/(?:manifests|blobs|tags|referrers)/")
PUSH_METHODS = frozenset({"PUT", "POST", "PATCH", "DELETE"})


def request_action(method: str) -> Action:
    """A push for the methods that write to a registry, else a pull."""
    return Action.PUSH if method in PUSH_METHODS else Action.PULL


def routed_paths(target: str) -> tuple[str, str]:
    """An origin-form `target`'s path as sent, and as a registry routes it: percent-decoded
    (Go's `URL.Path`, which the distribution registry matches, so `/%762/` is its `/v2/`),
    repeated slashes and dot segments resolved (as a front such as nginx does, or the
    registry's redirect to the clean path), the query left out. Registry requests are
    recognised and decided in both, so no spelling of a path slips past as web traffic."""
    path = urllib.parse.unquote(target.partition("?")[0], errors="replace")
    routed = posixpath.normpath("/" + path.lstrip("/"))
    if path.endswith("/") and routed != "/":
        routed += "/"
    return target, routed


def repository_refusal(
    decide: ReferenceDecider, request: Request, host: str, port: int
) -> Decision | None:
    """The refusal of `request` (to `host:port`) by the repository its `/v2/NAME/...` path
    names and the action its method does (an entry narrowed to repositories or to pull);
    None when the policy allows it or the path names no repository. The path is held as sent
    and as the registry routes it (`routed_paths`): a name spelled so that only one of them
    reads it (percent-encoded, `..`) is no valid reference in the other, so it is refused."""
    registry = host if port in (80, 443) else join_host_port(host, port)
    action = request_action(request.method)
    for path in routed_paths(request.path):
        found = REPOSITORY_PATH.match(path)
        if found is None:
            continue
        asked = [(action, found[1])]
        if request.method == "POST":  # a blob mount's `from` (ignored by other POSTs)
            asked += [(Action.PULL, source) for source in mount_sources(request.path)]
        for asked_action, repository in asked:
            decision = decide(asked_action, f"{registry}/{repository}")
            if not decision.allowed:
                return decision
    return None


def mount_sources(target: str) -> list[str]:
    """The repositories a blob mount in `target`'s query reads from (its `from` values, as
    the registry decodes them); an empty one is kept, and refused as no valid reference."""
    query = target.partition("?")[2]
    return urllib.parse.parse_qs(query, keep_blank_values=True).get("from", [])
