"""TODO docstring."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("AGLORA_CACHE", Path.home() / ".cache" / "aglora"))
