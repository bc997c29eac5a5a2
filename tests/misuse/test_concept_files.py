"""Concept specs and probe files are parsed in full before any model loads: wrong types, bad
bytes, contradictions and missing probes are one line naming the file (and line) and the fix.

The run configs here point at a model that does not exist: a check that came after the model
load would fail with "model ... not found" instead of its own message."""

from __future__ import annotations

import json

import pytest
import yaml

from aglora.concepts import load_concept, load_probes
from aglora.errors import AgloraError
from tests.misuse.conftest import assert_nothing_lost, refused, snapshot, write_config
from tests.tiny import write_probe_file


def _spec(concept_path, **changes):
    spec = yaml.safe_load(concept_path.read_text())
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    concept_path.write_text(yaml.safe_dump(spec))
    return concept_path


def _run_refused(capsys, tmp_path, concept_path, *fragments):
    cfg = write_config(tmp_path, concept_path)
    before = snapshot(tmp_path)
    err = refused(capsys, ["run", str(cfg), "--out", str(tmp_path / "run")], *fragments)
    assert "no-such-model" not in err  # found before the model load
    assert not (tmp_path / "run" / "activations.safetensors").exists()
    assert_nothing_lost(before, tmp_path)
    return err


SPEC_CASES = [
    ({"leak_patterns": "incep"}, ["'leak_patterns' must be a list", "leak_patterns: [\"incep\"]"]),
    ({"leak_patterns": [1, 2]}, ["leak_patterns[0] must be a non-empty string, got 1"]),
    ({"leak_patterns": ["(unclosed"]}, ["is not a valid regex"]),
    ({"refusals": "I don't know"}, ["'refusals' must be a list"]),
    ({"alternatives": "Memento"}, ["'alternatives' must be a list"]),
    ({"include": "more.yaml"}, ["'include' must be a list", "include: [items/forget.yaml]"]),
    ({"probes": "probes.jsonl"}, ["'probes' must be a list", "probes: [probes.jsonl]"]),
    ({"probes": None}, ["lists no evaluation probes under 'probes:'"]),
    ({"probes": ["missing.jsonl"]}, ["missing.jsonl not found"]),
    ({"description": ["a", "list"]}, ["'description' must be a string"]),
    ({"forget": [{"prompt": "Who directed Inception?", "answer": "   "},
                 {"prompt": "Name the director of Inception.", "answer": "Nolan"}]},
     ["'answer' is empty"]),
    ({"forget": [{"prompt": "Who directed Inception?", "answer": "Nolan",
                  "distractors": ["Cameron", " "]},
                 {"prompt": "Name the director of Inception.", "answer": "Nolan"}]},
     ["'distractors' holds an empty string"]),
    ({"forget": [42, "Who directed Inception?"]}, ["forget[0] must be a prompt string"]),
    ({"forget": [{"prompt": "Who directed Inception?", "unknown_field": 1},
                 "Name the director of Inception."]}, ["unknown field 'unknown_field'"]),
    ({1: "numeric key"}, ["unknown key '1'"]),
]


@pytest.mark.parametrize(("changes", "fragments"), SPEC_CASES,
                         ids=[str(sorted(map(str, c)))[:40] + f"-{i}"
                              for i, (c, _) in enumerate(SPEC_CASES)])
def test_malformed_concept_spec_is_refused_before_the_model(capsys, tmp_path, concept_path,
                                                            changes, fragments):
    _spec(concept_path, **{str(k): v for k, v in changes.items()} if 1 not in changes else {})
    if 1 in changes:  # a key YAML reads as a number
        concept_path.write_text(concept_path.read_text() + "1: numeric key\n")
    _run_refused(capsys, tmp_path, concept_path, *fragments)


def test_forget_item_identical_to_a_retain_item(capsys, tmp_path, concept_path):
    spec = yaml.safe_load(concept_path.read_text())
    spec["retain"].append(dict(spec["forget"][0]))
    concept_path.write_text(yaml.safe_dump(spec))
    _run_refused(capsys, tmp_path, concept_path, "is also retain item",
                 "drop it from one of the two sets")


def test_include_file_with_unknown_key_or_wrong_items(capsys, tmp_path, concept_path):
    (tmp_path / "more.yaml").write_text("forget: ['Who made Inception?']\nprobes: [x.jsonl]\n")
    _spec(concept_path, include=["more.yaml"])
    _run_refused(capsys, tmp_path, concept_path, "more.yaml: unknown key 'probes'")
    (tmp_path / "more.yaml").write_text("retain: a string, not a list\n")
    _run_refused(capsys, tmp_path, concept_path, "'retain' must be a list of items")


def test_non_utf8_concept_spec_names_the_line(capsys, tmp_path, concept_path):
    concept_path.write_bytes(concept_path.read_bytes() + b"description: caf\xe9\n")
    n = concept_path.read_bytes().count(b"\n")
    _run_refused(capsys, tmp_path, concept_path, f"concept.yaml:{n}: not UTF-8 text",
                 "save the file as UTF-8")


def test_non_utf8_probe_file_names_the_line_also_with_skip_invalid(capsys, tmp_path,
                                                                   concept_path):
    probes = concept_path.parent / "probes.jsonl"
    with probes.open("ab") as fh:
        fh.write(b'{"prompt": "caf\xe9?", "split": "forget"}\n')
    n = probes.read_bytes().count(b"\n")
    _run_refused(capsys, tmp_path, concept_path, f"probes.jsonl:{n}: not UTF-8 text")
    refused(capsys, ["eval", "--probes", str(probes), "--out", str(tmp_path / "ev"),
                     "--skip-invalid"], f"probes.jsonl:{n}: not UTF-8 text")
    with pytest.raises(AgloraError, match=f"probes.jsonl:{n}: not UTF-8"):
        load_probes(probes, skip_invalid=True)


def test_probe_file_that_is_not_jsonl_is_found_before_record(capsys, tmp_path, concept_path):
    probes = concept_path.parent / "probes.jsonl"
    probes.write_text(json.dumps([{"prompt": "a?", "split": "forget"}], indent=2))
    _run_refused(capsys, tmp_path, concept_path, "probes.jsonl:1: malformed JSON")


def test_probe_file_with_a_whitespace_answer(capsys, tmp_path, concept_path):
    probes = concept_path.parent / "probes.jsonl"
    write_probe_file(probes, [{"prompt": "a?", "split": "forget", "answer": " \t ",
                               "distractors": ["b"]}])
    _run_refused(capsys, tmp_path, concept_path, "probes.jsonl:1: 'answer' is empty")


def test_probe_file_checks_also_in_forget_and_stage_commands(capsys, tmp_path, concept_path):
    (concept_path.parent / "probes.jsonl").write_text("not json\n")
    before = snapshot(tmp_path)
    refused(capsys, ["forget", str(concept_path), "--out", str(tmp_path / "f"), "--model",
                     str(tmp_path / "no-such-model")], "probes.jsonl:1: malformed JSON")
    cfg = write_config(tmp_path, concept_path)
    refused(capsys, ["record", str(tmp_path / "s"), "--config", str(cfg)],
            "probes.jsonl:1: malformed JSON")
    assert_nothing_lost(before, tmp_path)


def test_parsers_accept_the_shipped_specs():
    for name in ("inception",):
        spec = load_concept(f"builtin:{name}")
        assert spec.forget and spec.retain and spec.eval_probes()
        assert spec.input_files()[0] == spec.source
