"""Resume trusts nothing: a finished stage runs again when an input it read (the config, the
concept spec, its include or probe files, an earlier stage's artifact) changed, or when one of
its own artifacts is missing, truncated or edited, and so do the stages after it. The stages are
fakes here (they write their artifacts and count their calls); the real ones are covered by the
CLI pipeline test."""

from __future__ import annotations

import json

import pytest
import yaml

from aglora.config import RunConfig
from aglora.pipeline import run as run_mod
from aglora.pipeline.run import ARTIFACTS, STAGES, open_run, run_all
from aglora.runtime.lock import release_all


@pytest.fixture
def fake_stages(monkeypatch):
    calls: list[str] = []

    def make(stage):
        def fake(ctx):
            calls.append(stage)
            for rel in ARTIFACTS[stage]:
                path = ctx.run_dir / rel
                if rel in ("adapter", "figures"):
                    path.mkdir(exist_ok=True)
                    (path / "weights.bin").write_bytes(b"w" * 64)
                else:
                    path.write_text(f"{stage} output\n" * 8)
        return fake

    monkeypatch.setattr(run_mod, "STAGE_FUNCS", {s: make(s) for s in STAGES})
    yield calls
    release_all()


def _ctx(tmp_path, concept_path):
    cfg = RunConfig()
    cfg.concept = str(concept_path)
    return open_run(cfg, tmp_path / "run")


def _rerun(tmp_path, concept_path, calls):
    calls.clear()
    run_all(_ctx(tmp_path, concept_path))
    return list(calls)


def test_finished_run_reruns_nothing(tmp_path, concept_path, fake_stages):
    run_all(_ctx(tmp_path, concept_path))
    assert fake_stages == list(STAGES)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert set(state["artifacts"]) == set(STAGES) and set(state["inputs"]) == set(STAGES)
    assert all(len(h) == 64 for h in state["artifacts"]["train"].values())
    assert any(k.endswith("probes.jsonl") for k in state["inputs"]["eval"])
    assert _rerun(tmp_path, concept_path, fake_stages) == []


@pytest.mark.parametrize(("damage", "first"), [
    (lambda d: (d / "scores.safetensors").unlink(), "score"),
    (lambda d: (d / "scores.safetensors").write_text("trunc"), "score"),
    (lambda d: (d / "adapter" / "weights.bin").write_bytes(b"w" * 10), "train"),
    (lambda d: (d / "adapter" / "weights.bin").unlink(), "train"),
    (lambda d: (d / "train_items.jsonl").write_text("edited\n"), "record"),
    (lambda d: (d / "figures" / "weights.bin").unlink(), "report"),
])
def test_damaged_artifact_reruns_its_stage_and_the_later_ones(tmp_path, concept_path,
                                                              fake_stages, damage, first):
    run_all(_ctx(tmp_path, concept_path))
    damage(tmp_path / "run")
    assert _rerun(tmp_path, concept_path, fake_stages) == list(STAGES[STAGES.index(first):])


def test_changed_inputs_rerun_the_stages_that_read_them(tmp_path, concept_path, fake_stages):
    run_all(_ctx(tmp_path, concept_path))
    probes = concept_path.parent / "probes.jsonl"
    probes.write_text(probes.read_text().replace("please?", "please!"))
    assert _rerun(tmp_path, concept_path, fake_stages) == ["eval", "report"]
    spec = yaml.safe_load(concept_path.read_text())
    spec["retain"][0]["prompt"] = "Who made Titanic?"
    concept_path.write_text(yaml.safe_dump(spec))
    assert _rerun(tmp_path, concept_path, fake_stages) == list(STAGES)


def test_changed_include_file_reruns_record(tmp_path, concept_path, fake_stages):
    (concept_path.parent / "more.yaml").write_text("retain: ['What is the capital of Spain?']\n")
    spec = yaml.safe_load(concept_path.read_text())
    spec["include"] = ["more.yaml"]
    concept_path.write_text(yaml.safe_dump(spec))
    run_all(_ctx(tmp_path, concept_path))
    (concept_path.parent / "more.yaml").write_text("retain: ['What is the capital of Italy?']\n")
    assert _rerun(tmp_path, concept_path, fake_stages) == list(STAGES)


def test_a_stage_rerun_by_hand_invalidates_the_later_ones(tmp_path, concept_path, fake_stages):
    run_all(_ctx(tmp_path, concept_path))
    ctx = _ctx(tmp_path, concept_path)
    (tmp_path / "run" / "scores.safetensors").write_text("other scores\n")  # as a rerun would
    ctx.refresh_artifacts("score")  # the score stage's own record matches, later ones do not
    assert _rerun(tmp_path, concept_path, fake_stages) == ["mask", "train", "eval", "report"]


def test_state_from_an_earlier_version_is_not_trusted(tmp_path, concept_path, fake_stages):
    run_all(_ctx(tmp_path, concept_path))
    state_path = tmp_path / "run" / "state.json"
    state = json.loads(state_path.read_text())
    state_path.write_text(json.dumps({"finished": state["finished"],
                                      "wall_seconds": state["wall_seconds"]}))
    assert _rerun(tmp_path, concept_path, fake_stages) == list(STAGES)
    state_path.write_text("[1, 2]")  # not a state at all
    assert _rerun(tmp_path, concept_path, fake_stages) == list(STAGES)
    state_path.write_text('{"finished": {"rec')  # truncated
    assert _rerun(tmp_path, concept_path, fake_stages) == list(STAGES)
