"""A bench's settings (the shared run config, seeds, method settings, light evaluation) and its
method entries (a registered method with config overrides and a label), built by the settings
toolkit and checked before any model loads."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aglora.config import RunConfig
from aglora.errors import AgloraError
from aglora.methods import METHODS, get_method
from aglora.methods.act_edit import ActEditConfig
from aglora.methods.rmu import RmuConfig
from aglora.settings import apply_overrides, build, check_range, load_yaml, setting

SPLITS_GEN = ("forget", "neighbor")


@dataclass
class BenchEvalConfig:
    generate_splits: list[str] = setting(
        list(SPLITS_GEN),
        "splits that get one greedy generation (forget: leaks; neighbor: fluency)")
    relearn_steps: int = setting(10, "steps of the relearning attack per cell (0 = off)")
    relearn_lr: float = setting(1e-5, "learning rate of the relearning attack")
    relearn_batch_size: int = setting(4, "batch size of the relearning attack")

    def __post_init__(self) -> None:
        bad = [s for s in self.generate_splits if s not in ("forget", "neighbor", "utility")]
        if bad:
            raise AgloraError(f"eval.generate_splits: unknown split {bad[0]!r}; choose from "
                              "forget, neighbor, utility")
        check_range("eval.relearn_steps", self.relearn_steps, 0)
        check_range("eval.relearn_lr", self.relearn_lr, 0, low_open=True)
        check_range("eval.relearn_batch_size", self.relearn_batch_size, 1)


@dataclass
class BenchSettings:
    run: RunConfig = field(default_factory=RunConfig, metadata={
        "help": "the run every method shares: concept, probes, step budget, eval settings"})
    seeds: int = setting(3, "seeds per method (train.seed = 0..seeds-1)")
    rmu: RmuConfig = field(default_factory=RmuConfig)
    act_edit: ActEditConfig = field(default_factory=ActEditConfig)
    eval: BenchEvalConfig = field(default_factory=BenchEvalConfig)

    def __post_init__(self) -> None:
        check_range("seeds", self.seeds, 1, fix="seeds per method")


@dataclass
class MethodEntry:
    """One row of the table: a registered method and config overrides (a 'setting')."""

    method: str
    label: str
    overrides: list[str] = field(default_factory=list)


@dataclass
class BenchConfig:
    raw: dict[str, Any]          # the YAML mapping without 'methods' (overrides apply here)
    settings: BenchSettings
    entries: list[MethodEntry]

    def cell_settings(self, entry: MethodEntry, seed: int) -> BenchSettings:
        data = apply_overrides(copy.deepcopy(self.raw),
                               [*entry.overrides, f"run.train.seed={seed}"])
        return build(BenchSettings, data)


def _entries(raw: Any) -> list[MethodEntry]:
    if raw is None:
        return [MethodEntry(m, m) for m in METHODS]
    if not isinstance(raw, list):
        raise AgloraError("bench config 'methods' must be a list of method names or mappings "
                          "{method: NAME, label: TEXT, set: [KEY=VALUE, ...]}")
    out = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"method": item}
        if not isinstance(item, dict) or not isinstance(item.get("method"), str):
            raise AgloraError(f"bench config methods[{i}]: expected a name or a mapping with "
                              "'method'")
        unknown = sorted(set(item) - {"method", "label", "set"})
        if unknown:
            raise AgloraError(f"bench config methods[{i}]: unknown key '{unknown[0]}' (known: "
                              "label, method, set)")
        get_method(item["method"])
        sets = item.get("set") or []
        if isinstance(sets, str):
            sets = [sets]
        out.append(MethodEntry(item["method"], str(item.get("label") or item["method"]),
                               [str(s) for s in sets]))
    labels = [e.label for e in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise AgloraError(f"bench config: label {dup[0]!r} appears twice; give each setting its "
                          "own 'label'")
    return out


def load_bench_config(path: str | Path, overrides: list[str] | None = None) -> BenchConfig:
    data = load_yaml(path)
    run = data.get("run") or {}
    if isinstance(run, dict) and isinstance(run.get("concept"), str):
        concept = run["concept"]
        if not concept.startswith("builtin:") and not Path(concept).is_absolute():
            run["concept"] = str((Path(path).parent / concept).resolve())
    data = apply_overrides(data, overrides or [])
    entries = _entries(data.pop("methods", None))
    settings = build(BenchSettings, data)
    for e in entries:  # fail now, not after an hour, on a bad per-method override
        BenchConfig(data, settings, entries).cell_settings(e, 0)
    return BenchConfig(data, settings, entries)


def select_entries(cfg: BenchConfig, names: str | None) -> list[MethodEntry]:
    if not names:
        return cfg.entries
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {e.label for e in cfg.entries} | {e.method for e in cfg.entries}
    bad = [n for n in wanted if n not in known]
    if bad:
        raise AgloraError(f"--methods: {bad[0]!r} is not in the bench config; choose from "
                          f"{', '.join(e.label for e in cfg.entries)}")
    return [e for e in cfg.entries if e.label in wanted or e.method in wanted]

