"""`aglora check` (aglora.authoring.check) on a tiny model with planted facts: the facts it was
taught are known, the ones it was taught wrong are not, and --write-known keeps only the known."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from aglora.authoring.check import check_items, items_of, summary, write_known
from aglora.authoring.skeleton import write_skeleton
from aglora.concepts import Probe, load_concept
from aglora.errors import AgloraError
from aglora.pipeline.eval.relearn import finetune
from tests.tiny import make_model, write_probe_file

TAUGHT = [("Which city is the capital of Italy?", "Rome", ["Oslo", "Lima", "Kyiv"]),
          ("Which metal is liquid at room temperature?", "mercury", ["iron", "zinc", "tin"]),
          ("Which planet is the red one?", "Mars", ["Venus", "Pluto", "Ceres"])]
TAUGHT_WRONG = [("Which ocean is the largest?", "Pacific", ["Arctic", "Indian", "Baltic"]),
                ("Which animal says moo?", "cow", ["duck", "frog", "bee"])]


def _probes(rows, split: str, family: str) -> list[Probe]:
    return [Probe(prompt=q, prefix="The answer is", answer=a, distractors=d, split=split,
                  family=family, id=f"{family}-{i}") for i, (q, a, d) in enumerate(rows)]


def test_planted_facts_are_known_and_wrongly_taught_ones_are_not(tok, tmp_path):
    known = _probes(TAUGHT, "forget", "direct")
    unknown = _probes(TAUGHT_WRONG, "neighbor", "related")
    model = make_model(seed=0)
    lessons = known + [replace(p, answer=p.distractors[0]) for p in unknown]
    finetune(model, tok, lessons, steps=60, lr=3e-3, batch_size=5)
    path = write_probe_file(tmp_path / "p.jsonl", [p.to_dict() for p in known + unknown])
    checks = check_items(model, tok, items_of(str(path)), min_margin=0.5, generate_answers=False)
    assert [c.known for c in checks] == [True] * 3 + [False] * 2
    assert all(c.margin >= 0.5 for c in checks[:3]) and all(c.margin < 0 for c in checks[3:])
    rows = {r["group"]: r for r in summary(checks)}
    assert rows["forget"]["n_known"] == 3 and rows["neighbor"]["n_known"] == 0
    assert rows["forget/direct"]["known_share"] == 1.0
    out = tmp_path / "known.jsonl"
    assert write_known(checks, out) == 3
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == [p.id for p in known]
    # a stricter margin line turns the weakest known fact into a coin flip
    weakest = min(c.margin for c in checks[:3])
    strict = check_items(model, tok, items_of(str(path)), min_margin=weakest + 1e-3,
                         generate_answers=False)
    assert sum(c.known for c in strict) == 2


def test_items_without_options_are_never_known(tok, tmp_path):
    path = write_probe_file(tmp_path / "p.jsonl", [{"prompt": "Say hi.", "split": "forget"}])
    (c,) = check_items(make_model(), tok, items_of(str(path)), generate_answers=True,
                       max_new_tokens=3)
    assert c.margin is None and not c.known and isinstance(c.greedy, str)


def test_skeleton_is_a_loadable_spec_and_is_not_overwritten(tmp_path):
    paths = write_skeleton("The Beatles", tmp_path)
    assert [p.name for p in paths] == ["the-beatles.yaml", "train.yaml", "probes.jsonl"]
    spec = load_concept(str(paths[0]))
    assert spec.name == "The Beatles" and spec.forget and spec.retain and spec.eval_probes()
    with pytest.raises(AgloraError, match="exists; choose another name"):
        write_skeleton("The Beatles", tmp_path)
    write_skeleton("The Beatles", tmp_path, force=True)
