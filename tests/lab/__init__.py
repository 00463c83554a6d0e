"""An emulated Kubernetes cluster on this machine, for end-to-end tests (see README.md)."""
