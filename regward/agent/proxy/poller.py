"""Readiness of the relay's sockets from an epoll set of the relay's own, which the event
loop watches as one descriptor.

    poller = Poller(loop)
    poller.add_reader(fd, callback, *args)     # as loop.add_reader, and the same for writers
    poller.remove_reader(fd)                   # before the socket is closed
    poller.close()

uvloop watches a descriptor through a libuv poll handle made for it and freed after it: each
`loop.add_reader` of a new socket cost five system calls (a test add and delete, FIONBIO, a
failed delete, the real add) and each removal three deletes, two of them failing; a tunnel
registers its two sockets, so sixteen calls a connection. Here a socket costs one add and one
delete, a change of interest one modify, and the loop one extra `epoll_wait` per wake-up for
all the sockets that are ready. The same code runs on asyncio's loop.

Callbacks are level-triggered, as the loop's: one runs while its socket is ready, and may run
when it is not (a spurious wake-up), so each tries its I/O and takes EAGAIN in its stride.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections.abc import Callable
from typing import Any

_READ = select.EPOLLIN
_WRITE = select.EPOLLOUT
_ENDED = select.EPOLLHUP | select.EPOLLERR  # reported whatever was asked: both sides hear
_BATCH = 256  # events taken per wake-up; more stay ready for the next turn of the loop

Callback = tuple[Callable[..., None], tuple[Any, ...]]


class Poller:
    """One epoll set for many sockets, watched by `loop` as one reader."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._epoll = select.epoll()
        self._readers: dict[int, Callback] = {}
        self._writers: dict[int, Callback] = {}
        self._masks: dict[int, int] = {}  # what the epoll set watches for each descriptor
        loop.add_reader(self._epoll.fileno(), self._dispatch)

    def add_reader(self, fd: int, callback: Callable[..., None], *args: Any) -> None:
        self._readers[fd] = (callback, args)
        self._update(fd, adding=True)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._update(fd)

    def add_writer(self, fd: int, callback: Callable[..., None], *args: Any) -> None:
        self._writers[fd] = (callback, args)
        self._update(fd, adding=True)

    def remove_writer(self, fd: int) -> None:
        if self._writers.pop(fd, None) is not None:
            self._update(fd)

    def _update(self, fd: int, adding: bool = False) -> None:
        mask = (_READ if fd in self._readers else 0) | (_WRITE if fd in self._writers else 0)
        old = self._masks.get(fd, 0)
        if mask == old and not adding:
            return
        if not mask:
            del self._masks[fd]
            with contextlib.suppress(OSError):  # closed meanwhile: the kernel dropped it
                self._epoll.unregister(fd)
            return
        if old:
            # Also when the mask is unchanged but a watch is added: the number may be a new
            # socket's, its old one closed while watched (the kernel dropped that one from
            # the set, the numbers here kept it), and only this call puts the new one in.
            try:
                self._epoll.modify(fd, mask)
            except FileNotFoundError:  # closed while watched, and the number used again
                self._epoll.register(fd, mask)
        else:
            self._epoll.register(fd, mask)
        self._masks[fd] = mask

    def _dispatch(self) -> None:
        for fd, events in self._epoll.poll(0, _BATCH):
            if events & (_READ | _ENDED):
                self._run(self._readers.get(fd))
            if events & (_WRITE | _ENDED):
                self._run(self._writers.get(fd))

    def _run(self, callback: Callback | None) -> None:
        if callback is None:  # removed by an earlier callback of this batch
            return
        function, args = callback
        try:
            function(*args)
        except Exception as error:  # as the loop does for its own callbacks: say, go on
            self.loop.call_exception_handler(
                {"message": "relay callback failed", "exception": error}
            )

    @property
    def watched(self) -> int:
        """Descriptors in the epoll set (tests check that ended tunnels leave none)."""
        return len(self._masks)

    def close(self) -> None:
        self.loop.remove_reader(self._epoll.fileno())
        self._epoll.close()
        self._readers.clear()
        self._writers.clear()
        self._masks.clear()
