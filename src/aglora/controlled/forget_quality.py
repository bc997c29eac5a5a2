"""TOFU's forget quality and model utility, with the two-sample KS test written out.

Forget quality (Maini et al. 2024): the p-value of the two-sample Kolmogorov-Smirnov test between
the truth ratios of the unlearned model and of the retain model on the forget set. High (near 1)
= the two distributions cannot be told apart; low = the unlearned model still behaves like a model
that saw the forget data (or has been pushed somewhere the retain model never goes).

The KS p-value is exact for small samples (the lattice-path count that `scipy.stats.ks_2samp`
uses in its default 'exact' mode, two-sided, done here in integer arithmetic) and asymptotic
(Kolmogorov's distribution) for large ones, so no scipy dependency is needed.

Truth ratio, as TOFU's code computes it: with length-normalised log-probabilities
`n(x) = log P(x | q) / |x|`, `R = exp(mean_k n(perturbed_k) - n(answer))` (a geometric mean over
the perturbed answers); R > 1 means the model prefers wrong answers. Model utility is the
harmonic mean of, on each utility set, (answer probability, likelihood-choice accuracy, truth
ratio score `mean max(0, 1 - R)`); docs/controlled.md lists where this departs from TOFU.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from aglora.errors import AgloraError

EXACT_LIMIT = 250_000  # (n+1)(m+1) lattice cells above which the asymptotic p-value is used


def ks_statistic(x: Sequence[float], y: Sequence[float]) -> float:
    """sup_t |F_x(t) - F_y(t)| of the two empirical distribution functions."""
    return _ks_h(x, y) / (len(x) * len(y))


def _ks_h(x: Sequence[float], y: Sequence[float]) -> int:
    """The KS statistic times n*m, an integer: max_t |n_x(t) * m - n_y(t) * n|."""
    n, m = len(x), len(y)
    if n == 0 or m == 0:
        raise AgloraError("KS test: both samples must be non-empty")
    if any(not math.isfinite(v) for v in (*x, *y)):
        raise AgloraError("KS test: samples must be finite numbers")
    xs, ys = sorted(x), sorted(y)
    best = 0
    for t in sorted(set(xs) | set(ys)):
        cx, cy = bisect.bisect_right(xs, t), bisect.bisect_right(ys, t)
        best = max(best, abs(cx * m - cy * n))
    return best


def _exact_p(n: int, m: int, h: int) -> float:
    """P(D >= h/(nm)) under H0: 1 - (monotone paths (0,0)->(n,m) with |i m - j n| < h) / C."""
    if h <= 0:
        return 1.0
    row = [0] * (m + 1)  # row[j] = number of inside paths reaching (i, j)
    for i in range(n + 1):
        for j in range(m + 1):
            if abs(i * m - j * n) >= h:
                row[j] = 0
            elif i == 0 and j == 0:
                row[j] = 1
            else:
                row[j] = (row[j] if i > 0 else 0) + (row[j - 1] if j > 0 else 0)
    inside = row[m]
    return min(1.0, max(0.0, 1.0 - inside / math.comb(n + m, n)))


def kolmogorov_sf(lam: float) -> float:
    """P(K > lam) for Kolmogorov's limiting distribution K."""
    if lam <= 0:
        return 1.0
    if lam < 1.18:  # the theta-function form converges fast for small lam
        s = sum(math.exp(-((2 * k - 1) ** 2) * math.pi ** 2 / (8 * lam * lam))
                for k in range(1, 20))
        return min(1.0, max(0.0, 1.0 - math.sqrt(2 * math.pi) / lam * s))
    s = sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return min(1.0, max(0.0, 2.0 * s))


def ks_2samp(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Two-sided two-sample KS test -> (statistic D, p-value); exact for small samples."""
    n, m = len(x), len(y)
    h = _ks_h(x, y)
    d = h / (n * m)
    if (n + 1) * (m + 1) <= EXACT_LIMIT:
        return d, _exact_p(n, m, h)
    return d, kolmogorov_sf(math.sqrt(n * m / (n + m)) * d)


# ---- TOFU's per-probe quantities -------------------------------------------------------------
def _normalised(scores: Sequence[float], lengths: Sequence[int]) -> list[float]:
    if len(scores) < 2 or len(scores) != len(lengths):
        raise AgloraError("need the scores and token counts of [answer, *perturbed answers]")
    return [s / max(n, 1) for s, n in zip(scores, lengths, strict=True)]


def tofu_truth_ratio(scores: Sequence[float], lengths: Sequence[int]) -> float:
    """R = exp(mean_k n(perturbed_k) - n(answer)), n = log-prob per token; > 1 prefers wrong."""
    norm = _normalised(scores, lengths)
    return math.exp(sum(norm[1:]) / (len(norm) - 1) - norm[0])


def answer_probability(scores: Sequence[float], lengths: Sequence[int]) -> float:
    """P(answer | q)^(1/|answer|): TOFU's probability on its fictitious sets."""
    return math.exp(_normalised(scores, lengths)[0])


def option_probability(scores: Sequence[float], lengths: Sequence[int]) -> float:
    """Length-normalised P(answer) / sum over all options: TOFU's probability on real-world sets."""
    norm = _normalised(scores, lengths)
    top = max(norm)
    weights = [math.exp(v - top) for v in norm]
    return weights[0] / sum(weights)


def truth_ratio_score(ratios: Sequence[float]) -> float:
    """TOFU's utility-side truth-ratio score: mean of max(0, 1 - R)."""
    if not ratios:
        return float("nan")
    return sum(max(0.0, 1.0 - r) for r in ratios) / len(ratios)


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean of non-negative numbers (0 if any is 0; NaN if any is NaN or none given)."""
    if not values or any(v != v for v in values):
        return float("nan")
    if any(v < 0 for v in values):
        raise AgloraError(f"harmonic mean of negative numbers: {list(values)}")
    if any(v == 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def forget_quality(unlearned_ratios: Sequence[float], retain_ratios: Sequence[float]) -> dict:
    """KS test between the truth ratios of the unlearned and the retain model on the forget set."""
    d, p = ks_2samp(unlearned_ratios, retain_ratios)
    return {"forget_quality": p, "ks_statistic": d, "n": len(unlearned_ratios),
            "n_reference": len(retain_ratios)}
