"""The one keyed disk cache: results that depend only on their inputs, kept between runs.

Entries live under `cache_dir()` (`$AGLORA_CACHE`, default `~/.cache/aglora`), or in a folder the
caller owns (a bench's `shared/`). An entry's name is `cache_key(parts)`: a digest of the parts
as canonical JSON plus the versions of aglora, torch and transformers, so an upgrade that could
change numbers never reads an old entry. A model enters a key through one identity, the digest
of its base weights (`aglora.model.identity.weights_digest`). Entries are written atomically;
a corrupt entry is an error that names the file to delete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

from aglora.errors import AgloraError
from aglora.runtime.artifacts import read_json, write_json

T = TypeVar("T")


def cache_dir() -> Path:
    """The user's cache folder (`$AGLORA_CACHE`, default `~/.cache/aglora`)."""
    return Path(os.environ.get("AGLORA_CACHE", Path.home() / ".cache" / "aglora"))


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def cache_key(parts: Any, length: int = 24) -> str:
    """Hex digest of `parts` (JSON-able; other objects by `str`) and the library versions."""
    blob = json.dumps({"parts": parts, "versions": [_version(p) for p in
                                                    ("aglora", "torch", "transformers")]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def cached_json(path: Path, compute: Callable[[], T], key: str | None = None) -> T:
    """The JSON value stored at `path`, or `compute()` stored there first.

    `key`: for a fixed file name that holds one entry at a time (a bench's `shared/`): the
    stored value counts only when it was stored under the same key, else it is recomputed.
    """
    path = Path(path)
    if path.is_file():
        data = read_json(path)
        if not isinstance(data, dict) or "value" not in data:
            raise AgloraError(f"{path}: not a cache entry; delete the file and rerun")
        if key is None or data.get("key") == key:
            return data["value"]
    value = compute()
    write_json(path, {"key": key, "value": value})
    return value
