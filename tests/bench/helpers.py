"""A tiny bench config for the bench tests."""

from __future__ import annotations

from pathlib import Path

import yaml


def bench_yaml(tmp_path: Path, concept_path: Path, **extra) -> Path:
    cfg = {
        "run": {"concept": str(concept_path), "mask": {"k": 4},
                "lora": {"rank": 2},
                "train": {"max_steps": 2, "min_steps": 2, "batch_size": 2, "check_every": 1,
                          "lr": 1e-2},
                "eval": {"max_new_tokens": 3, "batch_size": 4, "include_tofu": False}},
        "seeds": 2,
        "methods": ["ag_lora", {"method": "random_lora", "label": "random-k8",
                                "set": ["run.mask.k=8"]}, "act_edit"],
        "rmu": {"layer": 1, "n_layers": 1},
        "eval": {"relearn_steps": 1},
        **extra,
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
