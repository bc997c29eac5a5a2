"""Reference outputs for training (aglora.pipeline.train.reference): cached base logits and the
blocked distribution."""

from __future__ import annotations

import pytest
import torch

from aglora.concepts import Probe
from aglora.config import LoraConfig, TrainConfig
from aglora.model.adapter import attach_lora
from aglora.model.tokens import encode
from aglora.pipeline.train.loop import train
from tests.tiny import LORA_FORGET, LORA_RETAIN, make_model, sparse_mask


def test_cached_base_logits_give_the_same_training(tok, monkeypatch):
    """The retain items' base logits, computed once, give the losses of per-step computation."""
    import aglora.pipeline.train.reference as train_mod

    retain = LORA_RETAIN + [Probe(prompt="Name a film by Ridley Scott.", answer="Alien",
                             split="neighbor"),
                       Probe(prompt="Who wrote Dune?", prefix="It was written by",
                             answer="Frank Herbert", split="neighbor")]
    histories = []
    for limit in (train_mod.BASE_LOGITS_CACHE_BYTES, 0):  # cached, then per step
        monkeypatch.setattr(train_mod, "BASE_LOGITS_CACHE_BYTES", limit)
        model = make_model()
        torch.manual_seed(0)
        pm = attach_lora(model, sparse_mask(), LoraConfig(modules=["down_proj"], rank=4))
        cfg = TrainConfig(max_steps=5, min_steps=5, lr=1e-2, batch_size=2, check_every=10**6)
        histories.append(train(pm, tok, LORA_FORGET, retain, cfg, log=lambda *_: None).history)
    cached, per_step = histories
    assert [r["retain_kl"] for r in cached[1:]] == pytest.approx(
        [r["retain_kl"] for r in per_step[1:]], rel=1e-4, abs=1e-7)
    assert max(r["retain_kl"] for r in cached) > 0  # the adapter moved: KL is not trivially 0
    assert [r["loss"] for r in cached] == pytest.approx([r["loss"] for r in per_step], rel=1e-4)


def test_cached_base_logits_split_per_item(tok):
    from aglora.pipeline.train.reference import cached_base_logits

    model = make_model()
    items = LORA_RETAIN + [Probe(prompt="Name a film by Ridley Scott.", answer="Alien")]
    per_item = cached_base_logits(model, tok, items, batch_size=2, reference=None)
    for item, logits in zip(items, per_item, strict=True):
        b = encode(tok, [item], [item.answer])
        assert logits.shape == (int(b.content_mask.sum()), model.config.vocab_size)
    assert cached_base_logits(model, tok, items, 2, None, limit_bytes=0) is None


def test_blocked_distribution_by_hand():
    from aglora.pipeline.train.reference import blocked_distribution, mask_from_lists
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3]]))
    target = blocked_distribution(logits, mask_from_lists([[0], [1]], 3))
    torch.testing.assert_close(target, torch.tensor([[0.0, 0.5, 0.5], [0.25, 0.0, 0.75]]))


def _listed(prompt: str, title: str) -> Probe:
    return Probe(prompt=prompt, prefix="1.", answer=title, distractors=["Alien"])


def test_context_batches_keep_contexts_whole():
    from aglora.pipeline.train.reference import context_batches

    items = [_listed("Films like Heat?", "Ronin"), _listed("Films like Up?", "Coco"),
             _listed("Films like Heat?", "Thief"), _listed("Films like Up?", "Cars"),
             _listed("Films like Heat?", "Collateral"), _listed("Films like Up?", "Brave")]
    # "Heat" sorts before "Up": its three items, then Up's, each context in one batch of 3 >= 2
    assert context_batches(items, 2) == [[0, 2, 4], [1, 3, 5]]
    assert context_batches(items, 4) == [[0, 2, 4, 1, 3, 5]]
    unique = [_listed(f"Films like {t}?", t) for t in ("Alien", "Brazil", "Casino")]
    assert context_batches(unique, 2) == [[0, 1], [2]]  # no shared context: `rows` items each


def test_base_answer_side_is_the_same_in_any_batching(tok):
    """The reference log-probs and others-KL targets of whole-context batches equal those of
    items scored one at a time."""
    from aglora.pipeline.train.reference import base_answer_side
    from aglora.pipeline.train.targets import pushed_tokens

    model = make_model()
    items = [_listed("Films like Heat?", t) for t in ("Ronin", "Thief", "Collateral")] + [
        _listed("Films like Up?", t) for t in ("Coco", "Cars")]
    blocked_ids = pushed_tokens(tok, items, [])
    cfg = TrainConfig(batch_size=4)  # one batch: Heat's three items and Up's two
    logp, blocked = base_answer_side(model, tok, items, cfg, None, True, blocked_ids)
    assert bool((logp < 0).all())
    for i, item in enumerate(items):
        alone_logp, alone_blocked = base_answer_side(model, tok, [item], cfg, None, True,
                                                     [blocked_ids[i]])
        torch.testing.assert_close(logp[i: i + 1], alone_logp, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(blocked[i], alone_blocked[0], rtol=1e-5, atol=1e-6)
