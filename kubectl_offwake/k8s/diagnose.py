"""What a collector pod's status means, in one sentence a user can act on.

Pure: reads the pod dict the API returns. The runner calls :func:`pod_state` on every
watch event and stops waiting as soon as the answer is not "pending".
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from .podspec import COLLECTOR_CONTAINER, REFUSAL

IMAGE_PULL_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                      "ErrImageNeverPull", "RegistryUnavailable"}
CREATE_FAIL_REASONS = {"CreateContainerConfigError", "CreateContainerError",
                       "RunContainerError", "PreCreateHookError", "PreStartHookError"}


@dataclass
class PodState:
    """``kind``: pending | running | exited | failed | gone."""

    kind: str
    message: str = ""
    exit_code: Optional[int] = None
    reason: str = ""


def _container(pod: dict) -> dict:
    for item in (pod.get("status") or {}).get("containerStatuses") or []:
        if item.get("name") == COLLECTOR_CONTAINER:
            return item
    return {}


def pod_state(pod: Optional[dict]) -> PodState:
    """Classify a collector pod's status; ``failed`` carries the message for the user."""
    if pod is None:
        return PodState("gone", "the collector pod was deleted")
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    node = spec.get("nodeName") or "?"
    image = ((spec.get("containers") or [{}])[0]).get("image", "?")
    cstatus = _container(pod)
    state = cstatus.get("state") or {}
    if "running" in state:
        return PodState("running")
    if "terminated" in state:
        term = state["terminated"] or {}
        code = term.get("exitCode")
        reason = term.get("reason") or ""
        if reason == "OOMKilled":
            return PodState("exited", f"the collector on node {node} ran out of memory "
                            "(OOMKilled); trace fewer pods per run or raise the limit",
                            code, reason)
        if status.get("reason") == "DeadlineExceeded":
            return PodState("exited", f"the collector on node {node} was stopped at the pod's "
                            f"deadline (activeDeadlineSeconds "
                            f"{spec.get('activeDeadlineSeconds')}) before it finished",
                            code if isinstance(code, int) else None, "DeadlineExceeded")
        return PodState("exited", "", code if isinstance(code, int) else None, reason)
    phase = status.get("phase") or "Pending"
    if phase in ("Failed", "Succeeded"):
        reason = status.get("reason") or ""
        text = status.get("message") or ""
        if reason == "DeadlineExceeded":
            return PodState("failed", f"the collector pod on node {node} reached its deadline "
                            f"(activeDeadlineSeconds {spec.get('activeDeadlineSeconds')}) "
                            "before it started; check the node and the image", reason=reason)
        if reason == "Evicted":
            return PodState("failed", f"the collector pod was evicted from node {node}: "
                            f"{text}", reason=reason)
        return PodState("failed", f"node {node} rejected the collector pod: "
                        f"{reason or phase}{': ' + text if text else ''}", reason=reason)
    waiting = state.get("waiting") or {}
    wreason = waiting.get("reason") or ""
    wmessage = waiting.get("message") or ""
    if wreason in IMAGE_PULL_REASONS:
        return PodState("failed", f"node {node} cannot pull the collector image {image} "
                        f"({wreason}{': ' + wmessage if wmessage else ''}); build and push "
                        "one from kubectl-offwake's source with `image/build --push REF`, "
                        "then select it with `kubectl offwake setup --image REF` "
                        "(or --image REF for one run)", reason=wreason)
    if wreason in CREATE_FAIL_REASONS:
        return PodState("failed", f"node {node} cannot start the collector ({wreason}"
                        f"{': ' + wmessage if wmessage else ''})", reason=wreason)
    for cond in status.get("conditions") or []:
        if (cond.get("type") == "PodScheduled" and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"):
            return PodState("failed", f"the collector pod cannot be scheduled on node {node}: "
                            f"{cond.get('message') or 'Unschedulable'}", reason="Unschedulable")
    if meta.get("deletionTimestamp"):
        return PodState("pending", "being deleted")
    return PodState("pending", wreason or phase)


def last_logs(logs: Sequence[Mapping[str, str]], lines: Sequence[str], limit: int = 5) -> str:
    """The collector's last log messages (errors and warnings first; else its last non-JSON
    lines), joined."""
    messages = [f"{r.get('level', 'info')}: {r.get('message')}" for r in logs
                if r.get("level") in ("error", "warning")]
    if not messages:
        messages = [f"{r.get('level', 'info')}: {r.get('message')}" for r in logs]
    if not messages:
        messages = [line.strip() for line in lines if line.strip()]
    tail = messages[-limit:]
    return " | ".join(tail)


def exit_message(node: str, state: PodState, logs: Sequence[Mapping[str, str]],
                 text_lines: Sequence[str], configmap: Optional[dict] = None) -> str:
    """The sentence for a collector that exited without a complete stream (``logs``: its
    ``log`` records so far, ``text_lines``: its output that was no wire record).

    ``configmap`` is the metadata of the collector's ConfigMap, named when the pod's hash
    check refused what it found there.
    """
    if state.message:
        return state.message
    refusal = next((line for line in reversed(text_lines) if line.startswith(REFUSAL)), None)
    if refusal is not None:
        meta = configmap or {}
        where = f"ConfigMap {meta.get('namespace')}/{meta.get('name')}" if meta else \
            "its ConfigMap"
        return (f"the collector on node {node} refused to run: the zipapp in {where} is not "
                f"the one this plugin sent ({refusal[len(REFUSAL):].strip()}); someone "
                "replaced the ConfigMap after the plugin created it: check who may write "
                "ConfigMaps in that namespace, then run again")
    if state.exit_code == 0:
        return (f"the collector on node {node} exited before the end of its stream; "
                "the report covers the snapshots that arrived")
    tail = last_logs(logs, text_lines)
    code = state.exit_code
    reason = f" ({state.reason})" if state.reason and state.reason not in ("Error",) else ""
    text = f"the collector on node {node} exited with code {code}{reason}"
    if isinstance(code, int) and 128 < code < 128 + 65:
        try:
            text += f" (killed by {signal.Signals(code - 128).name})"
        except ValueError:
            pass
    if tail:
        text += f"; its last words: {tail}"
    return text
