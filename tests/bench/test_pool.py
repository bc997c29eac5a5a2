"""Running the bench's cells (aglora.bench.pool): job counts, a cell's log lines, and a failed
cell as one error naming it, in this process and in the process pool."""

from __future__ import annotations

import json
from concurrent.futures.process import BrokenProcessPool

import pytest
import torch
import yaml

from aglora.bench import pool
from aglora.bench.run import run_bench
from aglora.cli import main
from aglora.errors import AgloraError
from tests.bench.helpers import bench_yaml
from tests.tiny import make_model

FAILING = ["ag_lora", {"method": "random_lora", "label": "random-big",
                       "set": ["run.mask.k=100000"]}]  # more neurons than the tiny model has


def test_jobs_and_threads():
    assert pool.threads_per_job(2, 2) == 1
    assert pool.threads_per_job(3, 2) == 1
    assert pool.threads_per_job(2, 16) == 8
    assert pool.default_jobs(torch.device("cpu"), 2) == 2
    assert pool.default_jobs(torch.device("cpu"), 16) == 2
    assert pool.default_jobs(torch.device("cpu"), 1) == 1
    assert pool.default_jobs(torch.device("cpu"), None) == 1
    assert pool.default_jobs(torch.device("cuda"), 16) == 1


def test_a_cells_lines_name_it_and_training_steps_are_thinned():
    lines: list[str] = []
    log = pool._quiet(lines.append, "ag_lora seed 1")
    for step in (1, 5, 7, 10):
        log(f"[aglora] step {step:3d} loss 0.5")
    log("[aglora] stopped early")
    assert lines == ["[bench] ag_lora seed 1: [aglora] step   5 loss 0.5",
                     "[bench] ag_lora seed 1: [aglora] step  10 loss 0.5",
                     "[bench] ag_lora seed 1: [aglora] stopped early"]


def test_failure_messages_name_the_cell():
    msg = str(pool.cell_failure(["rmu seed 2"], AgloraError("mask.k=9 exceeds the layer")))
    assert msg.startswith("bench cell rmu seed 2 failed: mask.k=9 exceeds the layer. The "
                          "finished cells are kept")
    assert "cell x seed 0 failed: RuntimeError: boom." in str(
        pool.cell_failure(["x seed 0"], RuntimeError("boom")))
    # A dead worker process: every cell in flight is named.
    assert str(pool.cell_failure(["x seed 0", "y seed 1"], BrokenProcessPool("gone"))).startswith(
        "bench cells x seed 0, y seed 1 failed: a worker process stopped abruptly while they ran")


def test_a_failed_cell_in_this_process_is_one_error_naming_it(tmp_path, concept_path, tok,
                                                              monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")
    monkeypatch.setattr(pool, "run_cell", boom)
    path = bench_yaml(tmp_path, concept_path, methods=["ag_lora"], seeds=1)
    logs: list[str] = []
    with pytest.raises(AgloraError, match=r"^bench cell ag_lora seed 0 failed: RuntimeError: "
                                          r"boom\. The finished cells are kept"):
        run_bench(path, tmp_path / "bench", model_tok=(make_model(), tok), log=logs.append)
    assert any(m.startswith("[bench] ag_lora seed 0 failed:\nTraceback") for m in logs)


def test_the_cli_prints_a_failed_cell_as_one_error_line(tmp_path, concept_path, tok, capsys):
    model_dir = tmp_path / "tiny-model"
    make_model().save_pretrained(model_dir, safe_serialization=True)
    tok.save_pretrained(model_dir)
    path = bench_yaml(tmp_path, concept_path, methods=FAILING[1:], seeds=1)
    raw = yaml.safe_load(path.read_text())
    raw["run"]["model"] = {"name_or_path": str(model_dir)}
    path.write_text(yaml.safe_dump(raw))
    assert main(["bench", str(path), "--out", str(tmp_path / "b"), "--jobs", "1"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(
        "aglora: error: bench cell random-big seed 0 failed: mask.k=100000 exceeds")


@pytest.mark.slow  # 11-21 s on 2 busy CPU cores: a pool of two processes
def test_a_failed_cell_in_the_pool_is_one_error_naming_it(tmp_path, concept_path, tok):
    path = bench_yaml(tmp_path, concept_path, methods=FAILING, seeds=1)
    out = tmp_path / "bench"
    logs: list[str] = []
    with pytest.raises(AgloraError, match=r"^bench cell random-big seed 0 failed: mask\.k=100000 "
                                          r"exceeds the model's 144 MLP neurons.*rerun the same "
                                          r"command to finish the rest$"):
        run_bench(path, out, model_tok=(make_model(), tok), jobs=2, log=logs.append)
    # The cell that was running beside it finished and is kept for the rerun.
    assert json.loads((out / "cells/ag_lora/seed0.json").read_text())["label"] == "ag_lora"
    assert not (out / "cells/random-big/seed0.json").exists()
    assert not (out / "bench.md").exists()
