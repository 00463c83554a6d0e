"""Which collector image a run uses, and why: constants and pure functions only.

The choice, first match wins: ``--image``, then ``$OFFWAKE_IMAGE``, then the cluster's
choice (key ``image`` of ConfigMap ``offwake-config`` in the collector namespace, written
by ``kubectl offwake setup --image REF``), then the default tied to this plugin's version.
Nothing here imports the kubernetes client: the release workflow imports this module to
learn the reference it pushes (:func:`default_image`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Mapping, Optional

from .. import __version__
from ..errors import BadInput, RunFailed

#: Where releases push the collector image (``image/build --push``), tagged with the version.
DEFAULT_REPOSITORY = "ghcr.io/kubectl-offwake/collector"
#: The environment variable that picks an image for every run from this shell.
ENV_VAR = "OFFWAKE_IMAGE"
#: The cluster's choice: this ConfigMap in the collector namespace, this key.
CONFIG_MAP = "offwake-config"
CONFIG_KEY = "image"

#: Where a choice came from (:attr:`ImageChoice.origin`), in precedence order.
Origin = Literal["flag", "environment", "cluster", "default"]

# A reference as the container runtimes accept it: [host[:port]/]path[:tag][@digest]
# (lowercase path components, tag up to 128 characters, a sha256 digest).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*(?::[0-9]+)?/)?"
_REFERENCE = re.compile(
    rf"^{_HOST}{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?$"
)


def default_image(version: str = __version__) -> str:
    """The image a release of ``version`` pushes and uses unless told otherwise."""
    return f"{DEFAULT_REPOSITORY}:{version}"


def check_reference(ref: str, where: str) -> str:
    """``ref`` stripped, or BadInput naming ``where`` it came from when it is no reference."""
    text = ref.strip()
    if not _REFERENCE.match(text):
        raise BadInput(f"{where} {ref!r} is not an image reference; use one like "
                       f"registry.example.com/offwake-collector:{__version__}")
    return text


@dataclass(frozen=True)
class ImageChoice:
    """The collector image of a run, and where that choice came from."""

    image: str
    origin: Origin
    namespace: str = ""  # the collector namespace (for the cluster's choice)

    def describe(self) -> str:
        """Where the choice came from, as the live progress, --dry-run and ``version`` say it."""
        if self.origin == "flag":
            return "from --image"
        if self.origin == "environment":
            return f"from ${ENV_VAR}"
        if self.origin == "cluster":
            return (f"the cluster's choice: ConfigMap {self.namespace}/{CONFIG_MAP}, "
                    "set by `kubectl offwake setup --image`")
        return f"the default of kubectl-offwake {__version__}"


def needs_cluster(flag: Optional[str], environ: Mapping[str, str]) -> bool:
    """Whether the cluster's ConfigMap decides (neither the flag nor the environment did)."""
    return not (flag or "").strip() and not environ.get(ENV_VAR, "").strip()


def choose(flag: Optional[str], environ: Mapping[str, str], cluster: Optional[str],
           namespace: str) -> ImageChoice:
    """Flag, then environment, then the cluster's ConfigMap, then the version's default.

    ``cluster`` is the ConfigMap's value as read (None: no ConfigMap or no key). A value
    that is no image reference is refused naming where it came from, never used: bad
    input for the flag and the environment (exit 2), a broken cluster for the ConfigMap.
    """
    if flag is not None and flag.strip():
        return ImageChoice(check_reference(flag, "--image"), "flag", namespace)
    env = environ.get(ENV_VAR, "")
    if env.strip():
        return ImageChoice(check_reference(env, f"${ENV_VAR}"), "environment", namespace)
    if cluster is not None and cluster.strip():
        where = f"ConfigMap {namespace}/{CONFIG_MAP} key {CONFIG_KEY!r}"
        try:
            return ImageChoice(check_reference(cluster, where), "cluster", namespace)
        except BadInput as exc:
            raise RunFailed(f"{exc}; fix it with `kubectl offwake setup --image REF`") from None
    return ImageChoice(default_image(), "default", namespace)
