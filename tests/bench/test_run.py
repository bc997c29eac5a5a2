"""`aglora bench` end to end on a tiny model (aglora.bench.run): runs, resumes, tabulates; with
two jobs (a process pool) the same cells and table as with one, and a rerun that computes only the
missing cell."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from aglora.bench.run import run_bench
from tests.bench.helpers import bench_yaml
from tests.tiny import make_model

CELLS = ["cells/act_edit/seed0.json", "cells/ag_lora/seed0.json", "cells/ag_lora/seed1.json",
         "cells/random-k8/seed0.json", "cells/random-k8/seed1.json"]


@pytest.mark.slow  # 6.6 s on 2 CPU cores (three methods, two seeds, three reruns)
def test_bench_runs_resumes_and_tabulates(tmp_path, concept_path, tok):
    path = bench_yaml(tmp_path, concept_path)
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


def _comparable(cell: dict) -> dict:
    """A cell without what depends on timing or process memory, nor the hashes of its inputs
    and artifact (another bench's shared/base_side.json holds another timing)."""
    cost = {k: v for k, v in cell["cost"].items()
            if not k.endswith("_seconds") and k != "peak_memory_bytes"}
    train = {k: v for k, v in cell["train"].items() if not k.endswith("seconds")}
    train["history"] = [{k: v for k, v in row.items() if not k.endswith("seconds")}
                        for row in cell["train"]["history"]]
    kept = {k: v for k, v in cell.items() if k not in ("inputs", "artifacts")}
    return {**kept, "cost": cost, "train": train}


def _table(md: str) -> list[list[str]]:
    """bench.md's table rows without the header line and the timing and memory columns."""
    rows, drop = [], set()
    for line in md.splitlines():
        if not line.startswith("| "):
            continue
        cols = [c.strip() for c in line.strip("|").split("|")]
        if cols[0] == "method":
            drop = {i for i, c in enumerate(cols) if c in ("train s", "peak MB")}
        rows.append([c for i, c in enumerate(cols) if i not in drop])
    return rows


@pytest.mark.slow  # 20-37 s on 2 busy CPU cores: a bench in this process, one in a pool of two
def test_two_jobs_give_the_table_and_cells_of_one_job(tmp_path, concept_path, tok, one_thread):
    path = bench_yaml(tmp_path, concept_path)
    model = make_model()
    runs = {}
    for jobs in (1, 2):
        logs: list[str] = []
        out = tmp_path / f"bench-j{jobs}"
        result = run_bench(path, out, model_tok=(model, tok), jobs=jobs, log=logs.append)
        runs[jobs] = (out, result, logs)
    (one, one_result, _), (two, two_result, logs) = runs[1], runs[2]
    assert CELLS == sorted(p.relative_to(two).as_posix() for p in two.glob("cells/*/seed*.json"))
    for name in CELLS:
        a, b = (json.loads((d / name).read_text()) for d in (one, two))
        assert _comparable(b) == _comparable(a), name
    assert _table((two / "bench.md").read_text()) == _table((one / "bench.md").read_text())
    assert two_result["base"] == one_result["base"]
    # Every cell ran once, in a worker, and its lines came back here.
    ran = [m.split(") ", 1)[1] for m in logs if m.endswith(": running")]
    assert sorted(ran) == sorted(set(ran)) and len(ran) == 5
    assert two_result["shared"]["jobs"] == 2
    assert "2 cells at a time" in (two / "bench.md").read_text()
    assert not (two / "logs").exists() and not list(two.glob("cells/*/*.claim"))


@pytest.mark.slow  # 12-25 s on 2 busy CPU cores: a bench here, then a rerun in a pool
def test_a_rerun_in_the_pool_computes_only_the_missing_cell(tmp_path, concept_path, tok,
                                                            one_thread):
    # Both runs load run.model from disk, as under `aglora bench`.
    model_dir = tmp_path / "tiny-model"
    make_model().save_pretrained(model_dir, safe_serialization=True)
    tok.save_pretrained(model_dir)
    path = bench_yaml(tmp_path, concept_path)
    raw = yaml.safe_load(path.read_text())
    raw["run"]["model"] = {"name_or_path": str(model_dir)}
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "bench"
    run_bench(path, out, jobs=1, log=lambda m: None)
    before = {name: (out / name).stat().st_mtime_ns for name in CELLS}
    missing = "cells/ag_lora/seed1.json"
    first = json.loads((out / missing).read_text())
    (out / missing).unlink()
    logs: list[str] = []
    result = run_bench(path, out, jobs=2, log=logs.append)
    assert [m for m in logs if m.endswith(": running")] == ["[bench] (4/5) ag_lora seed 1: running"]
    assert sum(m.endswith("done before, skipped") for m in logs) == 4
    assert "1 cell(s) to run, 1 at a time in worker processes" in "\n".join(logs)
    for name in CELLS:
        if name != missing:
            assert (out / name).stat().st_mtime_ns == before[name], name
    assert _comparable(json.loads((out / missing).read_text())) == _comparable(first)  # as here
    assert len(result["cells"]) == 5
