"""`aglora run` and `aglora eval` (aglora.cli.run): bad input gets one clear line on stderr and
a non-zero exit, never a traceback; and the CLI runs a whole pipeline on a tiny model saved to
disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from aglora.cli import main
from tests.tiny import make_model, make_tokenizer, write_probe_file


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    d = tmp_path / "tiny-model"
    make_model().save_pretrained(d)
    make_tokenizer().save_pretrained(d)
    return d


def _config(tmp_path: Path, concept: Path, model_dir: Path | str | None = None, **extra) -> Path:
    cfg = {"name": "t", "concept": str(concept),
           "model": {"name_or_path": str(model_dir) if model_dir else None},
           "mask": {"k": 8}, "lora": {"rank": 2},
           "train": {"max_steps": 3, "batch_size": 2},
           "eval": {"include_tofu": False, "max_new_tokens": 6, "n_samples": 1}}
    for key, value in extra.items():
        section, name = key.split("__")
        cfg[section][name] = value
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("aglora: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_missing_config_file(capsys, tmp_path):
    assert "file not found" in _error(capsys, ["run", str(tmp_path / "nope.yaml")])


def test_malformed_yaml_names_the_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain:\n  lr: [1\n  steps: 2\n")
    assert "malformed YAML at line" in _error(capsys, ["run", str(bad)])


def test_unknown_config_key(capsys, tmp_path, concept_path):
    cfg = _config(tmp_path, concept_path)
    err = _error(capsys, ["run", str(cfg), "--set", "train.learning_rate=1"])
    assert "train.learning_rate" in err


def test_unknown_module_name(capsys, tmp_path, concept_path):
    cfg = _config(tmp_path, concept_path)
    err = _error(capsys, ["run", str(cfg), "--set", "lora.modules=[o_proj]"])
    assert "unknown module name" in err and "o_proj" in err


def test_empty_forget_set(capsys, tmp_path, concept_path):
    spec = yaml.safe_load(concept_path.read_text())
    spec["forget"] = []
    concept_path.write_text(yaml.safe_dump(spec))
    err = _error(capsys, ["run", str(_config(tmp_path, concept_path)), "--out",
                          str(tmp_path / "run")])
    assert "forget set is empty" in err


def test_missing_concept_file(capsys, tmp_path):
    err = _error(capsys, ["run", str(_config(tmp_path, tmp_path / "missing.yaml")), "--out",
                          str(tmp_path / "run")])
    assert "missing.yaml" in err and "not found" in err


def test_malformed_probe_line_named(capsys, tmp_path):
    path = write_probe_file(tmp_path / "p.jsonl", [{"prompt": "a?", "split": "forget"}])
    with path.open("a") as fh:
        fh.write('{"prompt": "b?", "split": "forget"\n')
    err = _error(capsys, ["eval", "--probes", str(path), "--out", str(tmp_path / "o")])
    assert "p.jsonl:2" in err and "malformed JSON" in err


def test_output_dir_with_another_run(capsys, tmp_path, concept_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("name: other\n")
    err = _error(capsys, ["run", str(_config(tmp_path, concept_path)), "--out", str(out)])
    assert "holds another run" in err and "--force" in err


def test_model_not_found(capsys, tmp_path, concept_path):
    cfg = _config(tmp_path, concept_path, model_dir=tmp_path / "no-such-model")
    err = _error(capsys, ["run", str(cfg), "--out", str(tmp_path / "run")])
    assert "not found" in err


def test_cli_pipeline_on_tiny_model_resumes_and_refuses_other_base(capsys, tmp_path,
                                                                   concept_path, tiny_dir):
    cfg = _config(tmp_path, concept_path, tiny_dir)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--until", "eval"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["splits"]) == {"forget", "neighbor", "utility"}
    assert metrics["families"]["forget/direct"]["n"] == 3
    assert metrics["trainable_params"] > 0 and metrics["base_params"] > 0
    state = json.loads((out / "state.json").read_text())
    assert list(state["finished"]) == ["record", "score", "mask", "train", "eval"]
    capsys.readouterr()
    # Rerun: everything finished is skipped.
    assert main(["run", str(cfg), "--out", str(out), "--until", "eval"]) == 0
    assert capsys.readouterr().out.count("already finished") == 5
    # The adapter is refused on another base model.
    other = tmp_path / "other-model"
    make_model(seed=5).save_pretrained(other)
    make_tokenizer().save_pretrained(other)
    probes = concept_path.parent / "probes.jsonl"
    capsys.readouterr()
    err = _error(capsys, ["eval", "--adapter", str(out), "--base", str(other), "--probes",
                          str(probes), "--out", str(tmp_path / "ev")])
    assert "another base model" in err


def test_eval_on_a_new_probe_file_with_bad_lines_skipped(capsys, tmp_path, tiny_dir):
    path = write_probe_file(tmp_path / "new.jsonl", [
        {"id": "a", "split": "forget", "family": "direct", "prompt": "Who directed Inception?",
         "prefix": "It was directed by", "answer": "Christopher Nolan",
         "distractors": ["James Cameron", "Ridley Scott"], "leak_patterns": ["nolan"]},
        {"id": "b", "split": "neighbor", "family": "same-actor",
         "prompt": "Who directed Titanic?", "answer": "James Cameron",
         "distractors": ["Ridley Scott"]},
        {"id": "c", "split": "utility", "family": "general", "format": "completion",
         "prompt": "The capital of France is", "answer": "Paris", "distractors": ["Tokyo"]},
    ])
    with path.open("a") as fh:
        fh.write("not json at all\n")
    out = tmp_path / "ev"
    code = main(["eval", "--base", str(tiny_dir), "--probes", str(path), "--out", str(out),
                 "--skip-invalid", "--samples", "1"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped_invalid_lines"] == 1
    assert metrics["families"]["forget/direct"]["n"] == 1
    assert metrics["splits"]["forget"]["leak_rate"]["n_generations"] == 2  # greedy + 1 sample
    lines = (out / "probe_results.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["a", "b", "c"]
    # Without an adapter the model is the base model: after equals base.
    assert metrics["splits"]["utility"]["accuracy_all"]["base"] == \
        metrics["splits"]["utility"]["accuracy_all"]["after"]


@pytest.mark.slow
def test_run_and_standalone_eval_run_the_robustness_attacks(capsys, tmp_path, concept_path,
                                                            tiny_dir):
    cfg = _config(tmp_path, concept_path, tiny_dir, eval__relearn_curve=[1, 2],
                  eval__relearn_benign=True, eval__relearn_in_context=True)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    printed = capsys.readouterr().out
    for key, line in (("relearn", "relearning attack: "), ("relearn_benign", "benign relearning"),
                      ("relearn_in_context", "in-context attack: ")):
        assert key in metrics and line in printed
    if "error" not in metrics["relearn"]:
        assert [p["steps"] for p in metrics["relearn"]["curve"]] == [1, 2]
    assert [p["steps"] for p in metrics["relearn_benign"]["curve"]] == [1, 2]
    assert "Relearning attacks" in (out / "report.md").read_text()
    # standalone: --relearn gives the checkpoints; the benign and in-context attacks follow the
    # adapter's config, here turned off by --set
    ev = tmp_path / "ev"
    assert main(["eval", "--adapter", str(out), "--probes", str(concept_path.parent /
                                                                "probes.jsonl"),
                 "--out", str(ev), "--relearn", "1,3", "--set", "eval.relearn_benign=false",
                 "--set", "eval.relearn_in_context=false"]) == 0
    alone = json.loads((ev / "metrics.json").read_text())
    assert "relearn" in alone and "relearn_benign" not in alone
    assert "relearn_in_context" not in alone
    if "error" not in alone["relearn"]:
        assert [p["steps"] for p in alone["relearn"]["curve"]] == [1, 3]


def test_standalone_relearn_takes_checkpoints_and_refuses_bad_ones(capsys, tmp_path):
    from aglora.pipeline.eval.standalone import relearn_checkpoints
    assert relearn_checkpoints(0) == [] and relearn_checkpoints(20) == [20]
    assert relearn_checkpoints([50, 5, 10, 20, 10]) == [5, 10, 20, 50]
    probes = write_probe_file(tmp_path / "p.jsonl", [{"prompt": "a?", "split": "forget"}])
    argv = ["eval", "--probes", str(probes), "--out", str(tmp_path / "o"), "--relearn"]
    assert "--relearn 5,x: expected steps" in _error(capsys, [*argv, "5,x"])
    assert "--relearn 5,0: steps must be 1 or more" in _error(capsys, [*argv, "5,0"])
    assert "--relearn needs --adapter" in _error(capsys, [*argv, "5,10"])
    assert not (tmp_path / "o").exists()
