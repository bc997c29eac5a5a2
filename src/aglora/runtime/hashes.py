"""Content hashes of what a result was computed from, recorded beside it, and why a recorded
result can no longer be trusted.

Resume trusts nothing (docs/design.md). A run's stages (`state.json`, `aglora.pipeline.run`), a
bench's cells and shared steps (`aglora.bench`) and the controlled track's results
(`aglora.controlled`) each record, beside what they wrote, the sha256 of every input they read
(the resolved configuration, the concept, include and probe files, the artifacts of the steps
before) and of the artifacts they wrote. A rerun compares those with the files as they are now
and recomputes a result when anything differs, is missing, or its JSON cannot be read; paths,
sizes and modification times are never taken as evidence.

Every check here answers with the reason a result must be computed (again), or None when it
still holds, so the callers can say why they redo work.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from aglora.runtime.artifacts import digest, sha256_bytes

Hashes = dict[str, str | None]  # name -> sha256 (None: the file is missing)


def text_hash(text: str) -> str:
    """sha256 of a text (a resolved configuration)."""
    return sha256_bytes(text.encode())


def json_hash(value: object) -> str:
    """sha256 of a JSON-able value in canonical form (sorted keys)."""
    return text_hash(json.dumps(value, sort_keys=True, default=str))


def file_hashes(paths: Iterable[str | os.PathLike], prefix: str = "concept:") -> Hashes:
    """sha256 of each input file, keyed `PREFIX<path>` (a directory: of its files)."""
    return {f"{prefix}{p}": digest(p) for p in paths}


def path_hashes(root: Path, rels: Iterable[str]) -> Hashes:
    """sha256 of each artifact `root/REL`, keyed by REL."""
    return {rel: digest(Path(root) / rel) for rel in rels}


def changed_artifacts(recorded: object, root: Path, rels: Iterable[str] | None = None
                      ) -> str | None:
    """Why the artifacts recorded as `recorded` ({REL: sha256}) cannot be trusted now, or None.
    `rels`: the artifacts that must be there (default: the recorded ones)."""
    if not isinstance(recorded, dict) or (rels is not None and not recorded):
        return "finished by an earlier aglora without artifact hashes"
    for rel in (recorded if rels is None else rels):
        now = digest(Path(root) / rel)
        if now is None:
            return f"{rel} is missing"
        if recorded.get(rel) != now:
            return f"{rel} changed since it was written (truncated or edited)"
    return None


def changed_inputs(recorded: object, now: Mapping[str, str | None]) -> str | None:
    """Why a result computed from the inputs `recorded` must be computed again from the inputs
    `now` (both {name: sha256}), or None when they are the same."""
    if not isinstance(recorded, dict):
        return "finished by an earlier aglora without input hashes"
    for key, value in now.items():
        if recorded.get(key) != value:
            return f"its input {key.removeprefix('concept:')} changed"
    if set(recorded) != set(now):
        return "its input files changed"
    return None


def read_result(path: str | os.PathLike) -> tuple[dict | None, str | None]:
    """The JSON object a finished step left at `path`, without trusting it: (object, None);
    (None, None) when there is no file; (None, why) when it is damaged (not valid JSON, e.g.
    truncated, or not a JSON object), so the caller computes it again instead of failing."""
    path = Path(path)
    if not path.is_file():
        return None, None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        detail = f"line {exc.lineno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) \
            else "not UTF-8"
        return None, f"{path} is not valid JSON ({detail}; truncated?)"
    if not isinstance(value, dict):
        return None, f"{path} holds no JSON object"
    return value, None
