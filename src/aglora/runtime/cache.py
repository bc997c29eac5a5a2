"""The one keyed disk cache: results that depend only on their inputs, kept between runs.

Entries live under `cache_dir()` (`$AGLORA_CACHE`, default `~/.cache/aglora`), or in a folder the
caller owns (a bench's `shared/`). An entry's name is `cache_key(parts)`: a digest of the parts
as canonical JSON plus the versions of aglora, torch and transformers, so an upgrade that could
change numbers never reads an old entry. A model enters a key through one identity, the digest
of its base weights (`aglora.model.identity.weights_digest`). Entries are written atomically;
a corrupt entry in the user's cache is an error that names the file to delete, one in a folder
the caller owns is computed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

from aglora.errors import AgloraError
from aglora.runtime.artifacts import read_json, write_json
from aglora.runtime.hashes import changed_artifacts, path_hashes, read_result

T = TypeVar("T")
_log = logging.getLogger("aglora")


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


def cached_json(path: Path, compute: Callable[[], T], key: str | None = None,
                artifacts: Sequence[str] = ()) -> T:
    """The JSON value stored at `path`, or `compute()` stored there first.

    `key`: for a fixed file name that holds one entry at a time in a folder the caller owns (a
    bench's `shared/`): the stored value counts only when it was stored under the same key, and
    it is trusted no further than that: a damaged entry (truncated, not JSON) is computed again.
    `artifacts`: files beside `path` that `compute` writes; their sha256 are stored with the entry
    and it counts only while they match (a truncated or edited file is computed again).
    """
    path = Path(path)
    if path.is_file():
        stored = _stored(path, key, artifacts)
        if stored is not _NONE:
            return stored
    value = compute()
    entry: dict[str, Any] = {"key": key, "value": value}
    if artifacts:
        entry["artifacts"] = path_hashes(path.parent, artifacts)
    write_json(path, entry)
    return value


_NONE = object()  # no usable entry


def _stored(path: Path, key: str | None, artifacts: Sequence[str]) -> Any:
    """The value of the entry at `path`, or `_NONE` when it must be computed (again)."""
    if key is None:  # the user's cache: a damaged entry is refused, naming the file
        data = read_json(path)
        if not isinstance(data, dict) or "value" not in data:
            raise AgloraError(f"{path}: not a cache entry; delete the file and rerun")
        return data["value"]
    data, why = read_result(path)
    if data is not None and "value" not in data:
        why = f"{path} is not a cache entry"
    elif data is not None and data.get("key") != key:
        return _NONE  # another entry: replaced
    elif data is not None and artifacts:
        changed = changed_artifacts(data.get("artifacts"), path.parent, artifacts)
        why = f"{path}: {changed}" if changed else None
    if why or data is None:
        if why:
            _log.warning(f"[aglora] {why}; computed again")
        return _NONE
    return data["value"]
