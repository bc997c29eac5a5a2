"""Time the evaluation of a run's probe set, part by part, and print a table.

    python benchmarks/eval_speed.py runs/demo

Loads the run's base model and adapter, then times likelihood scoring and generation on each
side (base, after) and the KL pass, with the run's eval settings. Issue 3's target for the demo
probe set on 2 CPU cores is 180 s in all.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from aglora.evaluate import kl_per_token, measure
from aglora.lora import adapter_disabled
from aglora.pipeline import eval_probes, reopen_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    ctx = reopen_run(args.run_dir)
    model, tok = ctx.adapted()
    probes = eval_probes(ctx)
    cfg = ctx.cfg.eval
    gen_mask = [p.split in ("forget", "neighbor") for p in probes]
    rows = []
    for label in ("base", "after"):
        no_gen = [False] * len(probes)
        with adapter_disabled(model) if label == "base" else torch.no_grad():
            start = time.time()
            measure(model, tok, probes, cfg, no_gen, label)
            rows.append((f"likelihood ({label})", time.time() - start))
            start = time.time()
            only_gen = [p for p, g in zip(probes, gen_mask, strict=True) if g]
            measure(model, tok, [p.__class__(**{**p.to_dict(), "distractors": []})
                                 for p in only_gen], cfg, [True] * len(only_gen), label)
            rows.append((f"generation ({label})", time.time() - start))
    start = time.time()
    kl_per_token(model, tok, [p for p in probes if p.split == "neighbor"], cfg.batch_size)
    rows.append(("KL on neighbours", time.time() - start))
    total = sum(t for _, t in rows)
    n_gen = sum(gen_mask)
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads; probes: {len(probes)} "
          f"({n_gen} generating), n_samples {cfg.n_samples} on {cfg.sample_splits}, "
          f"max_new_tokens {cfg.max_new_tokens}")
    print(f"{'part':<24}{'seconds':>10}")
    for name, t in rows:
        print(f"{name:<24}{t:>10.1f}")
    print(f"{'total':<24}{total:>10.1f}   ({len(probes) / total:.2f} probes/s)")


if __name__ == "__main__":
    main()
