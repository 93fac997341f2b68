"""Every relative link in README.md, CHANGELOG.md and docs/ resolves, `#anchor` included.

Anchors are the slugs GitHub gives headings: lower case, punctuation other than `-` and `_`
dropped, spaces as `-`, a repeated heading numbered `-1`, `-2`. Links inside code (fenced
blocks and inline code) are not links, and links with a scheme (`https:`, `mailto:`) are left to
their readers.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def documents(root: Path) -> list[Path]:
    """The Markdown files whose links are checked."""
    found = [root / "README.md", root / "CHANGELOG.md", *sorted((root / "docs").rglob("*.md"))]
    return [path for path in found if path.is_file()]


def _without_code(text: str) -> str:
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a Markdown file's headings make."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(path: Path) -> list[str]:
    """The relative links of one file that lead nowhere, each as `file: target (why)`."""
    problems: list[str] = []
    for target in _LINK.findall(_without_code(path.read_text(encoding="utf-8"))):
        if not target or _SCHEME.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            problems.append(f"{path.name}: {target} (no file {destination})")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            problems.append(f"{path.name}: {target} (no heading makes #{anchor})")
    return problems


def test_every_relative_link_resolves() -> None:
    checked = documents(ROOT)
    assert ROOT / "README.md" in checked and any(p.parent.name == "docs" for p in checked)
    problems = [problem for path in checked for problem in broken_links(path)]
    assert problems == []


def test_the_check_finds_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Save & Apply\n\n## Two words\n", encoding="utf-8")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md#save--apply) [ok](docs/a.md#two-words) [ok](#top) [web](https://x.test)\n"
        "`[code](nowhere.md)`\n\n# Top\n\n"
        "[gone](docs/b.md) [bad anchor](docs/a.md#three-words)\n",
        encoding="utf-8",
    )
    assert broken_links(tmp_path / "README.md") == [
        f"README.md: docs/b.md (no file {tmp_path / 'docs' / 'b.md'})",
        "README.md: docs/a.md#three-words (no heading makes #three-words)",
    ]


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Save & Apply and Activity", "save--apply-and-activity"),
        ("Allowed? `regward check`", "allowed-regward-check"),
        ("Devices, check-ins and denials", "devices-check-ins-and-denials"),
        ("[0.1.0] - 2026-12-01", "010---2026-12-01"),
    ],
)
def test_slugs_are_githubs(heading: str, expected: str) -> None:
    assert slug(heading) == expected
