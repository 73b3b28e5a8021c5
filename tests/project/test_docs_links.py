"""Every reference to a Markdown file in the repository resolves, anchors included.

The ``.py``, ``.md`` and ``.yaml`` files of the repository are scanned (not ``.venv/``, not
``results/``, not hidden or build folders). A reference is

* a Markdown link in a ``.md`` file whose target is a ``.md`` file or an anchor of the page
  itself, resolved relative to the linking file;
* a path under ``docs/`` anywhere, optionally with ``#anchor``, relative to the repository root;
* a bare upper-case file name (``README.md``, ``<NAME>.md#anchor``), found at the repository
  root or beside the ``.md`` file that cites it.

The target must be a file of the repository, and an anchor must be a heading of that file under
GitHub's rules (see :func:`github_slug`) or an explicit ``<a id=…>``/``<a name=…>``. Names of
files that commands *write* (``report.md``, ``per_env.md``) are lower-case and outside ``docs/``,
so they are not references; neither is a path into another repository (``…/README.md``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCANNED = (".py", ".md", ".yaml")
SKIPPED_DIRS = {"__pycache__", "node_modules", "build", "dist"}
SKIPPED_TOP = {"results"}

# a path under docs/ (not inside another path), an optional anchor
DOCS_REF = re.compile(r"(?<![\w./-])(docs/(?:[\w.-]+/)*[\w.-]+\.md)(?!\w)(#[\w-]+)?")
# a bare upper-case Markdown file name, an optional anchor
BARE_REF = re.compile(r"(?<![\w./-])([A-Z][A-Z0-9_-]*\.md)(?!\w)(#[\w-]+)?")
# the target of a Markdown link or image: [text](target "title")
MD_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HTML_ANCHOR = re.compile(r"<a\s+(?:[^>]*\s)?(?:id|name)=[\"']([^\"']+)[\"']", re.IGNORECASE)


@dataclass(frozen=True)
class Problem:
    """A reference that does not resolve: where it is, what it says and why it fails."""

    file: str
    line: int
    ref: str
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.ref} — {self.why}"


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text (links and images reduced to their text,
    inline HTML dropped) lower-cased, every character that is not a letter, digit, ``_``,
    ``-`` or space removed, spaces turned into ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every anchor of a Markdown page: its headings outside fenced code (a repeated slug gets
    ``-1``, ``-2``, … as on GitHub) and explicit HTML anchors."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    fence: str | None = None
    for line in markdown.splitlines():
        opening = FENCE.match(line)
        if fence is not None:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = None
            continue
        if opening:
            fence = opening.group(1)
            continue
        found.update(HTML_ANCHOR.findall(line))
        heading = HEADING.match(line)
        if heading:
            slug = github_slug(heading.group(2) or "")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def scanned_files(root: Path) -> Iterator[Path]:
    """The files to scan under ``root``, in a stable order."""
    for folder, dirs, files in os.walk(root):
        top = Path(folder) == root
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and d not in SKIPPED_DIRS
            and not d.endswith(".egg-info")
            and not (top and d in SKIPPED_TOP)
        )
        for name in sorted(files):
            if name.endswith(SCANNED):
                yield Path(folder) / name


def references(path: Path, text: str, repo: Path) -> Iterator[tuple[int, str, list[Path], str]]:
    """``(line, reference as written, candidate targets, anchor)`` for every reference in
    ``text``, the contents of ``path`` in the repository ``repo``; a reference resolves to its
    first existing candidate.
    """
    here = path.parent
    for number, line in enumerate(text.splitlines(), start=1):
        for match in DOCS_REF.finditer(line):
            yield number, match.group(0), [repo / match.group(1)], match.group(2) or ""
        for match in BARE_REF.finditer(line):
            candidates = [repo / match.group(1)]
            if path.suffix == ".md":
                candidates.append(here / match.group(1))
            yield number, match.group(0), candidates, match.group(2) or ""
        if path.suffix != ".md":
            continue
        for match in MD_LINK.finditer(line):
            target = match.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:|^//", target, re.IGNORECASE):
                continue  # http:, mailto:, …
            file_part, _, anchor = target.partition("#")
            if file_part and not file_part.endswith(".md"):
                continue  # a figure, a data file: not a Markdown reference
            where = here / file_part if file_part else path
            yield number, target, [where], f"#{anchor}" if anchor else ""


def dangling(root: Path) -> list[Problem]:
    """Every reference in the repository at ``root`` whose file or anchor does not exist."""
    root = root.resolve()
    problems: list[Problem] = []
    cache: dict[Path, set[str]] = {}
    for path in scanned_files(root):
        text = path.read_text(encoding="utf-8", errors="replace")
        rel = path.relative_to(root).as_posix()
        for number, ref, candidates, anchor in references(path, text, root):
            target = next((c for c in candidates if c.is_file()), None)
            if target is None:
                problems.append(Problem(rel, number, ref, "no such file in the repository"))
                continue
            if not anchor:
                continue
            target = target.resolve()
            if target not in cache:
                cache[target] = anchors(target.read_text(encoding="utf-8", errors="replace"))
            if anchor[1:] not in cache[target]:
                where = target.relative_to(root).as_posix()
                problems.append(Problem(rel, number, ref, f"no heading {anchor} in {where}"))
    return problems


def test_every_markdown_reference_in_the_repository_resolves() -> None:
    problems = dangling(REPO)
    assert not problems, "dangling Markdown references:\n" + "\n".join(map(str, problems))


def test_github_anchor_rules() -> None:
    assert github_slug("Shared on-policy protocol") == "shared-on-policy-protocol"
    assert github_slug("C-TRPO") == "c-trpo"
    assert github_slug("KFCPO: what is published") == "kfcpo-what-is-published"
    assert github_slug("The `p3o` variant, official (κ = 10)") == "the-p3o-variant-official-κ--10"
    assert github_slug("[Linked](other.md) heading") == "linked-heading"
    page = "# Title\n## Part\n## Part\n```\n# not a heading\n```\n<a id='here'></a>\n"
    assert anchors(page) == {"title", "part", "part-1", "here"}


def test_a_dangling_reference_is_reported(tmp_path: Path) -> None:
    # Names are spelled apart so that this file holds no reference itself.
    docs, readme, notes = "docs" + "/", "README" + ".md", "NOTES" + ".md"
    guide = f"{docs}guide.md"
    (tmp_path / "docs").mkdir()
    (tmp_path / guide).write_text(
        "# Guide\n\n## Step one\n\n## Step one\n\n"
        "Fine: [again](#step-one-1), [self](guide.md#guide).\n"
        "Broken: [nowhere](#nowhere), [gone](other.md), [bad](guide.md#step-two).\n"
        "```\n# inside a fence\n```\n"
    )
    (tmp_path / readme).write_text("# Project\n")
    (tmp_path / "code.py").write_text(
        f'"""Fine: {guide}#step-one, {readme}#project, {guide}.\n'
        f'Broken: {docs}gone.md, {guide}#inside-a-fence, {notes}, {readme}#usage."""\n'
    )
    (tmp_path / "conf.yaml").write_text(f"# see {docs}missing.md#x\n")
    for skipped in ("results", ".venv"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "old.py").write_text(f"# {docs}gone.md\n")

    found = {(p.file, p.ref) for p in dangling(tmp_path)}

    assert found == {
        (guide, "#nowhere"),
        (guide, "other.md"),
        (guide, "guide.md#step-two"),
        ("code.py", f"{docs}gone.md"),
        ("code.py", f"{guide}#inside-a-fence"),
        ("code.py", notes),
        ("code.py", f"{readme}#usage"),
        ("conf.yaml", f"{docs}missing.md#x"),
    }
