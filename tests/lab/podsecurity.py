"""Pod Security admission (enforce mode) for the baseline and restricted levels.

Check ids, order and wording follow k8s.io/pod-security-admission/policy: the message is
`pods "x" is forbidden: violates PodSecurity "baseline:latest": <reason> (<detail>), ...`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

Obj = Dict[str, Any]

LEVELS = ("privileged", "baseline", "restricted")
BASELINE_CAPS = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}


def _quote(names: List[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _containers_phrase(names: List[str]) -> str:
    return f"container {_quote(names)}" if len(names) == 1 else f"containers {_quote(names)}"


def _all_containers(spec: Obj) -> List[Obj]:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or []) + list(
        spec.get("ephemeralContainers") or []
    )


def _sc(c: Obj) -> Obj:
    return c.get("securityContext") or {}


def _check_allow_privilege_escalation(spec: Obj) -> Optional[Tuple[str, str]]:
    bad = [c["name"] for c in _all_containers(spec)
           if _sc(c).get("allowPrivilegeEscalation") is not False]
    if not bad:
        return None
    return ("allowPrivilegeEscalation != false",
            f"{_containers_phrase(bad)} must set securityContext.allowPrivilegeEscalation=false")


def _check_capabilities_baseline(spec: Obj) -> Optional[Tuple[str, str]]:
    bad: List[str] = []
    caps: List[str] = []
    for c in _all_containers(spec):
        added = [a for a in ((_sc(c).get("capabilities") or {}).get("add") or [])
                 if a not in BASELINE_CAPS]
        if added:
            bad.append(c["name"])
            caps.extend(a for a in added if a not in caps)
    if not bad:
        return None
    return ("non-default capabilities",
            f"{_containers_phrase(bad)} must not include {_quote(caps)} in "
            "securityContext.capabilities.add")


def _check_capabilities_restricted(spec: Obj) -> Optional[Tuple[str, str]]:
    no_drop: List[str] = []
    bad_add: List[str] = []
    caps: List[str] = []
    for c in _all_containers(spec):
        capset = _sc(c).get("capabilities") or {}
        if "ALL" not in (capset.get("drop") or []):
            no_drop.append(c["name"])
        added = [a for a in (capset.get("add") or []) if a != "NET_BIND_SERVICE"]
        if added:
            bad_add.append(c["name"])
            caps.extend(a for a in added if a not in caps)
    details: List[str] = []
    if no_drop:
        details.append(f"{_containers_phrase(no_drop)} must set "
                       'securityContext.capabilities.drop=["ALL"]')
    if bad_add:
        details.append(f"{_containers_phrase(bad_add)} must not include {_quote(caps)} in "
                       "securityContext.capabilities.add")
    return ("unrestricted capabilities", "; ".join(details)) if details else None


def _check_host_namespaces(spec: Obj) -> Optional[Tuple[str, str]]:
    on = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    return ("host namespaces", ", ".join(on)) if on else None


def _check_host_path(spec: Obj) -> Optional[Tuple[str, str]]:
    vols = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    if not vols:
        return None
    word = "volume" if len(vols) == 1 else "volumes"
    return ("hostPath volumes", f"{word} {_quote(vols)}")


def _check_host_ports(spec: Obj) -> Optional[Tuple[str, str]]:
    bad: List[str] = []
    ports: List[str] = []
    for c in _all_containers(spec):
        hp = [str(p["hostPort"]) for p in c.get("ports") or [] if p.get("hostPort")]
        if hp:
            bad.append(c["name"])
            ports.extend(hp)
    if not bad:
        return None
    word = "hostPort" if len(ports) == 1 else "hostPorts"
    return ("hostPort", f"{_containers_phrase(bad)} uses {word} {', '.join(ports)}")


def _check_privileged(spec: Obj) -> Optional[Tuple[str, str]]:
    bad = [c["name"] for c in _all_containers(spec) if _sc(c).get("privileged")]
    if not bad:
        return None
    return ("privileged", f"{_containers_phrase(bad)} must not set securityContext.privileged=true")


def _check_restricted_volumes(spec: Obj) -> Optional[Tuple[str, str]]:
    bad: List[str] = []
    types: List[str] = []
    for v in spec.get("volumes") or []:
        kinds = [k for k in v if k != "name"]
        wrong = [k for k in kinds if k not in RESTRICTED_VOLUME_TYPES]
        if wrong:
            bad.append(v["name"])
            types.extend(k for k in wrong if k not in types)
    if not bad:
        return None
    word = "volume" if len(bad) == 1 else "volumes"
    tword = "uses restricted volume type" if len(types) == 1 else "use restricted volume types"
    return ("restricted volume types", f"{word} {_quote(bad)} {tword} {_quote(types)}")


def _check_run_as_non_root(spec: Obj) -> Optional[Tuple[str, str]]:
    pod_level = (spec.get("securityContext") or {}).get("runAsNonRoot")
    bad = [c["name"] for c in _all_containers(spec)
           if _sc(c).get("runAsNonRoot", pod_level) is not True]
    if not bad:
        return None
    if pod_level is None:
        return ("runAsNonRoot != true",
                f"pod or {_containers_phrase(bad)} must set securityContext.runAsNonRoot=true")
    return ("runAsNonRoot != true",
            f"{_containers_phrase(bad)} must not set securityContext.runAsNonRoot=false")


def _check_seccomp_restricted(spec: Obj) -> Optional[Tuple[str, str]]:
    pod_type = ((spec.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
    bad = [c["name"] for c in _all_containers(spec)
           if ((_sc(c).get("seccompProfile") or {}).get("type") or pod_type)
           not in ("RuntimeDefault", "Localhost")]
    if not bad:
        return None
    return ("seccompProfile",
            f'pod or {_containers_phrase(bad)} must set securityContext.seccompProfile.type to '
            '"RuntimeDefault" or "Localhost"')


BASELINE_CHECKS = [
    ("capabilities_baseline", _check_capabilities_baseline),
    ("hostNamespaces", _check_host_namespaces),
    ("hostPathVolumes", _check_host_path),
    ("hostPorts", _check_host_ports),
    ("privileged", _check_privileged),
]
RESTRICTED_CHECKS = [
    ("allowPrivilegeEscalation", _check_allow_privilege_escalation),
    ("capabilities_restricted", _check_capabilities_restricted),
    ("restrictedVolumes", _check_restricted_volumes),
    ("runAsNonRoot", _check_run_as_non_root),
    ("seccompProfile_restricted", _check_seccomp_restricted),
]


def violations(level: str, spec: Obj) -> List[str]:
    """`reason (detail)` strings for a pod spec at a level, in check-id order."""
    if level not in ("baseline", "restricted"):
        return []
    checks = list(BASELINE_CHECKS)
    if level == "restricted":
        # the restricted capabilities check overrides the baseline one, as in the real policy
        checks = [c for c in checks if c[0] != "capabilities_baseline"] + RESTRICTED_CHECKS
    checks.sort(key=lambda c: c[0].lower())
    out: List[str] = []
    for _, fn in checks:
        res = fn(spec)
        if res:
            out.append(f"{res[0]} ({res[1]})" if res[1] else res[0])
    return out


def enforce_message(namespace_labels: Dict[str, str], pod_name: str, spec: Obj) -> Optional[str]:
    """The Forbidden message if the namespace enforces a level the pod violates, else None."""
    level = namespace_labels.get("pod-security.kubernetes.io/enforce", "privileged")
    if level not in LEVELS:
        level = "privileged"
    version = namespace_labels.get("pod-security.kubernetes.io/enforce-version", "latest")
    found = violations(level, spec)
    if not found:
        return None
    return (f'pods "{pod_name}" is forbidden: violates PodSecurity "{level}:{version}": '
            + ", ".join(found))
