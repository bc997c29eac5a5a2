"""The base-weight digest (aglora.model.identity) follows base weight changes only."""

from __future__ import annotations

import torch

from tests.tiny import make_adapted


def test_weights_digest_follows_base_weight_changes_only():
    from aglora.model.identity import weights_digest

    pm = make_adapted()
    first = weights_digest(pm)
    assert weights_digest(pm) == first                 # memoised, unchanged
    for name, p in pm.named_parameters():             # adapter weights do not count
        if "lora_B" in name:
            with torch.no_grad():
                p.add_(1.0)
    assert weights_digest(pm) == first
    weight = pm.get_base_model().model.layers[0].mlp.up_proj.weight
    original = float(weight[0, 0])
    with torch.no_grad():                             # an in-place edit of a base weight does
        weight[0, 0] = original + 1.0
    assert weights_digest(pm) != first
    with torch.no_grad():
        weight[0, 0] = original
    assert weights_digest(pm) == first                 # same values, same digest
    fresh = make_adapted()                                 # same seed, same weights, no memo
    assert weights_digest(fresh) == first
