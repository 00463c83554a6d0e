"""Text that came from a node, made safe to show.

Any process on a node names its own threads, and comms, paths, symbols, pod and container
names and the collector's messages all end up in reports. Printed raw, an escape sequence in
a thread name can clear or rewrite the on-call engineer's screen (kubectl fixed the same
class of bug, CVE-2021-25743), a bidi override can reorder a line so it lies, and a lone
surrogate cannot even be encoded. Every output runs such text through :func:`neutralize`
(the terminal report, the live display, error messages, folded lines, and, under their own
escaping, HTML and SVG); JSON documents keep names exact and use :func:`json_escaped`.

The escaped form is ``\\x1b`` / ``\\u202e``: visible, greppable, and stable under a second
pass (a backslash is left alone), so a folded file written from escaped names re-imports
to the same names.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich only where a console is made; this module stays stdlib at import
    from rich.text import Text

#: What must never reach an output as itself: C0 controls, DEL, C1 controls (0x9b is a
#: CSI on its own), the bidi marks, embeddings, overrides and isolates, the line and
#: paragraph separators, lone surrogates (not encodable) and the two non-characters XML
#: forbids.
_C0 = "\x00-\x1f"
_BEYOND_C0 = ("\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
              "\ud800-\udfff\ufffe\uffff")
_UNSAFE_TEXT = re.compile(f"[{_C0}{_BEYOND_C0}]")
#: The same, less the C0 controls: a JSON encoder escapes those inside strings itself,
#: and a JSON document's own line breaks are C0 characters.
_UNSAFE_IN_JSON = re.compile(f"[{_BEYOND_C0}]")
#: The printable ASCII bytes (space to tilde).
_ASCII_PRINTABLE = bytes(range(0x20, 0x7f))


def _escape(match: re.Match) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _json_escape(match: re.Match) -> str:
    return f"\\u{ord(match.group(0)):04x}"


def needs_neutralizing(text: str) -> bool:
    """Whether :func:`neutralize` would change ``text`` (one scan, no copy).

    Renderers ask this of every stack they write, so it is quick: ASCII text (almost all
    of it) is checked by deleting its printable bytes in C; other text by
    ``str.isprintable`` (every unsafe character is "not printable"), and only text that
    fails that meets the regular expression.
    """
    if text.isascii():
        return bool(text.encode("ascii").translate(None, _ASCII_PRINTABLE))
    return not text.isprintable() and _UNSAFE_TEXT.search(text) is not None


def neutralize(text: object) -> str:
    """``text`` with every unsafe character written out as ``\\xNN`` or ``\\uNNNN``."""
    value = text if isinstance(text, str) else str(text)
    if not needs_neutralizing(value):  # the common case: nothing to copy
        return value
    return _UNSAFE_TEXT.sub(_escape, value)


def json_escaped(document: str) -> str:
    """JSON text with the unsafe characters inside its strings as ``\\uNNNN`` escapes.

    The decoded values are unchanged (consumers get the exact names), but the bytes hold
    no character a terminal would act on. Applied to whole encoded chunks: outside strings
    JSON has only ASCII punctuation, digits and whitespace, none of which is touched.
    """
    if (document.isascii() and "\x7f" not in document) or not _UNSAFE_IN_JSON.search(document):
        return document  # (two quick C scans answer for the usual all-ASCII chunk)
    return _UNSAFE_IN_JSON.sub(_json_escape, document)


def rich_text(text: object, style: str = "") -> Text:
    """``text`` for a rich console (the terminal report, the live display): neutralized,
    and a :class:`~rich.text.Text`, so rich never reads markup in it."""
    from rich.text import Text

    return Text(neutralize(text), style=style)
