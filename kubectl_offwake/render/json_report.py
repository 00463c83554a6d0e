"""``--format json``: the report JSON of docs/design.md §3.3 (schema ``offwake.report/1``).

Other people's scripts and runbooks read this, so the shape is explicit here (no
``dataclasses.asdict``: a field added to the model must not silently change the file).
Keys come out in a fixed order, free-form maps (source, evidence, counters) sorted, so the
same report always gives the same bytes. The fields beyond §3.3 are described in
docs/report-json.md.

Names are kept exact (this is data), but the characters a terminal would act on are written
as JSON escapes (:func:`~kubectl_offwake.untrusted.json_escaped`), so ``-o json`` on a
terminal is as safe as the table. An interrupt wake's ``waker`` is the interrupt, named as
in every view; the task it ran on is the ``bystander``.
"""

from __future__ import annotations

import json
import operator
from json.encoder import encode_basestring
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

from .. import __version__
from ..analysis.categories import CATEGORY_BY_ID
from ..analysis.classify import CAUSE_INTERRUPT
from ..analysis.envoy_counts import Beside
from ..analysis.model import EnvoyStats, OnCpu, Pending, Stack, Task, Throttling
from ..analysis.report import Finding, Group, Party, Report, ThreadSummary, Wakeup
from ..analysis.runqueue import Holder
from ..analysis.vocabulary import bystander, interrupt_label, woken_by
from ..untrusted import json_escaped
from . import RenderOptions, incomplete

SCHEMA = "offwake.report/1"


def render(report: Report, out: TextIO, options: RenderOptions) -> None:
    """Indent 2, but lists of plain values (stacks, histograms) on one line.

    A report of 100k wake paths carries millions of frame names; one line per frame
    would double the file, and ``json.dumps(indent=...)`` runs the pure-Python encoder.
    Here every distinct (interned) stack is encoded once by the C encoder and reused.
    """
    cache: Dict[int, _Raw] = {}

    def frames(stack: Optional[Stack]) -> Any:
        if stack is None:
            return _EMPTY
        found = cache.get(id(stack))
        if found is None:
            found = _Raw("[" + ", ".join(map(_encode_str, stack.frames)) + "]")
            cache[id(stack)] = found
        return found

    party_cache: Dict[Tuple[int, bool], _Raw] = {}

    def party(value: Optional[Party], is_target: bool) -> Any:
        if value is None:
            return None
        found = party_cache.get((id(value), is_target))
        if found is None:
            pieces = _Parts(None)
            _pretty(_target(value) if is_target else _waker(value), _WAKEUP_VALUE_INDENT,
                    pieces)
            found = _Raw("".join(pieces))
            party_cache[(id(value), is_target)] = found
        return found

    interrupts: Dict[str, _Raw] = {}

    def interrupt(category: str) -> _Raw:
        found = interrupts.get(category)
        if found is None:
            pieces = _Parts(None)
            _pretty(_interrupt_waker(category), _WAKEUP_VALUE_INDENT, pieces)
            found = interrupts[category] = _Raw("".join(pieces))
        return found

    doc = report_dict(report, frames, lazy=True, party=party, interrupt=interrupt)
    parts = _Parts(out)
    _pretty(doc, "", parts)
    parts.append("\n")
    parts.flush()


class _Raw:
    """Already-encoded JSON, written as is. (Not a ``str`` subclass: formatting one of
    those copies it, and the encoded stacks of 100k wakeups are hundreds of megabytes.)"""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _Lazy:
    """A list whose items are built one at a time while writing (the 100k wakeups)."""

    def __init__(self, items: Sequence[Any], build: Callable[[Any], Any]) -> None:
        self.items = items
        self.build = build

    def __iter__(self) -> Iterator[Any]:
        return map(self.build, self.items)

    def __len__(self) -> int:
        return len(self.items)


class _Parts(List[str]):
    """Pieces of output, written out in chunks so a huge report is never held twice."""

    CHUNK = 20_000

    def __init__(self, out: Optional[TextIO]) -> None:
        super().__init__()
        self.out = out

    def maybe_flush(self) -> None:
        if len(self) >= self.CHUNK and self.out is not None:
            self.flush()

    def flush(self) -> None:
        if self.out is not None:
            self.out.write(json_escaped("".join(self)))
            self.clear()


_EMPTY = _Raw("[]")
_SCALARS = (str, int, float, bool, type(None))
_ENCODER = json.JSONEncoder(ensure_ascii=False)
_encode_str = encode_basestring  # the C encoder for strings (no ASCII escaping)
#: (key, indent, first) -> the text before the key's value; keys repeat a million times.
_KEYS: Dict[Tuple[str, str, bool], str] = {}
#: Where a party object sits inside ``wakeups[]``: the indent its braces are written at.
_WAKEUP_VALUE_INDENT = "      "


