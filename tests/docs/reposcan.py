"""What the repository holds, and what its files point at: paths, links and design sections.

Used by tests/docs/test_docs_links.py. A reference counts when it names a file of the
repository by its path from the root (``kubectl_offwake/wire/schema.py``, ``docs/design.md
§3.2``), or, in markdown, when it is a relative link (``[x](../manifests/README.md#rbac)``)
or an inline-code path whose first part is a top-level folder of the repository
(``tests/lab/README.md``, ``.github/workflows/*.yml``). Placeholders (``<pod>``), generated
output (``dist/``, ``build/``: not tracked) and absolute paths (the node's ``/proc``) are
not references to the repository.
"""

from __future__ import annotations

import ast
import fnmatch
import io
import re
import subprocess
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, FrozenSet, Iterator, List, Optional, Set

from markdown_it import MarkdownIt

from .docblocks import REPO

#: Extensions of the files whose text is scanned for references.
TEXT_SUFFIXES = (".py", ".md", ".c", ".h", ".yml", ".yaml", ".toml", ".txt", ".css", ".js")
#: Extensionless scripts are scanned too when they start with a shebang.
SHEBANG = b"#!"

DESIGN_DOC = "docs/design.md"
#: ``docs/design.md §3.2``, ``docs/design.md, §4`` and (ASCII-only sources such as the BPF
#: program) ``docs/design.md section 4``.
_SECTION_REF = re.compile(r"docs/design\.md,?\s+(?:§\s*|section\s+)(\d+(?:\.\d+)?)")
_HEADING_NUMBER = re.compile(r"^#{1,6}\s+(\d+(?:\.\d+)?)[.\s]")
_REPO_PATH = re.compile(
    r"(?<![\w./-])((?:kubectl_offwake|tests|docs|bpf|image|manifests|release|bench|\.ci|"
    r"\.github)/[\w./*-]*[\w*])")


def tracked(root: Path = REPO) -> List[str]:
    """Every tracked path, from git (the checkout is what CI tests)."""
    done = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True,
                          check=True)
    return sorted(p for p in done.stdout.decode().split("\0") if p)


@dataclass(frozen=True)
class Tree:
    """The tracked files and the folders that hold them."""

    files: FrozenSet[str]
    dirs: FrozenSet[str]

    @classmethod
    def of(cls, root: Path = REPO) -> Tree:
        files = frozenset(tracked(root))
        dirs: Set[str] = set()
        for path in files:
            parts = path.split("/")[:-1]
            for n in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:n]))
        return cls(files, frozenset(dirs))

    @property
    def top_level(self) -> FrozenSet[str]:
        return frozenset(p.split("/")[0] for p in self.files)

    def has(self, path: str) -> bool:
        path = path.rstrip("/")
        if any(c in path for c in "*?["):
            patterns = {path, path.replace("**/", "")}  # `docs/**/*.md` covers docs/design.md
            return any(fnmatch.fnmatchcase(f, p) for f in self.files for p in patterns)
        return path in self.files or path in self.dirs


def text_files(tree: Tree, root: Path = REPO) -> Iterator[tuple[str, str]]:
    """(path, text) of every tracked text file."""
    for path in sorted(tree.files):
        full = root / path
        if full.is_symlink() or not full.is_file():
            continue
        if not path.endswith(TEXT_SUFFIXES):
            with open(full, "rb") as handle:
                if handle.read(2) != SHEBANG:
                    continue
        try:
            yield path, full.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue


def design_sections(root: Path = REPO) -> Set[str]:
    """The section numbers of docs/design.md (``3``, ``3.2``, ...)."""
    found = set()
    for line in (root / DESIGN_DOC).read_text(encoding="utf-8").split("\n"):
        match = _HEADING_NUMBER.match(line)
        if match:
            found.add(match.group(1))
    return found


def section_refs(text: str) -> List[str]:
    return _SECTION_REF.findall(text)


def repo_paths(text: str) -> List[str]:
    """Paths from the root that a text names (``tests/lab/README.md``), without those that
    hold a placeholder (``<family>``, ``${X}``, an upper-case ``NAME``) or an ellipsis."""
    out = []
    for match in _REPO_PATH.finditer(text):
        path = match.group(1).rstrip(".")
        end = match.end()
        if text[end:end + 1] in "<{$…" or text[end:end + 3] == "...":
            continue  # `tests/unit/test_findings_<family>.py`, `tests/${X}`
        if any(_UPPER_WORD.fullmatch(part) for part in path.split("/")):
            continue  # `tests/golden/NAME`
        out.append(path)
    return out


_UPPER_WORD = re.compile(r"[A-Z][A-Z_]+")


def prose(path: str, text: str) -> str:
    """The part of a file that talks to people: a Python file's docstrings and comments
    (its string literals are data: a path inside a zipapp is no file of the repository),
    any other file whole."""
    if not path.endswith(".py"):
        return text
    pieces: List[str] = []
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                pieces.append(doc)
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.COMMENT:
                pieces.append(token.string)
    except (tokenize.TokenError, SyntaxError):
        pass
    return "\n".join(pieces)


# -- markdown ----------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lowercase, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> Set[str]:
    found: Set[str] = set()
    seen: Dict[str, int] = {}
    tokens = MarkdownIt("commonmark").parse(markdown)
    for n, token in enumerate(tokens):
        if token.type == "heading_open":
            base = slug(tokens[n + 1].content)
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


@dataclass(frozen=True)
class Link:
    line: int  # 1-based
    target: str


def _inline(markdown: str) -> Iterator[tuple[int, Any]]:
    """(1-based line, token) of every inline token outside code blocks."""
    for token in MarkdownIt("commonmark").parse(markdown):
        if token.type == "inline" and token.children:
            line = (token.map[0] + 1) if token.map else 0
            for child in token.children:
                yield line, child


def links(markdown: str) -> List[Link]:
    """Link targets of a markdown text (inline links and images)."""
    out = []
    for line, token in _inline(markdown):
        target = token.attrGet("href") if token.type == "link_open" else \
            token.attrGet("src") if token.type == "image" else None
        if target:
            out.append(Link(line, str(target)))
    return out


def inline_code(markdown: str) -> List[tuple[int, str]]:
    """(line, content) of every inline code span outside code blocks."""
    return [(line, token.content) for line, token in _inline(markdown)
            if token.type == "code_inline"]


def resolve_link(doc: str, target: str) -> Optional[tuple[str, str]]:
    """(repository path, fragment) of a relative link from ``doc``; None for URLs."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
        return None
    path, _, fragment = target.partition("#")
    if not path:
        return doc, fragment
    base = Path(doc).parent
    joined = (base / path).as_posix()
    parts: List[str] = []
    for piece in joined.split("/"):
        if piece in ("", "."):
            continue
        if piece == "..":
            if not parts:
                return "..", fragment  # outside the repository
            parts.pop()
        else:
            parts.append(piece)
    return "/".join(parts), fragment
