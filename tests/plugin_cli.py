"""How tests run the real plugin: ``python -m kubectl_offwake`` from this checkout."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]


def plugin_env() -> Dict[str, str]:
    """The environment with this checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def plugin_cmd(*args: str) -> List[str]:
    return [sys.executable, "-m", "kubectl_offwake", *args]
