"""What can only be checked once the model is loaded (mask.k against its neurons, prompt
lengths against its context) is checked right after the load, before any stage writes; an
adapter with non-finite weights is refused on load; a "$" in a family name is text in figures;
and a real run reruns the stage whose artifact was damaged."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from aglora.errors import AgloraError
from aglora.model.adapter import load_adapter, save_adapter
from aglora.pipeline.report.figures import plot_families
from tests.misuse.conftest import refused, write_config
from tests.tiny import make_adapted, make_model


@pytest.mark.parametrize(("mask", "message"), [
    ({"k": 145}, "mask.k=145 exceeds the model's 144 MLP neurons (3 layers); lower mask.k"),
    ({"k": 49, "selection": "topk_per_layer"}, "mask.k=49 exceeds the 48 neurons of a layer"),
])
def test_mask_k_above_the_neuron_count_is_refused_not_capped(capsys, tmp_path, concept_path,
                                                             tiny_dir, mask, message):
    cfg = write_config(tmp_path, concept_path, tiny_dir, mask=mask)
    refused(capsys, ["run", str(cfg), "--out", str(tmp_path / "run")], message)
    assert not (tmp_path / "run" / "activations.safetensors").exists()


def test_prompt_longer_than_the_context_is_refused(capsys, tmp_path, concept_path, tiny_dir):
    spec = yaml.safe_load(concept_path.read_text())
    spec["retain"].append({"prompt": "film " * 700 + "?", "answer": "Paris"})
    concept_path.write_text(yaml.safe_dump(spec))
    cfg = write_config(tmp_path, concept_path, tiny_dir)
    refused(capsys, ["run", str(cfg), "--out", str(tmp_path / "run")], "retain item",
            "longer than the model's context of 512", "shorten the prompt")
    assert not (tmp_path / "run" / "activations.safetensors").exists()


def test_long_probe_in_a_standalone_eval_is_refused(capsys, tmp_path, tiny_dir):
    probes = tmp_path / "long.jsonl"
    probes.write_text('{"id": "long", "split": "forget", "prompt": "' + "film " * 700 + '"}\n')
    refused(capsys, ["eval", "--base", str(tiny_dir), "--probes", str(probes), "--out",
                     str(tmp_path / "ev")], "probe 'long'", "longer than the model's context")
    assert not (tmp_path / "ev" / "metrics.json").exists()


def test_adapter_with_non_finite_weights_is_refused(tmp_path):
    save_adapter(make_adapted(), tmp_path / "adapter", {})
    load_adapter(make_model(), tmp_path / "adapter")  # a sound adapter loads
    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    name = sorted(tensors)[0]
    tensors[name][0, 0] = math.nan
    save_file(tensors, str(weights))
    with pytest.raises(AgloraError, match=r"holds 1 non-finite value.*retrain with a lower"):
        load_adapter(make_model(), tmp_path / "adapter")
    weights.write_bytes(weights.read_bytes()[:50])  # truncated
    with pytest.raises(AgloraError, match="unreadable adapter weights"):
        load_adapter(make_model(), tmp_path / "adapter")


def test_dollar_signs_in_family_names_do_not_break_the_figures(tmp_path):
    group = {"known_accuracy": {"base": 1.0, "after": 0.2}, "chance": 0.25,
             "leak_rate": {"base": 0.5, "after": 0.1, "n_generations": 4}}
    fams = {"forget/$5 films": group, "forget/$x^{$": group, "forget/$\\frac$ films": group,
            "neighbor/$$": group}  # mathtext would raise on the middle two
    assert plot_families({"families": fams}, tmp_path / "families.png")
    assert (tmp_path / "families.png").read_bytes().startswith(b"\x89PNG")


def test_real_run_reruns_a_truncated_artifact(capsys, tmp_path, concept_path, tiny_dir):
    from aglora.cli import main
    cfg = write_config(tmp_path, concept_path, tiny_dir)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--until", "mask"]) == 0
    scores = (out / "scores.safetensors").read_bytes()
    (out / "scores.safetensors").write_bytes(scores[: len(scores) // 2])
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(out), "--until", "mask"]) == 0
    printed = capsys.readouterr().out
    assert "record: already finished" in printed
    assert "score: rerun (scores.safetensors changed" in printed
    assert (out / "scores.safetensors").read_bytes() == scores  # byte-identical rerun


def test_mask_selection_refuses_rather_than_caps():
    # The bench, the controlled track and the methods select through the same function.
    from aglora.config import MaskConfig
    from aglora.pipeline.mask import select
    score = torch.rand(3, 48)
    assert select(score, MaskConfig(k=144)).sum() == 144
    with pytest.raises(AgloraError, match="mask.k=145 exceeds the model's 144 MLP neurons"):
        select(score, MaskConfig(k=145))
    with pytest.raises(AgloraError, match="mask.k=49 exceeds the 48 neurons of a layer"):
        select(score, MaskConfig(k=49, selection="topk_per_layer"))
