"""The report JSON of docs/design.md §3.3 (``offwake.report/1``) and its documented extras."""

from __future__ import annotations

import io
import json
from typing import Any, Dict

import pytest

from kubectl_offwake.analysis import analyze
from kubectl_offwake.analysis.categories import CATEGORY_BY_ID, CAUSES, ROLES
from kubectl_offwake.analysis.report import Report
from kubectl_offwake.render import RenderOptions, render
from tests.sample_recording import build_odd_recording, build_sample_recording

WAKEUP_KEYS_3_3 = ["category", "detail", "cause", "waker", "target", "count", "total_us",
                   "max_us", "blocked_us", "runq_us", "preempted_by", "waker_stack",
                   "target_stack"]


def _json(report: Report) -> Dict[str, Any]:
    out = io.StringIO()
    render(report, "json", out, RenderOptions())
    text = out.getvalue()
    assert text.endswith("}\n")
    return json.loads(text)


@pytest.fixture(scope="module")
def sample() -> Report:
    return analyze(build_sample_recording())


def test_top_level_shape(sample: Report) -> None:
    doc = _json(sample)
    assert doc["schema"] == "offwake.report/1"
    assert list(doc)[:2] == ["schema", "generator"]
    for key in ("source", "totals", "wakeups", "findings", "by_category", "by_waker",
                "by_thread", "pending", "throttling", "warnings"):
        assert key in doc
    assert doc["source"]["kernel"] == "6.6.58-talos"
    assert doc["totals"]["off_cpu_us"] == sum(w["total_us"] for w in doc["wakeups"])
    assert doc["totals"]["lost"] == {"map_full": 0, "stack_eexist": 37, "stack_enomem": 0}


def test_wakeups_follow_3_3(sample: Report) -> None:
    doc = _json(sample)
    assert len(doc["wakeups"]) == len(sample.wakeups) == 30
    totals = [w["total_us"] for w in doc["wakeups"]]
    assert totals == sorted(totals, reverse=True)
    for entry in doc["wakeups"]:
        assert list(entry)[: len(WAKEUP_KEYS_3_3)] == WAKEUP_KEYS_3_3
        assert entry["category"] in CATEGORY_BY_ID
        assert entry["cause"] in CAUSES
        assert entry["target"]["role"] in ROLES
        assert entry["target"]["pid"] == 4182
        assert entry["target_stack"][0] in ("__schedule", "schedule")  # leaf first
        assert isinstance(entry["rule"], str) and entry["rule"]
        if CATEGORY_BY_ID[entry["category"]].preemption:
            assert entry["waker"] is None
            assert entry["waker_stack"] == []
            assert entry["cause"] == "none"
        else:
            waker = entry["waker"]
            assert set(waker) >= {"comm", "pid", "tid", "pod", "container"}
            assert entry["waker_stack"][0] == "try_to_wake_up"  # leaf first
            assert entry["preempted_by"] is None
        assert entry["blocked_us"] + entry["runq_us"] == entry["total_us"]


def test_names_pods_and_preemptors(sample: Report) -> None:
    doc = _json(sample)
    dns = next(w for w in doc["wakeups"] if w["category"] == "udp-receive")
    assert dns["waker"]["pod"] == "kube-system/coredns-5d78c"
    assert dns["waker"]["container"] == "coredns"
    assert dns["waker"]["name"] == "kube-system/coredns-5d78c/coredns"
    assert dns["target"]["role"] == "main" and dns["target"]["comm"] == "envoy"
    kubelet = next(w for w in doc["wakeups"] if w["waker"] and w["waker"]["comm"] == "kubelet")
    assert kubelet["waker"]["pod"] is None and kubelet["waker"]["name"] == "host: kubelet"
    noisy = [w for w in doc["wakeups"] if w["preempted_by"]
             and w["preempted_by"]["comm"] == "cruncher"]
    assert noisy and all(w["preempted_by"]["pod"] == "batch/cruncher-7d9" for w in noisy)


def test_extras(sample: Report) -> None:
    doc = _json(sample)
    assert [g["category"] for g in doc["by_category"]] == [g.key for g in sample.by_category]
    assert abs(sum(g["share"] for g in doc["by_category"]) - 1.0) < 1e-5
    assert sum(g["total_us"] for g in doc["by_waker"]) == doc["totals"]["off_cpu_us"]
    threads = {t["target"]["tid"]: t for t in doc["by_thread"]}
    assert threads[4451]["oncpu"]["max_us"] == 48_213
    assert threads[4451]["target"]["role"] == "worker"
    pending = {p["target"]["tid"]: p for p in doc["pending"]}
    assert pending[4191]["waiting_us"] == 642_000
    assert pending[4191]["target"]["role"] == "access-log-flush"
    assert pending[4451]["preempted"] is True
    (throttle,) = doc["throttling"]
    assert throttle["delta"] == {"nr_periods": 300, "nr_throttled": 17,
                                 "throttled_usec": 351_314}
    assert doc["warnings"] and "stack_eexist" in doc["warnings"][0]


def test_sources_without_counts_give_nulls_not_zeros() -> None:
    doc = _json(analyze(build_odd_recording()))
    assert doc["totals"]["wakeups"] is None
    assert doc["totals"]["blocked_us"] is None
    for entry in doc["wakeups"]:
        assert entry["count"] is None and entry["runq_us"] is None
    odd = next(w for w in doc["wakeups"] if w["target_stack_kernel_depth"] == 3
               and len(w["target_stack"]) == 6)
    # Frame names are kept verbatim in JSON (only folded output must rewrite them).
    assert "std::function<void ()>::operator()() const;with;semicolons" in odd["target_stack"]


def test_output_is_indented_and_key_order_is_stable(sample: Report) -> None:
    out = io.StringIO()
    render(sample, "json", out, RenderOptions())
    text = out.getvalue()
    assert text.startswith('{\n  "schema": "offwake.report/1",\n')
    doc = json.loads(text)
    assert list(doc["source"]) == sorted(doc["source"])


def test_fast_writer_agrees_with_the_reference_encoding(sample: Report) -> None:
    """The renderer's own writer gives exactly what json.dumps of report_dict means."""
    from kubectl_offwake.render.json_report import report_dict

    for report in (sample, analyze(build_odd_recording())):
        out = io.StringIO()
        render(report, "json", out, RenderOptions())
        assert json.loads(out.getvalue()) == json.loads(json.dumps(report_dict(report)))


def _reference(value: Any, indent: str = "") -> str:
    """The documented layout, written the slow obvious way: indent 2, flat lists inline."""
    inner = indent + "  "
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {_reference(v, inner)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            return json.dumps(value, ensure_ascii=False)
        return "[\n" + ",\n".join(inner + _reference(v, inner) for v in value) + "\n" + indent + "]"
    return json.dumps(value, ensure_ascii=False)


def test_layout_is_byte_identical_to_the_obvious_writer(sample: Report) -> None:
    """Caching encoded stacks and parties must not change a single byte."""
    from kubectl_offwake.render.json_report import report_dict

    for report in (sample, analyze(build_odd_recording())):
        out = io.StringIO()
        render(report, "json", out, RenderOptions())
        assert out.getvalue() == _reference(report_dict(report)) + "\n"
