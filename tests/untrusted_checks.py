"""Checks that a rendered output shows untrusted names inert: for tests of any folder.

A terminal is hurt by control characters, a browser by live markup, a folded-file reader by
broken lines. The product's own rule is ``kubectl_offwake.untrusted``; these are written
independently so a mistake there cannot hide here.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Dict, List, Optional, Tuple

#: What may never reach an output as itself: C0 controls but the line ends (and ESC, which
#: :func:`assert_terminal_safe` checks apart), DEL, C1 controls, bidi marks, embeddings,
#: overrides and isolates, the line and paragraph separators, lone surrogates.
UNSAFE = re.compile("[\x00-\x09\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f-\x9f\u061c\u200e\u200f"
                    "\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
#: What our own displays write to a terminal: colours, cursor moves and line erases,
#: cursor show/hide.
OWN_SEQUENCES = re.compile("\x1b\\[(?:[0-9;]*[mAKG]|\\?25[lh])")
#: A folded line: the target comm, frames, the ``--`` separator, the waker side, a value.
FOLDED_LINE = re.compile(r"[^;\n]+;.*;--;.* \d+")


def assert_terminal_safe(text: str) -> None:
    """No escape sequence but our own display's, no other control or bidi character."""
    rest = OWN_SEQUENCES.sub("", text)
    at = rest.find("\x1b")
    assert at < 0, repr(rest[max(0, at - 80):at + 80])
    found = UNSAFE.search(rest)
    assert found is None, repr(rest[max(0, found.start() - 80):found.end() + 80])


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: List[Tuple[str, Dict[str, Optional[str]]]] = []

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        self.tags.append((tag, dict(attrs)))


def assert_html_inert(html: str) -> None:
    """The page's only ``<svg>`` is the flame graph and no element has an event handler."""
    assert "\x1b" not in html and not UNSAFE.search(html)
    parser = _Tags()
    parser.feed(html)
    svgs = [attrs.get("id") for tag, attrs in parser.tags if tag == "svg"]
    assert svgs == ["fg-svg"], svgs
    assert not any(name.startswith("on") for _tag, attrs in parser.tags for name in attrs)


def assert_svg_inert(svg: str) -> str:
    """The file parses, is one ``<svg>`` and has no event handler; returns its tooltips."""
    assert "\x1b" not in svg and not UNSAFE.search(svg)
    elements = list(ET.fromstring(svg.encode("utf-8")).iter())
    assert sum(1 for e in elements if e.tag.endswith("}svg")) == 1
    assert not any(name.startswith("on") for e in elements for name in e.attrib)
    return "\n".join(e.text or "" for e in elements if e.tag.endswith("}title"))
