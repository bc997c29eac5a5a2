"""Masked LoRA on top of peft's LoRA, folded into a plain peft adapter on save.

For the selected neurons m (0/1 over d_ff) of a layer:
- `down_proj` (neurons are its inputs):            dW = B A diag(m)  -> A <- A diag(m)
- `gate_proj`, `up_proj` (neurons are outputs):    dW = diag(m) B A  -> B <- diag(m) B
The mask is a `torch.nn.utils.parametrize` parametrization of the LoRA weight, so the effective
weight is masked by construction whatever the optimiser does, and gradients reach only the
selected entries. `save_adapter` folds the mask into the weights, so the saved adapter is an
ordinary peft LoRA that `PeftModel.from_pretrained` (or vLLM / llama.cpp) loads with no aglora
code. Base weights are frozen; only `lora_*` parameters train.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from aglora.config import LoraConfig
from aglora.errors import AgloraError
from aglora.model.identity import check_fingerprint, fingerprint
from aglora.model.neurons import NeuronMask, mlp_layers
from aglora.runtime.artifacts import atomic_dir

META_FILE = "aglora.json"


class RowColumnMask(nn.Module):
    """Parametrization W -> W * mask, the mask broadcast over rows ([1, n]) or columns ([n, 1])."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def _masked_weight(lora_layer: nn.Module, module_name: str, adapter: str) -> tuple[nn.Linear, str]:
    """The LoRA factor to mask for a module and the broadcast axis ('col' or 'row')."""
    if module_name == "down_proj":
        return lora_layer.lora_A[adapter], "col"   # A: [r, d_ff]
    return lora_layer.lora_B[adapter], "row"        # B: [d_ff, r]


def attach_lora(model: nn.Module, mask: NeuronMask | None, cfg: LoraConfig,
                adapter: str = "default") -> nn.Module:
    """Wrap `model` in a peft LoRA model on the MLP modules; confine it to `mask` if masked."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    layers = mlp_layers(model)
    if cfg.all_layers or mask is None:
        chosen = [layer.index for layer in layers]
    else:
        chosen = mask.layers_with_neurons()
    if not chosen:
        raise AgloraError("the mask selects no neuron; raise mask.k")
    by_index = {layer.index: layer for layer in layers}
    if mask is not None and (mask.mask.shape[1] != layers[0].d_ff
                             or any(i not in by_index for i in mask.layer_indices)):
        raise AgloraError(f"the mask has shape {tuple(mask.mask.shape)} over layers "
                          f"{mask.layer_indices[:3]}..., but the model has {len(layers)} layers "
                          f"of {layers[0].d_ff} MLP neurons; it was made for another model")
    targets = [f"{by_index[i].prefix}.{m}" for i in chosen for m in cfg.modules]
    peft_cfg = PeftLoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, bias="none",
                              target_modules=targets, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, peft_cfg, adapter_name=adapter)
    if cfg.masked and mask is not None:
        for layer in mlp_layers(peft_model):
            if layer.index not in chosen:
                continue
            row = mask.row(layer.index)  # [d_ff]
            for m in cfg.modules:
                lin, axis = _masked_weight(getattr(layer.module, m), m, adapter)
                shaped = row[None, :] if axis == "col" else row[:, None]
                shaped = shaped.to(lin.weight.device, lin.weight.dtype)
                with torch.no_grad():
                    lin.weight.mul_(shaped)  # stored entries outside the mask start at zero too
                parametrize.register_parametrization(lin, "weight", RowColumnMask(shaped))
    for name, p in peft_model.named_parameters():
        if p.requires_grad and "lora_" not in name:
            raise AssertionError(f"non-LoRA parameter is trainable: {name}")
    return peft_model


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]


def count_parameters(model: nn.Module) -> tuple[int, int, int]:
    """(trainable LoRA params, effective (unmasked) LoRA params, base params)."""
    trainable = sum(p.numel() for p in trainable_parameters(model))
    effective = 0
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            mask = module.parametrizations.weight[0].mask
            effective += int(mask.expand_as(module.weight).sum())
        elif isinstance(module, nn.Linear) and any(
                p.requires_grad for p in module.parameters(recurse=False)):
            effective += module.weight.numel()
    base = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    return trainable, effective, base


@contextmanager
def folded_masks(model: nn.Module) -> Iterator[None]:
    """Temporarily fold each mask into its weight (plain tensors), restoring it afterwards."""
    saved = []
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            mask_mod = module.parametrizations.weight[0]
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            saved.append((module, mask_mod))
    try:
        yield
    finally:
        for module, mask_mod in saved:
            parametrize.register_parametrization(module, "weight", mask_mod)


def adapter_disabled(model: nn.Module):
    """Context in which a peft model runs as its base model (a no-op for a plain model)."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()


def merged_copy(model: nn.Module) -> nn.Module:
    """A plain model with the adapter folded into a copy of the weights (a plain model: itself).

    Evaluation runs the after side on it: the same function as the adapter up to float rounding,
    without the LoRA branch's extra matmuls.
    """
    if not hasattr(model, "merge_and_unload"):
        return model
    merged = copy.deepcopy(model).merge_and_unload()
    merged.eval()
    return merged


def standalone_copy(model: nn.Module) -> nn.Module:
    """A deep copy that runs and trains on its own: a peft model's adapter merged into a copy of
    the weights, a plain model copied."""
    return merged_copy(model) if hasattr(model, "merge_and_unload") else copy.deepcopy(model)


def save_adapter(model: nn.Module, out_dir: Path, meta: dict) -> int:
    """Write a plain peft adapter (mask folded) plus aglora.json; return adapter bytes."""
    with atomic_dir(out_dir) as tmp:
        with folded_masks(model):
            model.save_pretrained(tmp, safe_serialization=True)
        full_meta = {"format": "aglora-adapter/1", "base_fingerprint": fingerprint(model), **meta}
        (tmp / META_FILE).write_text(json.dumps(full_meta, indent=2) + "\n")
    return sum(f.stat().st_size for f in Path(out_dir).iterdir() if f.is_file())


def load_adapter(base: nn.Module, adapter_dir: Path, check: bool = True) -> nn.Module:
    """Load a saved adapter onto `base`, refusing one made for another base model."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if (adapter_dir / "adapter" / "adapter_config.json").is_file():
        adapter_dir = adapter_dir / "adapter"
    if not (adapter_dir / "adapter_config.json").is_file():
        raise AgloraError(f"{adapter_dir}: no adapter_config.json here; give a run directory or "
                          "its adapter/ folder")
    meta_path = adapter_dir / META_FILE
    if check and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        check_fingerprint(meta["base_fingerprint"], base, f"adapter {adapter_dir}")
    check_finite(adapter_dir)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    model.eval()
    return model


def check_finite(adapter_dir: Path) -> None:
    """Refuse an adapter whose weights hold NaN or infinity (a diverged or damaged training)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    for path in sorted(Path(adapter_dir).glob("*.safetensors")):
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise AgloraError(f"{path}: unreadable adapter weights ({str(exc).splitlines()[0]})"
                              "; retrain it (aglora train RUN_DIR)") from None
        for name, t in tensors.items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                bad = int((~torch.isfinite(t)).sum())
                raise AgloraError(f"{path}: adapter weight {name} holds {bad} non-finite "
                                  "value(s) (NaN or inf: training diverged); retrain with a lower "
                                  "train.lr")
