"""`aglora export`: the merged model loads with plain transformers and computes what the adapter
computes; the peft export loads with peft and passes or fails the vLLM check with the right
line; a wrong base and every bad input are refused with one line, nothing written."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from aglora.cli import main
from aglora.model.identity import fingerprint
from tests.export.conftest import load_base, make_run
from tests.misuse.conftest import assert_nothing_lost, refused, snapshot
from tests.tiny import make_tokenizer

PROMPT = "Who directed Inception? Inception was directed by"


def _ids():
    return make_tokenizer()([PROMPT], return_tensors="pt")["input_ids"]


def _export(capsys, run_dir, fmt, out, *extra):
    capsys.readouterr()
    code = main(["export", str(run_dir), "--format", fmt, "--out", str(out), *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_merged_export_loads_with_plain_transformers(capsys, tmp_path, run, base_dir):
    run_dir, pm = run
    out = tmp_path / "merged"
    _export(capsys, run_dir, "merged", out)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and "auto_map" not in config  # no custom code
    assert not list(out.glob("*.py")) and not (out / "adapter_config.json").exists()
    assert (out / "model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = _ids()
    with torch.no_grad():
        want = pm(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        base = load_base(base_dir)(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert not torch.allclose(got, base, atol=1e-3)  # the adapter is in the weights
    tok = AutoTokenizer.from_pretrained(out)
    assert tok(PROMPT)["input_ids"] == ids[0].tolist()
    record = json.loads((out / "aglora-export.json").read_text())
    assert record["export"] == "merged"
    assert record["base_fingerprint"] == fingerprint(load_base(base_dir))
    assert record["run"] == str(run_dir.resolve())
    assert not list(tmp_path.glob(".merged.*"))  # no temporary directory left behind


def test_peft_export_passes_the_vllm_check_and_loads_with_peft(capsys, tmp_path, run, base_dir):
    run_dir, pm = run
    out = tmp_path / "peft"
    printed = _export(capsys, run_dir, "peft", out, "--check", "vllm")
    assert "vllm: loads" in printed and "--enable-lora" in printed
    assert f"--lora-modules tiny={out}" in printed and "--max-lora-rank 8" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "aglora-export.json", "aglora.json"]
    record = json.loads((out / "aglora-export.json").read_text())
    assert record["base_fingerprint"] == fingerprint(load_base(base_dir))
    assert record["vllm_check"] == {"ok": True, "max_lora_rank": 8}
    assert record["rank"] == 8
    assert record["target_modules"] == ["model.layers.0.mlp.down_proj",
                                        "model.layers.2.mlp.down_proj"]
    loaded = PeftModel.from_pretrained(load_base(base_dir), str(out)).eval()
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, pm(input_ids=ids).logits,
                                   atol=1e-5, rtol=0)


def _vllm_refused(capsys, run_dir, out, *fragments, extra=()):
    """The check fails: exit 2, one error line, the problems on stdout (one line each), and
    nothing written."""
    capsys.readouterr()
    code = main(["export", str(run_dir), "--format", "peft", "--out", str(out), "--check",
                 "vllm", *extra])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2 and err.startswith("aglora: error: vLLM would not load") and "\n" not in err
    problems = [line for line in captured.out.splitlines() if line.startswith("  - ")]
    assert captured.out.startswith("vllm: would not load it")
    for fragment in fragments:
        assert any(fragment in p for p in problems), (fragment, captured.out)
    assert not out.exists()
    return problems


def test_rank_7_fails_the_vllm_check(capsys, tmp_path, base_dir):
    run_dir, _ = make_run(tmp_path / "run", base_dir, rank=7)
    out = tmp_path / "peft"
    problems = _vllm_refused(capsys, run_dir, out,
                             "rank 7 is not a value vLLM takes for --max-lora-rank",
                             "--set lora.rank=8", "--max-lora-rank 8")
    assert len(problems) == 1
    # vLLM serves rank 7 when started with a larger limit: the check says so too.
    printed = _export(capsys, run_dir, "peft", out, "--check", "vllm", "--max-lora-rank", "8")
    assert "vllm: loads" in printed and "--max-lora-rank 8" in printed


def test_rank_above_the_limit_fails(capsys, tmp_path, base_dir):
    run_dir, _ = make_run(tmp_path / "run", base_dir, rank=16)
    _vllm_refused(capsys, run_dir, tmp_path / "peft", "rank 16 exceeds --max-lora-rank 8",
                  extra=("--max-lora-rank", "8"))


def _add_tensor(run_dir, name="base_model.model.lm_head.weight"):
    path = run_dir / "adapter" / "adapter_model.safetensors"
    tensors = load_file(str(path))
    tensors[name] = torch.zeros(4, 32)
    save_file(tensors, str(path))


def test_an_extra_tensor_fails_the_check_and_the_export(capsys, tmp_path, run):
    run_dir, _ = run
    _add_tensor(run_dir)
    out = tmp_path / "peft"
    problems = _vllm_refused(capsys, run_dir, out, "besides the LoRA factors",
                             "base_model.model.lm_head.weight")
    assert len(problems) == 1
    refused(capsys, ["export", str(run_dir), "--format", "peft", "--out", str(out)],
            "not an adapter aglora exports", "lm_head")
    refused(capsys, ["export", str(run_dir), "--format", "merged", "--out", str(out)],
            "besides the LoRA factors")
    assert not out.exists()


def test_one_line_per_problem(capsys, tmp_path, base_dir):
    run_dir, _ = make_run(tmp_path / "run", base_dir, rank=7)
    _add_tensor(run_dir)
    problems = _vllm_refused(capsys, run_dir, tmp_path / "peft", "rank 7", "lm_head")
    assert len(problems) == 2


@pytest.mark.parametrize("key,value,fragment", [
    ("modules_to_save", ["lm_head"], "modules_to_save"),
    ("bias", "all", "without bias only"),
    ("use_dora", True, "DoRA"),
    ("target_modules", ["model.layers.0.mlp.down_proj"], "does not list in target_modules"),
])
def test_adapter_config_vllm_refuses(capsys, tmp_path, run, key, value, fragment):
    run_dir, _ = run
    path = run_dir / "adapter" / "adapter_config.json"
    config = json.loads(path.read_text())
    config[key] = value
    path.write_text(json.dumps(config))
    _vllm_refused(capsys, run_dir, tmp_path / "peft", fragment)


def test_non_finite_weights_are_refused(capsys, tmp_path, run):
    run_dir, _ = run
    path = run_dir / "adapter" / "adapter_model.safetensors"
    tensors = load_file(str(path))
    name = next(n for n in tensors if "lora_B" in n)
    tensors[name][0, 0] = float("nan")
    save_file(tensors, str(path))
    refused(capsys, ["export", str(run_dir), "--format", "peft", "--out", str(tmp_path / "p")],
            "non-finite", name)


def test_pickled_weights_are_refused(capsys, tmp_path, run):
    run_dir, _ = run
    (run_dir / "adapter" / "adapter_model.bin").write_bytes(b"pickle")
    refused(capsys, ["export", str(run_dir), "--format", "peft", "--out", str(tmp_path / "p")],
            "adapter_model.bin", "safetensors only")


@pytest.mark.parametrize("fmt", ["peft", "merged"])
def test_an_adapter_for_another_base_is_refused(capsys, tmp_path, base_dir, other_base_dir, fmt):
    run_dir, _ = make_run(tmp_path / "run", base_dir, config_base=other_base_dir)
    out = tmp_path / "out"
    refused(capsys, ["export", str(run_dir), "--format", fmt, "--out", str(out)],
            "was made for another base model", "weights_sha256", "config.yaml")
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_force_replaces_only_a_previous_export(capsys, tmp_path, run):
    run_dir, _ = run
    out = tmp_path / "out"
    _export(capsys, run_dir, "peft", out)
    refused(capsys, ["export", str(run_dir), "--format", "merged", "--out", str(out)],
            "exists", "--force")
    _export(capsys, run_dir, "merged", out, "--force")
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert json.loads((out / "aglora-export.json").read_text())["export"] == "merged"


def test_a_changed_adapter_is_refused(capsys, tmp_path, run):
    run_dir, _ = run
    state = {"finished": {"train": True}, "artifacts": {"train": {"adapter": "0" * 64}}}
    (run_dir / "state.json").write_text(json.dumps(state))
    refused(capsys, ["export", str(run_dir), "--format", "peft", "--out", str(tmp_path / "p")],
            "changed since training")


def _bad_inputs(tmp_path, run_dir):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("mine")
    (tmp_path / "no-adapter").mkdir()
    (tmp_path / "no-adapter" / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    (tmp_path / "no-config").mkdir()
    (tmp_path / "no-config" / "adapter").symlink_to(run_dir / "adapter")
    out = str(tmp_path / "out")
    run = str(run_dir)
    return {
        "format": (["export", run, "--format", "onnx", "--out", out], ["unknown export format"]),
        "check": (["export", run, "--format", "peft", "--out", out, "--check", "llama.cpp"],
                  ["unknown check"]),
        "merged check": (["export", run, "--format", "merged", "--out", out, "--check", "vllm"],
                         ["--check vllm checks a LoRA adapter"]),
        "rank limit": (["export", run, "--format", "peft", "--out", out, "--check", "vllm",
                        "--max-lora-rank", "7"], ["--max-lora-rank 7", "vLLM takes only"]),
        "no adapter": (["export", str(tmp_path / "no-adapter"), "--format", "peft", "--out", out],
                       ["has no adapter", "aglora train"]),
        "no run": (["export", str(tmp_path / "no-config"), "--format", "peft", "--out", out],
                   ["holds no run"]),
        "no dir": (["export", str(tmp_path / "nowhere"), "--format", "peft", "--out", out],
                   ["no such run directory"]),
        "exists": (["export", run, "--format", "peft", "--out", str(tmp_path / "taken")],
                   ["exists", "--force"]),
        "force foreign": (["export", run, "--format", "peft", "--out", str(tmp_path / "taken"),
                           "--force"], ["not an aglora export", "--force replaces only"]),
        "inside run": (["export", run, "--format", "peft", "--out", str(run_dir / "export")],
                       ["inside the run directory"]),
    }


@pytest.mark.parametrize("case", ["format", "check", "merged check", "rank limit", "no adapter",
                                  "no run", "no dir", "exists", "force foreign", "inside run"])
def test_bad_input_is_one_line(capsys, tmp_path, run, case):
    run_dir, _ = run
    argv, fragments = _bad_inputs(tmp_path, run_dir)[case]
    before = snapshot(tmp_path)
    refused(capsys, argv, *fragments)
    assert_nothing_lost(before, tmp_path)
    assert not (tmp_path / "out").exists() and not (run_dir / "export").exists()
