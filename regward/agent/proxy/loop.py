"""The event loop a proxy process runs on.

    run_on(settings.event_loop, main())     # "uvloop" (the default) or "asyncio"

uvloop keeps the loop itself (readiness, callbacks, timers) in C: each connection through the
proxy registers and drops a few sockets with the loop, and a profile of 100 concurrent
CONNECT + GET clients showed asyncio's selector and handle code as a large share of the
proxy's own CPU. asyncio's loop stays a choice (`--loop asyncio`), and is the one the
in-process tests run the proxy on, so both paths are kept working.

Once the proxy serves (`settle_collector`), long-lived objects are frozen out of the cyclic
collector's scans and it runs after 10,000 new objects instead of 700: a tunnel leaves no
cycle behind (tested), so its young collections found nothing, yet cost 20-30 us a
connection under 100 concurrent clients (measured with gc.callbacks).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")
EventLoop = Literal["uvloop", "asyncio"]
EVENT_LOOPS: tuple[EventLoop, ...] = ("uvloop", "asyncio")


def run_on(kind: EventLoop, main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a new event loop of `kind`."""
    if kind == "asyncio":
        return asyncio.run(main)
    import uvloop

    return uvloop.run(main)


YOUNG_OBJECTS = 10_000  # new container objects between two young collections (Python: 700)


def settle_collector() -> None:
    """Keep everything allocated so far (modules, settings, the policy) out of the cyclic
    collector's scans, and let it run less often; call once the proxy serves."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_OBJECTS, older, oldest)
