"""TOFU's forget quality (aglora.controlled.forget_quality): the KS test, the Kolmogorov
distribution, truth ratios and harmonic means on planted numbers."""

from __future__ import annotations

import math
import random

import pytest

from aglora.controlled.forget_quality import (
    answer_probability,
    forget_quality,
    harmonic_mean,
    kolmogorov_sf,
    ks_2samp,
    option_probability,
    tofu_truth_ratio,
    truth_ratio_score,
)
from aglora.errors import AgloraError

# ---- KS test -------------------------------------------------------------------------------------


@pytest.mark.parametrize("x, y, d, p", [
    ([1, 2, 3], [4, 5, 6], 1.0, 2 / 20),          # only the two extreme paths reach D = 1
    ([1, 2, 3, 4], [5, 6, 7, 8], 1.0, 2 / 70),
    ([1, 2], [3, 4, 5], 1.0, 2 / 10),
    ([1, 3, 5], [2, 4, 6], 1 / 3, 1.0),           # interleaved: the smallest D possible
    ([1.5, 2.5], [1.5, 2.5], 0.0, 1.0),
])
def test_ks_known_values(x, y, d, p):
    stat, pval = ks_2samp(x, y)
    assert stat == pytest.approx(d)
    assert pval == pytest.approx(p)


def test_ks_exact_p_by_enumeration():
    """The exact p-value equals the share of all splits of the pooled ranks with D >= observed."""
    from itertools import combinations

    x, y = [0.1, 0.4, 0.45, 0.9], [0.3, 0.5, 0.6, 0.7, 0.8]
    d_obs, p = ks_2samp(x, y)
    pooled = sorted(x + y)
    hits = total = 0
    for idx in combinations(range(9), 4):
        xs = [pooled[i] for i in idx]
        ys = [pooled[i] for i in range(9) if i not in idx]
        total += 1
        hits += ks_2samp(xs, ys)[0] >= d_obs - 1e-12
    assert p == pytest.approx(hits / total)


def test_ks_matches_scipy_when_available():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    for n, m in ((5, 7), (16, 16), (32, 30), (40, 25)):
        x = [rng.gauss(0, 1) for _ in range(n)]
        y = [rng.gauss(0.6, 1.3) for _ in range(m)]
        ref = stats.ks_2samp(x, y, method="exact")
        d, p = ks_2samp(x, y)
        assert d == pytest.approx(ref.statistic)
        assert p == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("lam, sf", [(0.5, 0.963945), (1.0, 0.269999), (1.3581, 0.05000),
                                     (1.6276, 0.01000)])
def test_kolmogorov_known_values(lam, sf):
    assert kolmogorov_sf(lam) == pytest.approx(sf, abs=2e-5)


def test_kolmogorov_branches_agree_and_large_samples_use_it():
    assert kolmogorov_sf(1.1799) == pytest.approx(kolmogorov_sf(1.1801), abs=1e-3)
    rng = random.Random(1)
    x = [rng.random() for _ in range(600)]
    y = [rng.random() + 0.1 for _ in range(600)]
    d, p = ks_2samp(x, y)
    assert p == pytest.approx(kolmogorov_sf(math.sqrt(300) * d))
    assert p < 0.01  # a 0.1 shift is visible with 600 + 600 samples


def test_ks_rejects_bad_samples():
    with pytest.raises(AgloraError):
        ks_2samp([], [1.0])
    with pytest.raises(AgloraError):
        ks_2samp([float("nan")], [1.0])


# ---- TOFU quantities on planted numbers ---------------------------------------------------------


def test_truth_ratio_probability_and_option_probability():
    scores, lengths = [-2.0, -4.0, -6.0, -2.0], [2, 2, 3, 1]   # per token: -1, -2, -2, -2
    assert tofu_truth_ratio(scores, lengths) == pytest.approx(math.exp(-2 - (-1)))
    assert answer_probability(scores, lengths) == pytest.approx(math.exp(-1))
    e1, e2 = math.exp(-1), math.exp(-2)
    assert option_probability(scores, lengths) == pytest.approx(e1 / (e1 + 3 * e2))
    with pytest.raises(AgloraError):
        tofu_truth_ratio([-1.0], [1])


def test_truth_ratio_score_and_harmonic_mean():
    assert truth_ratio_score([0.25, 1.5, 0.5]) == pytest.approx((0.75 + 0 + 0.5) / 3)
    assert harmonic_mean([0.5, 1.0]) == pytest.approx(2 / 3)
    assert harmonic_mean([0.5, 0.0]) == 0.0
    assert math.isnan(harmonic_mean([]))
    with pytest.raises(AgloraError):
        harmonic_mean([-1.0, 1.0])


def test_forget_quality_planted():
    same = forget_quality([0.5, 1.0, 2.0], [0.5, 1.0, 2.0])
    assert same["forget_quality"] == 1.0 and same["ks_statistic"] == 0.0
    apart = forget_quality([5.0, 6.0, 7.0, 8.0], [0.1, 0.2, 0.3, 0.4])
    assert apart["ks_statistic"] == 1.0
    assert apart["forget_quality"] == pytest.approx(2 / 70)
