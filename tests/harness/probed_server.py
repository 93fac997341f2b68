"""`regward server run` with one route more, for tests that must see inside a server process.

    python -m tests.harness.probed_server server run --host 127.0.0.1 --port 8080
    GET /_test/long-polls/{org}   {"held": N}: the long-polls of `org` this process holds now

The route reads the notifier's waiter count, so a test can wait until its long-polls are held
before it applies a change, instead of sleeping. Only the test harness starts this
(`ServerProcess(..., probed=True)`); the product has no such route.
"""

from __future__ import annotations

import sys
from typing import Any

from regward.cli import main
from regward.server import app as server_app
from regward.server.runtime import Server

_create_app = server_app.create_app


def _create_probed_app(*args: Any, **kwargs: Any) -> Any:
    app = _create_app(*args, **kwargs)

    @app.get("/_test/long-polls/{org}", include_in_schema=False)
    def long_polls(org: str) -> dict[str, int]:
        server: Server = app.state.server
        return {"held": server.notifier.waiting(org)}

    return app


if __name__ == "__main__":
    server_app.create_app = _create_probed_app  # `server run` imports it when it starts
    sys.exit(main(sys.argv[1:]))
