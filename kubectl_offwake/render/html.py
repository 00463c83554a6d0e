"""``--format html``: one self-contained page to attach to an incident.

The page works offline and fetches nothing: CSS and JavaScript are inline, the flame graph is
the SVG of :mod:`.svg` embedded inline and driven by the same ``assets/flamegraph.js``, and a
Content-Security-Policy (``default-src 'none'``) stops the browser from loading anything
even if a frame name smuggled in a URL. Every piece of text from the report is neutralized
and escaped (:func:`.svg.esc`), and the page's script sets text only as text.

Sections, in the order an on-call engineer reads them: what was traced (where, how long),
totals, findings, warnings, where the time went (categories with share bars), the
interactive flame graph, top wakers, per-thread breakdown, threads still waiting at the end,
CPU throttling, and the full source description.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Dict, Sequence, TextIO, Tuple

from ..analysis.categories import CATEGORY_BY_ID, CAUSES
from ..analysis.report import INFO, SEVERITIES, Finding, Group, Party, Report, ThreadSummary
from ..analysis.vocabulary import (
    ENVOY_COUNTED,
    HELD_CPU,
    Fact,
    envoy_facts,
    is_marker,
    listening_sockets,
    source_facts,
    target_names,
    thread_name,
    total_facts,
    trace_value,
)
from ..units import fmt_count, fmt_seconds, fmt_share, fmt_timestamp, fmt_us
from . import RenderOptions, incomplete
from . import flamegraph as fg
from .svg import category_color, esc, flame_script, frame_color, subtitle, svg_element, svg_layout

TOP_WAKERS = 20  # rows in the top-wakers table; the rest are summed in one line
TOP_HOLDERS = 20  # rows in the run-queue holders table
STACK_PREVIEW = 4  # frames shown of a pending thread's stack before "show all"

CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "img-src data:; base-uri 'none'; form-action 'none'")




# --------------------------------------------------------------------------- helpers

def _asset(name: str) -> str:
    return (resources.files(__package__) / "assets" / name).read_text("utf-8")


def _bar(segments: Sequence[Tuple[float, str, str]]) -> str:
    """A horizontal bar of (share, colour, tooltip) segments."""
    spans = "".join(
        f'<span style="width:{max(0.0, min(share, 1.0)) * 100:.2f}%;background:{color}" '
        f'title="{esc(tip)}"></span>'
        for share, color, tip in segments if share > 0
    )
    return f'<div class="bar">{spans}</div>'


def _swatch(color: str) -> str:
    return f'<span class="sw" style="background:{color}"></span>'


def _value(value: object) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


# --------------------------------------------------------------------------- sections

#: Source keys the header explains; the rest are listed as they come.
_SOURCE_LABELS: Dict[str, str] = {
    "target": "Target",
    "target_by": "Target chosen by",
    "node": "Node",
    "kernel": "Kernel",
    "started": "Started",
    "duration_s": "Requested duration",
    "elapsed_s": "Traced for",
    "end_reason": "Stopped because",
    "format": "Input format",
    "input": "Input",
    "tool_version": "Tool version",
    "collector": "Collector",
    "bcc_version": "BCC version",
    "interval_s": "Snapshot interval",
    "headers": "Kernel headers",
    "kind": "Recording kind",
    "schema": "Wire schema",
    "python": "Collector Python",
}


def _source_value(key: str, value: object) -> str:
    if key == "started":
        return fmt_timestamp(value) or _value(value)
    if key.endswith("_s") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return fmt_seconds(value)
    if key == "headers" and isinstance(value, dict):
        return " · ".join(str(v) for v in value.values())
    return _value(value)


def _header(report: Report, options: RenderOptions) -> str:
    """The title, then what was traced (in bold) and the run's facts, as the table says them."""
    targets = target_names(report)
    line = [", ".join(f"<b>{esc(t)}</b>" for t in targets)] if targets else []
    line += [esc(fact) for fact in source_facts(report.source)]
    what = " · ".join(line) or "Off-CPU wakeups"
    return (f"<header><h1>{esc(options.title)}: why the threads were off the CPU</h1>"
            f'<p class="what">{what}</p></header>')


