"""`aglora bench` and `aglora controlled` output directories: one process per directory, an
--out that is a file, and a resume that trusts nothing (a result whose inputs changed, or whose
JSON is truncated, is computed again; the rest is kept byte for byte)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from aglora.cli import main
from tests.bench.helpers import bench_yaml
from tests.misuse.conftest import assert_nothing_lost, refused, snapshot
from tests.misuse.test_output_dirs import HOLDER

CONTROLLED = ["--films", "4", "--forget", "1", "--utility-films", "2", "--real-world", "2",
              "--methods", "plain_lora", "--steps", "2", "--k", "8", "--implant-epochs", "1"]


def _bench_config(tmp_path, concept_path, tiny_dir):
    path = bench_yaml(tmp_path, concept_path, methods=["act_edit", "ag_lora"], seeds=1)
    raw = yaml.safe_load(path.read_text())
    raw["run"]["model"] = {"name_or_path": str(tiny_dir)}
    path.write_text(yaml.safe_dump(raw))
    return path


def _controlled(tmp_path, tiny_dir, out):
    return ["controlled", "--out", str(out), "--model", str(tiny_dir), "--cache",
            str(tmp_path / "implants"), *CONTROLLED]


def _bench(capsys, cfg, out) -> str:
    """Run the bench through the CLI (exit 0); what it printed."""
    capsys.readouterr()
    assert main(["bench", str(cfg), "--out", str(out), "--jobs", "1"]) == 0
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err
    return printed.out


def test_a_second_process_on_a_bench_or_controlled_out_is_refused(capsys, tmp_path,
                                                                  concept_path, tiny_dir):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(tmp_path)
        refused(capsys, ["bench", str(_bench_config(tmp_path, concept_path, tiny_dir)), "--out",
                         str(out), "--jobs", "1"],
                f"in use by another aglora process (PID {holder.pid})", "wait for it")
        refused(capsys, _controlled(tmp_path, tiny_dir, out),
                f"in use by another aglora process (PID {holder.pid})", "choose another --out")
        assert_nothing_lost(before, tmp_path)
        assert sorted(p.name for p in out.iterdir()) == [".aglora.lock", "notes.txt"]
    finally:
        holder.kill()
        holder.wait()


def test_a_file_as_bench_or_controlled_out_is_refused(capsys, tmp_path, concept_path, tiny_dir):
    (tmp_path / "taken").write_text("mine")
    cfg = _bench_config(tmp_path, concept_path, tiny_dir)
    before = snapshot(tmp_path)
    refused(capsys, ["bench", str(cfg), "--out", str(tmp_path / "taken"), "--jobs", "1"],
            "is a file, not a directory", "choose another --out")
    refused(capsys, _controlled(tmp_path, tiny_dir, tmp_path / "taken"),
            "is a file, not a directory", "choose another --out")
    assert_nothing_lost(before, tmp_path)


def _cells(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.glob("cells/*/seed0.json")}


@pytest.mark.slow  # 20-35 s on 2 busy CPU cores: a two-cell bench and seven reruns
def test_bench_resume_recomputes_what_changed_and_keeps_the_rest(capsys, tmp_path,
                                                                 concept_path, tiny_dir):
    cfg, out = _bench_config(tmp_path, concept_path, tiny_dir), tmp_path / "bench"
    _bench(capsys, cfg, out)
    first = {p.parent.name: p.read_bytes() for p in out.glob("cells/*/seed0.json")}
    assert sorted(first) == ["act_edit", "ag_lora"]
    act, ag = out / "cells/act_edit/seed0.json", out / "cells/ag_lora/seed0.json"
    assert set(json.loads(act.read_text())["inputs"]) >= {
        "config", f"concept:{concept_path}", "shared/scores.safetensors"}
    assert _bench(capsys, cfg, out).count("done before, skipped") == 2

    # A truncated cell JSON is computed again; the other cell is kept byte for byte.
    act.write_bytes(first["act_edit"][:100])
    printed = _bench(capsys, cfg, out)
    assert "act_edit seed 0: computed again" in printed and "is not valid JSON" in printed
    assert "ag_lora seed 0: done before, skipped" in printed
    assert ag.read_bytes() == first["ag_lora"]
    assert json.loads(act.read_text())["metrics"] == json.loads(first["act_edit"])["metrics"]

    # An edited artifact of a cell: that cell again.
    (out / "cells/act_edit/seed0/masks.json").write_text("{}")
    printed = _bench(capsys, cfg, out)
    assert "act_edit seed 0: computed again (cells/act_edit/seed0 changed" in printed
    assert "ag_lora seed 0: done before, skipped" in printed

    # Truncated shared scores: recorded again (the same bytes), so every cell is still current.
    scores = (out / "shared/scores.safetensors").read_bytes()
    (out / "shared/scores.safetensors").write_bytes(scores[:64])
    printed = _bench(capsys, cfg, out)
    assert "scores.safetensors changed since it was written" in printed
    assert (out / "shared/scores.safetensors").read_bytes() == scores
    assert printed.count("done before, skipped") == 2

    # An edited probe file: the base side and every cell are computed again.
    probes = concept_path.parent / "probes.jsonl"
    probes.write_text(probes.read_text().replace("please?", "please!"))
    printed = _bench(capsys, cfg, out)
    assert "evaluating the base model" in printed
    assert printed.count(f"computed again (its input {probes} changed)") == 2

    # An edited concept spec: the neurons are recorded again, and every cell computed again.
    spec = yaml.safe_load(concept_path.read_text())
    spec["retain"][0]["prompt"] = "Who made Titanic?"
    concept_path.write_text(yaml.safe_dump(spec))
    printed = _bench(capsys, cfg, out)
    assert "recording and scoring the concept's neurons" in printed
    assert printed.count(f"computed again (its input {concept_path} changed)") == 2

    # A truncated shared base side is computed again, not an error.
    (out / "shared/base_side.json").write_text('{"key": "')
    printed = _bench(capsys, cfg, out)
    assert "base_side.json is not valid JSON" in printed and "computed again" in printed

    # --report-only leaves out a cell whose inputs changed since it ran.
    probes.write_text(probes.read_text().replace("please!", "please?!"))
    capsys.readouterr()
    assert main(["bench", str(cfg), "--out", str(out), "--report-only"]) == 2
    printed = capsys.readouterr()
    assert "left out (its input" in printed.out and "no finished cell" in printed.err


@pytest.mark.slow  # 5-15 s on 2 busy CPU cores: the tiny controlled track and four reruns
def test_controlled_resume_recomputes_what_changed_and_keeps_the_rest(capsys, tmp_path,
                                                                      tiny_dir, monkeypatch):
    import aglora.concepts
    import aglora.controlled.track
    tofu = []  # copies of TOFU's files, to be edited
    for src in aglora.concepts.tofu_files():
        tofu.append(tmp_path / src.name)
        tofu[-1].write_bytes(src.read_bytes())
    for module in (aglora.concepts, aglora.controlled.track):
        monkeypatch.setattr(module, "tofu_files", lambda: list(tofu))
    out = tmp_path / "controlled"
    argv = _controlled(tmp_path, tiny_dir, out)
    assert main(argv) == 0
    method, ref = out / "methods/plain_lora.json", out / "reference/base.json"
    first = {p: p.read_bytes() for p in (method, ref, out / "reference/full.json")}
    assert "config" in json.loads(method.read_text())["inputs"]

    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "plain_lora: already finished, skipped" in printed
    assert all(p.read_bytes() == b for p, b in first.items())

    # A truncated method result is computed again; the references are kept.
    method.write_bytes(first[method][:80])
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "plain_lora: computed again" in printed and "is not valid JSON" in printed
    assert "base: already evaluated, skipped" in printed
    assert ref.read_bytes() == first[ref]
    assert (json.loads(method.read_text())["eval"]["forget_films"]
            == json.loads(first[method])["eval"]["forget_films"])

    # Implanted weights that changed in the cache: implanted again, and whatever started from
    # them (the full reference, the methods) is computed again; the base reference is kept.
    (weights,) = (tmp_path / "implants").glob("*/full.safetensors")
    weights.write_bytes(weights.read_bytes()[:-8])
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "full.safetensors: changed since it was written (truncated?); implanting again" \
        in printed
    assert "base: already evaluated, skipped" in printed
    assert "Traceback" not in printed
    assert ref.read_bytes() == first[ref]

    # An edited probe file (TOFU's world facts): every result is computed again.
    tofu[0].write_text(tofu[0].read_text().replace("?", " ?", 1))
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for name in ("base", "full", "retain", "plain_lora"):
        assert f"{name}: computed again (its input {tofu[0]} changed)" in printed, name
