"""The one waiting helper: it returns the condition's first true value, or names what did not
happen; the async flavour keeps the event loop running meanwhile."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.harness.wait import until, wait_for


def test_wait_for_returns_the_first_true_value() -> None:
    answers = iter([0, None, "", 7, 8])
    assert wait_for(lambda: next(answers), 10, "a number") == 7


def test_wait_for_names_what_did_not_happen() -> None:
    asked = itertools.count()
    with pytest.raises(AssertionError, match=r"timed out after 0.05 s waiting for the moon"):
        wait_for(lambda: next(asked) < 0, 0.05, "the moon")
    assert next(asked) >= 2  # asked at once and again at the deadline


def test_until_lets_the_loop_run() -> None:
    async def main() -> str:
        done = asyncio.Event()
        asyncio.get_running_loop().call_soon(done.set)
        assert await until(done.is_set, 10, "the callback")
        with pytest.raises(AssertionError, match="waiting for nothing"):
            await until(lambda: False, 0.05, "nothing")
        return "ok"

    assert asyncio.run(main()) == "ok"
