"""CHANGELOG.md keeps the Keep a Changelog 1.1.0 form (https://keepachangelog.com/en/1.1.0/).

Version headings are ``## [Unreleased]`` (first, at most once) or ``## [X.Y.Z] - YYYY-MM-DD``, newest first; under
each, only the six kinds of change, each at most once, in the order the format lists them, each a plain list; a link
reference for every version at the bottom. ``problems`` is the checker; the file has none, and each malformed
snippet below has the one it was written to have.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from pathlib import Path

import pytest

import fw_rollouts

CHANGELOG = Path(__file__).resolve().parent.parent / "CHANGELOG.md"

KINDS = ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security")
VERSION_HEADING = re.compile(r"^## \[(?P<name>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?$")
SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-[0-9A-Za-z.-]+)?$")
LINK_REFERENCE = re.compile(r"^\[(?P<name>[^\]]+)\]: (?P<url>https://\S+)$")


def _release(version: str) -> tuple[int, ...]:
    """The numeric release part of a version (``0.2.0.dev1`` -> ``(0, 2, 0)``), for ordering."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("-")[0])[:3])


def problems(text: str) -> list[str]:
    """Every way ``text`` departs from the form, one line each, with its line number."""
    found: list[str] = []
    lines = text.splitlines()
    if not lines or lines[0] != "# Changelog":
        found.append("line 1: the file must start with '# Changelog'")

    versions: list[tuple[int, str, str | None]] = []  # (line, name, date)
    kinds_seen: list[str] = []
    section: str | None = None  # the kind of change whose list is being read
    section_items = 0
    blank_in_section = False
    references: dict[str, int] = {}

    def close_section(number: int) -> None:
        if section is not None and section_items == 0:
            found.append(f"line {number}: '### {section}' has no entries")

    for number, line in enumerate(lines, start=1):
        if references and line.strip() and not LINK_REFERENCE.match(line):
            found.append(f"line {number}: link references go at the bottom, after every entry: {line!r}")
            continue
        if line.startswith("#"):
            close_section(number)
            section, section_items, blank_in_section = None, 0, False
            level = len(line) - len(line.lstrip("#"))
            if level == 1:
                if number != 1:
                    found.append(f"line {number}: a second top-level heading: {line!r}")
            elif level == 2:
                match = VERSION_HEADING.match(line)
                if match is None:
                    found.append(f"line {number}: not a version heading ('## [X.Y.Z] - YYYY-MM-DD'): {line!r}")
                    continue
                name, date = match["name"], match["date"]
                if name == "Unreleased":
                    if date is not None:
                        found.append(f"line {number}: [Unreleased] has no date")
                    if versions:
                        found.append(f"line {number}: [Unreleased] must be the first version heading")
                elif SEMVER.match(name) is None:
                    found.append(f"line {number}: {name!r} is not a semantic version")
                elif date is None:
                    found.append(f"line {number}: version {name} has no date ('## [{name}] - YYYY-MM-DD')")
                else:
                    try:
                        dt.date.fromisoformat(date)
                    except ValueError:
                        found.append(f"line {number}: {date!r} is not a date")
                versions.append((number, name, date))
                kinds_seen = []
            elif level == 3:
                kind = line[4:].strip()
                if not versions:
                    found.append(f"line {number}: '{line}' comes before any version heading")
                section = kind  # its entries are read as a list whatever the heading says
                if kind not in KINDS:
                    found.append(f"line {number}: '{line}' is not one of {', '.join(KINDS)}")
                    continue
                if kind in kinds_seen:
                    found.append(f"line {number}: a second '### {kind}' under the same version")
                elif kinds_seen and KINDS.index(kind) < KINDS.index(kinds_seen[-1]):
                    order = " < ".join(KINDS)
                    found.append(f"line {number}: '### {kind}' comes after '### {kinds_seen[-1]}' ({order})")
                kinds_seen.append(kind)
            else:
                found.append(f"line {number}: headings go no deeper than '###': {line!r}")
            continue
        reference = LINK_REFERENCE.match(line)
        if reference is not None:
            close_section(number)
            section = None
            if reference["name"] in references:
                found.append(f"line {number}: a second link reference for [{reference['name']}]")
            references[reference["name"]] = number
            continue
        if section is None:
            if line.strip() and versions:
                found.append(f"line {number}: text outside a '### <kind>' list: {line!r}")
            continue
        if not line.strip():
            blank_in_section = section_items > 0
            continue
        if line.startswith("- "):
            if blank_in_section:
                found.append(f"line {number}: a blank line inside the '### {section}' list")
                blank_in_section = False
            section_items += 1
        elif not (line.startswith("  ") and section_items):
            found.append(f"line {number}: not a list item or its indented continuation: {line!r}")
    close_section(len(lines) + 1)

    if not versions:
        found.append("no version heading: at least '## [Unreleased]'")
    dated = [(number, name, date) for number, name, date in versions if date is not None]
    for (_, newer, newer_date), (number, older, older_date) in itertools.pairwise(dated):
        if _release(older) >= _release(newer) or (older_date or "") > (newer_date or ""):
            found.append(f"line {number}: [{older}] - {older_date} is not older than [{newer}] - {newer_date}")
    names = {name for _, name, _ in versions}
    for number, name, _ in versions:
        if name not in references:
            found.append(f"line {number}: [{name}] has no link reference at the bottom ('[{name}]: https://...')")
    for name, number in references.items():
        if name not in names:
            found.append(f"line {number}: a link reference for [{name}], which no version heading names")
    return found


