"""Training losses (aglora.pipeline.train.objectives): the others-KL term, NPO and gradient
ascent weights."""

from __future__ import annotations

import math

import pytest
import torch

from aglora.concepts import Probe
from aglora.config import TrainConfig
from aglora.errors import AgloraError
from aglora.pipeline.train.targets import answer_batch
from tests.tiny import make_model


def test_others_kl_ignores_the_answer_logit_and_is_zero_at_the_base():
    from aglora.pipeline.train.objectives import others_kl_loss
    from aglora.pipeline.train.reference import blocked_distribution, mask_from_lists
    base = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3]]))
    answer = mask_from_lists([[0], [1]], 3)
    target = blocked_distribution(base, answer)
    assert float(others_kl_loss(base, answer, target)) == pytest.approx(0.0, abs=1e-6)
    lowered = base.clone()
    lowered[0, 0] -= 7.0  # only the answers' logits move
    lowered[1, 1] += 3.0
    assert float(others_kl_loss(lowered, answer, target)) == pytest.approx(0.0, abs=1e-6)
    # another token moves: row 0's others become (0.2, 0.8) against (0.5, 0.5)
    shifted = torch.log(torch.tensor([[0.5, 0.1, 0.4], [0.1, 0.6, 0.3]]))
    expected = (0.5 * math.log(0.5 / 0.2) + 0.5 * math.log(0.5 / 0.8)) / 2
    assert float(others_kl_loss(shifted, answer, target)) == pytest.approx(expected, abs=1e-6)


def test_kl_to_target_is_the_explicit_kl_with_its_gradient():
    """sum_v t (log t - log q) over the unblocked tokens, q the renormalised softmax without
    the blocked ones, averaged over positions: the same value and the same gradient
    (softmax(z) - t, over positions) as the explicit sum, blocked or not (float32 rounding)."""
    from aglora.pipeline.train.objectives import kl_to_target
    from aglora.pipeline.train.reference import kl_target, mask_from_lists
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(5, 11, generator=gen)).requires_grad_()
    base = 3 * torch.randn(5, 11, generator=gen)
    for blocked in (None, mask_from_lists([[0], [], [3, 4], [10], [1, 2, 5]], 11)):
        target, negent = kl_target(base, blocked)
        keep = torch.ones_like(base, dtype=torch.bool) if blocked is None else ~blocked
        logq = torch.log_softmax(logits.masked_fill(~keep, -math.inf), -1)
        explicit = torch.where(keep, target * (torch.log(target) - logq), 0.0).sum(-1).mean()
        fast = kl_to_target(logits, target, negent, blocked)
        grad_explicit, = torch.autograd.grad(explicit, logits)
        grad_fast, = torch.autograd.grad(fast, logits)
        assert float(fast) == pytest.approx(float(explicit), abs=1e-6)
        torch.testing.assert_close(grad_fast, grad_explicit, rtol=0, atol=1e-7)
        by_hand = (torch.softmax(logits.detach().masked_fill(~keep, -math.inf), -1) - target) / 5
        torch.testing.assert_close(grad_fast, by_hand, rtol=0, atol=1e-7)
        assert float(explicit) > 0.1


def test_others_kl_with_several_blocked_tokens_ignores_all_of_them():
    """Blocking tokens 0 and 1 of a position: their logits do not move the term; the target is
    the base's rest renormalised (here token 2 and 3: 0.25 / 0.75)."""
    from aglora.pipeline.train.objectives import others_kl_loss
    from aglora.pipeline.train.reference import blocked_distribution, mask_from_lists
    base = torch.log(torch.tensor([[0.4, 0.4, 0.05, 0.15]]))
    blocked = mask_from_lists([[0, 1]], 4)
    target = blocked_distribution(base, blocked)
    assert target.tolist()[0] == pytest.approx([0.0, 0.0, 0.25, 0.75])
    moved = base.clone()
    moved[0, 0] -= 5.0
    moved[0, 1] += 2.0
    assert float(others_kl_loss(moved, blocked, target)) == pytest.approx(0.0, abs=1e-6)
    only_0 = mask_from_lists([[0]], 4)                     # token 0 alone blocked
    one = blocked_distribution(base, only_0)
    assert one.tolist()[0] == pytest.approx([0.0, 0.4 / 0.6, 0.05 / 0.6, 0.15 / 0.6])
    assert float(others_kl_loss(moved, only_0, one)) > 0.1   # token 1 moved


