"""The bench table (aglora.bench.table) from fake cells."""

from __future__ import annotations

import pytest

from aglora.bench.config import load_bench_config
from aglora.bench.table import base_values, bench_markdown, summarise, write_outputs
from aglora.errors import AgloraError
from tests.bench.helpers import bench_yaml


def _fake_cell(label: str, seed: int, forget: float, kl: float, degenerate: bool = False) -> dict:
    def group(after: float, leak: float = 0.1) -> dict:
        return {"n_known": 10, "chance": 0.25,
                "known_accuracy": {"base": 1.0, "after": after},
                "margin": {"base": 2.0, "after": -1.0},
                "leak_rate": {"base": 0.6, "after": leak}}
    return {
        "method": label, "label": label, "seed": seed, "key": "k",
        "metrics": {"splits": {"forget": group(forget), "neighbor": group(0.9),
                               "utility": group(0.95)},
                    "families": {"forget/direct": group(forget, 0.2),
                                 "forget/adversarial": group(forget + 0.1, 0.3),
                                 "neighbor/same-answer": group(0.8)},
                    "distinct2": {"base": 0.5, "after": 0.5},
                    "kl_neighbor": kl, "verdict": {"degenerate": degenerate},
                    "relearn": {"recovered_share": 0.5, "recovered_share_margin": 0.4}},
        "train": {"steps": 10 + seed, "stopped_early": True, "seconds": 5.0, "history": []},
        "cost": {"method_seconds": 6.0, "eval_seconds": 3.0, "relearn_seconds": 1.0,
                 "peak_memory_bytes": 2**20 * 100, "trainable_params": 321024,
                 "effective_params": 1000, "artifact_bytes": 1_300_000, "kind": "adapter"},
    }


def test_table_from_fake_cells():
    cells = [_fake_cell("ag_lora", s, 0.2 + 0.1 * s, 0.01) for s in range(3)]
    cells += [_fake_cell("plain_lora", s, 0.3, 0.05, degenerate=s == 0) for s in range(2)]
    summary = summarise(cells)
    assert summary["ag_lora"]["seeds"] == [0, 1, 2]
    fa = summary["ag_lora"]["values"]["forget_acc"]
    assert fa["mean"] == pytest.approx(0.3) and fa["sd"] == pytest.approx(0.1)
    md = bench_markdown(summary, base_values(cells), "# t")
    main_table = md.split("Forget probes per family")[0]
    rows = {line.split("|")[1].strip(): line for line in main_table.splitlines()
            if line.startswith("| ")}
    assert "0.30 ± 0.10" in rows["ag_lora"]
    assert "1/2" in rows["plain_lora"]          # one collapsed cell of two
    assert "0/3" in rows["ag_lora"]
    assert "321.0k" in rows["ag_lora"] and "1.2 MiB" in rows["ag_lora"]
    assert "chance 0.25" in rows["base"]
    # Per-family table: both forget families, not the neighbour family.
    assert "adversarial (n=10)" in md and "same-answer" not in md
    assert "0.40 / 0.30" in md  # ag_lora adversarial: acc 0.3+0.1 mean, leak 0.3


def test_write_outputs_needs_cells(tmp_path, concept_path):
    cfg = load_bench_config(bench_yaml(tmp_path, concept_path))
    with pytest.raises(AgloraError, match="no finished cell"):
        write_outputs(tmp_path, cfg, cfg.entries, 1, {}, [])
