"""The shell commands of the project's documents, read the way a reader reads them.

A document is README.md or any ``docs/**/*.md``. Its code blocks are found with a
CommonMark parser (markdown-it-py), so list items, quotes and fences are told apart as a
renderer tells them apart, and every block is one of:

* an **indented block**, or a fenced block tagged ``sh`` / ``shell`` / ``bash``: every line
  is a shell command (blank lines and whole-line ``#`` comments aside; a line ending in
  ``\\`` continues on the next);
* a fenced ``console`` block: lines starting with ``$ `` are commands, and the lines after
  one, up to the next ``$ ``, are its real output, which the docs test regenerates;
* a fenced block tagged with a language that is not a shell (``text``, ``json``, ``yaml``,
  ``python``, ``c``): not commands;
* anything else — a fence without a tag, or an unknown tag — is an error: the test cannot
  know whether it holds commands, so it says so rather than skipping it.

A command may end in a comment (``cmd  # what it does``). A comment that starts with
``needs`` marks the command as one this machine cannot run (``# needs a real cluster``);
which needs are accepted, and why, is the docs test's business (tests/docs/docrules.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parents[2]

SHELL_TAGS = frozenset({"sh", "shell", "bash"})
CONSOLE_TAG = "console"
#: Fence tags of blocks that hold no commands.
OTHER_TAGS = frozenset({"text", "json", "yaml", "python", "c", "diff", "toml", "ini"})
PROMPT = "$ "
NEEDS = "needs "


class DocError(Exception):
    """A block or line the docs test cannot read; the message names the place."""


@dataclass(frozen=True)
class Command:
    """One shell command as a document shows it."""

    doc: Path
    line: int  # 1-based line of the command in the document
    text: str  # the command, continuation lines joined, without its trailing comment
    comment: str  # the trailing comment without its "#", or ""
    console: bool  # from a ``console`` block: ``output`` is what the document shows
    output: Tuple[str, ...] = ()
    output_lines: Tuple[int, int] = (0, 0)  # 0-based [start, end) lines of ``output``

    @property
    def need(self) -> Optional[str]:
        """What the command needs that this machine lacks, when it is marked so."""
        if self.comment.startswith(NEEDS):
            return self.comment[len(NEEDS):].strip()
        return None

    @property
    def where(self) -> str:
        return f"{shown(self.doc)}:{self.line}"


def shown(doc: Path) -> str:
    """A document's path as messages name it: from the repository's root."""
    try:
        return doc.relative_to(REPO).as_posix()
    except ValueError:  # a document made up by a test
        return "/".join(doc.parts[-2:]) if doc.parent.name == "docs" else doc.name


def documents(root: Path = REPO) -> List[Path]:
    """README.md and every markdown file under docs/, in a stable order."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def commands(doc: Path) -> List[Command]:
    """Every command of one document, in order."""
    lines = doc.read_text(encoding="utf-8").split("\n")
    found: List[Command] = []
    for kind, tag, start, end in _blocks(doc, lines):
        if kind == "code_block" or tag in SHELL_TAGS:
            found.extend(_shell_lines(doc, lines, start, end))
        elif tag == CONSOLE_TAG:
            found.extend(_console_lines(doc, lines, start, end))
        elif tag not in OTHER_TAGS:
            what = f"tagged {tag!r}" if tag else "without a tag"
            raise DocError(f"{shown(doc)}:{start}: a fenced block {what}; tag it "
                           f"sh or console (commands) or one of {sorted(OTHER_TAGS)}")
    return found


def _blocks(doc: Path, lines: List[str]) -> Iterator[Tuple[str, str, int, int]]:
    """(kind, tag, first content line, end) per code block, 0-based, end exclusive."""
    text = "\n".join(lines)
    for token in MarkdownIt("commonmark").parse(text):
        if token.map is None or token.type not in ("fence", "code_block"):
            continue
        first, end = token.map
        if token.type == "fence":
            # map covers the fences; a block left open runs to the end of the document
            closed = end - 1 > first and lines[end - 1].strip().startswith(token.markup)
            yield "fence", token.info.strip().split(" ")[0], first + 1, end - 1 if closed else end
        else:
            yield "code_block", "", first, end


def _shell_lines(doc: Path, lines: List[str], start: int, end: int) -> Iterator[Command]:
    index = start
    while index < end:
        first = index
        text = lines[index].strip()
        while text.endswith("\\") and index + 1 < end:
            index += 1
            text = text[:-1].rstrip() + " " + lines[index].strip()
        index += 1
        if not text or text.startswith("#"):
            continue
        command, comment = split_comment(text)
        yield Command(doc, first + 1, command, comment, console=False)


def _console_lines(doc: Path, lines: List[str], start: int, end: int) -> Iterator[Command]:
    prompts = [i for i in range(start, end) if lines[i].startswith(PROMPT)]
    if not prompts or prompts[0] != start:
        raise DocError(f"{shown(doc)}:{start + 1}: a console block must start "
                       f"with a command line ('{PROMPT}...')")
    for n, at in enumerate(prompts):
        stop = prompts[n + 1] if n + 1 < len(prompts) else end
        command, comment = split_comment(lines[at][len(PROMPT):].strip())
        output = tuple(lines[at + 1:stop])
        yield Command(doc, at + 1, command, comment, console=True, output=output,
                      output_lines=(at + 1, stop))


_QUOTED = re.compile(r"'[^']*'|\"(?:[^\"\\]|\\.)*\"")


def split_comment(text: str) -> Tuple[str, str]:
    """``cmd  # comment`` -> (``cmd``, ``comment``); a ``#`` inside quotes is not one."""
    masked = _QUOTED.sub(lambda m: "x" * len(m.group(0)), text)
    at = masked.find(" #")
    if at < 0:
        return text, ""
    return text[:at].rstrip(), text[at + 2:].strip()


def replace_lines(doc: Path, changes: List[Tuple[Tuple[int, int], List[str]]]) -> None:
    """Replace line ranges ``[start, end)`` of ``doc`` (0-based), bottom up so earlier
    ranges keep their numbers."""
    lines = doc.read_text(encoding="utf-8").split("\n")
    for (start, end), new in sorted(changes, key=lambda c: c[0][0], reverse=True):
        lines[start:end] = new
    doc.write_text("\n".join(lines), encoding="utf-8")