def _cards(report: Report) -> str:
    cards = total_facts(report.totals)
    lost = report.totals.lost
    if lost:
        detail = ", ".join(f"{k} {v:,}" for k, v in lost.items() if v)
        cards.append(Fact(fmt_count(sum(v for v in lost.values() if isinstance(v, int))),
                          "lost" + (f" ({detail})" if detail else "")))
    body = "".join(f'<div class="card" title="{esc(card.hint)}"><div class="v">{esc(card.value)}'
                   f'</div><div class="l">{esc(card.label)}</div></div>' for card in cards)
    return f'<section id="totals"><h2>Totals</h2><div class="cards">{body}</div></section>'


def _finding(finding: Finding) -> str:
    sev = finding.severity if finding.severity in SEVERITIES else INFO  # a class name
    evidence = ""
    if finding.evidence:
        items = "; ".join(f"{esc(k)}: {esc(_value(v))}" for k, v in finding.evidence.items())
        evidence = f'<p class="evidence">{items}</p>'
    return (f'<div class="finding {sev}" data-id="{esc(finding.id)}">'
            f'<h3><span class="sev {sev}">{esc(finding.severity)}</span>{esc(finding.title)}</h3>'
            f"<p>{esc(finding.text)}</p>{evidence}</div>")


def _incomplete(report: Report) -> str:
    items = "".join(f"<li>{esc(line)}</li>" for line in incomplete.lines(report))
    return (f'<section id="incomplete"><h2>Incomplete trace</h2><ul class="warnings">{items}'
            "</ul></section>") if items else ""


def _findings(report: Report) -> str:
    why = incomplete.why_no_findings(report)
    if not report.findings and why:
        body = f'<p class="muted">{esc(why)}</p>'
    elif not report.findings:
        body = '<p class="muted">No findings: nothing in this trace matched a known problem.</p>'
    else:
        body = "".join(_finding(f) for f in report.findings)
    return f'<section id="findings"><h2>Findings</h2>{body}</section>'


def _warnings(report: Report) -> str:
    if not report.warnings:
        return ""
    items = "".join(f"<li>{esc(w)}</li>" for w in report.warnings)
    return f'<section id="warnings"><h2>Warnings</h2><ul class="warnings">{items}</ul></section>'


def _num_cells(group: Group) -> str:
    return (f'<td class="n">{fmt_count(group.count)}</td>'
            f'<td class="n">{esc(fmt_us(group.total_us))}</td>'
            f'<td class="n">{esc(fmt_us(group.max_us) if group.max_us is not None else "-")}</td>'
            f'<td class="n">{esc(fmt_share(group.share))}</td>')


