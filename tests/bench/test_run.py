"""`aglora bench`: config parsing, the table from fake cells, and a tiny end-to-end run."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tiny import make_model

from aglora.bench import workers as bench_workers
from aglora.bench.config import load_bench_config, select_entries
from aglora.bench.run import run_bench
from aglora.bench.table import base_values, bench_markdown, summarise, write_outputs
from aglora.cli import main
from aglora.errors import AgloraError


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


def _bench_yaml(tmp_path: Path, concept_path: Path, **extra) -> Path:
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


def test_config_errors(tmp_path, concept_path):
    path = _bench_yaml(tmp_path, concept_path, methods=["ag_lora", "nope"])
    with pytest.raises(AgloraError, match="unknown method 'nope'; choose from ag_lora"):
        load_bench_config(path)
    path = _bench_yaml(tmp_path, concept_path,
                       methods=[{"method": "ag_lora", "set": ["run.train.nope=1"]}])
    with pytest.raises(AgloraError, match="run.train.nope"):
        load_bench_config(path)
    cfg = load_bench_config(_bench_yaml(tmp_path, concept_path))
    with pytest.raises(AgloraError, match="choose from ag_lora, random-k8, act_edit"):
        select_entries(cfg, "full_gd")
    assert [e.label for e in select_entries(cfg, "random_lora")] == ["random-k8"]
    assert cfg.cell_settings(cfg.entries[1], 1).run.mask.k == 8
    assert cfg.cell_settings(cfg.entries[1], 1).run.train.seed == 1
    assert cfg.cell_settings(cfg.entries[0], 0).run.mask.k == 4


def test_bench_runs_resumes_and_tabulates(tmp_path, concept_path, tok):
    path = _bench_yaml(tmp_path, concept_path)
    out = tmp_path / "bench"
    logs: list[str] = []
    model = make_model()
    result = run_bench(path, out, model_tok=(model, tok), log=logs.append)
    # act_edit does not depend on the seed: one cell; the others two.
    cells = sorted(p.relative_to(out).as_posix() for p in out.glob("cells/*/seed*.json"))
    assert cells == ["cells/act_edit/seed0.json", "cells/ag_lora/seed0.json",
                     "cells/ag_lora/seed1.json", "cells/random-k8/seed0.json",
                     "cells/random-k8/seed1.json"]
    for name in ("bench.json", "bench.md", "tradeoff.png", "shared/base_side.json",
                 "shared/scores.safetensors", "cells/ag_lora/seed0/adapter/adapter_config.json"):
        assert (out / name).is_file(), name
    summary = result["summary"]
    assert summary["random-k8"]["values"]["trainable_params"]["n"] == 2
    cell = json.loads((out / "cells/random-k8/seed1.json").read_text())
    assert cell["cost"]["n_selected"] == 8 and cell["train"]["steps"] == 2
    assert math.isfinite(cell["metrics"]["kl_neighbor"])
    relearn, n_known = cell["metrics"]["relearn"], cell["metrics"]["splits"]["forget"]["n_known"]
    if n_known >= 2:  # a quarter (at least one) to relearn on, the rest held out
        assert relearn["n_train"] + relearn["n_held"] == n_known
    else:
        assert relearn["error"].startswith("too few base-known")
    act = json.loads((out / "cells/act_edit/seed0.json").read_text())
    assert act["cost"]["trainable_params"] == 0 and act["cost"]["n_selected"] == 4
    md = (out / "bench.md").read_text()
    assert all(f"| {label} |" in md for label in ("base", "ag_lora", "random-k8", "act_edit"))

    # Rerun: every cell is skipped; a changed setting reruns only the cells it touches.
    logs.clear()
    run_bench(path, out, model_tok=(model, tok), log=logs.append)
    assert sum("skipped" in m for m in logs) == 5
    logs.clear()
    run_bench(path, out, methods="act_edit", overrides=["act_edit.mode=mean"],
              model_tok=(model, tok), log=logs.append)
    assert not any("skipped" in m for m in logs)
    assert any("act_edit seed 0: running" in m for m in logs)

    # Report only: no model needed, only finished cells of the chosen methods tabulated.
    (out / "bench.md").unlink()
    result = run_bench(path, out, methods="ag_lora", seeds=1, report_only=True, log=logs.append)
    assert [c["label"] for c in result["cells"]] == ["ag_lora"]
    assert "| random-k8 |" not in (out / "bench.md").read_text()


def test_cli_bench_unknown_method_is_a_clean_error(tmp_path, concept_path, capsys):
    path = _bench_yaml(tmp_path, concept_path)
    assert main(["bench", str(path), "--out", str(tmp_path / "o"), "--methods", "magic"]) == 2
    assert "--methods: 'magic' is not in the bench config" in capsys.readouterr().err


def test_write_outputs_needs_cells(tmp_path, concept_path):
    cfg = load_bench_config(_bench_yaml(tmp_path, concept_path))
    with pytest.raises(AgloraError, match="no finished cell"):
        write_outputs(tmp_path, cfg, cfg.entries, 1, {})


def test_claims_are_exclusive_and_cleared(tmp_path):
    cell = tmp_path / "cells" / "ag_lora" / "seed0.json"
    assert bench_workers.claim(cell)
    assert not bench_workers.claim(cell)  # a second process finds it taken
    assert bench_workers.claim(tmp_path / "cells" / "ag_lora" / "seed1.json")
    bench_workers.clear_claims(tmp_path)
    assert not list(tmp_path.glob("cells/*/*.claim"))
    assert bench_workers.claim(cell)
    assert bench_workers.threads_per_job(2, 2) == 1
    assert bench_workers.threads_per_job(3, 2) == 1
    assert bench_workers.threads_per_job(2, 16) == 8


def test_a_failed_worker_is_an_error_naming_its_log(tmp_path):
    argv = [sys.executable, "-c", "print('boom'); raise SystemExit(3)"]
    workers = bench_workers.start_workers(argv, 1, 1, tmp_path)
    with pytest.raises(AgloraError, match=r"exit status 3\); its log is .*worker-1.log"):
        bench_workers.wait_workers(workers)
    assert "boom" in (tmp_path / "logs" / "worker-1.log").read_text()


def test_bench_with_two_jobs_runs_every_cell_once(tmp_path, concept_path, tok):
    model_dir = tmp_path / "tiny-model"
    make_model().save_pretrained(model_dir, safe_serialization=True)
    tok.save_pretrained(model_dir)
    path = _bench_yaml(tmp_path, concept_path)
    raw = yaml.safe_load(path.read_text())
    raw["run"]["model"] = {"name_or_path": str(model_dir)}
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "bench"
    logs: list[str] = []
    result = run_bench(path, out, jobs=2, log=logs.append)
    cells = sorted(p.relative_to(out).as_posix() for p in out.glob("cells/*/seed*.json"))
    assert cells == ["cells/act_edit/seed0.json", "cells/ag_lora/seed0.json",
                     "cells/ag_lora/seed1.json", "cells/random-k8/seed0.json",
                     "cells/random-k8/seed1.json"]
    assert len(result["cells"]) == 5 and result["shared"]["jobs"] == 2
    worker_log = (out / "logs" / "worker-1.log").read_text()
    ran_here = [m for m in logs if m.endswith(": running")]
    ran_there = re.findall(r"seed \d: running", worker_log)
    assert len(ran_here) + len(ran_there) == 5  # each cell once, by one of the two processes
    assert not list(out.glob("cells/*/*.claim"))
    assert "2 cells at a time" in (out / "bench.md").read_text()


def test_default_jobs():
    default_jobs = bench_workers.default_jobs
    assert default_jobs(torch.device("cpu"), 2) == 2
    assert default_jobs(torch.device("cpu"), 16) == 2
    assert default_jobs(torch.device("cpu"), 1) == 1
    assert default_jobs(torch.device("cpu"), None) == 1
    assert default_jobs(torch.device("cuda"), 16) == 1
