"""The collector image's build (image/build): Debian packages to an OCI archive."""
