"""Applies the rule table of :mod:`.rules` to one edge: category, detail, cause, rule id.

The cause (docs/design.md §3.4) comes from the waker's kernel stack, read from the leaf: the
first interrupt entry (``asm_sysvec_*``, ``common_interrupt``, ``irq_exit_rcu``,
``hrtimer_interrupt``, ...) makes it ``interrupt``, the ksoftirqd loop (``run_ksoftirqd``)
makes it ``ksoftirqd``. Without either, a waker named ``ksoftirqd/N`` is ``ksoftirqd`` and
the idle task ``swapper/N`` is ``interrupt`` (it wakes nobody from code of its own);
otherwise it is ``waker`` -- including softirq work a sender runs on its way out of a
loopback or veth transmit (``__local_bh_enable_ip`` -> ``do_softirq``), which is the
sender's own doing. Timer expiries are always ``interrupt`` (unless run by ksoftirqd):
whoever ran the expired timer was a bystander. Preemptions have cause ``none``.

A recording repeats the same few thousand stacks across many edges, so each distinct
(waker stack, target stack, preempted, kind of waker) is classified once per
:class:`Classifier`, and each distinct frame string is looked up in the table once per
process. Stacks are keyed by identity: they are interned and the edges hold them for as
long as the classifier lives (one :func:`~.analyze.analyze` call).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from .frames import normalize
from .model import Stack
from .report import CAUSE_INTERRUPT, CAUSE_KSOFTIRQD, CAUSE_NONE, CAUSE_WAKER, Cause
from .rules import (
    IRQ_FRAMES,
    IRQ_PREFIXES,
    KSOFTIRQD_FRAMES,
    NO_WAKER_FALLBACK,
    OTHER_DETAIL_FRAMES,
    OTHER_FALLBACK,
    PREEMPTED_FALLBACK,
    RULES,
    SOFTIRQ_FRAMES,
    TARGET,
    TARGET_DETAIL,
    USER,
    WAKE_PLUMBING,
    WAKER,
    Rule,
)

_KSOFTIRQD_COMM = re.compile(r"^ksoftirqd/\d+$")
_IDLE_COMM = re.compile(r"^swapper(/\d+)?$")

# Context markers of a kernel frame.
_IRQ = 1
_SOFTIRQ = 2
_KSOFTIRQD = 3


class Classification(NamedTuple):
    """What one edge is: a category, who is responsible, the rule that decided, a detail.

    (A NamedTuple: one is made per distinct waker stack, tens of thousands per report.)
    """

    category: str
    cause: Cause
    rule: str
    detail: Optional[str] = None


class _FrameInfo(NamedTuple):
    name: str
    waker: Optional[Rule]
    target: Optional[Rule]
    target_detail: Optional[Rule]
    marker: int


def _index(rules: Sequence[Rule]) -> Dict[str, Rule]:
    """Exact frame name -> the first rule in table order that lists it."""
    index: Dict[str, Rule] = {}
    for rule in rules:
        for frame in rule.frames:
            index.setdefault(frame, rule)
    return index


_IRQ_SET = frozenset(IRQ_FRAMES)
_SOFTIRQ_SET = frozenset(SOFTIRQ_FRAMES)
_KSOFTIRQD_SET = frozenset(KSOFTIRQD_FRAMES)


class _Table:
    """The rule table indexed by stack kind, with a memo of frame lookups."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        rules = [replace(r, order=i) for i, r in enumerate(rules)]  # table order decides ties
        self.rules = tuple(rules)
        self.waker = [r for r in rules if r.stack == WAKER]
        self.target = [r for r in rules if r.stack == TARGET]
        self.target_detail = [r for r in rules if r.stack == TARGET_DETAIL]
        self.user = [r for r in rules if r.stack == USER]
        self._exact = [_index(self.waker), _index(self.target), _index(self.target_detail)]
        self._prefixed = [[r for r in rs if r.prefixes]
                          for rs in (self.waker, self.target, self.target_detail)]
        self._frames: Dict[str, _FrameInfo] = {}
        self.known = self._frames  # read-only view for the hot loop
        self._user: Dict[str, Optional[int]] = {}
        self.user_known = self._user  # read-only view for the hot loop

    def frame(self, raw: str) -> _FrameInfo:
        info = self._frames.get(raw)
        if info is None:
            name = normalize(raw)
            marker = 0
            if name in _KSOFTIRQD_SET:
                marker = _KSOFTIRQD
            elif name in _IRQ_SET or name.startswith(IRQ_PREFIXES):
                marker = _IRQ
            elif name in _SOFTIRQ_SET:
                marker = _SOFTIRQ
            found = [self._lookup(i, name) for i in range(3)]
            info = _FrameInfo(name, found[0], found[1], found[2], marker)
            if len(self._frames) < 500_000:
                self._frames[raw] = info
        return info

    def _lookup(self, kind: int, name: str) -> Optional[Rule]:
        """The first rule (table order) of one kind matching a frame: exact, then prefix."""
        exact = self._exact[kind].get(name)
        for rule in self._prefixed[kind]:
            if exact is not None and exact.order < rule.order:
                break
            if name.startswith(rule.prefixes):
                return rule
        return exact

    def user_index(self, raw: str) -> Optional[int]:
        """Index in :attr:`user` of the first user rule matching this frame."""
        try:
            return self._user[raw]
        except KeyError:
            pass
        found = None
        if "::" in raw or raw.startswith("_Z"):  # only C++ symbols can match Envoy's
            for i, rule in enumerate(self.user):
                if rule.matches(raw):
                    found = i
                    break
        if len(self._user) < 500_000:
            self._user[raw] = found
        return found


