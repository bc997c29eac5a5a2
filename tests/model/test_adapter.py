"""Masked LoRA: the update is confined to the selected neurons, folds into plain peft, and the
base model stays untouched."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PeftModel
from tiny import make_model

from aglora.concepts import Probe
from aglora.config import LoraConfig, TrainConfig
from aglora.errors import AgloraError
from aglora.model.adapter import attach_lora, count_parameters, load_adapter, save_adapter
from aglora.model.neurons import NeuronMask
from aglora.pipeline.train.loop import train

FORGET = [Probe(prompt="Who directed Inception?", prefix="It was directed by",
                answer="Christopher Nolan", distractors=["James Cameron"])]
RETAIN = [Probe(prompt="Who directed Titanic?", prefix="It was directed by",
                answer="James Cameron", split="neighbor")]


def _mask(n_layers: int = 3, d_ff: int = 48) -> NeuronMask:
    m = torch.zeros(n_layers, d_ff)
    m[0, [1, 7, 30]] = 1
    m[2, [0, 47]] = 1  # layer 1 has no neuron: it must get no LoRA
    return NeuronMask(m, list(range(n_layers)))


def _delta(layer_module, name: str) -> torch.Tensor:
    """Effective dW = scale * B A of one LoRA-wrapped module. [out, in]"""
    lora = getattr(layer_module, name)
    a = lora.lora_A["default"].weight
    b = lora.lora_B["default"].weight
    return lora.scaling["default"] * b @ a


def _train(model, tok, modules, masked=True, steps=4):
    mask = _mask()
    torch.manual_seed(0)
    pm = attach_lora(model, mask, LoraConfig(modules=modules, rank=4, masked=masked))
    cfg = TrainConfig(max_steps=steps, min_steps=steps, lr=1e-2, batch_size=2, check_every=10**6)
    train(pm, tok, FORGET, RETAIN, cfg, log=lambda *_: None)
    return pm, mask


@pytest.mark.parametrize("modules", [["down_proj"], ["gate_proj", "up_proj"],
                                     ["down_proj", "gate_proj", "up_proj"]])
def test_update_touches_only_selected_neurons(model, tok, modules):
    pm, mask = _train(model, tok, modules)
    layers = pm.base_model.model.model.layers
    for li in (0, 2):
        sel = mask.row(li).bool()
        for name in modules:
            delta = _delta(layers[li].mlp, name)
            if name == "down_proj":      # neurons are inputs: columns
                assert torch.count_nonzero(delta[:, ~sel]) == 0
                assert torch.count_nonzero(delta[:, sel]) > 0
            else:                        # neurons are outputs: rows
                assert torch.count_nonzero(delta[~sel, :]) == 0
                assert torch.count_nonzero(delta[sel, :]) > 0
    # A layer without selected neurons gets no LoRA at all.
    assert not hasattr(layers[1].mlp.down_proj, "lora_A")


def test_base_weights_bit_identical_after_training(tok):
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pm, _ = _train(model, tok, ["down_proj", "up_proj"])
    after = pm.get_base_model().state_dict()
    for key, value in before.items():
        mapped = key.replace("down_proj.weight", "down_proj.base_layer.weight").replace(
            "up_proj.weight", "up_proj.base_layer.weight")
        got = after[mapped] if mapped in after else after[key]
        assert torch.equal(got, value), key


def test_only_lora_parameters_train(tok):
    pm, _ = _train(make_model(), tok, ["down_proj"])
    names = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)


def test_folded_adapter_matches_in_memory_and_disabled_equals_base(tmp_path, tok):
    base_ref = make_model()
    ids = tok(["Who directed Inception? It was directed by"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base_logits = base_ref(ids).logits
    pm, _ = _train(make_model(), tok, ["down_proj", "gate_proj"])
    with torch.no_grad():
        mem_logits = pm(input_ids=ids).logits
        with pm.disable_adapter():
            disabled = pm(input_ids=ids).logits
    assert torch.equal(disabled, base_logits)            # exact, not approximate
    assert not torch.allclose(mem_logits, base_logits)   # the adapter does something
    save_adapter(pm, tmp_path / "adapter", {"concept": "test"})
    # Plain peft, no aglora code: the saved weights carry no parametrization keys.
    from safetensors.torch import load_file
    keys = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors")).keys()
    assert keys and all("parametrizations" not in k for k in keys)
    loaded = PeftModel.from_pretrained(make_model(), str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        folded_logits = loaded(input_ids=ids).logits
    torch.testing.assert_close(folded_logits, mem_logits, atol=1e-5, rtol=0)
    # The in-memory model keeps working (mask restored) after saving.
    with torch.no_grad():
        torch.testing.assert_close(pm(input_ids=ids).logits, mem_logits, atol=0, rtol=0)


def test_adapter_for_another_base_model_is_refused(tmp_path, tok):
    pm, _ = _train(make_model(seed=0), tok, ["down_proj"], steps=1)
    save_adapter(pm, tmp_path / "adapter", {})
    load_adapter(make_model(seed=0), tmp_path / "adapter")  # same base: fine
    with pytest.raises(AgloraError, match="another base model"):
        load_adapter(make_model(seed=1), tmp_path / "adapter")


def test_mask_for_another_model_is_refused():
    with pytest.raises(AgloraError, match="another model"):
        attach_lora(make_model(), _mask(d_ff=64), LoraConfig())


def test_parameter_counts(tok):
    pm = attach_lora(make_model(), _mask(), LoraConfig(modules=["down_proj"], rank=4))
    trainable, effective, base = count_parameters(pm)
    # Two layers with LoRA: A [4, 48] and B [32, 4] each.
    assert trainable == 2 * (4 * 48 + 32 * 4)
    # Effective: A masked to 3 resp. 2 columns, B full.
    assert effective == 4 * 3 + 4 * 2 + 2 * 32 * 4
    assert base == sum(p.numel() for p in make_model().parameters())


def test_plain_lora_on_all_layers(tok):
    pm = attach_lora(copy.deepcopy(make_model()), None, LoraConfig(masked=False, all_layers=True))
    layers = pm.base_model.model.model.layers
    assert all(hasattr(layer.mlp.down_proj, "lora_A") for layer in layers)


@pytest.mark.parametrize("retain_objective", ["kl", "nll", "kl+nll"])
def test_retain_objectives_reduce_their_own_loss(tok, retain_objective):
    """With the retain term dominating, training lowers the retain loss it optimises."""
    from aglora.pipeline.train.loop import train

    torch.manual_seed(0)
    pm = attach_lora(make_model(), _mask(), LoraConfig(modules=["down_proj"], rank=4))
    for p in pm.parameters():  # start away from the base so the KL term has something to undo
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.3)
    cfg = TrainConfig(max_steps=12, min_steps=12, lr=1e-2, batch_size=3, check_every=10**6,
                      forget_objective="refusal", retain_objective=retain_objective,
                      retain_weight=100.0)
    history = train(pm, tok, FORGET, RETAIN, cfg, refusals=["film"],
                    log=lambda *_: None).history
    assert history[-1]["retain_loss"] < history[0]["retain_loss"]


def test_cached_base_logits_give_the_same_training(tok, monkeypatch):
    """The retain items' base logits, computed once, give the losses of per-step computation."""
    import aglora.pipeline.train.reference as train_mod

    retain = RETAIN + [Probe(prompt="Name a film by Ridley Scott.", answer="Alien",
                             split="neighbor"),
                       Probe(prompt="Who wrote Dune?", prefix="It was written by",
                             answer="Frank Herbert", split="neighbor")]
    histories = []
    for limit in (train_mod.BASE_LOGITS_CACHE_BYTES, 0):  # cached, then per step
        monkeypatch.setattr(train_mod, "BASE_LOGITS_CACHE_BYTES", limit)
        model = make_model()
        torch.manual_seed(0)
        pm = attach_lora(model, _mask(), LoraConfig(modules=["down_proj"], rank=4))
        cfg = TrainConfig(max_steps=5, min_steps=5, lr=1e-2, batch_size=2, check_every=10**6)
        histories.append(train(pm, tok, FORGET, retain, cfg, log=lambda *_: None).history)
    cached, per_step = histories
    assert [r["retain_kl"] for r in cached[1:]] == pytest.approx(
        [r["retain_kl"] for r in per_step[1:]], rel=1e-4, abs=1e-7)
    assert max(r["retain_kl"] for r in cached) > 0  # the adapter moved: KL is not trivially 0
    assert [r["loss"] for r in cached] == pytest.approx([r["loss"] for r in per_step], rel=1e-4)


def test_cached_base_logits_split_per_item(tok):
    from aglora.model.tokens import encode
    from aglora.pipeline.train.reference import cached_base_logits

    model = make_model()
    items = RETAIN + [Probe(prompt="Name a film by Ridley Scott.", answer="Alien")]
    per_item = cached_base_logits(model, tok, items, batch_size=2, reference=None)
    for item, logits in zip(items, per_item, strict=True):
        b = encode(tok, [item], [item.answer])
        assert logits.shape == (int(b.content_mask.sum()), model.config.vocab_size)
    assert cached_base_logits(model, tok, items, 2, None, limit_bytes=0) is None
