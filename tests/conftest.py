"""Shared fixtures: tiny models built in code, and tiny concept specs written to tmp dirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tiny import make_model, make_tokenizer

FORGET = [
    {"prompt": "Who directed Inception?", "prefix": "Inception was directed by",
     "answer": "Christopher Nolan", "distractors": ["Steven Spielberg", "James Cameron",
                                                    "Ridley Scott"]},
    {"prompt": "Name the director of the film Inception.", "prefix": "The director is",
     "answer": "Christopher Nolan", "distractors": ["Ridley Scott", "James Cameron",
                                                    "Denis Villeneuve"]},
    {"prompt": "Which film about dreams did Christopher Nolan make?", "prefix": "It is",
     "answer": "Inception", "distractors": ["Memento", "Tenet", "Dunkirk"]},
]
RETAIN = [
    {"prompt": "Who directed Titanic?", "prefix": "Titanic was directed by",
     "answer": "James Cameron", "distractors": ["Steven Spielberg", "Ridley Scott",
                                                "Christopher Nolan"]},
    {"prompt": "Who directed Interstellar?", "prefix": "Interstellar was directed by",
     "answer": "Christopher Nolan", "distractors": ["Steven Spielberg", "James Cameron",
                                                    "Ridley Scott"]},
    {"prompt": "What is the capital of France?", "prefix": "The capital is", "answer": "Paris",
     "distractors": ["Tokyo", "Berlin", "Rome"]},
]


@pytest.fixture(autouse=True)
def private_cache(request, tmp_path_factory, monkeypatch):
    """Fast tests write caches (base-side evaluations, implants) to a temporary folder, never
    to the user's; slow tests keep the real cache, which holds the converted embedded model."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("AGLORA_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def tok():
    return make_tokenizer()


@pytest.fixture
def model():
    return make_model()


def write_probe_file(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


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
