"""Layered access to the API: typed clients plus one translation of API errors.

Every call that can fail goes through :func:`call`, so a 403, a missing namespace or an
unreachable server always turns into one sentence for the user instead of a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from ..errors import RunFailed
from .config import ClusterConfig

T = TypeVar("T")

#: Seconds to wait for the API server to answer an ordinary request.
REQUEST_TIMEOUT = 30


@dataclass
class Cluster:
    """Typed API groups sharing one client (and one connection pool)."""

    config: ClusterConfig
    core: k8s_client.CoreV1Api = field(init=False)
    apps: k8s_client.AppsV1Api = field(init=False)
    batch: k8s_client.BatchV1Api = field(init=False)
    auth: k8s_client.AuthorizationV1Api = field(init=False)

    def __post_init__(self) -> None:
        api = self.config.api_client
        self.core = k8s_client.CoreV1Api(api)
        self.apps = k8s_client.AppsV1Api(api)
        self.batch = k8s_client.BatchV1Api(api)
        self.auth = k8s_client.AuthorizationV1Api(api)

    @property
    def namespace(self) -> str:
        return self.config.namespace


def status_message(exc: ApiException) -> str:
    """The ``message`` of a Kubernetes ``Status`` body, else the HTTP reason."""
    body = getattr(exc, "body", None)
    if body:
        try:
            data = json.loads(body)
            if isinstance(data, dict) and data.get("message"):
                return str(data["message"])
        except (ValueError, TypeError):
            pass
    return f"{exc.status} {exc.reason}".strip()


def call(what: str, fn: Callable[..., T], *args: Any, server: str = "", **kwargs: Any) -> T:
    """Run one API call; errors become RunFailed naming ``what`` was being done.

    404s are re-raised as ApiException so the caller can say what was not found in the
    user's words.
    """
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            raise
        if exc.status in (401,):
            raise RunFailed(f"the API server refused our credentials while trying to {what}; "
                            "log in again or check --context") from None
        if exc.status == 403:
            raise RunFailed(f"not allowed to {what}: {status_message(exc)}; "
                            "ask a cluster admin for the RBAC in manifests/ "
                            "(kubectl offwake setup --dry-run shows it)") from None
        raise RunFailed(f"cannot {what}: {status_message(exc)}") from None
    except RunFailed:
        raise
    except Exception as exc:
        if _is_connection_error(exc):
            where = f" at {server}" if server else ""
            raise RunFailed(f"cannot reach the API server{where} to {what}: "
                            f"{_short(exc)}; check --context/--kubeconfig and the network"
                            ) from None
        raise


def get_json(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A call whose answer we want as the plain JSON the API sent (camelCase dicts).

    Pure code (target resolution, naming) reads these dicts, so it can be tested with
    literal YAML-shaped data and never depends on the client's model classes.
    """
    response = call(what, fn, *args, _preload_content=False, **kwargs)
    return json.loads(response.data)


def maybe_json(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """:func:`get_json`, returning None for a 404."""
    try:
        return get_json(what, fn, *args, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _is_connection_error(exc: BaseException) -> bool:
    import urllib3.exceptions

    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, OSError))


def _short(exc: BaseException) -> str:
    text = str(exc)
    reason = getattr(exc, "reason", None)
    if reason is not None:
        text = str(reason)
    return text.split("\n")[0][:200]
