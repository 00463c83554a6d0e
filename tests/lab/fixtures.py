"""pytest fixtures for the lab, importable by any test package.

    # tests/conftest.py registers them once for every test folder (one lab per pytest run):
    def test_something(lab): ...          # or lab_cluster

`lab_cluster` (session): a running lab. With OFFWAKE_LAB_STATE=/tmp/offwake-lab set, it
attaches to a lab started by `tests/lab/up` (and leaves it running); otherwise it starts a
private lab with prefix OFFWAKE_LAB_PREFIX or `offwake-lab-<pid>` (after removing what
labs of killed runs left, `cluster.private_lab`) and stops it at the end.
`lab` (function): the same lab, with denials/admission rules/image-pull failures reset after
each test. Both skip when not root. A private lab's state dir (logs) is removed after the
session unless OFFWAKE_LAB_KEEP is set.
"""

from __future__ import annotations

import os
import shutil
from typing import Iterator

import pytest

from .cluster import Lab, private_lab


@pytest.fixture(scope="session")
def lab_cluster() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, cgroups)")
    state = os.environ.get("OFFWAKE_LAB_STATE")
    if state:
        yield Lab.attach(state)
        return
    prefix = os.environ.get("OFFWAKE_LAB_PREFIX")
    lab = Lab(prefix=prefix).start() if prefix else private_lab("offwake-lab")
    try:
        yield lab
    finally:
        lab.stop()
        if not lab.leftovers() and not os.environ.get("OFFWAKE_LAB_KEEP"):
            shutil.rmtree(lab.state_dir, ignore_errors=True)


@pytest.fixture
def lab(lab_cluster: Lab) -> Iterator[Lab]:
    yield lab_cluster
    lab_cluster.reset()
