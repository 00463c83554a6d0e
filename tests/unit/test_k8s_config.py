"""Configuration found like kubectl finds it; setup manifests kept in sync."""

from __future__ import annotations

import os

import pytest
import yaml

from kubectl_offwake.errors import BadInput
from kubectl_offwake.k8s import preflight, setup_objects
from kubectl_offwake.k8s.config import kubeconfig_paths, load


def _kubeconfig(path, server, contexts):
    doc = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": name, "context": {"cluster": "c", "user": "u", **extra}}
                     for name, extra in contexts.items()],
        "current-context": next(iter(contexts)),
    }
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_paths_flag_then_env_list_then_home():
    assert kubeconfig_paths("/x", {"KUBECONFIG": "/a:/b"}) == ["/x"]
    assert kubeconfig_paths(None, {"KUBECONFIG": "/a::/b"}) == ["/a", "/b"]
    assert kubeconfig_paths(None, {}) == [os.path.expanduser("~/.kube/config")]


def test_context_namespace_and_flags(tmp_path):
    first = _kubeconfig(tmp_path / "one", "https://one:6443",
                        {"one": {"namespace": "app"}, "plain": {}})
    second = _kubeconfig(tmp_path / "two", "https://two:6443", {"two": {"namespace": "other"}})
    env = {"KUBECONFIG": f"{first}:{second}"}
    cfg = load(environ=env)
    assert (cfg.context, cfg.namespace, cfg.server) == ("one", "app", "https://one:6443")
    assert load(context="two", environ=env).namespace == "other"  # merged from the 2nd file
    assert load(context="plain", environ=env).namespace == "default"
    assert load(namespace="ns", environ=env).namespace == "ns"
    assert load(kubeconfig=second, environ=env).context == "two"


def test_config_errors_are_one_sentence(tmp_path):
    path = _kubeconfig(tmp_path / "k", "https://x", {"a": {}})
    with pytest.raises(BadInput, match="context 'b' is not in .*contexts: a"):
        load(kubeconfig=path, context="b", environ={})
    with pytest.raises(BadInput, match="no such file"):
        load(kubeconfig=str(tmp_path / "missing"), environ={})
    with pytest.raises(BadInput, match="no kubeconfig found"):
        load(environ={"KUBECONFIG": str(tmp_path / "nope")})


def test_manifests_directory_matches_the_code():
    for name, text in setup_objects.files().items():
        with open(os.path.join("manifests", name), encoding="utf-8") as handle:
            assert handle.read() == text, f"regenerate manifests/{name}"


def test_namespace_is_privileged_without_injection():
    labels = setup_objects.namespace()["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert labels["istio-injection"] == "disabled"


def _granted(rules, perm):
    for rule in rules:
        resources = rule["resources"]
        name = f"{perm.resource}/{perm.subresource}" if perm.subresource else perm.resource
        if perm.group in rule["apiGroups"] and name in resources and perm.verb in rule["verbs"]:
            return True
    return False


def test_rbac_grants_exactly_what_the_preflight_asks():
    cluster_rules = setup_objects.resolver_cluster_role()["rules"]
    ns_rules = setup_objects.runner_role()["rules"]
    for kind in (None, "deployment", "statefulset", "daemonset", "replicaset", "job"):
        for perm in preflight.resolve_permissions("app", kind):
            assert _granted(cluster_rules, perm), perm.describe()
    for perm in preflight.run_permissions("offwake-system"):
        rules = cluster_rules if perm.namespace is None else ns_rules
        assert _granted(rules, perm), perm.describe()


def test_permission_descriptions_name_verb_resource_and_place():
    perm = preflight.Permission("get", "pods", "offwake-system", subresource="log")
    assert perm.describe() == "get pods/log in namespace offwake-system"
    assert preflight.Permission("list", "pods", None).describe() == "list pods in all namespaces"
