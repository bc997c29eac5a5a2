"""What the report reads from a run directory; only `metrics.json` is required.

A missing or partly malformed optional artifact (probe results, training history, scores, masks,
config) skips its section instead of failing the report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aglora.runtime.artifacts import read_json


@dataclass
class RunInputs:
    run_dir: Path
    metrics: dict
    probes: list[dict] | None = None
    bad_probe_lines: int = 0
    history: dict | None = None
    scores: dict[str, Any] | None = None
    masks: dict | None = None
    config_text: str | None = None
    default_leak_patterns: list[str] = field(default_factory=list)


def _read_jsonl(path: Path) -> tuple[list[dict], int]:
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(obj, dict):
            rows.append(obj)
        else:
            bad += 1
    return rows, bad


def _concept_leak_patterns(config_text: str | None) -> list[str]:
    """The concept's default leak patterns (for probes that carry none), if they can be found."""
    if not config_text:
        return []
    try:
        import yaml

        from aglora.concepts import load_concept

        ref = (yaml.safe_load(config_text) or {}).get("concept")
        return list(load_concept(str(ref)).leak_patterns) if ref else []
    except Exception:  # a report must not fail because the concept file moved
        return []


def load_inputs(run_dir: Path) -> RunInputs:
    run_dir = Path(run_dir)
    inputs = RunInputs(run_dir, read_json(run_dir / "metrics.json"))
    if (run_dir / "probe_results.jsonl").is_file():
        inputs.probes, inputs.bad_probe_lines = _read_jsonl(run_dir / "probe_results.jsonl")
    if (run_dir / "train_history.json").is_file():
        inputs.history = read_json(run_dir / "train_history.json")
    if (run_dir / "scores.safetensors").is_file():
        from safetensors.torch import load_file

        inputs.scores = load_file(str(run_dir / "scores.safetensors"))
    if (run_dir / "masks.json").is_file():
        inputs.masks = read_json(run_dir / "masks.json")
    if (run_dir / "config.yaml").is_file():
        inputs.config_text = (run_dir / "config.yaml").read_text(encoding="utf-8")
    inputs.default_leak_patterns = _concept_leak_patterns(inputs.config_text)
    return inputs
