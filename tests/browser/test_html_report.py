"""The HTML report and the SVG in a real headless Chromium, with the network off.

Driven by Playwright for Python against Debian's ``/usr/bin/chromium`` (never a downloaded
browser: no ``playwright install``). Every request that is not ``file://`` is aborted and
recorded, and the context is offline as well; the tests assert none was even attempted.

Set ``OFFWAKE_SCREENSHOT_DIR`` to keep the screenshots (report.png, flamegraph.png) for a look.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path
from typing import Iterator, List

import pytest

from kubectl_offwake.analysis import analyze
from kubectl_offwake.render import RenderOptions, render
from kubectl_offwake.render.svg import svg_layout
from tests.sample_recording import build_sample_recording

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is not installed (apt-get install -y chromium)"),
]


class Session:
    """One offline browser context and what it tried to fetch."""

    def __init__(self, context) -> None:
        self.context = context
        self.requests: List[str] = []
        self.blocked: List[str] = []
        self.errors: List[str] = []

    def open(self, path: Path):
        page = self.context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", self._console)
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        return page

    def _console(self, message) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def assert_no_network(self) -> None:
        assert not self.blocked, f"the page tried to fetch {self.blocked}"
        assert all(url.startswith("file://") for url in self.requests), self.requests
        assert not self.errors, self.errors


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def session(browser) -> Iterator[Session]:
    context = browser.new_context(offline=True, viewport={"width": 1300, "height": 900})
    found = Session(context)

    def route(route) -> None:
        url = route.request.url
        if url.startswith("file://"):
            route.continue_()
        else:
            found.blocked.append(url)
            route.abort()

    context.route("**/*", route)
    context.on("request", lambda request: found.requests.append(request.url))
    yield found
    context.close()


@pytest.fixture(scope="module")
def report():
    return analyze(build_sample_recording())


@pytest.fixture(scope="module")
def files(report, tmp_path_factory):
    folder = tmp_path_factory.mktemp("h4-render")
    paths = {}
    for fmt in ("html", "svg"):
        out = io.StringIO()
        render(report, fmt, out, RenderOptions())
        paths[fmt] = folder / f"report.{fmt}"
        paths[fmt].write_text(out.getvalue(), encoding="utf-8")
    return paths


def keep(path: Path, name: str) -> None:
    assert path.stat().st_size > 10_000  # a real picture, not an empty page
    folder = os.environ.get("OFFWAKE_SCREENSHOT_DIR")
    if folder:
        shutil.copyfile(path, Path(folder) / name)


def frame_state(page, selector: str) -> dict:
    """Geometry and visibility of one frame group, as the browser sees it now."""
    return page.eval_on_selector(selector, """g => ({
        width: Number(g.querySelector('rect').getAttribute('width')),
        x: Number(g.querySelector('rect').getAttribute('x')),
        shown: getComputedStyle(g).display !== 'none',
        parent: g.classList.contains('parent'),
        name: g.querySelector('title').textContent.split('\\n')[0]})""")


def expected_share(report, pattern: str) -> float:
    """What the page should say for a search: the union of matched frames' µs."""
    layout = svg_layout(report)
    regex = re.compile(pattern, re.IGNORECASE)
    spans = sorted((r.x, r.x + r.width) for r in layout.rects
                   if r.depth > 0 and regex.search(r.name))
    covered, end = 0, -1
    for start, stop in spans:
        if stop <= end:
            continue
        covered += stop - max(start, end)
        end = stop
    return 100.0 * covered / layout.total_us


def test_report_renders_offline(session, files, report, tmp_path):
    page = session.open(files["html"])
    assert page.get_by_role("heading", name="Where the time went").is_visible()
    assert page.locator("#totals").is_visible()
    assert "app/productpage-v1-6b7f/istio-proxy" in page.locator("header").inner_text()
    frames = page.locator("#fg-svg g.fr")
    assert frames.count() == len(svg_layout(report).rects)
    assert page.locator("#fg-svg").bounding_box()["height"] > 300
    assert page.locator("#fg-svg g.k-category").first.is_visible()
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    keep(shot, "report.png")
    session.assert_no_network()
    assert session.requests == [files["html"].as_uri()]


