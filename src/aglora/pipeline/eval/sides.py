"""The two sides of an evaluation: the base model (adapter disabled) and the model after.

`measure` runs one side: likelihood scores of every probe with options and generations where the
mask says (forget probes for leaks, neighbours for fluency); `base_side` takes the base side from
the keyed cache when it is there; `kl_between` measures KL(base || model) per content token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from aglora.concepts import Probe
from aglora.config import EvalConfig
from aglora.model.adapter import adapter_disabled
from aglora.model.decode import generate
from aglora.model.forward import logits_at
from aglora.model.identity import weights_digest
from aglora.model.likelihood import score_options_with_lengths
from aglora.model.tokens import encode
from aglora.pipeline.train.objectives import kl_base_model
from aglora.runtime.cache import cache_dir, cache_key, cached_json
from aglora.runtime.threads import run_pair


@dataclass
class SideResult:
    """Raw measurements of one model state (base or after) on all probes."""

    scores: list[list[float]] = field(default_factory=list)
    lengths: list[list[int]] = field(default_factory=list)
    generations: list[list[str]] = field(default_factory=list)


def measure(model: nn.Module, tok, probes: list[Probe], cfg: EvalConfig, gen_mask: list[bool],
            label: str, parallel: bool = False) -> SideResult:
    """Likelihood scores of every probe with options, generations where `gen_mask` says.

    `parallel`: scoring and generation run at once (`aglora.runtime.threads`), each on half the
    threads.
    """
    def likelihood() -> tuple[list[list[float]], list[list[int]]]:
        return score_options_with_lengths(model, tok, probes, cfg.batch_size,
                                          progress=f"likelihood ({label})")

    def generations() -> list[list[str]]:
        out: list[list[str]] = [[] for _ in probes]
        for sampled in (True, False):
            idx = [i for i, g in enumerate(gen_mask)
                   if g and (probes[i].split in cfg.sample_splits) == sampled]
            if not idx:
                continue
            gens = generate(model, tok, [probes[i] for i in idx],
                            cfg.n_samples if sampled else 0, cfg.temperature, cfg.max_new_tokens,
                            cfg.seed, cfg.generate_batch_size or cfg.batch_size,
                            desc=f"generate ({label}{'' if sampled else ', greedy'})")
            for i, g in zip(idx, gens, strict=True):
                out[i] = g
        return out

    (scores, lengths), gens = run_pair(likelihood, generations, _device(model), parallel)
    return SideResult(scores, lengths, gens)


@torch.no_grad()
def kl_between(model: nn.Module, base: nn.Module, tok, probes: list[Probe],
               batch_size: int, parallel: bool = True) -> float:
    """Mean KL(base || model) per content token over the probes' context+answer sequences.

    `base` may be the peft model `model` came from: its adapter is disabled for its pass.
    `parallel`: run the two passes of a batch at once where that gains (`aglora.runtime.threads`).
    """
    if not probes:
        return float("nan")
    device = next(model.parameters()).device
    total, count = 0.0, 0.0
    for s in range(0, len(probes), batch_size):
        chunk = probes[s: s + batch_size]
        b = encode(tok, chunk, [p.answer or "" for p in chunk]).to(device)

        def base_pass(b=b) -> torch.Tensor:  # [n, vocab]
            with adapter_disabled(base):
                return logits_at(base, b, b.content_mask)

        # Two passes at once on a CPU, unless both are the same module (one adapter switch).
        base_logits, logits = run_pair(base_pass, lambda b=b: logits_at(model, b, b.content_mask),
                                       device, enabled=parallel and model is not base)
        n = float(b.content_mask.sum())
        total += float(kl_base_model(logits, base_logits)) * n
        count += n
    return total / max(count, 1.0)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def base_side(model: nn.Module, tok, probes: list[Probe], cfg: EvalConfig,
              gen_mask: list[bool], cache_path: Path | None = None,
              parallel: bool = False) -> SideResult:
    """The base model's measurements (adapter disabled), from the cache when it has them.

    The base side depends only on the base weights, the probes and the eval settings, so it is
    kept in the cache (`aglora.runtime.cache`, folder `base-eval/`) and a rerun measures only the
    after side. `eval.cache_base: false` turns it off. `cache_path`: the entry, when the caller
    has already worked it out (`base_cache_file`); `parallel`: as in `measure`.
    """
    path = cache_path or base_cache_file(model, probes, cfg, gen_mask)

    def compute() -> dict:
        with adapter_disabled(model):
            side = measure(model, tok, probes, cfg, gen_mask, "base", parallel)
        return {"scores": side.scores, "lengths": side.lengths, "generations": side.generations}

    data = cached_json(path, compute) if path is not None else compute()
    return SideResult(data["scores"], data["lengths"], data["generations"])


def base_cache_file(model: nn.Module, probes: list[Probe], cfg: EvalConfig,
                    gen_mask: list[bool]) -> Path | None:
    """Where the base side of this evaluation is cached (None: `eval.cache_base` is off)."""
    if not cfg.cache_base:
        return None
    settings = {k: v for k, v in asdict(cfg).items()  # the attacks do not touch the base side
                if not k.startswith("relearn_") and k != "cache_base"}
    key = cache_key({"weights": weights_digest(model), "eval": settings, "gen": gen_mask,
                     "probes": [p.to_dict() for p in probes],
                     "device": str(next(model.parameters()).device)})
    return cache_dir() / "base-eval" / f"{key}.json"
