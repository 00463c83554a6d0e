"""Every reference in the repository points at something the repository has.

* No tracked file names the project's old, untracked design brief; the design lives in
  docs/design.md, and its sections are cited as ``docs/design.md §N``.
* Every ``docs/design.md §N`` names a numbered section of docs/design.md.
* Every path from the root that a file names (``kubectl_offwake/wire/schema.py``,
  ``docs/report-json.md``) is tracked.
* In markdown, every relative link resolves to a tracked file or folder, and a link's
  ``#anchor`` into a markdown file names one of its headings.
"""

from __future__ import annotations

from typing import List

import pytest

from .reposcan import (
    DESIGN_DOC,
    Tree,
    anchors,
    design_sections,
    inline_code,
    links,
    prose,
    repo_paths,
    resolve_link,
    section_refs,
    text_files,
)

#: Spelled in two halves so that this file does not name it either.
OLD_BRIEF = "DESIGN" + ".md"


@pytest.fixture(scope="module")
def tree() -> Tree:
    return Tree.of()


def test_nothing_names_the_old_design_brief(tree: Tree) -> None:
    named = [f"{path}:{n}" for path, text in text_files(tree)
             for n, line in enumerate(text.split("\n"), 1) if OLD_BRIEF in line]
    assert named == [], f"cite docs/design.md (its §N sections) instead of {OLD_BRIEF}: {named}"


def test_design_section_references_exist(tree: Tree) -> None:
    sections = design_sections()
    assert {"1", "2", "3", "3.1", "3.2", "3.3", "3.4", "4", "5"} <= sections, sections
    wrong = [f"{path}: §{ref}" for path, text in text_files(tree)
             for ref in section_refs(prose(path, text)) if ref not in sections]
    assert wrong == [], f"{DESIGN_DOC} has no such section (it has {sorted(sections)}): {wrong}"


def test_paths_named_in_files_exist(tree: Tree) -> None:
    missing = sorted({f"{path}: {named}" for path, text in text_files(tree)
                      for named in repo_paths(prose(path, text))
                      if not tree.has(named)})
    assert missing == [], "these files name paths the repository does not have:\n" + \
        "\n".join(missing)


def test_markdown_links_and_code_paths_exist(tree: Tree) -> None:
    broken: List[str] = []
    texts = dict(text_files(tree))
    top = tree.top_level
    for doc, text in texts.items():
        if not doc.endswith(".md"):
            continue
        for link in links(text):
            resolved = resolve_link(doc, link.target)
            if resolved is None:
                continue
            path, fragment = resolved
            if not tree.has(path):
                broken.append(f"{doc}:{link.line}: link to {link.target} (no {path})")
            elif fragment and path.endswith(".md") and fragment not in anchors(texts[path]):
                broken.append(f"{doc}:{link.line}: link to {link.target} (no heading "
                              f"#{fragment} in {path})")
        for line, code in inline_code(text):
            word = code.split(" ")[0].rstrip(",.:")
            if "/" in word and word.split("/")[0] in top and not any(
                    c in word for c in "<>{}$…") and not tree.has(word):
                broken.append(f"{doc}:{line}: `{code}` (no {word} in the repository)")
    assert broken == [], "\n".join(broken)


@pytest.mark.parametrize("target, expected", [
    ("../manifests/README.md#rbac", ("manifests/README.md", "rbac")),
    ("design.md", ("docs/design.md", "")),
    ("#layout", ("docs/x.md", "layout")),
    ("https://example.com/a.md", None),
    ("../../outside.md", ("..", "")),
])
def test_links_resolve_from_the_document(target: str, expected: object) -> None:
    assert resolve_link("docs/x.md", target) == expected


def test_the_scan_finds_what_is_wrong() -> None:
    """The checks above can fail: a made-up tree and texts with every kind of bad reference."""
    tree = Tree(frozenset({"docs/design.md", "README.md"}), frozenset({"docs"}))
    assert not tree.has("docs/nothing.md") and tree.has("docs/") and tree.has("docs/*.md")
    assert repo_paths("see docs/nothing.md and tests/unit/test_<x>.py.") == ["docs/nothing.md"]
    assert section_refs("as docs/design.md §3.2, docs/design.md, §9 and docs/design.md "
                        "section 4 say") == ["3.2", "9", "4"]
    assert anchors("# 3. Stable interfaces\n\n## Layout\n\n## Layout\n") == {
        "3-stable-interfaces", "layout", "layout-1"}
    assert [link.target for link in links("[a](x.md) and ![i](img.png)")] == ["x.md", "img.png"]
