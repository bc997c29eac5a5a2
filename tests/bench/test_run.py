"""`aglora bench` end to end on a tiny model (aglora.bench.run): runs, resumes, tabulates, and
runs every cell once with two jobs."""

from __future__ import annotations

import json
import math
import re

import pytest
import yaml

from aglora.bench.run import run_bench
from tests.bench.helpers import bench_yaml
from tests.tiny import make_model


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


@pytest.mark.slow  # 4.9-5.7 s on 2 CPU cores: two processes, each loading the model
def test_bench_with_two_jobs_runs_every_cell_once(tmp_path, concept_path, tok):
    model_dir = tmp_path / "tiny-model"
    make_model().save_pretrained(model_dir, safe_serialization=True)
    tok.save_pretrained(model_dir)
    path = bench_yaml(tmp_path, concept_path)
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
