"""`aglora eval --probes ...`: evaluate any probe files on a base model, with or without adapter.

The base model comes from --base, else from the adapter's saved config, else the embedded model.
Results go to OUT/metrics.json and OUT/probe_results.jsonl (same schema as a run's eval stage).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aglora.concepts import Probe, load_probes, load_tofu
from aglora.config import EvalConfig, ModelConfig, config_from_dict
from aglora.errors import AgloraError
from aglora.io import write_eval_outputs


def _adapter_dir(path: Path) -> Path:
    return path / "adapter" if (path / "adapter" / "adapter_config.json").is_file() else path


def _model_config(args: argparse.Namespace) -> tuple[ModelConfig, EvalConfig, list[str]]:
    if args.base:
        return ModelConfig(name_or_path=args.base), EvalConfig(), []
    if args.adapter:
        meta_path = _adapter_dir(Path(args.adapter)) / "aglora.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            cfg = config_from_dict(meta["config"])
            from aglora.concepts import load_concept
            try:
                patterns = load_concept(cfg.concept).leak_patterns
            except AgloraError:
                patterns = []
            return cfg.model, cfg.eval, patterns
    return ModelConfig(), EvalConfig(), []


def load_probe_files(paths: list[str], skip_invalid: bool) -> tuple[list[Probe], int]:
    probes: list[Probe] = []
    skipped = 0
    for path in paths:
        got, n = load_probes(path, skip_invalid=skip_invalid)
        probes += got
        skipped += n
    return probes, skipped


def standalone_eval(args: argparse.Namespace) -> dict:
    from aglora.evaluate import evaluate
    from aglora.models import load_model

    probes, skipped = load_probe_files(args.probes, args.skip_invalid)
    if skipped:
        print(f"[aglora] skipped {skipped} invalid probe line(s)")
    if args.tofu:
        probes += load_tofu()
    model_cfg, eval_cfg, patterns = _model_config(args)
    if args.samples is not None:
        eval_cfg.n_samples = args.samples
    model, tok = load_model(model_cfg)
    if args.adapter:
        from aglora.lora import load_adapter
        model = load_adapter(model, _adapter_dir(Path(args.adapter)))
    metrics, records = evaluate(model, tok, probes, eval_cfg, patterns)
    metrics["skipped_invalid_lines"] = skipped
    metrics["probe_files"] = [str(p) for p in args.probes]
    metrics["adapter"] = str(args.adapter) if args.adapter else None
    if args.relearn:
        if not args.adapter:
            raise AgloraError("--relearn needs --adapter (there is nothing unlearned to attack)")
        from aglora.relearn import relearn_attack
        metrics["relearn"] = relearn_attack(model, tok, probes, args.relearn, eval_cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_eval_outputs(out, metrics, records)
    print(f"[aglora] wrote {out / 'metrics.json'}")
    return metrics
