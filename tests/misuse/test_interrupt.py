"""An interrupted run resumes to the same result, and a full disk is one line, not a traceback."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from aglora.cli import main
from aglora.runtime.lock import LOCK_NAME
from tests.misuse.conftest import refused, snapshot, write_config


@pytest.mark.slow
def test_sigkill_during_training_resumes_to_the_uninterrupted_result(tmp_path, concept_path,
                                                                     tiny_dir):
    cfg = write_config(tmp_path, concept_path, tiny_dir, train={"max_steps": 60, "min_steps": 60,
                                                                 "batch_size": 2})
    ref = tmp_path / "ref"
    assert main(["run", str(cfg), "--out", str(ref)]) == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "aglora", "run", str(cfg), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
    state = out / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it once the mask is done, while it trains
        if state.is_file() and '"mask"' in state.read_text(errors="replace"):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = json.loads(state.read_text()).get("finished", {})
    assert "mask" in finished and "train" not in finished, finished  # killed mid-training
    assert not (out / "metrics.json").exists()
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    for name in ("adapter/adapter_model.safetensors", "masks.safetensors",
                 "probe_results.jsonl"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    leftovers = [p for p in snapshot(out)
                 if p.split("/")[-1].startswith(".") and p != LOCK_NAME]
    assert leftovers == []  # no half-written temporary file survived the kill


def test_a_full_disk_is_one_line_and_keeps_the_finished_stages(capsys, tmp_path, concept_path,
                                                                tiny_dir, monkeypatch):
    cfg = write_config(tmp_path, concept_path, tiny_dir)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--until", "record"]) == 0
    kept = (out / "activations.safetensors").read_bytes()

    import aglora.runtime.artifacts as artifacts
    real = artifacts.save_tensors

    def no_space(path, *args, **kwargs):
        if str(path).endswith("scores.safetensors"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(artifacts, "save_tensors", no_space)
    import aglora.pipeline.run as run_mod
    monkeypatch.setattr(run_mod, "save_tensors", no_space)
    refused(capsys, ["run", str(cfg), "--out", str(out), "--until", "score"],
            "No space left on device", "free some disk space", "finished stages are kept")
    assert (out / "activations.safetensors").read_bytes() == kept
    assert not (out / "scores.safetensors").exists()
