"""Each process's share of a training step (aglora.pipeline.train.shares), computed here for
both processes of a two-process launch in one process: the weighted shares add up to the whole
batch's loss and gradient. The launch itself: test_launch.py."""

from __future__ import annotations

import random

import pytest
import torch

from aglora.concepts import Probe
from aglora.config import LoraConfig, TrainConfig
from aglora.model.adapter import attach_lora, trainable_parameters
from aglora.pipeline.train.objectives import AnswerObjective
from aglora.pipeline.train.shares import Shares, share_bounds, term_units
from aglora.runtime.processes import Ranks, agree, on_main, ranks
from tests.tiny import FORGET, RETAIN, make_model, sparse_mask


@pytest.mark.parametrize("n", range(8))
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_shares_cover_the_batch_in_order_and_differ_by_at_most_one(n, size):
    bounds = [share_bounds(n, size, r) for r in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    lengths = [end - start for start, end in bounds]
    assert max(lengths) - min(lengths) <= 1


def test_without_a_launch_every_helper_is_a_plain_call():
    assert not ranks().launched and ranks().is_main
    assert on_main(lambda: 7) == 7
    marker = object()
    assert agree(marker) is marker


def _objective(tok, cfg: TrainConfig):
    torch.manual_seed(0)
    model = attach_lora(make_model(), sparse_mask(), LoraConfig(rank=4))
    for p in trainable_parameters(model):  # away from the base, so the KL term is not 0
        torch.nn.init.normal_(p, std=0.3)
    forget = [Probe(**r) for r in FORGET]
    retain = [Probe(**r, split="neighbor") for r in RETAIN]
    return model, AnswerObjective(model, tok, forget, retain, cfg), forget, retain


@pytest.mark.parametrize("retain_objective", ["kl", "nll"])
def test_two_shares_add_up_to_the_whole_batch(tok, retain_objective):
    """Batch 3 splits 2 + 1; the retain items' content tokens differ, so the KL shares are
    weighted by tokens, not items. Differences are float rounding only (shared-prefix pass on
    2 or 3 rows, plain pass on 1)."""
    cfg = TrainConfig(batch_size=3, retain_objective=retain_objective)
    model, objective, forget, retain = _objective(tok, cfg)
    params = trainable_parameters(model)
    f_idx, r_idx, weight = [2, 0, 1], [1, 2, 0], torch.tensor([1.0, 0.5, 2.0])
    model.train()
    whole = (objective.forget_loss(model, f_idx, weight[f_idx], random.Random(0))
             + cfg.retain_weight * objective.retain_loss(model, r_idx, torch.device("cpu"))[0])
    whole.backward()
    expected = [p.grad.clone() for p in params]
    model.zero_grad(set_to_none=True)
    total = 0.0
    for rank in (0, 1):
        shares = Shares(Ranks(rank, 2), objective, tok, forget, retain, params, sharded=False)
        part = shares.losses(model, f_idx, lambda: r_idx, weight, random.Random(0),
                             torch.device("cpu"))
        part.loss.backward()  # gradients add up across the two calls, as the all-reduce sums
        total += part.total
    assert total == pytest.approx(float(whole.detach()), rel=1e-6)  # float32 sums
    for p, g in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-5)
    if retain_objective == "kl":
        units = term_units(objective, tok, forget, retain).retain
        assert len(set(units)) > 1  # item weights would not have matched


def test_units_mixed_in_one_term_are_flagged(tok):
    _, objective, forget, retain = _objective(tok, TrainConfig(retain_objective="kl+nll"))
    units = term_units(objective, tok, forget, retain)
    assert not units.exact and "kl+nll" in units.why_not
    _, objective, forget, retain = _objective(tok, TrainConfig())
    assert term_units(objective, tok, forget, retain).exact
