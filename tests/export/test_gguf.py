"""`aglora export --format gguf-lora | gguf` on tiny models written as GGUF in code: the LoRA
GGUF holds the adapter's factors exactly under llama.cpp's names with its alpha, the merged GGUF
holds the merged weights (F16 within 1e-3, Q8_0 within its quantization step), and every bad
input is refused with one line, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize, quantize
from safetensors.torch import load_file

from aglora.cli import main
from aglora.export.gguf import QUANTS
from aglora.model.identity import fingerprint
from tests.export.tiny_gguf import D_FF, gguf_tensors, load_gguf_model, make_gguf_run, tiny_gguf
from tests.misuse.conftest import assert_nothing_lost, refused, snapshot
from tests.tiny import make_tokenizer


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("gguf")
    tiny_gguf(d / "base.gguf")
    tiny_gguf(d / "other.gguf", seed=1)
    tiny_gguf(d / "short.gguf", layers=2)
    return d


@pytest.fixture
def gguf_run(tmp_path, gguf_dir):
    return make_gguf_run(tmp_path / "gguf-run", gguf_dir / "base.gguf")


def _export(capsys, run_dir, fmt, out, *extra) -> str:
    capsys.readouterr()
    code = main(["export", str(run_dir), "--format", fmt, "--out", str(out), *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def _tensors(path: Path) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (type name, values dequantized to float32 in numpy order)."""
    out = {}
    for t in GGUFReader(path).tensors:
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))
        out[t.name] = (t.tensor_type.name,
                       dequantize(np.asarray(t.data), t.tensor_type).reshape(shape))
    return out


def _field(path: Path, key: str):
    return GGUFReader(path).get_field(key).contents()


def _merged_weights(pm) -> dict[str, np.ndarray]:
    """peft's merge_and_unload of the adapted model, in GGUF names and layout."""
    import copy
    return gguf_tensors(copy.deepcopy(pm).merge_and_unload())


def test_gguf_lora_holds_the_adapter_exactly(capsys, tmp_path, gguf_run, gguf_dir):
    run_dir, pm = gguf_run
    out = tmp_path / "adapter.gguf"
    printed = _export(capsys, run_dir, "gguf-lora", out)
    assert f"--lora {out}" in printed and "llama-cli -m" in printed
    assert _field(out, "general.type") == "adapter"
    assert _field(out, "adapter.type") == "lora"
    assert _field(out, "general.architecture") == "llama"
    assert _field(out, "adapter.lora.alpha") == 16.0  # lora.alpha, scale alpha / r = 4
    tensors = _tensors(out)
    names = {f"blk.{i}.ffn_{m}.weight.lora_{f}" for i in (0, 2) for m in ("down", "gate", "up")
             for f in "ab"}
    assert set(tensors) == names  # layer 1 holds no neuron: no LoRA there
    peft = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    merged = _merged_weights(pm)
    base = gguf_tensors(load_gguf_model(gguf_dir / "base.gguf"))
    for i in (0, 2):
        for m in ("down", "gate", "up"):
            name = f"blk.{i}.ffn_{m}.weight"
            (ta, a), (tb, b) = tensors[name + ".lora_a"], tensors[name + ".lora_b"]
            module = f"base_model.model.model.layers.{i}.mlp.{m}_proj"
            assert ta == tb == "F32"
            assert a.shape == (4, base[name].shape[1]) and b.shape == (base[name].shape[0], 4)
            assert np.array_equal(a, peft[f"{module}.lora_A.weight"].numpy())
            assert np.array_equal(b, peft[f"{module}.lora_B.weight"].numpy())
            np.testing.assert_allclose(16.0 / 4 * (b @ a), merged[name] - base[name], atol=1e-6)
    record = json.loads(_field(out, "aglora.export"))
    assert record["export"] == "gguf-lora" and record["lora_alpha"] == 16.0
    assert record["base_fingerprint"] == fingerprint(load_gguf_model(gguf_dir / "base.gguf"))
    assert not list(tmp_path.glob(".adapter.gguf.*"))  # no temporary file left behind


def test_merged_gguf_f16_equals_the_merged_weights(capsys, tmp_path, gguf_run):
    run_dir, pm = gguf_run
    out = tmp_path / "merged.gguf"
    _export(capsys, run_dir, "gguf", out, "--quant", "f16")
    merged = _merged_weights(pm)
    tensors = _tensors(out)
    assert set(tensors) == set(merged)
    for name, (qtype, values) in tensors.items():
        assert qtype == ("F16" if values.ndim == 2 else "F32"), name
        np.testing.assert_allclose(values, merged[name], atol=1e-3, rtol=0, err_msg=name)
    assert _field(out, "general.file_type") == 1  # MOSTLY_F16
    assert _field(out, "general.type") == "model"
    assert _field(out, "tokenizer.ggml.model") == "gpt2"  # the base's tokenizer, copied
    assert len(_field(out, "tokenizer.ggml.tokens")) == len(make_tokenizer())
    assert _field(out, "llama.feed_forward_length") == D_FF