def test_others_kl_term_in_training(tok):
    """Step 1 scores the base model, where the term is 0: the logged forget loss is NPO's
    log 4 (= -(2/beta) log sigmoid(0) at beta 1); with the term, other tokens at the answer
    positions move less than without it."""
    from aglora.config import LoraConfig
    from aglora.model.adapter import attach_lora
    from aglora.model.forward import logits_at, next_token_ids
    from aglora.pipeline.train.loop import train
    from aglora.pipeline.train.objectives import others_kl_loss
    from aglora.pipeline.train.reference import blocked_distribution, mask_from_lists
    forget = [Probe(prompt="Tell me a fact.", prefix="Fact:", answer="The capital of France")]
    batch = answer_batch(tok, forget, ["The"])
    drift = {}
    for weight in (0.0, 10.0):
        model = make_model(seed=1)
        pm = attach_lora(model, None, LoraConfig(rank=4, masked=False))
        with torch.no_grad():
            base_logits = logits_at(pm, batch, batch.target_mask)  # [n_answer_tokens, vocab]
            answer = mask_from_lists(
                [[t] for t in next_token_ids(batch, batch.target_mask).tolist()],
                base_logits.shape[-1])
            target = blocked_distribution(base_logits, answer)
        cfg = TrainConfig(forget_objective="npo", npo_beta=1.0, forget_others_kl=weight,
                          forget_skip_leading=["The"], lr=5e-2, max_steps=6, min_steps=6,
                          batch_size=1, check_every=10**6)
        result = train(pm, tok, forget, [], cfg, log=lambda *_: None)
        assert result.history[0]["forget_loss"] == pytest.approx(2 * math.log(2), rel=1e-5)
        with torch.no_grad():
            drift[weight] = float(others_kl_loss(logits_at(pm, batch, batch.target_mask),
                                                 answer, target))
    assert drift[10.0] < drift[0.0]


def test_npo_and_grad_ascent_weights_scale_each_item():
    from aglora.pipeline.train.objectives import grad_ascent_loss, npo_loss
    logp, ref = torch.tensor([-1.0, -5.0]), torch.tensor([-2.0, -2.0])
    each = [float(npo_loss(logp[i:i + 1], ref[i:i + 1], 0.5)) for i in range(2)]
    w = torch.tensor([1.0, 0.25])
    assert float(npo_loss(logp, ref, 0.5, w)) == pytest.approx((each[0] + 0.25 * each[1]) / 2)
    n = torch.tensor([2, 1])
    assert float(grad_ascent_loss(logp, n, w)) == pytest.approx((-0.5 - 5.0 * 0.25) / 2)
    assert float(npo_loss(logp, ref, 0.5, torch.ones(2))) == pytest.approx(
        float(npo_loss(logp, ref, 0.5)))
    with pytest.raises(AgloraError, match="forget_weight_at_goal=-1.0: must be 0 or more"):
        TrainConfig(forget_weight_at_goal=-1.0)


def _plant(model, tok, probe: Probe, steps: int = 30) -> None:
    """Fine-tune every weight of `model` on `probe`'s answer: the fact is then known."""
    from aglora.model.forward import target_logprobs
    from aglora.model.tokens import encode
    params = [p for p in model.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=3e-3)
    batch = encode(tok, [probe], [probe.answer])
    for _ in range(steps):
        opt.zero_grad()
        (-target_logprobs(model, batch).sum()).backward()
        opt.step()
    for p in params:
        p.requires_grad_(False)


def test_refuse_lowers_the_planted_answer_and_raises_the_refusal(tok):
    """A planted fact, then NPO + the refusal term: the answer's log-probability after the
    probe's prefix falls, the refusal's after the chat question rises."""
    from aglora.config import LoraConfig
    from aglora.model.adapter import attach_lora
    from aglora.model.forward import target_logprobs
    from aglora.model.tokens import chat_prefix_text, encode
    from aglora.pipeline.train.loop import train
    fact = Probe(prompt="Who directed Inception?", prefix="It was directed by",
                 answer="Christopher Nolan", distractors=["James Cameron"])
    refusal = "I'm not sure I know that film."
    model = make_model(seed=2)
    _plant(model, tok, fact)
    answer_b = encode(tok, [fact], [fact.answer])
    refusal_b = encode(tok, [fact], [refusal + tok.eos_token],
                       contexts=[chat_prefix_text(tok, fact.prompt)])
    with torch.no_grad():
        before = float(target_logprobs(model, answer_b)), float(target_logprobs(model, refusal_b))
    pm = attach_lora(model, None, LoraConfig(rank=4, masked=False))
    cfg = TrainConfig(forget_objective="npo", forget_response="refuse", retain_objective="none",
                      lr=2e-2, max_steps=15, min_steps=15, batch_size=1, check_every=10**6)
    train(pm, tok, [fact], [], cfg, refusals=[refusal], log=lambda *_: None)
    with torch.no_grad():
        after = float(target_logprobs(pm, answer_b)), float(target_logprobs(pm, refusal_b))
    assert after[0] < before[0] - 1.0   # the answer: at least one nat less likely
    assert after[1] > before[1] + 1.0   # the refusal: at least one nat more likely


