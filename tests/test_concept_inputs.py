"""Bad concept input gets one clear line and exit 2: an answer among its distractors, a duplicate
probe id, `--set` where it has no effect, a concept whose validation items nobody knows."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from aglora.cli import main
from aglora.concepts import Probe, load_probes
from aglora.config import LoraConfig, TrainConfig
from aglora.errors import AgloraError
from aglora.model.adapter import attach_lora
from aglora.pipeline.eval.relearn import finetune
from aglora.pipeline.train.loop import train
from tests.tiny import make_model, write_probe_file

ROW = {"id": "a", "split": "forget", "prompt": "Who directed Inception?", "prefix": "By",
       "answer": "Christopher Nolan", "distractors": ["Ridley Scott", "Sam Mendes", "Ang Lee"]}


def test_an_answer_among_its_distractors_is_refused(tmp_path):
    path = write_probe_file(tmp_path / "p.jsonl", [{**ROW, "distractors": ["christopher nolan",
                                                                            "Ang Lee", "Up"]}])
    with pytest.raises(AgloraError, match=r"p.jsonl:1: the answer 'Christopher Nolan' is also "
                                          "among the distractors"):
        load_probes(path)


def test_a_duplicate_probe_id_names_both_lines(tmp_path):
    path = write_probe_file(tmp_path / "p.jsonl", [ROW, {**ROW, "prompt": "Again?"}])
    with pytest.raises(AgloraError, match=r"p.jsonl:2: probe id 'a' also on line 1"):
        load_probes(path)


def test_check_reports_a_bad_probe_file_in_one_line(tmp_path, capsys):
    path = write_probe_file(tmp_path / "p.jsonl", [ROW, ROW])
    assert main(["check", str(path), "--no-generate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aglora: error: ") and "probe id 'a'" in err and err.count("\n") == 1


def test_set_where_it_has_no_effect_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\n")
    assert main(["eval", str(run), "--set", "eval.n_samples=0"]) == 2
    assert "--set has no effect on a run's eval stage" in capsys.readouterr().err
    assert main(["recommend", "--adapter", str(run), "hi", "--set", "train.lr=1"]) == 2
    assert "reads only recommend.* settings" in capsys.readouterr().err


def test_a_concept_whose_validation_items_nobody_knows_is_refused(tok):
    """The tiny model is taught the first distractor of every validation item: it knows none of
    their answers, and training says so before the first step, naming `aglora check`."""
    unknown = [Probe(prompt=f"Question {i}?", prefix="It is", answer=a, distractors=d)
               for i, (a, d) in enumerate([("Rome", ["Oslo", "Lima", "Kyiv"]),
                                           ("Mars", ["Venus", "Pluto", "Ceres"])])]
    model = make_model(seed=0)
    finetune(model, tok, [replace(p, answer=p.distractors[0]) for p in unknown], steps=40,
             lr=3e-3, batch_size=2)
    pm = attach_lora(model, None, LoraConfig(rank=2, masked=False))
    with pytest.raises(AgloraError, match=r"knows none of the validation forget items.*"
                                          r"aglora check"):
        train(pm, tok, unknown, [], TrainConfig(max_steps=1, min_steps=1, retain_objective="none"),
              validation=unknown)


def test_the_verdict_rules_are_written_in_the_metrics_doc():
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    assert "partly forgotten" in doc and "neighbours damaged" in doc


def test_probe_rows_round_trip(tmp_path):
    path = write_probe_file(tmp_path / "p.jsonl", [ROW])
    (p,) = load_probes(path)[0]
    assert json.loads(json.dumps(p.to_dict()))["answer"] == "Christopher Nolan"