def test_merged_gguf_q8_0_is_within_its_quantization_step(capsys, tmp_path, gguf_run, gguf_dir):
    run_dir, pm = gguf_run
    out = tmp_path / "merged.gguf"
    printed = _export(capsys, run_dir, "gguf", out)  # q8_0 by default
    assert "q8_0 weights" in printed and "F16" not in printed
    merged = _merged_weights(pm)
    base = gguf_tensors(load_gguf_model(gguf_dir / "base.gguf"))
    for name, (qtype, values) in _tensors(out).items():
        if values.ndim == 1:
            assert qtype == "F32" and np.array_equal(values, merged[name])
            continue
        assert qtype == "Q8_0", name
        blocks = merged[name].reshape(-1, 32)
        step = np.abs(blocks).max(-1, keepdims=True) / 127  # one Q8_0 step per 32-wide block
        err = np.abs(values.reshape(-1, 32) - blocks)
        assert (err <= 0.6 * step + 1e-7).all(), name  # half a step, and the f16 scale's error
        if name in ("blk.0.ffn_down.weight", "blk.2.ffn_up.weight"):  # the adapter is in it
            assert np.abs(values - merged[name]).max() < np.abs(values - base[name]).max()
    assert _field(out, "general.file_type") == 7  # MOSTLY_Q8_0


@pytest.mark.parametrize("quant", sorted(QUANTS))
def test_every_quant_holds_the_merged_weights_quantized(capsys, tmp_path, gguf_run, quant):
    """Each --quant type: 2D tensors in that type, holding exactly gguf.quants' encoding of the
    merged weights (what llama.cpp reads back); norms F32."""
    run_dir, pm = gguf_run
    out = tmp_path / "merged.gguf"
    _export(capsys, run_dir, "gguf", out, "--quant", quant)
    qtype = GGMLQuantizationType[QUANTS[quant][0]]
    low_bit = quant[1] in "45"  # q4_*, q5_*: the output matrix is kept at Q8_0
    merged = _merged_weights(pm)
    for name, (type_name, values) in _tensors(out).items():
        if values.ndim == 1:
            assert type_name == "F32" and np.array_equal(values, merged[name])
            continue
        want_type = (GGMLQuantizationType.Q8_0 if low_bit and name == "output.weight"
                     else qtype)
        assert type_name == want_type.name, name
        want = dequantize(quantize(merged[name], want_type), want_type).reshape(values.shape)
        np.testing.assert_allclose(values, want, atol=1e-6, rtol=0, err_msg=name)
    record = json.loads(_field(out, "aglora.export"))
    assert record["output_matrix"] == "output.weight"
    assert record["output_type"] == ("Q8_0" if low_bit else qtype.name)


def _fake_tensor(name: str, shape: tuple[int, ...], type_name: str = "F32"):
    from types import SimpleNamespace
    return SimpleNamespace(name=name, shape=np.array(shape[::-1]),
                           tensor_type=GGMLQuantizationType[type_name])


@pytest.mark.parametrize(("quant", "want"), [("q4_0", "Q8_0"), ("q4_1", "Q8_0"),
                                             ("q5_0", "Q8_0"), ("q5_1", "Q8_0"),
                                             ("q8_0", "Q8_0"), ("f16", "F16"), ("f32", "F32")])
def test_tied_embeddings_are_the_output_matrix(quant, want):
    """Without output.weight (tied embeddings) the token embedding is the output matrix and is
    kept at Q8_0 for 4- and 5-bit types; other matrices take the asked type."""
    from types import SimpleNamespace

    from aglora.export.gguf import output_matrix, target_types
    reader = SimpleNamespace(tensors=[_fake_tensor("token_embd.weight", (64, 32)),
                                      _fake_tensor("blk.0.ffn_down.weight", (32, 64)),
                                      _fake_tensor("output_norm.weight", (32,))])
    assert output_matrix(reader) == "token_embd.weight"
    qtype = GGMLQuantizationType[QUANTS[quant][0]]
    types = [t.name for t in target_types(reader, qtype).values()]
    assert types == [want, qtype.name, "F32"]


