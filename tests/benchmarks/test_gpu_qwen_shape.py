"""benchmarks/gpu_qwen_shape.py runs end to end in its scaled-down CPU mode."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # 9 s on 2 CPU cores: a subprocess that imports torch and transformers
def test_gpu_qwen_shape_tiny_prints_the_table():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_qwen_shape.py"),
                           "--tiny", "--steps", "3", "--k", "16", "--gen-tokens", "4"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    ratio = re.search(r"masked / plain = ([0-9.]+) \[target <= 1.10\]", out)
    record = re.search(r"= ([0-9.]+) x forward\+backward", out)
    assert ratio and float(ratio.group(1)) > 0
    assert record and float(record.group(1)) > 0
    assert re.search(r"eval: likelihood choice \| [0-9.]+ probes/s", out)
