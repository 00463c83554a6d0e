"""The lab's own tests use the `lab` and `lab_cluster` fixtures of tests/conftest.py."""
