"""``python3 -m kubectl_offwake.collector`` (and the zipapp's entry point)."""

import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())
