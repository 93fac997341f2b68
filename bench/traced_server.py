"""`regward server run` under tracemalloc, for `bench/propagation.py --profile`.

    python bench/traced_server.py server run --host 127.0.0.1 --port 8080
    POST /_bench/mark               remember the traced memory now (a snapshot)
    GET  /_bench/growth?top=N       what was allocated since the mark and is still held, by
                                    source line, largest first; and the total

Only the bench starts this; the product has no such routes. tracemalloc sees Python's own
allocations (objects, frames, buffers made by Python code), not memory that C libraries
(uvloop, httptools, SQLite) take from malloc themselves: the bench sets both beside RSS.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regward.cli import main
from regward.server import app as server_app

_create_app = server_app.create_app
_marks: list[tracemalloc.Snapshot] = []


def _snapshot() -> tracemalloc.Snapshot:
    gc.collect()
    return tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )


def _create_traced_app(*args: Any, **kwargs: Any) -> Any:
    app = _create_app(*args, **kwargs)

    @app.post("/_bench/mark", include_in_schema=False)
    def mark() -> dict[str, int]:
        _marks[:] = [_snapshot()]
        return {"traced_bytes": tracemalloc.get_traced_memory()[0]}

    @app.get("/_bench/growth", include_in_schema=False)
    def growth(top: int = 25) -> dict[str, Any]:
        now = _snapshot()
        stats = now.compare_to(_marks[0] if _marks else now, "lineno")
        grown = [s for s in stats if s.size_diff > 0]
        return {
            "total_bytes": sum(s.size_diff for s in stats),
            "top": [
                {
                    "where": f"{s.traceback[0].filename}:{s.traceback[0].lineno}",
                    "bytes": s.size_diff,
                    "blocks": s.count_diff,
                }
                for s in grown[:top]
            ],
        }

    return app


if __name__ == "__main__":
    tracemalloc.start(1)
    server_app.create_app = _create_traced_app  # `server run` imports it when it starts
    sys.exit(main(sys.argv[1:]))
