"""``--format svg``: a self-contained, interactive chain flame graph.

Drawn by our own code from :mod:`.flamegraph` (no flamegraph.pl, no external fetches):
click a frame to zoom, "Reset Zoom" to go back, "Search" for a regular expression (or plain
text when it is not a valid one) to highlight frames and show the share of off-CPU time they
cover. Every frame's ``<title>`` gives its name, µs and share.

Colours are hashed from frame names with CRC-32 (never Python's salted ``hash()``), so the
same frame has the same colour in every file: the target side (below ``--``) is warm, user
frames red-yellow and kernel frames orange; the waker side (above ``--``) is cool, user frames
blue and kernel frames aqua (when the source did not mark the kernel/user boundary, all
frames take the user colour of their side); category frames get a fixed, well-separated
pastel colour each. The same functions colour the HTML report's tables, so a category looks
the same everywhere. Frames that are markers rather than code (``[no stack]``,
``[user stack missing]``, see :func:`~..analysis.vocabulary.is_marker`) carry the class
``marker`` and are set in italics.

The HTML renderer embeds :func:`svg_element` inline, with its own controls.
"""

from __future__ import annotations

import colorsys
import zlib
from dataclasses import dataclass
from importlib import resources
from typing import Dict, List, Optional, TextIO

from ..analysis.categories import CATEGORIES, CATEGORY_BY_ID
from ..analysis.report import Report
from ..analysis.vocabulary import is_marker, total_facts
from ..units import fmt_share, fmt_us
from ..untrusted import neutralize
from . import RenderOptions
from . import flamegraph as fg

WIDTH = 1200  # px, like flamegraph.pl
PAD = 10
FRAME_HEIGHT = 16
FONT_SIZE = 11
CHAR_WIDTH = 0.61 * FONT_SIZE  # monospace advance; text is cut to fit its frame
TOP = 64  # title, subtitle and controls
BOTTOM = 30  # details line
MIN_WIDTH_PX = 0.1  # narrower frames are cut (flamegraph.pl's default --minwidth)
MAX_FRAMES = 15_000  # beyond this the cut-off rises: ~4 MB of SVG, still quick to open
FONT = "'DejaVu Sans Mono', Menlo, Consolas, 'Liberation Mono', monospace"
HIGHLIGHT = "rgb(230,0,230)"

