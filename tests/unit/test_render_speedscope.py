"""The speedscope renderer, validated against speedscope's file-format JSON schema.

The schema below is speedscope's published ``file-format-schema.json`` (draft-06), the
definitions a sampled profile needs (File, Frame, SampledProfile, ValueUnit); the evented
profile branch is left out because we never write one. Keep it in step with
https://www.speedscope.app/file-format-schema.json (jlfwong/speedscope).
"""

from __future__ import annotations

import io
import json
from typing import Any, Dict

import jsonschema
import pytest

from kubectl_offwake.analysis import analyze
from kubectl_offwake.analysis.report import Report
from kubectl_offwake.render import RenderOptions, render
from tests.sample_recording import build_odd_recording, build_sample_recording

_NUMBERS = {"type": "array", "items": {"type": "number"}}
SPEEDSCOPE_SCHEMA: Dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-06/schema#",
    "definitions": {
        "FileFormat.File": {
            "type": "object",
            "properties": {
                "$schema": {"type": "string",
                            "enum": ["https://www.speedscope.app/file-format-schema.json"]},
                "shared": {
                    "type": "object",
                    "properties": {"frames": {"type": "array",
                                              "items": {"$ref": "#/definitions/FileFormat.Frame"}}},
                    "required": ["frames"],
                },
                "profiles": {"type": "array",
                             "items": {"anyOf": [
                                 {"$ref": "#/definitions/FileFormat.SampledProfile"}]}},
                "name": {"type": "string"},
                "activeProfileIndex": {"type": "number"},
                "exporter": {"type": "string"},
            },
            "required": ["$schema", "profiles", "shared"],
        },
        "FileFormat.Frame": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "file": {"type": "string"},
                           "line": {"type": "number"}, "col": {"type": "number"}},
            "required": ["name"],
        },
        "FileFormat.SampledProfile": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": ["sampled"]},
                "name": {"type": "string"},
                "unit": {"$ref": "#/definitions/FileFormat.ValueUnit"},
                "startValue": {"type": "number"},
                "endValue": {"type": "number"},
                "samples": {"type": "array", "items": _NUMBERS},
                "weights": _NUMBERS,
            },
            "required": ["endValue", "name", "samples", "startValue", "type", "unit",
                         "weights"],
        },
        "FileFormat.ValueUnit": {
            "type": "string",
            "enum": ["bytes", "microseconds", "milliseconds", "nanoseconds", "none", "seconds"],
        },
    },
    "$ref": "#/definitions/FileFormat.File",
}


def _doc(report: Report) -> Dict[str, Any]:
    out = io.StringIO()
    render(report, "speedscope", out, RenderOptions())
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def sample() -> Report:
    return analyze(build_sample_recording())


@pytest.mark.parametrize("build", [build_sample_recording, build_odd_recording])
def test_valid_against_the_speedscope_schema(build: Any) -> None:
    doc = _doc(analyze(build()))
    jsonschema.Draft6Validator.check_schema(SPEEDSCOPE_SCHEMA)
    jsonschema.validate(doc, SPEEDSCOPE_SCHEMA, cls=jsonschema.Draft6Validator)
    frames = doc["shared"]["frames"]
    for profile in doc["profiles"]:
        assert len(profile["samples"]) == len(profile["weights"])
        assert profile["endValue"] - profile["startValue"] == sum(profile["weights"])
        for sample in profile["samples"]:
            assert all(isinstance(i, int) and 0 <= i < len(frames) for i in sample)


def test_the_schema_catches_a_broken_file(sample: Report) -> None:
    """The validation above can fail: a wrong unit or a missing field is rejected."""
    doc = _doc(sample)
    doc["profiles"][0]["unit"] = "fortnights"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SPEEDSCOPE_SCHEMA, cls=jsonschema.Draft6Validator)
    doc = _doc(sample)
    del doc["profiles"][0]["weights"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SPEEDSCOPE_SCHEMA, cls=jsonschema.Draft6Validator)


def test_one_profile_per_category_in_report_order(sample: Report) -> None:
    doc = _doc(sample)
    assert doc["exporter"] == "kubectl-offwake"
    assert doc["name"] == "kubectl offwake: app/productpage-v1-6b7f/istio-proxy (pid 4182)"
    assert doc["activeProfileIndex"] == 0
    names = [p["name"] for p in doc["profiles"]]
    assert names == [f"{_title(g.key)} ({g.key})" for g in sample.by_category]
    for profile, group in zip(doc["profiles"], sample.by_category):
        assert profile["unit"] == "microseconds"
        assert sum(profile["weights"]) == group.total_us


def _title(category: str) -> str:
    from kubectl_offwake.analysis.categories import CATEGORY_BY_ID
    return CATEGORY_BY_ID[category].title


def test_samples_are_wake_chains_root_first(sample: Report) -> None:
    doc = _doc(sample)
    frames = doc["shared"]["frames"]
    names = {(f["name"], f.get("file")) for f in frames}
    assert len(names) == len(frames)  # the frame table has no duplicates
    udp = next(p for p in doc["profiles"] if p["name"].endswith("(udp-receive)"))
    (chain,) = udp["samples"]
    labels = [frames[i]["name"] for i in chain]
    assert labels[0] == "envoy"
    assert labels[1] == "_start"
    sep = labels.index("--")
    assert labels[sep - 1] == "__schedule" and frames[chain[sep - 1]]["file"] == "[kernel]"
    assert labels[sep + 1] == "try_to_wake_up"
    assert labels[-1] == "kube-system/coredns-5d78c/coredns"
    preempt = next(p for p in doc["profiles"] if p["name"].endswith("(preempted-involuntary)"))
    tops = {frames[s[-1]]["name"] for s in preempt["samples"]}
    assert "preempted by batch/cruncher-7d9/cruncher" in tops
