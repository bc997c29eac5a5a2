"""aglora: make a language model forget one concept with an activation-guided masked LoRA adapter.

The adapter's update is confined to the MLP neurons that carry the concept; the base weights
stay untouched, and every run ends with a report of what was forgotten, what was kept and what
it cost. The command line is `aglora` (`aglora.cli`); the same work from Python:

    import aglora
    cfg = aglora.load_config("configs/demo.yaml", ["train.lr=5e-4"])
    run_dir = aglora.run(cfg, "runs/mine")        # all six stages, resumable
    metrics = aglora.evaluate_files(["probes.jsonl"], "runs/mine-eval", adapter="runs/mine")
    model, tok = aglora.load_model(cfg.model)
    unlearned = aglora.load_adapter(model, "runs/mine")

Every function imports what it needs when called, so `import aglora` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aglora.config import ModelConfig, RunConfig

__version__ = "0.1.0"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """A run configuration from YAML (or all defaults) with `KEY=VALUE` overrides, checked."""
    from aglora.config import load_config as _load
    return _load(path, overrides)


def run(cfg: RunConfig, out: str | Path, force: bool = False, until: str | None = None) -> Path:
    """Run every unfinished stage of `cfg` into run directory `out` (resumes); returns `out`."""
    from aglora.pipeline.run import open_run, run_all
    from aglora.runtime.lock import release
    try:
        run_all(open_run(cfg, Path(out), force=force, check=True), until=until)
    finally:
        release(Path(out))  # the run directory's lock
    return Path(out)


def evaluate_files(probe_files: list[str], out: str | Path, adapter: str | Path | None = None,
                   **options) -> dict:
    """Evaluate probe files on the base model, or base vs `adapter`; writes `out`/metrics.json.
    Options: base, skip_invalid, tofu, samples, relearn, overrides
    (see `aglora.pipeline.eval.standalone.evaluate_files`)."""
    from aglora.pipeline.eval.standalone import evaluate_files as _evaluate
    return _evaluate(probe_files, Path(out), Path(adapter) if adapter else None, **options)


def load_model(cfg: ModelConfig | None = None):
    """(model, tokenizer) for a model config (default: the embedded SmolLM2-135M-Instruct)."""
    from aglora.config import ModelConfig
    from aglora.model.load import load_model as _load
    return _load(cfg or ModelConfig())


def load_adapter(base, path: str | Path):
    """A saved adapter (a run directory or its adapter/ folder) on `base`, refusing an adapter
    made for another base model."""
    from aglora.model.adapter import load_adapter as _load
    return _load(base, Path(path))
