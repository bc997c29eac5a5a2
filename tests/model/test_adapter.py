"""Masked LoRA (aglora.model.adapter): the update is confined to the selected neurons, folds into
plain peft, and the base model stays untouched."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PeftModel

from aglora.config import LoraConfig, TrainConfig
from aglora.errors import AgloraError
from aglora.model.adapter import (
    attach_lora,
    count_parameters,
    load_adapter,
    merged_copy,
    save_adapter,
)
from aglora.pipeline.train.loop import train
from tests.tiny import LORA_FORGET, LORA_RETAIN, make_adapted, make_model, sparse_mask


def _delta(layer_module, name: str) -> torch.Tensor:
    """Effective dW = scale * B A of one LoRA-wrapped module. [out, in]"""
    lora = getattr(layer_module, name)
    a = lora.lora_A["default"].weight
    b = lora.lora_B["default"].weight
    return lora.scaling["default"] * b @ a


def _train(model, tok, modules, masked=True, steps=4):
    mask = sparse_mask()
    torch.manual_seed(0)
    pm = attach_lora(model, mask, LoraConfig(modules=modules, rank=4, masked=masked))
    cfg = TrainConfig(max_steps=steps, min_steps=steps, lr=1e-2, batch_size=2, check_every=10**6)
    train(pm, tok, LORA_FORGET, LORA_RETAIN, cfg, log=lambda *_: None)
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


def test_folded_adapter_computes_what_the_adapter_computes():
    pm = make_adapted()
    ids = torch.tensor([[5, 9, 14, 3, 27, 8]])
    with torch.no_grad():
        want = pm(input_ids=ids).logits
        merged = merged_copy(pm)
        got = merged(input_ids=ids).logits
        with pm.disable_adapter():
            base = pm(input_ids=ids).logits
    assert not hasattr(merged, "disable_adapter")          # a plain model
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(want, base, atol=1e-3)       # the adapter does change the output
    with torch.no_grad(), pm.disable_adapter():            # the adapter model is left as it was
        assert torch.equal(pm(input_ids=ids).logits, base)


def test_adapter_for_another_base_model_is_refused(tmp_path, tok):
    pm, _ = _train(make_model(seed=0), tok, ["down_proj"], steps=1)
    save_adapter(pm, tmp_path / "adapter", {})
    load_adapter(make_model(seed=0), tmp_path / "adapter")  # same base: fine
    with pytest.raises(AgloraError, match="another base model"):
        load_adapter(make_model(seed=1), tmp_path / "adapter")


def test_mask_for_another_model_is_refused():
    with pytest.raises(AgloraError, match="another model"):
        attach_lora(make_model(), sparse_mask(d_ff=64), LoraConfig())


def test_parameter_counts(tok):
    pm = attach_lora(make_model(), sparse_mask(), LoraConfig(modules=["down_proj"], rank=4))
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