def _scalar(value: Any) -> str:
    """One JSON scalar, by the cheapest exact route (this runs millions of times)."""
    if isinstance(value, str):
        return _encode_str(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    return _ENCODER.encode(value)


def _pretty(value: Any, indent: str, parts: _Parts) -> None:
    """Append ``value`` as JSON: containers indented by two, flat lists on one line."""
    if isinstance(value, _Raw):
        parts.append(value.text)
    elif isinstance(value, dict):
        if not value:
            parts.append("{}")
            return
        inner = indent + "  "
        first = True
        for key, item in value.items():
            prefix = _KEYS.get((key, inner, first))
            if prefix is None:
                prefix = ("{\n" if first else ",\n") + inner + _encode_str(key) + ": "
                _KEYS[(key, inner, first)] = prefix
            parts.append(prefix)
            first = False
            if isinstance(item, _Raw):
                parts.append(item.text)
            elif isinstance(item, (dict, list, _Lazy)):
                _pretty(item, inner, parts)
            else:
                parts.append(_scalar(item))
        parts.append("\n" + indent + "}")
    elif isinstance(value, _Lazy):
        if not len(value):
            parts.append("[]")
            return
        inner = indent + "  "
        parts.append("[\n" + inner)
        for i, item in enumerate(value):
            if i:
                parts.append(",\n" + inner)
            if isinstance(item, _Flat):
                if not _flat(WAKEUP_KEYS, item, inner, parts):
                    _pretty(dict(zip(WAKEUP_KEYS, item)), inner, parts)
            else:
                _pretty(item, inner, parts)
            parts.maybe_flush()
        parts.append("\n" + indent + "]")
    elif isinstance(value, list):
        if all(isinstance(item, _SCALARS) for item in value):
            parts.append("[" + ", ".join(_scalar(item) for item in value) + "]")
            return
        inner = indent + "  "
        parts.append("[\n" + inner)
        for i, item in enumerate(value):
            if i:
                parts.append(",\n" + inner)
            _pretty(item, inner, parts)
        parts.append("\n" + indent + "]")
    else:
        parts.append(_scalar(value))


#: Exact type → JSON text, for the values a flat object holds (``_Raw`` is already JSON).
_BY_TYPE: Dict[type, Callable[[Any], str]] = {
    str: _encode_str,
    _Raw: operator.attrgetter("text"),
    int: int.__repr__,
    bool: lambda value: "true" if value else "false",
    type(None): lambda value: "null",
    float: _ENCODER.encode,
}
class _Flat(tuple):
    """The values of a ``wakeups[]`` entry (keys :data:`WAKEUP_KEYS`), not yet written."""


#: (keys, indent) -> the text before each value of a flat object, and after the last one.
_PREFIXES: Dict[Tuple[Tuple[str, ...], str], Tuple[List[str], str]] = {}


def _flat(keys: Tuple[str, ...], values: Sequence[Any], indent: str,
          parts: List[str]) -> bool:
    """Append what :func:`_pretty` writes for ``dict(zip(keys, values))`` when every value
    is a scalar or raw JSON (one text per value, no per-object string); False, appending
    nothing, when one is anything else (then the general path runs)."""
    try:
        texts = [_BY_TYPE[item.__class__](item) for item in values]
    except KeyError:
        return False
    if not texts:
        parts.append("{}")
        return True
    found = _PREFIXES.get((keys, indent))
    if found is None:
        inner = indent + "  "
        found = ([("{\n" if i == 0 else ",\n") + inner + _encode_str(key) + ": "
                  for i, key in enumerate(keys)], "\n" + indent + "}")
        _PREFIXES[(keys, indent)] = found
    prefixes, end = found
    pieces = prefixes * 2
    pieces[::2] = prefixes
    pieces[1::2] = texts
    parts.extend(pieces)
    parts.append(end)
    return True


def _frame_list(stack: Optional[Stack]) -> Any:
    return list(stack.frames) if stack is not None else []


def _party_dict(party: Optional[Party], is_target: bool) -> Optional[Dict[str, Any]]:
    if party is None:
        return None
    return _target(party) if is_target else _waker(party)


_PartyFn = Callable[[Optional[Party], bool], Any]
_InterruptFn = Callable[[str], Any]


def _interrupt_waker(category: str) -> Dict[str, Any]:
    """The ``waker`` of an interrupt wake: the interrupt, which is no task (§3.3's keys,
    ``null`` where a task would have values)."""
    return {"comm": None, "pid": None, "tid": None, "pod": None, "container": None,
            "name": interrupt_label(category), "role": None}


def report_dict(report: Report, frames: Callable[[Optional[Stack]], Any] = _frame_list,
                lazy: bool = False, party: _PartyFn = _party_dict,
                interrupt: _InterruptFn = _interrupt_waker) -> Dict[str, Any]:
    """The whole document as plain JSON values, keys in their documented order.

    ``frames`` turns a stack into its JSON list, ``party`` a party and ``interrupt`` an
    interrupt into theirs (the renderer passes memoising ones); ``lazy`` leaves
    ``wakeups`` as a list built item by item while writing.
    """
    parties = _parties_by_thread(report)
    return {
        "schema": SCHEMA,
        "generator": {"name": "kubectl-offwake", "version": __version__},
        "source": _plain({**report.source, **incomplete.source_fields(report)}),
        "totals": {
            "off_cpu_us": report.totals.off_cpu_us,
            "wakeups": report.totals.wakeups,
            "edges": report.totals.edges,
            "blocked_us": report.totals.blocked_us,
            "runq_us": report.totals.runq_us,
            "threads": report.totals.threads,
            "lost": _sorted_map(report.totals.lost),
        },
        "wakeups": (_Lazy(report.wakeups,
                          lambda w: _Flat(wakeup_values(w, frames, party, interrupt)))
                    if lazy else [wakeup_dict(w, frames, party, interrupt)
                                  for w in report.wakeups]),
        "findings": [finding_dict(f) for f in report.findings],
        "by_category": [_category_group(g) for g in report.by_category],
        "by_waker": [_waker_group(g) for g in report.by_waker],
        "by_thread": [_thread(t) for t in report.by_thread],
        "pending": [_pending(p, parties, frames) for p in report.pending],
        "throttling": [_throttling(t) for t in report.throttling],
        "envoy_stats": [_envoy_stats(e, report) for e in report.envoy_stats],
        "queued": [_holder(h) for h in report.holders],
        "warnings": list(report.warnings),
    }


#: The keys of a ``wakeups[]`` entry, in order: §3.3's fields first, then the extras.
WAKEUP_KEYS = (
    "category", "detail", "cause", "waker", "target", "count", "total_us", "max_us",
    "blocked_us", "runq_us", "preempted_by", "waker_stack", "target_stack", "rule",
    "preempted", "waker_stack_kernel_depth", "target_stack_kernel_depth",
    "waker_stack_missing", "target_stack_missing", "woken_by", "bystander",
)


def wakeup_dict(wakeup: Wakeup, frames: Callable[[Optional[Stack]], Any] = _frame_list,
                party: _PartyFn = _party_dict,
                interrupt: _InterruptFn = _interrupt_waker) -> Dict[str, Any]:
    """One ``wakeups[]`` entry."""
    return dict(zip(WAKEUP_KEYS, wakeup_values(wakeup, frames, party, interrupt)))


def wakeup_values(wakeup: Wakeup, frames: Callable[[Optional[Stack]], Any] = _frame_list,
                  party: _PartyFn = _party_dict,
                  interrupt: _InterruptFn = _interrupt_waker) -> Tuple[Any, ...]:
    """The values of one ``wakeups[]`` entry, in the order of :data:`WAKEUP_KEYS`."""
    edge = wakeup.edge
    waker_stack = edge.waker_stack
    target_stack = edge.target_stack
    if edge.preempted:
        waker = None
    elif wakeup.cause == CAUSE_INTERRUPT:
        waker = interrupt(wakeup.category)
    else:
        waker = party(wakeup.waker, False)
    return (
        wakeup.category,
        wakeup.detail,
        wakeup.cause,
        waker,
        party(wakeup.target, True),
        edge.count,
        edge.total_us,
        edge.max_us,
        edge.blocked_us,
        edge.runq_us,
        party(wakeup.preempted_by, False),
        frames(waker_stack),
        frames(target_stack),
        wakeup.rule,
        edge.preempted,
        waker_stack.kernel_depth if waker_stack is not None else None,
        target_stack.kernel_depth,
        waker_stack.missing if waker_stack is not None else None,
        target_stack.missing,
        woken_by(wakeup),
        party(bystander(wakeup), False),
    )


def finding_dict(finding: Finding) -> Dict[str, Any]:
    return {
        "id": finding.id,
        "severity": finding.severity,
        "title": finding.title,
        "text": finding.text,
        "evidence": _plain(finding.evidence),
    }


def _waker(party: Optional[Party]) -> Optional[Dict[str, Any]]:
    if party is None:
        return None
    return {
        "comm": party.comm, "pid": party.pid, "tid": party.tid,
        "pod": party.pod, "container": party.container,
        "name": party.name, "role": party.role,
    }


def _target(party: Party) -> Dict[str, Any]:
    return {
        "comm": party.comm, "pid": party.pid, "tid": party.tid, "role": party.role,
        "name": party.name, "pod": party.pod, "container": party.container,
    }


def _group_numbers(group: Group) -> Dict[str, Any]:
    return {
        "edges": group.edges,
        "count": group.count,
        "total_us": group.total_us,
        "blocked_us": group.blocked_us,
        "runq_us": group.runq_us,
        "max_us": group.max_us,
        "share": round(group.share, 6),
    }


def _category_group(group: Group) -> Dict[str, Any]:
    category = CATEGORY_BY_ID.get(group.key)
    return {
        "category": group.key,
        "title": category.title if category else group.label,
        **_group_numbers(group),
    }


def _waker_group(group: Group) -> Dict[str, Any]:
    return {"key": group.key, "name": group.label, **_group_numbers(group)}


def _thread(thread: ThreadSummary) -> Dict[str, Any]:
    return {
        "target": _target(thread.target),
        "total_us": thread.total_us,
        "count": thread.count,
        "blocked_us": thread.blocked_us,
        "runq_us": thread.runq_us,
        "by_category": [_category_group(g) for g in thread.by_category],
        "oncpu": _oncpu(thread.oncpu),
    }


def _oncpu(oncpu: Optional[OnCpu]) -> Optional[Dict[str, Any]]:
    if oncpu is None:
        return None
    return {
        "count": oncpu.count,
        "total_us": oncpu.total_us,
        "max_us": oncpu.max_us,
        "hist_log2_us": list(oncpu.hist_log2_us),
        "max_busy_us": oncpu.max_busy_us,
    }


def _pending(pending: Pending, parties: Dict[Tuple[Optional[int], Optional[int]], Party],
             frames: Callable[[Optional[Stack]], Any]) -> Dict[str, Any]:
    party = parties.get((pending.task.pid, pending.task.tid))
    return {
        "target": _target(party) if party else _task(pending.task),
        "waiting_us": pending.waiting_us,
        "preempted": pending.preempted,
        "stack": frames(pending.stack),
        "stack_kernel_depth": pending.stack.kernel_depth,
    }


def _task(task: Task) -> Dict[str, Any]:
    return {"comm": task.comm, "pid": task.pid, "tid": task.tid, "role": None,
            "name": task.comm, "pod": None, "container": None}


def _throttling(throttling: Throttling) -> Dict[str, Any]:
    counters = sorted(set(throttling.start) & set(throttling.end))
    return {
        "pid": throttling.pid,
        "cgroup": throttling.cgroup,
        "start": _sorted_map(throttling.start),
        "end": _sorted_map(throttling.end),
        "delta": {name: throttling.delta(name) for name in counters},
    }


def _envoy_stats(stats: EnvoyStats, report: Report) -> Dict[str, Any]:
    rows = next((side.rows for side in report.envoy if side.counts.pid == stats.pid), ())
    return {"pid": stats.pid, "admin": stats.admin, "window_s": stats.window_s,
            "delta": _sorted_map(stats.delta), "listeners": _sorted_map(stats.listeners),
            "beside_wakeups": [_beside(row) for row in rows]}


def _beside(row: Beside) -> Dict[str, Any]:
    return {"what": row.what, "envoy": row.envoy, "counters": row.counters,
            "trace": row.trace, "trace_value": row.trace_value, "trace_unit": row.trace_unit}


def _holder(holder: Holder) -> Dict[str, Any]:
    return {"pid": holder.pid, "process": holder.process, "holder": holder.label,
            "holder_party": _waker(holder.holder),
            "own": holder.own, "count": holder.count, "wait_us": holder.wait_us,
            "max_us": holder.max_us, "workers_wait_us": holder.workers_wait_us}


def _parties_by_thread(report: Report) -> Dict[Tuple[Optional[int], Optional[int]], Party]:
    """Target parties by (pid, tid), so pending threads get the same names and roles."""
    found: Dict[Tuple[Optional[int], Optional[int]], Party] = {}
    for thread in report.by_thread:
        found.setdefault((thread.target.pid, thread.target.tid), thread.target)
    for wakeup in report.wakeups:
        found.setdefault((wakeup.target.pid, wakeup.target.tid), wakeup.target)
    return found


def _sorted_map(values: Dict[str, Any]) -> Dict[str, Any]:
    return {key: _plain(values[key]) for key in sorted(values, key=str)}


def _plain(value: Any) -> Any:
    """A JSON-safe copy with every mapping's keys sorted (free-form data has no order)."""
    if isinstance(value, dict):
        return {str(key): _plain(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(item) for item in value), key=repr)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)

