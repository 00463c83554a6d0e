"""The cluster's collector image: ConfigMap ``offwake-config``, read by every run and by
``version``, written by ``setup --image`` (through :mod:`.admin`).

Read on every run, never cached on the laptop: when an admin moves the cluster to another
image, every on-call engineer's next run uses it without a flag.
"""

from __future__ import annotations

from typing import Mapping, Optional

from ..errors import RunFailed
from .api import Cluster, maybe_json
from .image import CONFIG_KEY, CONFIG_MAP, ImageChoice, choose, needs_cluster


def read(cluster: Cluster, namespace: str) -> Optional[str]:
    """The ``image`` of ``offwake-config`` in ``namespace``; None when there is none."""
    data = maybe_json(f"read ConfigMap {namespace}/{CONFIG_MAP} (the cluster's collector image)",
                      cluster.core.read_namespaced_config_map, CONFIG_MAP, namespace,
                      server=cluster.config.server)
    if data is None:
        return None
    value = (data.get("data") or {}).get(CONFIG_KEY)
    if value is not None and not isinstance(value, str):
        raise RunFailed(f"ConfigMap {namespace}/{CONFIG_MAP} key {CONFIG_KEY!r} is not text; "
                        "fix it with `kubectl offwake setup --image REF`")
    return value


def image_choice(cluster: Cluster, namespace: str, flag: Optional[str],
                 environ: Mapping[str, str]) -> ImageChoice:
    """What a run uses; the cluster is asked only when neither flag nor environment chose."""
    if not needs_cluster(flag, environ):
        return choose(flag, environ, None, namespace)
    return choose(None, environ, read(cluster, namespace), namespace)