def test_the_changelog_has_the_keep_a_changelog_form() -> None:
    assert problems(CHANGELOG.read_text(encoding="utf-8")) == []


def test_no_released_version_is_newer_than_the_package() -> None:
    """At a release the top dated heading is ``__version__``; after it, ``__version__`` moves on, never back."""
    dated = [m["name"] for m in map(VERSION_HEADING.match, CHANGELOG.read_text(encoding="utf-8").splitlines())
             if m is not None and m["date"] is not None]
    if dated:
        assert _release(dated[0]) <= _release(fw_rollouts.__version__), (dated[0], fw_rollouts.__version__)


GOOD = """\
# Changelog

Intro text.

## [Unreleased]

### Added
- A thing,
  over two lines.

### Fixed
- A bug.

## [0.1.0] - 2026-11-24

### Added
- The start.

[Unreleased]: https://example.org/compare/v0.1.0...HEAD
[0.1.0]: https://example.org/releases/tag/v0.1.0
"""


def test_the_checker_accepts_the_form() -> None:
    assert problems(GOOD) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("### Fixed\n- A bug.", "### Fixed\n- A bug.\n\n### Earlier unreleased work"),
         "'### Earlier unreleased work' is not one of"),
        (("### Fixed", "### Performance"), "'### Performance' is not one of"),
        (("### Fixed", "### Changed (breaking, before 1.0)"), "is not one of"),
        (("## [0.1.0] - 2026-11-24", "## [0.1.0]"), "version 0.1.0 has no date"),
        (("## [0.1.0] - 2026-11-24", "## [0.1.0] - 2026-13-40"), "is not a date"),
        (("## [0.1.0] - 2026-11-24", "## 0.1.0 - 2026-11-24"), "not a version heading"),
        (("## [Unreleased]", "## [Unreleased] - 2026-12-01"), "[Unreleased] has no date"),
        (("[0.1.0]: https://example.org/releases/tag/v0.1.0\n", ""), "[0.1.0] has no link reference"),
        (("[Unreleased]: https://example.org/compare/v0.1.0...HEAD\n", ""), "[Unreleased] has no link reference"),
        (("- A thing,\n  over two lines.", "- A thing,\n\n- over two lines."), "a blank line inside"),
        (("### Fixed\n- A bug.", "### Added\n- Again."), "a second '### Added'"),
        (("### Added\n- A thing,", "### Fixed\n- A bug.\n\n### Added\n- A thing,"), "comes after '### Fixed'"),
        (("### Fixed\n- A bug.", "### Fixed\n#### Details\n- A bug."), "no deeper than '###'"),
        (("### Fixed\n- A bug.", "### Fixed"), "'### Fixed' has no entries"),
        (("- The start.", "The start."), "not a list item"),
        (("## [0.1.0] - 2026-11-24", "## [0.2.0] - 2026-11-24\n\n### Added\n- x.\n\n## [0.1.0] - 2026-11-24"),
         "[0.2.0] has no link reference"),
        (("[0.1.0]: https", "[0.0.9]: https://x\n[0.1.0]: https"), "which no version heading names"),
        (("## [0.1.0] - 2026-11-24", "## [0.2.0] - 2026-11-24"), "no version heading names"),
        (("[Unreleased]: https", "Some prose.\n[Unreleased]: https"), "not a list item"),
        (("v0.1.0\n", "v0.1.0\n- A late entry.\n"), "link references go at the bottom"),
        (("# Changelog", "# Changes"), "must start with '# Changelog'"),
    ],
)
def test_the_checker_names_each_departure(change: tuple[str, str], problem: str) -> None:
    old, new = change
    assert old in GOOD
    found = problems(GOOD.replace(old, new, 1))
    assert any(problem in line for line in found), found


def test_versions_must_be_newest_first() -> None:
    text = GOOD.replace("## [Unreleased]", "## [0.0.9] - 2026-12-01").replace("[Unreleased]:", "[0.0.9]:")
    assert any("is not older than" in line for line in problems(text)), problems(text)


def test_unreleased_must_come_first() -> None:
    text = (
        "# Changelog\n\n## [0.1.0] - 2026-11-24\n\n### Added\n- The start.\n\n## [Unreleased]\n\n### Added\n- x.\n\n"
        "[Unreleased]: https://example.org/a\n[0.1.0]: https://example.org/b\n"
    )
    assert any("[Unreleased] must be the first" in line for line in problems(text)), problems(text)
