"""Time the evaluation of a run's probe set and print a table.

    python benchmarks/eval_speed.py runs/demo [--parts] [--set eval.KEY=VALUE ...]

Loads the run's base model and adapter and times `aglora.pipeline.eval.evaluate.evaluate` with the
run's eval settings, as `aglora eval` runs it: "cold" is a first evaluation (an empty base-side
cache, in a temporary folder), "warm" a rerun that reads the base side from that cache
(`eval.cache_base`). `--parts` times each part instead, one after the other at the full thread
count: the base side (likelihood scoring, generation), folding the adapter into a copy of the
weights, the after side, and KL on neighbour and general prompts. The target for the demo
probe set on 2 CPU cores is 180 s for a first evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from aglora.config import apply_overrides, config_from_dict, config_to_dict
from aglora.model.adapter import adapter_disabled, merged_copy
from aglora.pipeline.eval.evaluate import evaluate
from aglora.pipeline.eval.sides import kl_between, measure
from aglora.pipeline.run import eval_probes, reopen_run
from aglora.runtime.hostspeed import speed_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--parts", action="store_true",
                        help="time each part, one after the other (no two sides at once)")
    parser.add_argument("--set", action="append", default=[], metavar="eval.KEY=VALUE",
                        help="time with other eval settings than the run's")
    args = parser.parse_args()
    print(speed_line())
    ctx = reopen_run(args.run_dir)
    if args.set:
        ctx.cfg = config_from_dict(apply_overrides(config_to_dict(ctx.cfg), args.set))
    cfg = ctx.cfg.eval
    model, tok = ctx.adapted()
    probes = eval_probes(ctx)
    if not args.parts:
        time_whole(model, tok, probes, cfg)
        return
    gen_mask = [p.split in ("forget", "neighbor") for p in probes]
    no_gen = [False] * len(probes)
    gen_probes = [p.__class__(**{**p.to_dict(), "distractors": []})
                  for p, g in zip(probes, gen_mask, strict=True) if g]
    rows: list[tuple[str, float, bool]] = []  # (part, seconds, part of a warm rerun)

    def timed(name: str, warm: bool, fn) -> object:
        start = time.time()
        out = fn()
        rows.append((name, time.time() - start, warm))
        return out

    with adapter_disabled(model):
        timed("likelihood (base)", False, lambda: measure(model, tok, probes, cfg, no_gen, "base"))
        timed("generation (base)", False, lambda: measure(model, tok, gen_probes, cfg,
                                                          [True] * len(gen_probes), "base"))
    after = timed("fold adapter (copy)", True, lambda: merged_copy(model))
    timed("likelihood (after)", True, lambda: measure(after, tok, probes, cfg, no_gen, "after"))
    timed("generation (after)", True, lambda: measure(after, tok, gen_probes, cfg,
                                                      [True] * len(gen_probes), "after"))
    kl_probes = [p for p in probes if p.split == "neighbor"
                 or (p.split == "utility" and p.family == "general")]
    timed("KL (neighbour, general)", True,
          lambda: kl_between(after, model, tok, kl_probes, cfg.batch_size))
    cold = sum(t for _, t, _ in rows)
    warm = sum(t for _, t, w in rows if w)
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads; probes: {len(probes)} "
          f"({len(gen_probes)} generating), n_samples {cfg.n_samples} on {cfg.sample_splits}, "
          f"max_new_tokens {cfg.max_new_tokens}, batch {cfg.batch_size}, "
          f"generate batch {cfg.generate_batch_size or cfg.batch_size}")
    print(f"{'part':<26}{'seconds':>10}")
    for name, t, _ in rows:
        print(f"{name:<26}{t:>10.1f}")
    print(f"{'total, cold':<26}{cold:>10.1f}   ({len(probes) / cold:.2f} probes/s)")
    print(f"{'total, warm (base cached)':<26}{warm:>10.1f}")


def time_whole(model, tok, probes, cfg) -> None:
    """Cold and warm `evaluate` with an empty cache folder of its own; the two must agree."""
    with tempfile.TemporaryDirectory() as cache:
        os.environ["AGLORA_CACHE"] = cache
        start = time.time()
        cold, _ = evaluate(model, tok, probes, cfg)
        cold_s = time.time() - start
        start = time.time()
        warm, _ = evaluate(model, tok, probes, cfg)
        warm_s = time.time() - start

    def same(m: dict) -> str:
        return json.dumps({k: v for k, v in m.items() if k != "eval_seconds"}, sort_keys=True)

    n_gen = sum(p.split in ("forget", "neighbor") for p in probes)
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads; probes: {len(probes)} ({n_gen} generating), "
          f"n_samples {cfg.n_samples} on {cfg.sample_splits}, max_new_tokens "
          f"{cfg.max_new_tokens}, batch {cfg.batch_size}, parallel_sides {cfg.parallel_sides}")
    print(f"{'evaluation':<30}{'seconds':>10}")
    print(f"{'first (cold, empty cache)':<30}{cold_s:>10.1f}   "
          f"({len(probes) / cold_s:.2f} probes/s)")
    print(f"{'rerun (warm, base cached)':<30}{warm_s:>10.1f}")
    print(f"same metrics cold and warm: {same(cold) == same(warm)}; forget known accuracy "
          f"{cold['splits']['forget']['known_accuracy']['after']:.3f}, neighbour "
          f"{cold['splits']['neighbor']['known_accuracy']['after']:.3f}, KL on neighbours "
          f"{cold['kl_neighbor']:.4f}")


if __name__ == "__main__":
    main()
