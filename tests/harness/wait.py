"""Waiting for a condition with a deadline: the one way tests and the harness synchronize.

    wait_for(lambda: server.connections == 0, 10, "the proxy to forget the closed tunnel")
    await until(lambda: agent.reloads > before, 10, "the agent to re-read the policy file")

The condition is something the code under test exposes (a notifier's waiter count, an agent's
reload count, a line in a log, a port that answers), never a guessed duration. It is asked at
once and then every POLL seconds until it returns a true value, which is returned. At the
deadline it is asked once more, then AssertionError names what did not happen.
The deadline is generous on purpose: it only bounds a failing test, a passing one never waits it
out. `until` is the same for code on an event loop, which a blocking wait would stall.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

POLL = 0.01


def _pauses(timeout: float) -> Iterator[float]:
    """The pause after each attempt, until the deadline; the last attempt is at the deadline."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        yield min(POLL, left)
    yield 0.0


def _timed_out(timeout: float, what: str) -> AssertionError:
    return AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def wait_for(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    """Block until `condition()` is true; return its value."""
    for pause in _pauses(timeout):
        if value := condition():
            return value
        time.sleep(pause)
    raise _timed_out(timeout, what)


async def until(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    """`wait_for` on an event loop: the loop keeps running while the condition is false."""
    for pause in _pauses(timeout):
        if value := condition():
            return value
        await asyncio.sleep(pause)
    raise _timed_out(timeout, what)