def test_response_batches_per_behaviour(tok):
    """refuse: the refusal follows the bare chat question (chat items only); alternative: the
    spec's alternatives, else the item's distractors, after the usual context; suppress: none."""
    import random

    from aglora.model.tokens import chat_prefix_text, context_text
    from aglora.pipeline.train.targets import response_batch
    chat = Probe(prompt="Who directed Inception?", prefix="It was directed by",
                 answer="Christopher Nolan", distractors=["James Cameron"])
    plain = Probe(prompt="Inception was directed by", format="completion",
                  answer="Christopher Nolan")
    rng = random.Random(0)
    assert response_batch(tok, [chat], TrainConfig(), ["No idea."], [], rng) is None
    batch, rows = response_batch(tok, [plain, chat], TrainConfig(forget_response="refuse"),
                                 ["No idea."], [], rng)
    assert rows == [1]
    text = tok.decode(batch.input_ids[0][batch.attention_mask[0].bool()])
    assert text == chat_prefix_text(tok, chat.prompt) + "No idea." + tok.eos_token
    batch, rows = response_batch(tok, [plain, chat], TrainConfig(forget_response="alternative"),
                                 [], [], rng)
    assert rows == [1]   # the completion item has no distractor to say instead
    text = tok.decode(batch.input_ids[0][batch.attention_mask[0].bool()])
    assert text == context_text(tok, chat) + " James Cameron"
    batch, rows = response_batch(tok, [plain, chat], TrainConfig(forget_response="alternative"),
                                 [], ["Memento"], rng)
    assert rows == [0, 1]


def test_old_replacement_objectives_name_the_new_key():
    with pytest.raises(AgloraError, match="use forget_response: refuse"):
        TrainConfig(forget_objective="refusal")
    with pytest.raises(AgloraError, match="unknown train.forget_response 'silence'"):
        TrainConfig(forget_response="silence")


def _refusal_logp(model, tok, item: Probe, refusal: str) -> float:
    from aglora.model.forward import target_logprobs
    from aglora.model.tokens import chat_prefix_text, encode
    batch = encode(tok, [item], [refusal + tok.eos_token],
                   contexts=[chat_prefix_text(tok, item.prompt)])
    with torch.no_grad():
        return float(target_logprobs(model, batch))


def test_refusal_contrast_is_npo_at_log2_on_the_base(tok):
    """With the adapter at its zero start the model is the base: the contrast term is NPO at
    log pi = log pi_ref, (2 / beta) log 2 exactly."""
    from aglora.config import LoraConfig
    from aglora.model.adapter import attach_lora
    from aglora.pipeline.train.objectives import AnswerObjective
    from tests.tiny import LORA_FORGET, LORA_RETAIN
    pm = attach_lora(make_model(seed=3), None, LoraConfig(rank=4, masked=False))
    cfg = TrainConfig(forget_response="refuse", npo_beta=0.5)
    objective = AnswerObjective(pm, tok, LORA_FORGET, LORA_RETAIN, cfg, refusals=["No idea."])
    term = objective.refusal_contrast(pm, LORA_RETAIN, torch.device("cpu"))
    assert float(term) == pytest.approx(4 * math.log(2), abs=1e-6)
    off = AnswerObjective(pm, tok, LORA_FORGET, LORA_RETAIN,
                          TrainConfig(forget_response="refuse", refusal_contrast=0.0),
                          refusals=["No idea."])
    assert objective.contrast and not off.contrast