def test_rows_that_do_not_divide_into_blocks_are_written_f16(capsys, tmp_path, run):
    """The conftest run (d_ff 48, safetensors base) with --gguf-base: the same weights as GGUF."""
    run_dir, _ = run
    base = tiny_gguf(tmp_path / "base48.gguf", d_ff=48)
    out = tmp_path / "merged.gguf"
    printed = _export(capsys, run_dir, "gguf", out, "--gguf-base", str(base), "--quant", "q4_0")
    assert "F16: rows not a multiple of the block size" in printed
    tensors = _tensors(out)
    assert tensors["blk.0.ffn_down.weight"][0] == "F16"   # rows of 48
    assert tensors["blk.0.ffn_up.weight"][0] == "Q4_0"    # rows of 32
    record = json.loads(_field(out, "aglora.export"))
    assert record["quant"] == "q4_0"
    assert record["f16_fallback"] == [f"blk.{i}.ffn_down.weight" for i in range(3)]


def test_force_replaces_only_a_previous_gguf_export(capsys, tmp_path, gguf_run):
    run_dir, _ = gguf_run
    out = tmp_path / "model.gguf"
    _export(capsys, run_dir, "gguf-lora", out)
    refused(capsys, ["export", str(run_dir), "--format", "gguf", "--out", str(out)],
            "exists", "--force")
    _export(capsys, run_dir, "gguf", out, "--force")
    assert _field(out, "general.type") == "model"


def _bad_inputs(tmp_path: Path, run_dir: Path, gguf_dir: Path, safetensors_run: Path) -> dict:
    (tmp_path / "taken.gguf").write_bytes(b"GGUF mine")
    (tmp_path / "not.gguf").write_bytes(b"not a gguf file")
    (tmp_path / "no-adapter").mkdir()
    (tmp_path / "no-adapter" / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    out = str(tmp_path / "out.gguf")
    run = str(run_dir)
    lora = ["export", run, "--format", "gguf-lora", "--out"]
    merged = ["export", run, "--format", "gguf", "--out"]
    return {
        "format": (["export", run, "--format", "onnx", "--out", out],
                   ["unknown export format", "gguf-lora"]),
        "quant": ([*merged, out, "--quant", "q4_k_m"], ["--quant 'q4_k_m'", "llama-quantize"]),
        "quant for lora": ([*lora, out, "--quant", "q8_0"], ["--quant is a setting of --format "
                                                             "gguf"]),
        "gguf-base for peft": (["export", run, "--format", "peft", "--out", str(tmp_path / "p"),
                                "--gguf-base", str(gguf_dir / "base.gguf")],
                               ["--gguf-base is a setting"]),
        "check": ([*lora, out, "--check", "vllm"], ["--check vllm checks a peft adapter",
                                                    "--backend llama.cpp"]),
        "no adapter": (["export", str(tmp_path / "no-adapter"), "--format", "gguf", "--out", out],
                       ["has no adapter", "aglora train"]),
        "exists": ([*lora, str(tmp_path / "taken.gguf")], ["exists", "--force"]),
        "force foreign": ([*lora, str(tmp_path / "taken.gguf"), "--force"],
                          ["not an aglora export", "aglora.export"]),
        "not .gguf": ([*lora, str(tmp_path / "out.bin")], ["name it NAME.gguf"]),
        "other base": ([*merged, out, "--gguf-base", str(gguf_dir / "other.gguf")],
                       ["made for another base model than the GGUF", "weights_sha256"]),
        "missing tensor": ([*lora, out, "--gguf-base", str(gguf_dir / "short.gguf")],
                           ["has no tensor blk.2.ffn_down.weight"]),
        "not a gguf": ([*lora, out, "--gguf-base", str(tmp_path / "not.gguf")],
                       ["not a readable GGUF file"]),
        "no gguf base": (["export", str(safetensors_run), "--format", "gguf-lora", "--out", out],
                         ["needs the base model as GGUF", "--gguf-base"]),
        "shape": ([*merged, out, "--gguf-base", str(tiny_gguf(tmp_path / "b48.gguf", d_ff=48))],
                  ["do not fit the base GGUF"]),
    }


CASES = ["format", "quant", "quant for lora", "gguf-base for peft", "check", "no adapter",
         "exists", "force foreign", "not .gguf", "other base", "missing tensor", "not a gguf",
         "no gguf base", "shape"]


@pytest.mark.parametrize("case", CASES)
def test_bad_gguf_input_is_one_line(capsys, tmp_path, gguf_run, gguf_dir, run, case):
    run_dir, _ = gguf_run
    argv, fragments = _bad_inputs(tmp_path, run_dir, gguf_dir, run[0])[case]
    before = snapshot(tmp_path)
    refused(capsys, argv, *fragments)
    assert_nothing_lost(before, tmp_path)
    assert not (tmp_path / "out.gguf").exists() and not list(tmp_path.glob(".out.gguf.*"))
