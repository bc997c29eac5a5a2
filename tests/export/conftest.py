"""Run directories built by hand for the export tests: a tiny base model saved to disk, a
config.yaml naming it, and adapter/ written by save_adapter from a masked LoRA with non-zero
factors (as after training)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from aglora.config import LoraConfig, ModelConfig, RunConfig, dump_config
from aglora.model.adapter import attach_lora, save_adapter
from aglora.model.neurons import NeuronMask
from tests.tiny import make_model, make_tokenizer


def save_base(path: Path, seed: int = 0) -> Path:
    make_model(seed=seed).save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> Path:
    return save_base(tmp_path_factory.mktemp("export") / "base")


@pytest.fixture(scope="session")
def other_base_dir(tmp_path_factory) -> Path:
    return save_base(tmp_path_factory.mktemp("export") / "other-base", seed=1)


def load_base(model_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def make_run(run_dir: Path, adapter_base: Path, config_base: Path | None = None, rank: int = 8,
             modules: tuple[str, ...] = ("down_proj",)):
    """A run directory whose adapter was made on `adapter_base` and whose config.yaml names
    `config_base` (default: the same); returns (run_dir, the adapted model in memory)."""
    run_dir.mkdir(parents=True)
    cfg = RunConfig(name="tiny", model=ModelConfig(name_or_path=str(config_base or adapter_base),
                                                   device="cpu"),
                    lora=LoraConfig(modules=list(modules), rank=rank))
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    mask = NeuronMask(torch.zeros(3, 48), [0, 1, 2])
    mask.mask[0, [1, 7, 30]] = 1
    mask.mask[2, [0, 47]] = 1
    torch.manual_seed(0)
    pm = attach_lora(load_base(adapter_base), mask, cfg.lora)
    for name, p in pm.named_parameters():
        if "lora_B" in name:  # non-zero, as after training
            torch.nn.init.normal_(p, std=0.2)
    pm.eval()
    save_adapter(pm, run_dir / "adapter", {"concept": "tiny"})
    return run_dir, pm


@pytest.fixture
def run(tmp_path, base_dir):
    """A rank-8 masked down_proj adapter on the tiny base: (run_dir, adapted model)."""
    return make_run(tmp_path / "run", base_dir)
