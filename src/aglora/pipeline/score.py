"""Combine recorded statistics into one score per neuron ([n_layers, d_ff]).

Scorers live in a registry; each rewards what matters for the forget set *and not* for the
retain set. The default `ratio` scorer is `S_F/(S_R+eps) * F_F/(F_R+eps)` (docs/method.md,
section 5; docs/results/early-experiment.md for why it replaced the difference scorer).
`random` gives random scores, for the random-mask ablation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from aglora.errors import AgloraError

Stats = dict[str, torch.Tensor]
Scorer = Callable[[Stats, float, float, int], torch.Tensor]
SCORERS: dict[str, Scorer] = {}


def register(name: str) -> Callable[[Scorer], Scorer]:
    def deco(fn: Scorer) -> Scorer:
        SCORERS[name] = fn
        return fn
    return deco


def _ratio(num: torch.Tensor, den: torch.Tensor, eps: float) -> torch.Tensor:
    return num / (den + eps * den.mean().clamp_min(1e-30))


def rank(x: torch.Tensor) -> torch.Tensor:
    """Rank of each entry in the flattened tensor, scaled to [0, 1] (ties broken by position)."""
    flat = x.flatten()
    order = torch.argsort(flat, stable=True)
    ranks = torch.empty_like(order, dtype=torch.float64)
    ranks[order] = torch.arange(flat.numel(), dtype=torch.float64)
    return (ranks / max(flat.numel() - 1, 1)).reshape(x.shape).float()


@register("ratio")
def ratio_score(s: Stats, eps: float, _lam: float, _seed: int) -> torch.Tensor:
    return (_ratio(s["forget.saliency"], s["retain.saliency"], eps)
            * _ratio(s["forget.fisher"], s["retain.fisher"], eps))


@register("rank")
def rank_score(s: Stats, _eps: float, lam: float, _seed: int) -> torch.Tensor:
    return (rank(s["forget.saliency"]) + rank(s["forget.fisher"])
            - lam * (rank(s["retain.saliency"]) + rank(s["retain.fisher"])))


@register("contrast")
def contrast_score(s: Stats, eps: float, _lam: float, _seed: int) -> torch.Tensor:
    std_r = s["retain.act_var"].sqrt()
    return (s["forget.act_mean"] - s["retain.act_mean"]).abs() / (std_r + eps)


@register("saliency")
def saliency_score(s: Stats, _eps: float, _lam: float, _seed: int) -> torch.Tensor:
    return s["forget.saliency"].clone()


@register("random")
def random_score(s: Stats, _eps: float, _lam: float, seed: int) -> torch.Tensor:
    shape = s["forget.saliency"].shape
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def compute_scores(stats: Stats, scorer: str, eps: float = 1e-2, retain_weight: float = 1.0,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """All score tensors for the run directory; 'score' is the one masks are selected from."""
    if scorer not in SCORERS:
        raise AgloraError(f"unknown scorer {scorer!r}; choose from {', '.join(sorted(SCORERS))}")
    score = SCORERS[scorer](stats, eps, retain_weight, seed)
    if not torch.isfinite(score).all():
        raise AgloraError("scores contain NaN/inf; check that the forget and retain items have "
                          "answers the model can score")
    return {
        "saliency_forget": stats["forget.saliency"], "saliency_retain": stats["retain.saliency"],
        "fisher_forget": stats["forget.fisher"], "fisher_retain": stats["retain.fisher"],
        "contrast": contrast_score(stats, eps, 0.0, 0), "score": score.float(),
    }
