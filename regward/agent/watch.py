"""Noticing that the agent's files (sign-in, registry.json, a policy file) changed, once the
change is complete.

    files = SettledFiles([policy_path, registry_json])
    every interval:
        stamps = files.changed()            # None: nothing new, or still being written
        if stamps is not None:
            enforcement = read everything
            if files.applied(stamps):       # False: written again while read; read it later
                guard.update(enforcement)

A file written in place (a shell redirect, most editors, Python's `write_text`) is empty and then
partly written for a moment. Read at that moment, a policy may still parse, without its last
entries, and applying it would end every open connection to the registries those entries allow:
a reload that keeps a registry allowed would break its pulls. So a change counts only when the
files' stamps (modification time, size, inode) are the same on two looks an interval apart,
and what was read is applied only if the stamps did not move while it was read. An atomic
writer (write a temporary file, then rename it) is never seen half-written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

Stamps = tuple[tuple[int, int, int] | None, ...]
WATCH_INTERVAL = 0.5  # seconds between looks; a change applies after two to three of them


class SettledFiles:
    """Stamps of `paths` and whether they changed, settled, since they were last applied."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = tuple(paths)
        self._applied = self.stamps()
        self._last = self._applied
        self.looks = 0  # calls of `changed` so far (tests wait on it)

    def stamps(self) -> Stamps:
        return tuple(_stamp(path) for path in self.paths)

    def changed(self) -> Stamps | None:
        """The files' stamps when they differ from the applied ones and are the same as at the
        previous call (the writer has finished); None otherwise."""
        now = self.stamps()
        self.looks += 1
        settled, self._last = now == self._last, now
        if now == self._applied or not settled:
            return None
        return now

    def applied(self, stamps: Stamps) -> bool:
        """Record `stamps` as applied when the files still have them; False when they were
        written again meanwhile (what was read may be torn: `changed` reports it again)."""
        if self.stamps() != stamps:
            return False
        self._applied = stamps
        return True


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino
