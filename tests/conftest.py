"""Shared fixtures: tiny models built in code, and tiny concept specs written to tmp dirs.

The data and model builders live in `tests/tiny.py` (`from tests.tiny import ...`); FORGET,
RETAIN and write_probe_file are re-exported here for older imports."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests.tiny import FORGET, RETAIN, make_model, make_tokenizer, write_probe_file

__all__ = ["FORGET", "RETAIN", "write_probe_file"]


@pytest.fixture(autouse=True)
def private_cache(request, tmp_path_factory, monkeypatch):
    """Tests write caches (base-side evaluations, implants) to a temporary folder, never to the
    user's; only the tests on the embedded model keep the real cache, which holds the converted
    embedded model."""
    if request.node.get_closest_marker("embedded") is None:
        monkeypatch.setenv("AGLORA_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def tok():
    return make_tokenizer()


@pytest.fixture
def model():
    return make_model()


@pytest.fixture
def one_thread():
    """torch on 1 thread for the test, restored after: a run in this process then sums in the
    order a pool worker on 1 thread does, so the two give the same floats."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def two_threads():
    """torch on 2 threads for the test, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def concept_path(tmp_path: Path) -> Path:
    probes = []
    for i, r in enumerate(FORGET):
        probes.append({**r, "id": f"f{i}", "split": "forget", "family": "direct",
                       "prompt": r["prompt"].replace("?", " please?"),
                       "leak_patterns": ["nolan", "incep"]})
    for i, r in enumerate(RETAIN):
        probes.append({**r, "id": f"n{i}", "split": "neighbor", "family": "same-answer"})
    probes.append({"id": "u0", "split": "utility", "family": "general", "format": "completion",
                   "prompt": "The capital of Japan is", "answer": "Tokyo",
                   "distractors": ["Paris", "Rome", "Berlin"]})
    write_probe_file(tmp_path / "probes.jsonl", probes)
    spec = {"name": "tiny-inception", "forget": FORGET, "retain": RETAIN,
            "leak_patterns": ["incep"], "probes": ["probes.jsonl"]}
    path = tmp_path / "concept.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