def _categories(report: Report) -> str:
    rows = []
    for group in report.by_category:
        known = CATEGORY_BY_ID.get(group.key)
        color = category_color(group.key)
        meaning = esc(known.meaning) if known else ""
        rows.append(
            f'<tr class="cat" data-cat="{esc(group.key)}" title="click: zoom the flame graph">'
            f"<td>{_swatch(color)}<b>{esc(group.label)}</b> "
            f'<span class="mono muted">{esc(group.key)}</span></td>'
            f'<td class="meaning">{meaning}</td>{_num_cells(group)}'
            f'<td class="barcell">{_bar([(group.share, color, fmt_share(group.share))])}</td></tr>'
        )
    if not rows:
        rows.append('<tr><td colspan="7" class="muted">no wakeups were recorded</td></tr>')
    return ('<section id="categories"><h2>Where the time went'
            '<span class="note">by wakeup category; click a row to zoom the flame graph</span></h2>'
            "<table><thead><tr><th>Category</th><th>Meaning</th><th class=\"n\">Wakeups</th>"
            '<th class="n">Off-CPU</th><th class="n">Longest</th><th class="n">Share</th><th></th>'
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></section>")


_LEGEND = (
    (fg.CATEGORY, "category"), (fg.THREAD, "sleeping thread"),
    (fg.TARGET_USER, "its user stack"), (fg.TARGET_KERNEL, "its kernel stack"),
    (fg.SEPARATOR, "--"), (fg.WAKER_KERNEL, "waker kernel stack"),
    (fg.WAKER_USER, "waker user stack"), (fg.WAKER, "who woke it"),
)


def _flame(report: Report, options: RenderOptions) -> str:
    items = " ".join(
        f"{_swatch(category_color('timer') if kind == fg.CATEGORY else frame_color('x', kind))}"
        f"{esc(label)}" for kind, label in _LEGEND
    )
    legend = f"Bottom up: {items}. Width is off-CPU time; stacks are cut where frames get too thin."
    layout = svg_layout(report)
    return (
        '<section id="flame"><h2>Flame graph<span class="note">click a frame to zoom; '
        "search takes a regular expression or plain text</span></h2>"
        f'<p class="legend">{esc(subtitle(report, layout))}. {legend}</p>'
        '<form class="fgbar" id="fg-form" autocomplete="off">'
        '<input id="fg-term" type="search" placeholder="search frames, e.g. eventfd|futex">'
        '<button type="submit" id="fg-go">Search</button>'
        '<button type="button" id="fg-clear">Clear</button>'
        '<button type="button" id="fg-reset" style="display:none">Reset zoom</button>'
        '<span id="fg-matched"></span></form>'
        f'<div class="fgwrap">{svg_element(report, options, standalone=False, layout=layout)}</div>'
        '<div id="fg-details"> </div></section>'
    )


def _wakers(report: Report) -> str:
    rows = []
    for group in report.by_waker[:TOP_WAKERS]:
        rows.append(
            f"<tr><td>{esc(group.label)}</td>{_num_cells(group)}"
            f'<td class="barcell">{_bar([(group.share, "#6b7fd7", fmt_share(group.share))])}'
            "</td></tr>"
        )
    rest = report.by_waker[TOP_WAKERS:]
    if rest:
        total = sum(g.total_us for g in rest)
        share = sum(g.share for g in rest)
        rows.append(f'<tr><td class="muted">{len(rest)} more wakers</td><td></td>'
                    f'<td class="n">{esc(fmt_us(total))}</td><td></td>'
                    f'<td class="n">{esc(fmt_share(share))}</td><td></td></tr>')
    if not rows:
        rows.append('<tr><td colspan="6" class="muted">no wakers were recorded</td></tr>')
    causes = "; ".join(f"<b>{esc(k)}</b>: {esc(v)}" for k, v in CAUSES.items())
    return ('<section id="wakers"><h2>Top wakers<span class="note">who woke the threads, by pod '
            "and container</span></h2>"
            '<table><thead><tr><th>Waker</th><th class="n">Wakeups</th><th class="n">Off-CPU</th>'
            '<th class="n">Longest</th><th class="n">Share</th><th></th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
            f'<p class="legend">Causes: {causes}.</p></section>')


def _envoy(report: Report) -> str:
    """Envoy's own counts, each beside the wakeups that go with it (one block per Envoy)."""
    if not report.envoy:
        return ""
    blocks = []
    for side in report.envoy:
        facts = (f'<p class="legend">{esc(envoy_facts(side.counts))}'
                 f"; {esc(listening_sockets(side.counts))}</p>")
        rows = "".join(
            f"<tr><td>{esc(row.what)}</td><td class=\"n\">{fmt_count(row.envoy)}</td>"
            f'<td class="mono">{esc(row.counters)}</td><td>{esc(row.trace)}</td>'
            f'<td class="n">{esc(trace_value(row))}</td></tr>' for row in side.rows)
        table = ("<table><thead><tr><th>Envoy counted</th><th class=\"n\"></th>"
                 "<th>Counters</th><th>The trace saw</th><th class=\"n\"></th></tr></thead>"
                 f"<tbody>{rows}</tbody></table>") if rows else ""
        blocks.append(facts + table)
    return (f'<section id="envoy"><h2>{esc(ENVOY_COUNTED)}<span class="note">Envoy\'s admin '
            "counters, read before and after the trace</span></h2>"
            f"{''.join(blocks)}</section>")


def _holders(report: Report) -> str:
    """Who had the CPU while the threads waited to run."""
    if not report.holders:
        return ""
    several = len({h.process for h in report.holders}) > 1
    rows = []
    for h in report.holders[:TOP_HOLDERS]:
        process = f' <span class="muted">({esc(h.process)})</span>' if several else ""
        rows.append(f"<tr><td>{esc(h.label)}{process}</td>"
                    f'<td class="n">{fmt_count(h.count)}</td>'
                    f'<td class="n">{esc(fmt_us(h.wait_us))}</td>'
                    f'<td class="n">{esc(fmt_us(h.max_us))}</td>'
                    f'<td class="n">{esc(fmt_share(h.share))}</td></tr>')
    return (f'<section id="holders"><h2>{esc(HELD_CPU)}<span class="note">each wait counted '
            "for the task that ran just before the waiting thread got the CPU</span></h2>"
            '<table><thead><tr><th>Held by</th><th class="n">Waits</th><th class="n">Waited</th>'
            '<th class="n">Longest</th><th class="n">Share</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></section>")


def _thread(party: Party) -> str:
    """A target thread: its name first (the pod is the same for most rows), then the rest."""
    extra = [esc(party.role)] if party.role else []
    if party.name and party.name != party.comm:
        extra.append(esc(party.name))
    return f'<b>{esc(thread_name(party))}</b> <span class="muted">{" · ".join(extra)}</span>'


def _thread_row(thread: ThreadSummary, longest_us: int) -> str:
    segments = [
        (g.total_us / longest_us if longest_us else 0.0, category_color(g.key),
         f"{g.label}: {fmt_us(g.total_us)}")
        for g in thread.by_category
    ]
    split = "-"
    if thread.blocked_us is not None or thread.runq_us is not None:
        split = f"{fmt_us(thread.blocked_us)} / {fmt_us(thread.runq_us)}"
    oncpu = "-"
    if thread.oncpu is not None:
        oncpu = (f"{fmt_count(thread.oncpu.count)} runs, {fmt_us(thread.oncpu.total_us)}, "
                 f"longest {fmt_us(thread.oncpu.max_us)}")
    top = ", ".join(f"{g.label} {fmt_share(g.total_us / thread.total_us)}"
                    for g in thread.by_category[:3] if thread.total_us)
    return (
        f"<tr><td>{_thread(thread.target)}</td>"
        f'<td class="n">{esc(fmt_us(thread.total_us))}</td>'
        f'<td class="n">{fmt_count(thread.count)}</td>'
        f'<td class="n">{esc(split)}</td>'
        f'<td class="n">{esc(oncpu)}</td>'
        f'<td class="barcell">{_bar(segments)}<div class="muted" style="font-size:12px">'
        f"{esc(top)}</div></td></tr>"
    )


def _threads(report: Report) -> str:
    if not report.by_thread:
        return ""
    longest = max(t.total_us for t in report.by_thread)
    rows = "".join(_thread_row(t, longest) for t in report.by_thread)
    return ('<section id="threads"><h2>Per thread<span class="note">bar: the thread\'s off-CPU '
            "time by category; the full bar is the thread with the most</span></h2>"
            '<table><thead><tr><th>Thread</th><th class="n">Off-CPU</th><th class="n">Wakeups</th>'
            '<th class="n">Blocked / run queue</th><th class="n">On-CPU</th><th>By category</th>'
            f"</tr></thead><tbody>{rows}</tbody></table></section>")


def _stack_cell(frames: Sequence[str]) -> str:
    if not frames:
        return '<span class="muted">no stack</span>'
    head = "<br>".join(map(_frame_code, frames[:STACK_PREVIEW]))
    if len(frames) <= STACK_PREVIEW:
        return head
    rest = "<br>".join(map(_frame_code, frames[STACK_PREVIEW:]))
    more = len(frames) - STACK_PREVIEW
    return f"{head}<details><summary>{more} more frames</summary>{rest}</details>"


def _frame_code(frame: str) -> str:
    """A frame of a stack; a marker (``[truncated: frame-pointer loop]``) set apart as in
    the flame graph, since it says where the stack stopped rather than naming code."""
    cls = ' class="marker"' if is_marker(frame) else ""
    return f"<code{cls}>{esc(frame)}</code>"


def _pending(report: Report) -> str:
    if not report.pending:
        return ""
    rows = []
    for item in report.pending:
        state = "runnable (preempted)" if item.preempted else "blocked"
        rows.append(f"<tr><td>{esc(thread_name(item.task))}</td><td>{state}</td>"
                    f'<td class="n">{esc(fmt_us(item.waiting_us))}</td>'
                    f"<td>{_stack_cell(item.stack.frames)}</td></tr>")
    return ('<section id="pending"><h2>Still off the CPU when tracing stopped'
            '<span class="note">never woken during the trace, so not in the totals above'
            '</span></h2><table><thead><tr><th>Thread</th><th>State</th>'
            '<th class="n">Waiting so far</th><th>Stack (leaf first)</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></section>")


def _throttling(report: Report) -> str:
    if not report.throttling:
        return ""
    rows = []
    for item in report.throttling:
        periods = item.delta("nr_periods")
        throttled = item.delta("nr_throttled")
        usec = item.delta("throttled_usec")
        rows.append(
            f"<tr><td>{esc(item.pid if item.pid is not None else '-')}</td>"
            f'<td class="mono">{esc(item.cgroup or "-")}</td>'
            f'<td class="n">{fmt_count(periods)}</td><td class="n">{fmt_count(throttled)}</td>'
            f'<td class="n">{esc(fmt_us(usec))}</td></tr>'
        )
    return ('<section id="throttling"><h2>CPU throttling<span class="note">change of the target '
            "cgroup's cpu.stat during the trace</span></h2>"
            '<table><thead><tr><th>PID</th><th>cgroup</th><th class="n">Periods</th>'
            '<th class="n">Throttled periods</th><th class="n">Throttled time</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></section>")


def _source(report: Report) -> str:
    if not report.source:
        return ""
    keys = [k for k in _SOURCE_LABELS if k in report.source]
    keys += [k for k in report.source if k not in _SOURCE_LABELS]
    facts = "".join(f"<dt>{esc(_SOURCE_LABELS.get(k, k))}</dt>"
                    f"<dd>{esc(_source_value(k, report.source[k]))}</dd>" for k in keys)
    return f'<section id="source"><h2>Source</h2><dl class="facts">{facts}</dl></section>'


def render(report: Report, out: TextIO, options: RenderOptions) -> None:
    targets = target_names(report)
    title = options.title + (f" — {', '.join(targets[:3])}" if targets else "")
    script = flame_script() + _asset("report.js")
    if "</script" in script.lower():  # never true for our own asset; keeps the page parseable
        raise ValueError("flamegraph.js must not contain '</script'")
    out.write(
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_asset('report.css')}</style></head>\n<body>\n"
    )
    out.write(_header(report, options))
    out.write("\n<main>\n")
    for section in (_incomplete(report), _cards(report), _findings(report), _warnings(report),
                    _categories(report), _flame(report, options), _wakers(report),
                    _envoy(report), _holders(report), _threads(report),
                    _pending(report), _throttling(report), _source(report)):
        if section:
            out.write(section)
            out.write("\n")
    out.write("</main>\n")
    version = report.source.get("tool_version")
    out.write(f"<footer>Generated by kubectl offwake{' ' + esc(version) if version else ''}. "
              "This page is self-contained and works offline.</footer>\n")
    out.write(f"<script>\n{script}</script>\n</body></html>\n")
