"""`accelerate launch` of `aglora run` with two processes on the CPU (gloo), with each shipped
accelerate config (DDP-style and FSDP), against one process without a launch: the same masks
byte for byte (the main process records, scores and masks; the other reads its mask) and the
same adapter after training, up to float rounding.

Tolerance: atol 1e-5 on adapter weights of size ~0.4 (measured: under 1e-6). The two runs do
the same float32 arithmetic but add in another order: each process's term is a mean over its
share, the shares are added by the all-reduce (or FSDP's reduce-scatter), and a batch of 3 rows
runs its shared prefix once where a share of 1 row does not; AdamW's normalised step keeps
those ~1e-7 relative differences at that size over the 6 steps.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from tests.tiny import FORGET, RETAIN, make_model, make_tokenizer, write_probe_file

pytestmark = pytest.mark.slow
ACCELERATE = Path(__file__).resolve().parents[3] / "src/aglora/data/configs/accelerate"
ATOL = 1e-5


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Path:
    """A tiny model on disk, a concept spec and a run config; batch 3 splits 2 + 1 over two
    processes, early stopping stops at step 6 (every check meets stop_accuracy 1.0)."""
    root = tmp_path_factory.mktemp("launch")
    make_model().save_pretrained(root / "model")
    make_tokenizer().save_pretrained(root / "model")
    write_probe_file(root / "probes.jsonl", [
        {**r, "id": f"f{i}", "split": "forget", "family": "direct"} for i, r in enumerate(FORGET)])
    (root / "concept.yaml").write_text(yaml.safe_dump(
        {"name": "tiny", "forget": FORGET, "retain": RETAIN, "probes": ["probes.jsonl"]}))
    (root / "run.yaml").write_text(yaml.safe_dump({
        "name": "t", "concept": str(root / "concept.yaml"),
        "model": {"name_or_path": str(root / "model")}, "mask": {"k": 8}, "lora": {"rank": 2},
        "train": {"batch_size": 3, "lr": 0.05, "max_steps": 10, "min_steps": 6,
                  "check_every": 2, "stop_accuracy": 1.0, "stop_margin": 100.0},
        "eval": {"include_tofu": False}}))
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _aglora(root: Path, out: str, launch: list[str] | None = None) -> Path:
    """`aglora run ... --until train` in a fresh process (through `accelerate launch` if
    `launch` holds its arguments); both on one CPU thread per process, no GPU."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    head = ([sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", *launch,
             "--main_process_port", str(_free_port()), "-m", "aglora"] if launch
            else [sys.executable, "-m", "aglora"])
    cmd = [*head, "run", str(root / "run.yaml"), "--out", str(root / out), "--until", "train"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
    return root / out


@pytest.fixture(scope="module")
def single(setup: Path) -> Path:
    return _aglora(setup, "single")


@pytest.mark.parametrize("accelerate_config", ["multi_gpu.yaml", "fsdp.yaml"])
def test_two_processes_train_the_adapter_of_one(setup, single, accelerate_config):
    out = _aglora(setup, accelerate_config.removesuffix(".yaml"),
                  ["--config_file", str(ACCELERATE / accelerate_config), "--num_processes", "2"])
    for name in ("masks.safetensors", "masks.json", "scores.safetensors"):
        assert (out / name).read_bytes() == (single / name).read_bytes(), name
    one = load_file(single / "adapter/adapter_model.safetensors")
    two = load_file(out / "adapter/adapter_model.safetensors")
    assert one.keys() == two.keys()
    worst = max(float((one[k] - two[k]).abs().max()) for k in one)
    assert worst <= ATOL, f"adapter weights differ by up to {worst:.2e}"
    assert any(float(t.abs().max()) > 0.05 for t in one.values())  # it did train
    h1, h2 = (json.loads((d / "train_history.json").read_text()) for d in (single, out))
    assert (h2["steps"], h2["stop_reason"]) == (h1["steps"], h1["stop_reason"]) == (
        6, "forget items at the goal")
    for r1, r2 in zip(h1["history"], h2["history"], strict=True):
        assert r2["loss"] == pytest.approx(r1["loss"], abs=ATOL)
        assert r2["retain_kl"] == pytest.approx(r1["retain_kl"], abs=ATOL)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in single.iterdir())
