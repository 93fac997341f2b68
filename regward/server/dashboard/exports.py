"""Lists as CSV files (Devices, Blocked pulls): the rows the list's filters select, all pages.

Spreadsheets run a cell that starts with `=`, `+`, `-` or `@` (and, in some, a tab or carriage
return) as a formula, and every cell here can carry what an agent or a user wrote (a hostname,
a refusal, an image reference): such a cell is written with a `'` in front, which spreadsheets
show as text and do not run (OWASP's advice on CSV injection).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from fastapi import Response

from regward.server.errors import InvalidInput

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
MAX_ROWS = 100_000


def safe_cell(value: object) -> str:
    """`value` as a CSV cell that no spreadsheet runs as a formula; None is empty."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_response(name: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Response:
    """A CSV download named `regward-NAME-YYYY-MM-DD.csv`: the header, then the rows (each
    cell through `safe_cell`); InvalidInput past MAX_ROWS rows, asking for narrower filters."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for count, row in enumerate(rows, start=1):
        if count > MAX_ROWS:
            raise InvalidInput(
                f"more than {MAX_ROWS:,} rows match; narrow the filters to download them"
            )
        writer.writerow([safe_cell(cell) for cell in row])
    day = datetime.now(UTC).date().isoformat()
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="regward-{name}-{day}.csv"'},
    )