_DEFAULT_TABLE = _Table(RULES)


_COMM_KINDS: Dict[str, str] = {}


def comm_kind(comm: Optional[str]) -> str:
    """The kinds of waker whose comm alone changes the cause (memoised per comm)."""
    if not comm:
        return ""
    kind = _COMM_KINDS.get(comm)
    if kind is None:
        kind = ""
        if _KSOFTIRQD_COMM.match(comm):
            kind = "ksoftirqd"
        elif _IDLE_COMM.match(comm):
            kind = "idle"
        if len(_COMM_KINDS) < 100_000:
            _COMM_KINDS[comm] = kind
    return kind


class _WakerPart:
    """What the waker stack alone decides (memoised per waker stack and kind of waker).

    ``fixed`` is the whole classification when the target stack cannot change it;
    otherwise ``category``/``cause``/``rule_id`` wait for a detail from the target stack.
    """

    __slots__ = ("fixed", "category", "cause", "rule_id", "by_detail")

    def __init__(self, fixed: Optional[Classification], category: str = "",
                 cause: Cause = CAUSE_NONE, rule_id: str = "") -> None:
        self.fixed = fixed
        self.category = category
        self.cause = cause
        self.rule_id = rule_id
        self.by_detail: Dict[Optional[str], Classification] = {}