def test_refusal_contrast_keeps_the_refusal_off_the_retain_question(tok):
    """The refusal term alone raises the refusal after the retain question too (the tiny
    model hardly tells the two questions apart); with the contrast it ends lower there than
    without it, and no likelier than in the base model. (Whether the forget question keeps its
    refusal needs a model that separates the questions: measured on the embedded model.)"""
    from aglora.config import LoraConfig
    from aglora.model.adapter import attach_lora
    from aglora.pipeline.train.loop import train
    from tests.tiny import LORA_FORGET, LORA_RETAIN
    refusal = "I'm not sure I know that film."
    forget, retain = LORA_FORGET[0], LORA_RETAIN[0]
    base = make_model(seed=2)
    at_base = (_refusal_logp(base, tok, forget, refusal),
               _refusal_logp(base, tok, retain, refusal))
    after = {}
    for contrast in (0.0, 1.0):
        pm = attach_lora(make_model(seed=2), None, LoraConfig(rank=4, masked=False))
        cfg = TrainConfig(forget_objective="none", forget_response="refuse",
                          retain_objective="none" if contrast == 0 else "kl",
                          retain_weight=1.0, refusal_contrast=contrast, lr=2e-2, max_steps=20,
                          min_steps=20, batch_size=1, check_every=10**6)
        train(pm, tok, [forget], [retain], cfg, refusals=[refusal], log=lambda *_: None)
        after[contrast] = (_refusal_logp(pm, tok, forget, refusal),
                           _refusal_logp(pm, tok, retain, refusal))
    assert after[0.0][1] > at_base[1] + 1.0        # without it the refusal spreads
    assert after[1.0][1] < after[0.0][1] - 1.0     # the contrast holds it back
    assert after[1.0][1] <= at_base[1]


def test_retain_kl_leaves_the_blocked_tokens_out_and_is_the_plain_kl_elsewhere():
    """Row 0 blocks token 0: the term does not move with that logit, and equals the KL of the
    renormalised rest (base 0.25 / 0.25 -> 0.5 / 0.5 against the model's 0.2 / 0.8); row 1
    blocks nothing and adds its plain KL. With nothing blocked it is `kl_base_model`."""
    from aglora.pipeline.train.objectives import kl_base_model, kl_to_target
    from aglora.pipeline.train.reference import kl_target, mask_from_lists

    def retain_kl_loss(logits, base_logits, blocked):  # the retain term's KL, as `_retain_term`
        return kl_to_target(logits, *kl_target(base_logits, blocked), blocked)

    base = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3]]))
    model = torch.log(torch.tensor([[0.9, 0.02, 0.08], [0.2, 0.5, 0.3]]))
    blocked = mask_from_lists([[0], []], 3)
    row1 = 0.1 * math.log(0.1 / 0.2) + 0.6 * math.log(0.6 / 0.5)
    expected = (0.5 * math.log(0.5 / 0.2) + 0.5 * math.log(0.5 / 0.8) + row1) / 2
    assert float(retain_kl_loss(model, base, blocked)) == pytest.approx(expected, abs=1e-6)
    moved = model.clone()
    moved[0, 0] -= 6.0
    assert float(retain_kl_loss(moved, base, blocked)) == pytest.approx(expected, abs=1e-6)
    none = mask_from_lists([[], []], 3)
    plain = float(kl_base_model(model, base))
    assert float(retain_kl_loss(model, base, none)) == pytest.approx(plain, abs=1e-6)
    assert float(retain_kl_loss(model, base, None)) == pytest.approx(plain, abs=1e-6)


