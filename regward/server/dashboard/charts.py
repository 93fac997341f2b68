"""Charts drawn on the server as inline SVG: no script, no image files, readable by screen
readers (each is an `<svg role="img">` with a `<title>` and a `<desc>` naming every figure;
the page shows the same figures in a table beside it, whose counts link to the lists).

    bars(...)     horizontal bars, the label above each bar and the count after it
    columns(...)  one column per period (the denials of each day), the first, middle and last
                  period named below

Colours come from the stylesheet (`.chart .tone-bad`, ...): the page's Content-Security-Policy
allows no inline style, and presentation attributes would bypass the theme.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

LABEL_LIMIT = 44
BAR_WIDTH = 400
BAR_ROW = 38
COLUMN_WIDTH = 480
COLUMN_HEIGHT = 140


@dataclass(frozen=True)
class Figure:
    label: str
    value: int
    tone: str = "neutral"  # the CSS class `tone-NAME`: ok, warn, bad, neutral


def _short(label: str) -> str:
    return label if len(label) <= LABEL_LIMIT else label[: LABEL_LIMIT - 1] + "…"


def _open(ident: str, title: str, description: str, width: int, height: int) -> Markup:
    return Markup(
        '<svg class="chart" id="{0}" xmlns="http://www.w3.org/2000/svg" '
        'viewBox="0 0 {1} {2}" role="img" aria-labelledby="{0}-title {0}-desc">'
        '<title id="{0}-title">{3}</title><desc id="{0}-desc">{4}</desc>'
    ).format(ident, width, height, title, description)


def describe(figures: Sequence[Figure], unit: str) -> str:
    """`Current: 12 devices. Outdated: 3 devices.` for the chart's <desc>."""
    if not figures:
        return f"No {unit}s."
    return " ".join(
        f"{figure.label}: {figure.value} {unit}{'' if figure.value == 1 else 's'}."
        for figure in figures
    )


def _length(value: int, top: int, room: float) -> int:
    """A bar's length: in proportion to the largest, and visible for any count above 0."""
    if top == 0 or value == 0:
        return 0
    return max(round(room * value / top), 2)


def bars(ident: str, title: str, figures: Sequence[Figure], unit: str) -> Markup:
    """One bar per figure, scaled to the largest; an empty chart says there is nothing."""
    height = max(len(figures), 1) * BAR_ROW
    parts = [_open(ident, title, describe(figures, unit), BAR_WIDTH, height)]
    if not figures:
        parts.append(
            Markup('<text class="chart-empty" x="0" y="24">No {}s yet</text>').format(unit)
        )
    top = max((figure.value for figure in figures), default=0)
    room = BAR_WIDTH - 60  # for the count after the longest bar
    for row, figure in enumerate(figures):
        y = row * BAR_ROW
        width = _length(figure.value, top, room)
        parts.append(
            Markup(
                '<text class="chart-label" x="0" y="{0}">{1}</text>'
                '<rect class="chart-track" x="0" y="{2}" width="{3}" height="12" rx="2"/>'
                '<rect class="tone-{4}" x="0" y="{2}" width="{5}" height="12" rx="2"/>'
                '<text class="chart-value" x="{6}" y="{7}">{8}</text>'
            ).format(
                y + 14,
                _short(figure.label),
                y + 20,
                room,
                figure.tone,
                width,
                width + 6,
                y + 31,
                figure.value,
            )
        )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


def columns(
    ident: str, title: str, figures: Sequence[Figure], unit: str, description: str
) -> Markup:
    """One column per figure, left to right; `description` leads the <desc>, which then names
    every figure (a screen reader's way to the numbers the columns draw)."""
    plot = COLUMN_HEIGHT - 24  # the axis labels go below
    description = f"{description} {describe(figures, unit)}"
    parts = [_open(ident, title, description, COLUMN_WIDTH, COLUMN_HEIGHT)]
    top = max((figure.value for figure in figures), default=0)
    step = COLUMN_WIDTH / max(len(figures), 1)
    parts.append(
        Markup('<line class="chart-axis" x1="0" y1="{0}" x2="{1}" y2="{0}"/>').format(
            plot, COLUMN_WIDTH
        )
    )
    if top:
        parts.append(
            Markup('<text class="chart-label" x="0" y="14">{} a day at most</text>').format(top)
        )
    else:
        parts.append(
            Markup(
                '<text class="chart-empty" x="0" y="{}">Nothing to draw: every day is 0.</text>'
            ).format(plot - 12)
        )
    for index, figure in enumerate(figures):
        height = _length(figure.value, top, plot - 22)
        parts.append(
            Markup(
                '<rect class="tone-{0}" x="{1:.1f}" y="{2}" width="{3:.1f}" height="{4}">'
                "<title>{5}: {6}</title></rect>"
            ).format(
                figure.tone,
                index * step + 1,
                plot - height,
                step - 2,
                height,
                figure.label,
                figure.value,
            )
        )
    if figures:
        middle = len(figures) // 2
        for index, anchor, x in (
            (0, "start", 0.0),
            (middle, "middle", (middle + 0.5) * step),
            (len(figures) - 1, "end", float(COLUMN_WIDTH)),
        ):
            parts.append(
                Markup(
                    '<text class="chart-label" x="{0:.1f}" y="{1}" text-anchor="{2}">{3}</text>'
                ).format(x, COLUMN_HEIGHT - 4, anchor, figures[index].label)
            )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)
