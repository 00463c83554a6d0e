"""Collector pod status → one sentence per way it fails."""

from __future__ import annotations

import pytest

from kubectl_offwake.k8s.diagnose import exit_message, pod_state
from kubectl_offwake.k8s.podspec import REFUSAL


def pod(phase="Pending", state=None, reason=None, message=None, conditions=None):
    status = {"phase": phase}
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    if state is not None:
        status["containerStatuses"] = [{"name": "collector", "state": state}]
    if conditions:
        status["conditions"] = conditions
    return {"metadata": {"name": "offwake-x-n1"},
            "spec": {"nodeName": "n1", "activeDeadlineSeconds": 120,
                     "containers": [{"name": "collector", "image": "reg/img:1"}]},
            "status": status}


def test_running_and_gone():
    assert pod_state(pod("Running", {"running": {}})).kind == "running"
    assert pod_state(None).kind == "gone"
    assert pod_state(pod()).kind == "pending"
    assert pod_state(pod(state={"waiting": {"reason": "ContainerCreating"}})).kind == "pending"


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"])
def test_image_pull_errors_name_the_image_and_how_to_build_and_select_one(reason):
    state = pod_state(pod(state={"waiting": {"reason": reason, "message": "not found"}}))
    assert state.kind == "failed"
    assert state.message.startswith(f"node n1 cannot pull the collector image reg/img:1 "
                                    f"({reason}: not found); ")
    assert "`image/build --push REF`" in state.message
    assert "`kubectl offwake setup --image REF`" in state.message


def test_unschedulable():
    state = pod_state(pod(conditions=[{"type": "PodScheduled", "status": "False",
                                       "reason": "Unschedulable", "message": "0/3 nodes"}]))
    assert state.kind == "failed" and "cannot be scheduled" in state.message


def test_deadline_and_node_rejection():
    state = pod_state(pod("Failed", reason="DeadlineExceeded"))
    assert state.kind == "failed" and "deadline" in state.message
    state = pod_state(pod("Failed", reason="OutOfcpu", message="Node didn't have enough"))
    assert "rejected" in state.message and "OutOfcpu" in state.message


def test_oom_and_exit_codes():
    state = pod_state(pod("Failed", {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}))
    assert state.kind == "exited" and "out of memory" in state.message
    state = pod_state(pod("Failed", {"terminated": {"exitCode": 3, "reason": "Error"}}))
    logs = [{"level": "info", "message": "compiling"},
            {"level": "error", "message": "no such tracepoint"}]
    text = exit_message("n1", state, logs, ["Traceback"])
    assert "exited with code 3" in text and "no such tracepoint" in text
    assert "compiling" not in text  # errors first when there are any
    text = exit_message("n1", state, [], ["Traceback (most recent call last):", "KeyError"])
    assert "KeyError" in text


def test_deadline_while_running():
    state = pod_state(pod("Failed", {"terminated": {"exitCode": 143, "reason": "Error"}},
                          reason="DeadlineExceeded"))
    assert state.kind == "exited" and "deadline (activeDeadlineSeconds 120)" in state.message


def test_exit_by_signal_is_named():
    state = pod_state(pod("Failed", {"terminated": {"exitCode": 139, "reason": "Error"}}))
    assert "exited with code 139 (killed by SIGSEGV)" in exit_message("n1", state, [], [])


def test_a_refused_zipapp_names_node_configmap_and_what_to_do():
    state = pod_state(pod("Failed", {"terminated": {"exitCode": 1, "reason": "Error"}}))
    line = f"{REFUSAL} /opt/offwake/collector.pyz has sha256 {'1' * 64}, not {'2' * 64}; not"
    text = exit_message("n1", state, [], ["some noise", line + " running it"],
                        {"name": "offwake-ab-n1", "namespace": "offwake-system"})
    assert text.startswith("the collector on node n1 refused to run: the zipapp in ConfigMap "
                           "offwake-system/offwake-ab-n1 is not the one this plugin sent (")
    assert "1" * 64 in text and "someone replaced the ConfigMap" in text


def test_a_clean_exit_without_the_end_record_is_still_a_failure():
    state = pod_state(pod("Succeeded", {"terminated": {"exitCode": 0, "reason": "Completed"}}))
    assert "exited before the end of its stream" in exit_message("n1", state, [], [])
