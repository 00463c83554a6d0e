"""The one interruption rule: Ctrl-C once asks for a graceful stop, twice forces it."""

from __future__ import annotations

import os
import signal
from typing import List

import pytest

from kubectl_offwake.pipeline.interrupt import FORCED, GRACEFUL, Interruptions


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_once_graceful_twice_forced_then_the_old_handlers_are_back(sig: int) -> None:
    stops: List[bool] = []
    said: List[str] = []
    before = signal.getsignal(sig)
    with Interruptions(stops.append, said.append) as interruptions:
        os.kill(os.getpid(), sig)  # handled between two bytecodes of this thread
        assert stops == [False] and interruptions.interrupted
        os.kill(os.getpid(), sig)
        assert stops == [False, True]
    assert said == [GRACEFUL, FORCED]
    assert signal.getsignal(sig) is before
