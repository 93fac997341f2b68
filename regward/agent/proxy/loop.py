"""The event loop a proxy process runs on.

    run_on(settings.event_loop, main())     # "uvloop" (the default) or "asyncio"

uvloop keeps the loop itself (readiness, callbacks, timers) in C: each connection through the
proxy registers and drops a few sockets with the loop, and a profile of 100 concurrent
CONNECT + GET clients showed asyncio's selector and handle code as a large share of the
proxy's own CPU. asyncio's loop stays a choice (`--loop asyncio`), and is the one the
in-process tests run the proxy on, so both paths are kept working.

Long-lived objects are frozen out of the cyclic collector once the proxy serves
(`freeze_startup`): each connection allocates tasks and futures that trigger collections,
and those should not walk the interpreter's start-up objects every time.
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


def freeze_startup() -> None:
    """Keep everything allocated so far (modules, settings, the policy) out of the cyclic
    collector's scans; call once the proxy serves."""
    gc.freeze()