def test_click_zooms_and_reset_restores(session, files):
    page = session.open(files["html"])
    full = float(page.get_attribute("#fg-svg", "data-fw"))
    # A thread frame that is narrower than the graph and has cousins beside it.
    index = page.evaluate("""() => {
        const fw = Number(document.getElementById('fg-svg').getAttribute('data-fw'));
        const gs = [...document.querySelectorAll('#fg-svg g.k-thread')];
        return gs.findIndex(g => {
            const w = Number(g.querySelector('rect').getAttribute('width'));
            return w > 60 && w < fw / 2; });
    }""")
    assert index >= 0
    target = f"#fg-svg g.k-thread >> nth={index}"
    before = frame_state(page, target)
    others = page.locator("#fg-svg g.k-thread").count()
    assert others > 2 and before["width"] < full / 2

    page.locator(target).locator("rect").click()

    after = frame_state(page, target)
    assert after["shown"] and abs(after["width"] - (full - 0.5)) < 1.0
    assert page.get_attribute("#fg-svg", "data-zoomed") == before["name"]
    hidden = page.evaluate("""() => [...document.querySelectorAll('#fg-svg g.k-thread')]
        .filter(g => getComputedStyle(g).display === 'none').length""")
    assert hidden >= 1  # the thread's cousins left the picture
    category = frame_state(page, "#fg-svg g.k-category >> nth=0")
    assert category["parent"] or not category["shown"]
    assert page.locator("#fg-reset").is_visible()

    page.locator("#fg-reset").click()
    restored = frame_state(page, target)
    assert abs(restored["width"] - before["width"]) < 0.05
    assert not page.locator("#fg-reset").is_visible()

    page.locator(target).locator("rect").click()  # Escape resets too
    assert page.get_attribute("#fg-svg", "data-zoomed") == before["name"]
    page.keyboard.press("Escape")
    assert page.get_attribute("#fg-svg", "data-zoomed") == ""
    session.assert_no_network()


def test_search_highlights_and_reports_the_matched_share(session, files, report):
    page = session.open(files["html"])
    page.fill("#fg-term", "epoll_wait")
    page.click("#fg-go")
    highlighted = page.locator("#fg-svg g.fr.hl").count()
    assert highlighted > 0
    assert page.get_attribute("#fg-svg", "data-matches") == str(highlighted)
    matched = page.inner_text("#fg-matched")
    share = re.search(r"Matched: ([\d.]+)%", matched)
    assert share, matched
    assert float(share.group(1)) == pytest.approx(expected_share(report, "epoll_wait"), abs=0.06)
    # A highlighted frame is drawn in the highlight colour.
    fill = page.eval_on_selector("#fg-svg g.fr.hl rect", "r => getComputedStyle(r).fill")
    assert fill == "rgb(230, 0, 230)"

    # Not a valid regular expression: searched as plain text instead.
    page.fill("#fg-term", "operator()(")
    page.click("#fg-go")
    assert "Matched:" in page.inner_text("#fg-matched")

    page.click("#fg-clear")
    assert page.locator("#fg-svg g.fr.hl").count() == 0
    assert page.inner_text("#fg-matched").strip() == ""
    session.assert_no_network()


def test_category_row_zooms_the_flame_graph(session, files, report):
    page = session.open(files["html"])
    first = report.by_category[0].key
    page.click(f"tr.cat[data-cat='{first}']")
    assert page.get_attribute("#fg-svg", "data-zoomed") == first
    session.assert_no_network()


def test_standalone_svg_zooms_and_searches(session, files, report, tmp_path):
    page = session.open(files["svg"])
    page.set_viewport_size({"width": 1200, "height": int(page.get_attribute("svg", "height"))})
    full = float(page.get_attribute("svg", "data-fw"))
    target = "g.k-category >> nth=1"
    before = frame_state(page, target)
    assert before["width"] < full / 2
    page.locator(target).locator("rect").click()
    assert abs(frame_state(page, target)["width"] - (full - 0.5)) < 1.0
    assert page.locator("#fg-unzoom").is_visible()
    page.locator("#fg-unzoom").click()
    assert abs(frame_state(page, target)["width"] - before["width"]) < 0.05

    page.once("dialog", lambda dialog: dialog.accept("futex"))
    page.locator("#fg-search").click()
    assert page.locator("g.fr.hl").count() > 0
    share = re.search(r"Matched: ([\d.]+)%", page.text_content("#fg-matched") or "")
    assert share and float(share.group(1)) == pytest.approx(expected_share(report, "futex"),
                                                            abs=0.06)
    shot = tmp_path / "flamegraph.png"
    page.screenshot(path=str(shot))
    keep(shot, "flamegraph.png")
    session.assert_no_network()


def test_the_harness_sees_an_attempted_fetch(session, tmp_path):
    """Guards the guard: a page that does fetch is caught, so a clean run means something."""
    leaky = tmp_path / "leaky.html"
    leaky.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png">'
                     "<script>fetch('https://example.invalid/y').catch(() => 0)</script>"
                     "</body></html>", encoding="utf-8")
    page = session.open(leaky)
    page.wait_for_timeout(300)
    assert any(url.startswith("http://127.0.0.1:9/") for url in session.blocked)
    assert any(url.startswith("https://example.invalid/") for url in session.blocked)
    with pytest.raises(AssertionError):
        session.assert_no_network()
