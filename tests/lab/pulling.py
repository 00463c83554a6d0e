"""A node's image manager: imagePullPolicy, pulls in the background, back-off, the events.

Which images are pulled: a reference whose registry is the lab's own registry (its address
`127.0.0.1:PORT`, or `localhost:PORT`) is pulled from it and runs in its own root
filesystem. Every other reference (`busybox`, `istio/proxyv2`, `ghcr.io/...`) is a
stand-in that lives elsewhere: it counts as present on every node and its containers run
on the host's filesystem. References matching `lab.fail_image_pull` patterns, or on a
registry ending in `.invalid`, never pull.

Per container start, as kubelet does: `Never` uses the image if the node has it, else
ErrImageNeverPull; `IfNotPresent` uses it if present, else pulls; `Always` resolves it at
the registry every time (the unpacked root is reused when the digest is the same). A
failed pull is ErrImagePull, then ImagePullBackOff until the back-off expires and the
pull is tried again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple, Union

from .images import Image, ImageStore, PullError, Reference

if TYPE_CHECKING:
    from .core import LabCore

#: The image of a stand-in container: it runs on the host's filesystem.
STAND_IN = "host"
Resolved = Union[Image, str]
Event = Callable[[str, str, str], None]  # (reason, message, type)


def go_duration(seconds: float) -> str:
    """Go's time.Duration formatting at millisecond precision (`1.234s`, `56ms`)."""
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


class PullJob:
    """One pull running in its own thread; several containers may wait on it."""

    def __init__(self, store: ImageStore, image: str) -> None:
        self.image = image
        self.started = time.monotonic()
        self.finished = 0.0
        self.result: Optional[Image] = None
        self.error: Optional[PullError] = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(store,), daemon=True,
                                       name=f"pull-{image}")
        self.thread.start()

    def _run(self, store: ImageStore) -> None:
        try:
            self.result = store.pull(self.image)
        except PullError as exc:
            self.error = exc
        except Exception as exc:  # a lab bug must still end as a failed pull, not a hang
            self.error = PullError("Unknown", f'failed to pull and unpack image '
                                   f'"{self.image}": {exc}')
        self.finished = time.monotonic()
        self.done.set()


@dataclass
class PullState:
    """A container's view of its image: the pull it waits for and its back-off."""

    job: Optional[PullJob] = None
    backoff: float = 0.0
    retry_at: float = 0.0
    error: str = ""
    reported: str = ""  # the waiting reason whose events were recorded (kubelet syncs
    # far less often than the lab's workers tick, so events are recorded once per state)


class ImageManager:
    """The images present on one node, and the pulls in flight there."""

    def __init__(self, lab: LabCore) -> None:
        self.lab = lab
        self.present: Dict[str, Image] = {}
        self.jobs: Dict[str, PullJob] = {}
        self.lock = threading.Lock()

    def _pulled_here(self, image: str) -> bool:
        host = Reference.parse(image).host
        port = self.lab.registry.rsplit(":", 1)[-1]
        return bool(self.lab.registry) and host in (self.lab.registry, f"localhost:{port}")

    def ensure(self, image: str, policy: str, st: PullState,
               event: Event) -> Tuple[Optional[Resolved], Dict[str, str]]:
        """(image to run, {}) when it can start; (None, waiting state) while it cannot."""
        now = time.monotonic()
        key = str(Reference.parse(image))
        unpullable = self.lab.image_unpullable(image)
        stand_in = not unpullable and not self._pulled_here(image)
        present: Optional[Resolved] = STAND_IN if stand_in else self.present.get(key)
        if st.job is None and present is not None and (policy != "Always" or stand_in):
            event("Pulled", f'Container image "{image}" already present on machine', "Normal")
            return present, {}
        if st.job is None and policy == "Never":
            msg = f'Container image "{image}" is not present with pull policy of Never'
            if st.reported != "ErrImageNeverPull":
                event("ErrImageNeverPull", msg, "Warning")
                event("Failed", "Error: ErrImageNeverPull", "Warning")
                st.reported = "ErrImageNeverPull"
            return None, {"reason": "ErrImageNeverPull", "message": msg}
        if st.job is None:
            if now < st.retry_at:
                if st.reported != "ImagePullBackOff":
                    event("BackOff", f'Back-off pulling image "{image}"', "Normal")
                    event("Failed", "Error: ImagePullBackOff", "Warning")
                    st.reported = "ImagePullBackOff"
                return None, {"reason": "ImagePullBackOff",
                              "message": f'Back-off pulling image "{image}": ErrImagePull: '
                                         f"{st.error}"}
            event("Pulling", f'Pulling image "{image}"', "Normal")
            st.reported = "Pulling"
            if unpullable:
                ref = Reference.parse(image)
                return self._failed(image, st, event, PullError(
                    "NotFound", f'failed to pull and unpack image "{ref}": failed to resolve '
                    f'reference "{ref}": {ref}: not found'))
            with self.lock:
                job = self.jobs.get(key)
                if job is None or job.done.is_set():
                    job = self.jobs[key] = PullJob(self.lab.images, image)
            st.job = job
        job = st.job
        if not job.done.is_set():
            if st.error:  # a retry: the kubelet shows the last failure until the pull ends
                return None, {"reason": "ImagePullBackOff",
                              "message": f'Back-off pulling image "{image}": ErrImagePull: '
                                         f"{st.error}"}
            return None, {"reason": "ContainerCreating"}
        st.job = None
        if job.error is not None:
            return self._failed(image, st, event, job.error)
        assert job.result is not None
        st.backoff, st.retry_at, st.error = 0.0, 0.0, ""
        self.present[key] = job.result
        took = go_duration(job.finished - job.started)
        event("Pulled", f'Successfully pulled image "{image}" in {took} ({took} including '
                        f"waiting). Image size: {job.result.size} bytes.", "Normal")
        return job.result, {}

    def _failed(self, image: str, st: PullState, event: Event,
                error: PullError) -> Tuple[None, Dict[str, str]]:
        st.error = error.cri()
        st.backoff = min(self.lab.backoff_max,
                         st.backoff * 2 if st.backoff else self.lab.backoff_base)
        st.retry_at = time.monotonic() + st.backoff
        event("Failed", f'Failed to pull image "{image}": {st.error}', "Warning")
        event("Failed", "Error: ErrImagePull", "Warning")
        return None, {"reason": "ErrImagePull", "message": st.error}
