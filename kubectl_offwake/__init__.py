"""kubectl-offwake: why were Envoy's threads off the CPU, and who woke them."""

__version__ = "0.1.0"
