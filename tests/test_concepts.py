"""Concept and probe files: bad probe lines are named, an empty file and a forget set of one
prompt are refused."""

from __future__ import annotations

import pytest
import yaml

from aglora.concepts import load_concept, load_probes
from aglora.errors import AgloraError
from tests.tiny import write_probe_file


def test_probe_field_errors_and_skip_invalid(tmp_path):
    path = write_probe_file(tmp_path / "p.jsonl", [
        {"prompt": "ok?", "split": "forget"},
        {"prompt": "bad split", "split": "forgot"},
        {"prompt": "", "split": "forget"},
        {"prompt": "x", "split": "utility", "distractors": "not a list"},
    ])
    with pytest.raises(AgloraError, match=r"p.jsonl:2: split 'forgot'"):
        load_probes(path)
    probes, skipped = load_probes(path, skip_invalid=True)
    assert len(probes) == 1 and skipped == 3


def test_empty_probe_file(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(AgloraError, match="holds no probes"):
        load_probes(tmp_path / "e.jsonl")


def test_forget_set_of_one_prompt_is_refused(concept_path):
    spec = yaml.safe_load(concept_path.read_text())
    spec["forget"] = spec["forget"][:1]
    concept_path.write_text(yaml.safe_dump(spec))
    with pytest.raises(AgloraError, match="one item"):
        load_concept(concept_path)