class Classifier:
    """Classifies edges; one instance per analysis (its memo is keyed by stack identity).

    The decision splits into a part that depends on the waker stack (category rule,
    cause, Envoy refinement) and a part that depends on the target stack (preemption
    point, what a timeout interrupted), each memoised on its own: distinct (waker, target)
    pairs are nearly as many as edges, distinct stacks are far fewer.
    """

    def __init__(self, rules: Optional[Sequence[Rule]] = None) -> None:
        self._table = _DEFAULT_TABLE if rules is None else _Table(rules)
        self._waker: Dict[Tuple[int, str], _WakerPart] = {}
        self._waker_plain: Dict[int, _WakerPart] = {}
        self._preempt: Dict[int, Optional[Classification]] = {}
        self._detail: Dict[Tuple[int, str], Optional[str]] = {}
        self._keep: List[object] = []  # holds stacks alive so their ids stay unique
        self._needs_user = frozenset(c for r in self._table.user for c in r.applies_to)
        self._has_detail = frozenset(c for r in self._table.target_detail for c in r.applies_to)

    def classify(self, waker_stack: Optional[Stack], target_stack: Optional[Stack],
                 preempted: bool, has_waker: bool = True,
                 waker_comm: Optional[str] = None) -> Classification:
        if preempted:
            found = self._preemption(target_stack)
            if found is not None:
                return found
            return _PREEMPTED_FALLBACK
        if waker_stack is None or not waker_stack.frames or waker_stack.kernel_depth == 0:
            # BCC offwaketime records a preempted target as a wake with no waker (or a
            # stale one): a target stack at a preemption point says it was runnable.
            found = self._preemption(target_stack)
            if found is not None:
                return found
            if not has_waker:
                return _NO_WAKER_FALLBACK
        kind = _COMM_KINDS.get(waker_comm) if waker_comm else ""
        if kind is None:
            kind = comm_kind(waker_comm)
        if kind:
            part = self._waker.get((id(waker_stack), kind))
        else:  # the common case, keyed by a plain int
            part = self._waker_plain.get(id(waker_stack))
        if part is None:
            part = self._waker_part(waker_stack, kind)
            if kind:
                self._waker[(id(waker_stack), kind)] = part
            else:
                self._waker_plain[id(waker_stack)] = part
            self._keep.append(waker_stack)
        if part.fixed is not None:
            return part.fixed
        detail = self._target_detail(target_stack, part.category)
        found = part.by_detail.get(detail)
        if found is None:
            found = Classification(part.category, part.cause, part.rule_id, detail)
            part.by_detail[detail] = found
        return found

    # -- the parts -----------------------------------------------------------------------

    def _waker_part(self, stack: Optional[Stack], kind: str) -> _WakerPart:
        frames = stack.kernel_frames if stack is not None else ()
        cause, rule = self._scan(frames, kind)
        user_rule = None
        if cause == CAUSE_WAKER and stack is not None and (
                rule is None or rule.category in self._needs_user):
            user_rule = self._user_rule(stack)
        if rule is None:
            if user_rule is not None:
                return _WakerPart(Classification(user_rule.category, cause, user_rule.id,
                                                 user_rule.detail))
            known = self._table.known
            infos = [known.get(f) or self._table.frame(f) for f in frames]
            return _WakerPart(Classification(OTHER_FALLBACK.category, cause, OTHER_FALLBACK.id,
                                             _other_detail(infos, stack)))
        if rule.bystander and cause == CAUSE_WAKER:
            cause = CAUSE_INTERRUPT
        detail = rule.detail
        rule_id = rule.id
        if user_rule is not None and rule.category in user_rule.applies_to:
            detail = user_rule.detail
            rule_id = f"{rule.id}+{user_rule.id}"
        if detail is not None or rule.category not in self._has_detail:
            return _WakerPart(Classification(rule.category, cause, rule_id, detail))
        return _WakerPart(None, rule.category, cause, rule_id)

    def _scan(self, frames: Sequence[str], kind: str) -> Tuple[Cause, Optional[Rule]]:
        """One pass leaf to root: the cause (first interrupt or ksoftirqd marker) and the
        event rule (leaf-nearest specific rule before the first context boundary, else the
        leaf-nearest generic one)."""
        known = self._table.known
        frame = self._table.frame
        specific: Optional[Rule] = None
        generic: Optional[Rule] = None
        in_event = True
        cause: Optional[Cause] = None
        for raw in frames:
            info = known.get(raw) or frame(raw)
            marker = info.marker
            if marker:
                in_event = False
                if marker == _IRQ:
                    cause = CAUSE_INTERRUPT
                    break
                if marker == _KSOFTIRQD:
                    cause = CAUSE_KSOFTIRQD
                    break
            elif in_event and specific is None:
                rule = info.waker
                if rule is not None:
                    if not rule.generic:
                        specific = rule
                    elif generic is None:
                        generic = rule
        if cause is None:
            cause = _cause_of_kind(kind)
        return cause, specific or generic

    def _target_detail(self, stack: Optional[Stack], category: str) -> Optional[str]:
        key = (id(stack), category)
        try:
            return self._detail[key]
        except KeyError:
            pass
        detail = None
        for raw in stack.kernel_frames if stack is not None else ():
            drule = self._table.frame(raw).target_detail
            if drule is not None and category in drule.applies_to:
                detail = drule.detail
                break
        self._detail[key] = detail
        self._keep.append(stack)
        return detail

    def _preemption(self, stack: Optional[Stack]) -> Optional[Classification]:
        key = id(stack)
        try:
            return self._preempt[key]
        except KeyError:
            pass
        found: Optional[Classification] = None
        generic: Optional[Rule] = None
        for raw in stack.kernel_frames if stack is not None else ():
            rule = self._table.frame(raw).target
            if rule is None:
                continue
            if not rule.generic:
                found = Classification(rule.category, CAUSE_NONE, rule.id, rule.detail)
                break
            if generic is None:
                generic = rule
        if found is None and generic is not None:
            found = Classification(generic.category, CAUSE_NONE, generic.id, generic.detail)
        self._preempt[key] = found
        self._keep.append(stack)
        return found

    def _user_rule(self, stack: Stack) -> Optional[Rule]:
        """The first user rule in table order that matches any user frame."""
        frames = stack.user_frames if stack.kernel_depth is not None else stack.frames
        best: Optional[int] = None
        known = self._table.user_known
        for frame in frames:
            index = known.get(frame, -1)  # -1: not looked up yet
            if index == -1:
                index = self._table.user_index(frame)
            if index is not None and (best is None or index < best):
                best = index
                if best == 0:
                    break
        return None if best is None else self._table.user[best]


_PREEMPTED_FALLBACK = Classification(PREEMPTED_FALLBACK.category, CAUSE_NONE,
                                     PREEMPTED_FALLBACK.id)
_NO_WAKER_FALLBACK = Classification(NO_WAKER_FALLBACK.category, CAUSE_NONE, NO_WAKER_FALLBACK.id)


def _cause_of_kind(kind: str) -> Cause:
    """The cause when the stack shows no interrupt or ksoftirqd frame."""
    if kind == "ksoftirqd":
        return CAUSE_KSOFTIRQD
    if kind == "idle":
        # The idle task runs no code of its own that wakes anyone: only interrupts do.
        return CAUSE_INTERRUPT
    return CAUSE_WAKER


def _other_detail(infos: Sequence[_FrameInfo], stack: Optional[Stack]) -> str:
    """The top frames of an unmatched waker stack (past the generic wake plumbing)."""
    names = [i.name for i in infos if i.name not in WAKE_PLUMBING and i.name]
    if names:
        return ", ".join(names[:OTHER_DETAIL_FRAMES])
    user = [normalize(f) for f in stack.user_frames] if stack is not None else []
    if user:
        return "no kernel stack: " + ", ".join(user[:OTHER_DETAIL_FRAMES])
    return "no waker stack"
