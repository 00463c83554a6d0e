"""The lab's own tests use the fixtures every other test package can import."""

from lab.fixtures import lab, lab_cluster  # noqa: F401
