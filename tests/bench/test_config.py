"""Bench config parsing (aglora.bench.config): errors and per-cell settings."""

from __future__ import annotations

import pytest

from aglora.bench.config import load_bench_config, select_entries
from aglora.errors import AgloraError
from tests.bench.helpers import bench_yaml


def test_config_errors(tmp_path, concept_path):
    path = bench_yaml(tmp_path, concept_path, methods=["ag_lora", "nope"])
    with pytest.raises(AgloraError, match="unknown method 'nope'; choose from ag_lora"):
        load_bench_config(path)
    path = bench_yaml(tmp_path, concept_path,
                       methods=[{"method": "ag_lora", "set": ["run.train.nope=1"]}])
    with pytest.raises(AgloraError, match="run.train.nope"):
        load_bench_config(path)
    cfg = load_bench_config(bench_yaml(tmp_path, concept_path))
    with pytest.raises(AgloraError, match="choose from ag_lora, random-k8, act_edit"):
        select_entries(cfg, "full_gd")
    assert [e.label for e in select_entries(cfg, "random_lora")] == ["random-k8"]
    assert cfg.cell_settings(cfg.entries[1], 1).run.mask.k == 8
    assert cfg.cell_settings(cfg.entries[1], 1).run.train.seed == 1
    assert cfg.cell_settings(cfg.entries[0], 0).run.mask.k == 4