def esc(text: object) -> str:
    """Neutralized, then escaped for XML and HTML text and attribute values (both quote
    kinds). Frame and process names can hold any byte: a raw control character would make
    the file unparseable, a bidi override would reorder what a reader sees."""
    return (neutralize(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


def format_share(part: float, whole: float) -> str:
    """``part`` as a share of ``whole``, formatted like every other renderer's shares."""
    return fmt_share(part / whole) if whole > 0 else fmt_share(0.0)


def _rgb(r: float, g: float, b: float) -> str:
    return f"rgb({int(r)},{int(g)},{int(b)})"


def _hash3(name: str) -> tuple:
    """Three stable values in [0, 1] from a name."""
    h = zlib.crc32(name.encode("utf-8", "surrogatepass"))
    return ((h & 0xFF) / 255.0, ((h >> 8) & 0xFF) / 255.0, ((h >> 16) & 0xFF) / 255.0)


_CATEGORY_INDEX: Dict[str, int] = {c.id: i for i, c in enumerate(CATEGORIES)}


def category_color(category: str) -> str:
    """A fixed colour per category: hues a golden angle apart, so neighbours differ."""
    index = _CATEGORY_INDEX.get(category)
    if index is None:
        index = zlib.crc32(category.encode("utf-8", "surrogatepass")) % 360
    hue = (index * 137.508 + 200.0) % 360.0
    # pastel (light, half-saturated) so categories never pass for stack frames
    r, g, b = colorsys.hls_to_rgb(hue / 360.0, 0.76, 0.55)
    return _rgb(r * 255, g * 255, b * 255)


def frame_color(name: str, kind: str, category: Optional[str] = None) -> str:
    """Colour of one frame: by kind (warm target side, cool waker side), shade by name."""
    v1, v2, v3 = _hash3(name)
    if kind == fg.ROOT:
        return "rgb(190,190,190)"
    if kind == fg.CATEGORY:
        return category_color(category or name)
    if kind == fg.THREAD:
        return _rgb(100 + 50 * v1, 185 + 50 * v2, 100 + 40 * v3)
    if kind in (fg.TARGET_USER, fg.TARGET_FRAME):  # flamegraph.pl "hot"
        return _rgb(205 + 50 * v3, 230 * v1, 55 * v2)
    if kind == fg.TARGET_KERNEL:  # flamegraph.pl "orange"
        return _rgb(190 + 65 * v1, 90 + 65 * v1, 0)
    if kind == fg.SEPARATOR:
        return "rgb(160,160,160)"
    if kind == fg.WAKER_KERNEL:  # flamegraph.pl "aqua"
        return _rgb(50 + 60 * v1, 165 + 55 * v1, 165 + 55 * v1)
    if kind in (fg.WAKER_USER, fg.WAKER_FRAME):  # flamegraph.pl "blue" (chain waker side)
        return _rgb(80 + 60 * v1, 80 + 60 * v1, 190 + 55 * v2)
    return _rgb(150 + 30 * v1, 130 + 40 * v2, 225 + 30 * v3)  # waker name: lavender


KIND_LABELS = {
    fg.ROOT: "all off-CPU time",
    fg.CATEGORY: "wakeup category",
    fg.THREAD: "target thread",
    fg.TARGET_USER: "target stack (user)",
    fg.TARGET_KERNEL: "target stack (kernel)",
    fg.TARGET_FRAME: "target stack",
    fg.SEPARATOR: "waker side follows",
    fg.WAKER_KERNEL: "waker stack (kernel)",
    fg.WAKER_USER: "waker stack (user)",
    fg.WAKER_FRAME: "waker stack",
    fg.WAKER: "woken by",
}


def fit_text(name: str, width: float) -> str:
    """The label that fits a frame (same rule as fitText in assets/flamegraph.js)."""
    if width < 3 * CHAR_WIDTH:
        return ""
    n = int((width - 6) // CHAR_WIDTH)
    if len(name) <= n:
        return name
    if n < 3:
        return ""
    return name[: n - 2] + ".."


def flame_script() -> str:
    """The shared interactive code (assets/flamegraph.js)."""
    return (resources.files(__package__) / "assets" / "flamegraph.js").read_text("utf-8")


@dataclass
class Geometry:
    height: int
    frames_top: int
    frame_width: int


def _geometry(layout: fg.Layout, standalone: bool) -> Geometry:
    """Room for the title, controls and details line only when the SVG carries them."""
    top, bottom = (TOP, BOTTOM) if standalone else (PAD, PAD)
    rows = layout.max_depth + 1
    return Geometry(top + rows * FRAME_HEIGHT + bottom, top, WIDTH - 2 * PAD)


def _frame(rect: fg.Rect, layout: fg.Layout, geo: Geometry) -> str:
    total = layout.total_us
    scale = geo.frame_width / total if total > 0 else 0.0
    x = PAD + rect.x * scale
    w = rect.width * scale
    y = geo.frames_top + (layout.max_depth - rect.depth) * FRAME_HEIGHT
    # Lines of the tooltip are escaped one by one: the line breaks between them are ours.
    kind = KIND_LABELS.get(rect.kind, rect.kind)
    if rect.kind == fg.CATEGORY:
        known = CATEGORY_BY_ID.get(rect.name)
        if known is not None:
            kind += f": {known.meaning}"
    tooltip = "\n".join(map(esc, (
        rect.name, kind,
        f"{rect.width:,} µs ({fmt_us(rect.width)}), {format_share(rect.width, total)}")))
    fill = frame_color(rect.name, rect.kind, rect.category)
    label = fit_text(neutralize(rect.name), w)  # as the page script fits the shown name
    marker = " marker" if is_marker(rect.name) else ""
    return (
        f'<g class="fr k-{rect.kind}{marker}" data-x="{rect.x}" data-w="{rect.width}" '
        f'data-d="{rect.depth}"><title>{tooltip}</title>'
        f'<rect x="{x:.2f}" y="{y}" width="{max(w - 0.5, 0.1):.2f}" '
        f'height="{FRAME_HEIGHT - 1}" fill="{fill}" rx="2" ry="2"/>'
        f'<text x="{x + 3:.2f}" y="{y + FRAME_HEIGHT - 4}">{esc(label)}</text></g>'
    )


STYLE = f"""
.fr text {{ font-family: {FONT}; font-size: {FONT_SIZE}px; fill: #000; pointer-events: none; }}
.fr {{ cursor: pointer; }}
.k-category text, .k-waker text {{ font-weight: bold; }}
.marker text {{ font-style: italic; }}
.fr:hover rect {{ stroke: #000; stroke-width: 0.5; }}
.fr.parent {{ opacity: 0.55; }}
.fr.hl rect {{ fill: {HIGHLIGHT}; }}
.fg-ui {{ font-family: Verdana, 'DejaVu Sans', sans-serif; font-size: 12px; fill: #000; }}
.fg-btn {{ cursor: pointer; fill: #1a4f9c; text-decoration: underline; }}
.fg-title {{ font-family: Verdana, 'DejaVu Sans', sans-serif; font-size: 17px;
  font-weight: bold; text-anchor: middle; }}
.fg-sub {{ font-family: Verdana, 'DejaVu Sans', sans-serif; font-size: 12px; fill: #555;
  text-anchor: middle; }}
"""

_SVG_INIT = """
(function () {
  var svg = document.documentElement;
  var el = function (id) { return document.getElementById(id); };
  var flame = window.offwakeFlame(svg, {matched: el("fg-matched"), details: el("fg-details"),
                                        unzoom: el("fg-unzoom")});
  el("fg-search").addEventListener("click", function (ev) {
    ev.stopPropagation();
    if (svg.getAttribute("data-search")) {
      flame.clearSearch();
      el("fg-search").textContent = "Search";
      return;
    }
    var term = window.prompt("Search frames (regular expression, or plain text):", "");
    if (term) {
      flame.search(term);
      el("fg-search").textContent = "Clear search";
    }
  });
})();
"""


def subtitle(report: Report, layout: fg.Layout) -> str:
    """One line: how much time, how many wakeups and paths, and what was cut."""
    shown = ("off the CPU", "wakeups", "distinct wake paths")
    parts = [str(fact) for fact in total_facts(report.totals) if fact.label in shown]
    if layout.elided_frames:
        min_px = layout.min_us * (WIDTH - 2 * PAD) / layout.total_us if layout.total_us else 0
        parts.append(f"{layout.elided_frames:,} frames narrower than {min_px:.2g} px "
                     "not drawn")
    return " · ".join(parts)


def svg_layout(report: Report) -> fg.Layout:
    """The flame graph laid out with this renderer's minimum frame width."""
    return fg.flame_layout(report, MIN_WIDTH_PX / (WIDTH - 2 * PAD), MAX_FRAMES)


def svg_element(report: Report, options: RenderOptions, standalone: bool = True,
                layout: Optional[fg.Layout] = None, element_id: str = "fg-svg") -> str:
    """The ``<svg>`` element. ``standalone`` adds the XML namespace, the in-SVG controls and
    the script; the HTML report brings its own controls and script instead."""
    if layout is None:
        layout = svg_layout(report)
    geo = _geometry(layout, standalone)
    title = f"{options.title}: off-CPU time by wakeup chain"
    out: List[str] = []
    ns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    size = (f'width="{WIDTH}" height="{geo.height}"' if standalone
            else 'width="100%" preserveAspectRatio="xMinYMin meet"')
    out.append(
        f'<svg{ns} version="1.1" id="{element_id}" {size} viewBox="0 0 {WIDTH} {geo.height}" '
        f'data-total="{layout.total_us}" data-pad="{PAD}" data-fw="{geo.frame_width}" '
        f'data-charw="{CHAR_WIDTH:.3f}" data-elided="{layout.elided_frames}" '
        f'data-matches="0" aria-label="{esc(title)}">'
    )
    out.append(f"<style>{STYLE}</style>")
    out.append(f'<rect x="0" y="0" width="{WIDTH}" height="{geo.height}" fill="#f8f8f4"/>')
    if standalone:
        out.append(f'<text class="fg-title" x="{WIDTH / 2:.0f}" y="24">{esc(title)}</text>')
        out.append(f'<text class="fg-sub" x="{WIDTH / 2:.0f}" y="44">'
                   f'{esc(subtitle(report, layout))}</text>')
        out.append(f'<text id="fg-unzoom" class="fg-ui fg-btn" x="{PAD}" y="24" '
                   f'style="display:none">Reset Zoom</text>')
        out.append(f'<text id="fg-search" class="fg-ui fg-btn" x="{WIDTH - PAD}" y="24" '
                   f'text-anchor="end">Search</text>')
        out.append(f'<text id="fg-matched" class="fg-ui" x="{WIDTH - PAD}" '
                   f'y="{geo.height - 10}" text-anchor="end"> </text>')
        out.append(f'<text id="fg-details" class="fg-ui" x="{PAD}" y="{geo.height - 10}"> </text>')
    if layout.total_us <= 0:
        out.append(f'<text class="fg-sub" x="{WIDTH / 2:.0f}" y="{geo.frames_top + 12}">'
                   "no off-CPU time was recorded</text>")
    out.append('<g id="fg-frames">')
    for rect in layout.rects:
        out.append(_frame(rect, layout, geo))
    out.append("</g>")
    if standalone:
        script = flame_script() + _SVG_INIT
        if "]]>" in script:  # never true for our own asset; guards the CDATA section
            raise ValueError("flamegraph.js must not contain ']]>'")
        out.append(f'<script type="text/ecmascript"><![CDATA[\n{script}]]></script>')
    out.append("</svg>")
    return "\n".join(out)


def render(report: Report, out: TextIO, options: RenderOptions) -> None:
    out.write('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n')
    out.write(svg_element(report, options, standalone=True))
    out.write("\n")
