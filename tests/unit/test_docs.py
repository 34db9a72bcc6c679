"""The README stays a newcomer's page, and no link in it or in docs/ leads nowhere.

Sections move between pages (the README's detail went to docs/ in issue 18); a pointer left behind
sends the reader to a file or a heading that is not there any more, and nothing else would notice.
Anchors are checked with GitHub's rule for heading ids, since that is where the pages are read.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
#: The pages whose links are checked: the README and every page under docs/.
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
#: "a README a newcomer reads in five minutes" (issue 18).
README_MAX_BYTES = 10_000

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
#: [text](target) and ![alt](target), with an optional "title"; the text may hold brackets of
#: inline code already removed, so it is anything but a closing bracket.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose_lines(text: str) -> list[str]:
    """The page's lines outside fenced code blocks (a `# comment` in a shell block is no
    heading, a `[x](y)` in one no link)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """The id GitHub gives a heading: markup dropped, lowercased, every character that is not a
    letter, digit, space, hyphen or underscore removed, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading id of a markdown page, duplicates numbered as GitHub does (-1, -2, ...)."""
    seen: dict[str, int] = {}
    ids = set()
    for line in _prose_lines(page.read_text()):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}-{count}")
    return ids


def links(page: Path) -> list[str]:
    """Every link target in the page's prose, inline code left out."""
    found = []
    for line in _prose_lines(page.read_text()):
        found.extend(_LINK.findall(_INLINE_CODE.sub("", line)))
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """The page's relative links to a missing file, to a place outside the repository (not
    there in a clone), or to a missing heading of a markdown page."""
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, mailto:, ...
            continue
        path_part, _, anchor = target.partition("#")
        path = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not path.is_relative_to(root):
            broken.append(f"{target}: outside the repository")
        elif not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and unquote(anchor) not in anchors(path):
            broken.append(f"{target}: no such heading in {path.relative_to(root)}")
    return broken


def test_readme_is_short():
    size = len(README.read_bytes())
    assert size < README_MAX_BYTES, (
        f"README.md is {size} bytes; keep it under {README_MAX_BYTES} for a newcomer and move "
        "detail to a page under docs/"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_somewhere(page: Path):
    assert broken_links(page) == []


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Action commands (`<prefix>action-commands`)", "action-commands-prefixaction-commands"),
        (
            "Static membership: catch-up after a kill, before and after",
            "static-membership-catch-up-after-a-kill-before-and-after",
        ),
        ("Event time and the record's timestamp", "event-time-and-the-records-timestamp"),
        ("Throughput (`make bench`)", "throughput-make-bench"),
        (
            "2026-12-02: the pipeline on ports (issue 16)",
            "2026-12-02-the-pipeline-on-ports-issue-16",
        ),
        (
            "The worker: a StatefulSet, for static membership",
            "the-worker-a-statefulset-for-static-membership",
        ),
    ],
)
def test_slugs_follow_github(heading: str, slug: str):
    assert github_slug(heading) == slug


def test_a_missing_file_or_heading_is_found(tmp_path: Path):
    """The checker itself: each kind of broken link is reported, a good one is not."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A page\n\n## Some heading\n\n```sh\n# not a heading\n```\n")
    page = docs / "b.md"
    page.write_text(
        "[good](a.md#some-heading) [file](missing.md) [heading](a.md#not-a-heading)\n"
        "[out](../../elsewhere.md) [web](https://example.org/x.md) `[code](nowhere.md)`\n"
        "[self](#here)\n\n## Here\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "missing.md: no such file",
        "a.md#not-a-heading: no such heading in docs/a.md",
        "../../elsewhere.md: outside the repository",
    ]