def test_the_retain_term_blocks_only_on_a_shared_forget_context(tok):
    """AnswerObjective: a retain item on the forget item's prompt gets a blocked position, a KL
    target with the forget answer's token taken out there, and the blocked KL by hand as its
    loss; a retain set on other prompts gets none, the plain base distribution as its target
    and the plain KL as its loss (to float rounding)."""
    from aglora.config import LoraConfig
    from aglora.model.adapter import attach_lora
    from aglora.model.forward import logits_at
    from aglora.model.tokens import encode
    from aglora.pipeline.train.objectives import AnswerObjective, kl_base_model, kl_to_target
    from aglora.pipeline.train.reference import cached_base_logits, kl_target, mask_from_lists
    prompt, prefix = "Recommend films.", "Here are films:\n\n1."
    forget = [Probe(prompt=prompt, prefix=prefix, answer="The Matrix")]
    shared = [Probe(prompt=prompt, prefix=prefix, answer="The Terminator")]
    other = [Probe(prompt="Another question?", prefix=prefix, answer="The Terminator")]
    cfg = TrainConfig(forget_objective="npo", retain_objective="kl", forget_skip_leading=["The"])
    model = attach_lora(make_model(seed=2), None, LoraConfig(rank=4, masked=False))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.5 * torch.randn_like(p))  # the adapter moves the model off the base
    device = torch.device("cpu")
    on_shared = AnswerObjective(model, tok, forget, shared, cfg)
    on_other = AnswerObjective(model, tok, forget, other, cfg)
    assert on_shared.retain_blocked is not None
    assert sum(map(len, on_shared.retain_blocked[0])) == 1
    assert on_other.retain_blocked is None
    for objective, items, same in ((on_shared, shared, False), (on_other, other, True)):
        rb = encode(tok, items, [p.answer for p in items])
        with torch.no_grad():
            logits = logits_at(model, rb, rb.content_mask)
            base = torch.cat(cached_base_logits(model, tok, items, 8, None))
            plain = kl_base_model(logits, base)
            lists = objective.retain_blocked[0] if objective.retain_blocked else None
            mask = None if lists is None else mask_from_lists(lists, logits.shape[-1])
            by_hand = kl_to_target(logits, *kl_target(base, mask), mask)
            loss, kl = objective.retain_loss(model, [0], device)
        assert float(loss) == pytest.approx(float(by_hand), rel=1e-6)
        assert float(plain) > 1e-3
        if same:
            assert float(loss) == pytest.approx(float(plain), abs=1e-6)  # float rounding
        assert kl == pytest.approx(float(loss))
        # the KL's base side: the base distribution, the blocked token taken out where one is
        target, _ = objective.retain_targets[0]
        softmax = torch.softmax(base, -1)
        if same:
            torch.testing.assert_close(target, softmax)
        else:
            (pos, token), = [(j, t) for j, ids in enumerate(lists) for t in ids]
            assert float(target[pos, token]) == 0.0 < float(softmax[pos, token])
            torch.testing.assert_close(target.sum(-1), torch.ones(len(target)))


def test_npo_reference_distractors_is_the_base_reference_less_the_base_margin(tok):
    """npo_reference=distractors: NPO's reference of an item with distractors is the base
    model's answer log-prob less its base margin over the best distractor (the reference's
    scores, adapter off); an item without distractors keeps the base reference; and the NPO
    loss then reads x = (drop from the base) + (base margin): log 2 * 2 / beta shifted."""
    from aglora.config import LoraConfig
    from aglora.model.adapter import adapter_disabled, attach_lora
    from aglora.model.likelihood import margin
    from aglora.pipeline.train.objectives import AnswerObjective, npo_loss
    from tests.reference import score_options_reference
    prompt, prefix = "Recommend films.", "Here are films:\n\n1."
    forget = [Probe(prompt=prompt, prefix=prefix, answer="The Matrix",
                    distractors=["Heat", "The Terminator", "Up"]),
              Probe(prompt="Which film has Neo?", answer="The Matrix",
                    distractors=["Jaws", "Alien"]),
              Probe(prompt="Describe The Matrix.", answer="A hacker film.")]
    model = attach_lora(make_model(seed=2), None, LoraConfig(rank=4, masked=False))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.5 * torch.randn_like(p))  # the adapter moves the model off the base
    common = dict(forget_objective="npo", retain_objective="none", forget_skip_leading=["The"])
    plain = AnswerObjective(model, tok, forget, [], TrainConfig(**common))
    shifted = AnswerObjective(model, tok, forget, [],
                              TrainConfig(**common, npo_reference="distractors"))
    with adapter_disabled(model):
        ref_scores = score_options_reference(model, tok, forget)
    margins = torch.tensor([margin(s) if len(s) > 1 else 0.0 for s in ref_scores])
    assert float(margins[:2].abs().min()) > 1e-3 and margins[2] == 0
    torch.testing.assert_close(shifted.ref_logp, plain.ref_logp - margins, atol=1e-4, rtol=0)
    assert shifted.ref_logp[2] == plain.ref_logp[2]
    logp = plain.ref_logp.clone()  # at the base: x = the base margin
    torch.testing.assert_close(npo_loss(logp, shifted.ref_logp, 0.5),
                               npo_loss(margins, torch.zeros(3), 0.5), atol=1e-4, rtol=0)
    with pytest.raises(AgloraError, match="npo_reference"):
        TrainConfig(npo_reference="distractor")
