"""The adapter for llama.cpp: a LoRA GGUF (`gguf-lora`) or the merged model as GGUF (`gguf`).

`gguf-lora` is the file llama.cpp's convert_lora_to_gguf.py writes and its src/llama-adapter.cpp
reads: `general.type` = adapter, `adapter.type` = lora, `adapter.lora.alpha` (float32), the base's
`general.architecture`, and per adapted weight two F32 tensors, `<weight>.lora_a` (peft's A,
numpy shape [r, in]) and `<weight>.lora_b` (peft's B, [out, r]). llama.cpp adds
`alpha / r · B (A x)` with r read from lora_b, so alpha is written as peft's scaling × r
(`lora_alpha`, or `lora_alpha · √r` for rsLoRA); the factors are copied exactly (F32). llama.cpp
reads a zero alpha as "no scaling" (scale 1), so a zero scaling is refused.

`gguf` copies the base GGUF's metadata and tokenizer and rewrites its tensors: each one is
dequantized (`gguf.quants`), an adapted weight gets `scaling · B @ A` added (what peft's
merge_and_unload adds), and every 2D tensor is written in the `--quant` type, 1D tensors (norms)
in F32. `QUANTS` are the types gguf 0.19.0 quantizes in Python; K-quants and i-quants are not
among them (write q8_0 or f16 and run llama.cpp's llama-quantize). A 2D tensor whose rows do not
divide into the type's blocks is written F16 instead (as convert_hf_to_gguf.py does), and the
export record lists it. The output matrix (`output.weight`, or `token_embd.weight` when the
embeddings are tied and there is no output tensor) is written Q8_0 when `--quant` is a 4- or 5-bit
type, as llama.cpp's llama-quantize keeps it at a higher precision (Q6_K, a K-quant the gguf
package does not write) for those types: the logits of every token pass through it. Tensors
stream one at a time, so memory holds one tensor, not the model.

Names: aglora adapts MLP weights only; `model.layers.N.mlp.{gate,up,down}_proj` is
`blk.N.ffn_{gate,up,down}.weight` in llama.cpp's tensor map for every architecture aglora loads
(Llama, Qwen2, Mistral), and these are not permuted the way attn_q/attn_k are. Every name and
shape is checked against the base GGUF before anything is written. The export record
(aglora-export.json's content) is stored in the file as the string key `aglora.export`; `--force`
replaces only a file that holds it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aglora.errors import AgloraError
from aglora.export.validate import AdapterInfo

EXPORT_KEY = "aglora.export"
_MODULE = re.compile(r"^model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj$")
# --quant name -> (GGMLQuantizationType name, LlamaFileType name for general.file_type)
QUANTS = {"f32": ("F32", "ALL_F32"), "f16": ("F16", "MOSTLY_F16"),
          "q8_0": ("Q8_0", "MOSTLY_Q8_0"), "q5_1": ("Q5_1", "MOSTLY_Q5_1"),
          "q5_0": ("Q5_0", "MOSTLY_Q5_0"), "q4_1": ("Q4_1", "MOSTLY_Q4_1"),
          "q4_0": ("Q4_0", "MOSTLY_Q4_0")}
DEFAULT_QUANT = "q8_0"
_INTEGERS = ("I8", "I16", "I32", "I64")


@dataclass
class LoraWeights:
    """The adapter's factors under their GGUF weight names, and peft's scale."""

    factors: dict[str, tuple[np.ndarray, np.ndarray]]  # GGUF weight name -> (A [r, in], B [out, r])
    scaling: float
    rank: int

    @property
    def alpha(self) -> float:
        """The alpha llama.cpp needs for peft's scale: it applies alpha / r."""
        return self.scaling * self.rank

    def delta(self, name: str) -> np.ndarray:
        """scaling · B @ A, [out, in] float32: what merging adds to the weight."""
        a, b = self.factors[name]
        return (b @ a) * np.float32(self.scaling)


def check_quant(quant: str) -> str:
    """The --quant name, lower-cased; one the gguf package cannot write is an AgloraError."""
    q = quant.lower()
    if q not in QUANTS:
        raise AgloraError(f"--quant {quant!r}: not a type aglora writes; use one of "
                          f"{', '.join(QUANTS)} (the types gguf 0.19.0 quantizes in Python; for a "
                          "K-quant such as q4_k_m write q8_0 or f16 and run llama.cpp's "
                          "llama-quantize on it)")
    return q


def gguf_weight_name(module: str) -> str:
    """llama.cpp's tensor name of an adapted module (`model.layers.3.mlp.down_proj` ->
    `blk.3.ffn_down.weight`)."""
    m = _MODULE.match(module)
    if m is None:
        raise AgloraError(f"the adapter has weights for {module}; a GGUF export maps only the MLP "
                          "modules aglora trains (gate_proj, up_proj, down_proj): retrain with "
                          "lora.modules among them")
    return f"blk.{m.group(1)}.ffn_{m.group(2)}.weight"


def peft_scaling(config: dict, rank: int) -> float:
    """peft's LoRA scale: lora_alpha / r, or lora_alpha / √r with rsLoRA; a per-module alpha
    or a zero scale cannot be written as llama.cpp's one alpha and is refused."""
    if config.get("alpha_pattern"):
        raise AgloraError("adapter_config.json sets alpha_pattern (a per-module alpha); a LoRA "
                          "GGUF holds one alpha: retrain without it (aglora never sets it)")
    alpha = float(config.get("lora_alpha") or 0.0)
    scaling = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
    if scaling == 0:
        raise AgloraError("adapter_config.json has lora_alpha 0: llama.cpp reads alpha 0 as "
                          "scale 1, so the GGUF would not do what the adapter does; retrain with "
                          "lora.alpha > 0")
    return scaling


def read_lora(info: AdapterInfo) -> LoraWeights:
    """The adapter's factors in float32 under their GGUF names."""
    from safetensors.numpy import load_file

    from aglora.export.validate import WEIGHTS_FILE, _split

    tensors = load_file(str(info.path / WEIGHTS_FILE))
    parts: dict[str, dict[str, np.ndarray]] = {}
    for name, t in tensors.items():
        module, factor = _split(name)
        parts.setdefault(gguf_weight_name(module), {})[factor] = t.astype(np.float32)
    rank = int(info.rank)
    factors = {n: (p["A"], p["B"]) for n, p in sorted(parts.items())}
    return LoraWeights(factors, peft_scaling(info.config, rank), rank)


def open_gguf(path: Path):
    """A GGUFReader on `path` (memory-mapped); a file that is not GGUF is an AgloraError."""
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise AgloraError(f"GGUF file {path} not found; give the base model's .gguf file")
    try:
        return GGUFReader(path)
    except (ValueError, OSError, KeyError, IndexError) as exc:
        raise AgloraError(f"{path}: not a readable GGUF file ({str(exc).splitlines()[0]}); give "
                          "the base model's .gguf file") from None


def field_value(reader, key: str):
    """A metadata value of a GGUF file (None when absent)."""
    f = reader.get_field(key)
    return None if f is None else f.contents()


def is_aglora_gguf(path: Path) -> bool:
    """Whether `path` is a GGUF file aglora exported (it holds the `aglora.export` key)."""
    try:
        return open_gguf(path).get_field(EXPORT_KEY) is not None
    except AgloraError:
        return False


def _shape(tensor) -> tuple[int, ...]:
    """A GGUF tensor's shape in numpy order ([rows, row length]: ne reversed)."""
    return tuple(int(n) for n in reversed(tensor.shape.tolist()))


def base_problems(reader, lora: LoraWeights, base: Path) -> list[str]:
    """What keeps the adapter from fitting the base GGUF: not a model file, no architecture, a
    weight the base lacks, factors of the wrong shape."""
    problems = []
    if field_value(reader, "general.type") not in (None, "model"):
        problems.append(f"{base} is a {field_value(reader, 'general.type')} file, not a model: "
                        "give the base model's .gguf")
    if not field_value(reader, "general.architecture"):
        problems.append(f"{base} has no general.architecture; give a llama.cpp model GGUF")
    shapes = {t.name: _shape(t) for t in reader.tensors}
    for name, (a, b) in lora.factors.items():
        if name not in shapes:
            problems.append(f"the base GGUF {base} has no tensor {name} for the adapter's "
                            "weights: it is another model's file")
        elif shapes[name] != (b.shape[0], a.shape[1]):
            problems.append(f"{name}: the adapter's factors {a.shape}, {b.shape} do not fit the "
                            f"base GGUF's [{shapes[name][0]}, {shapes[name][1]}] weight")
    return problems


def _finish(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()


def write_lora_gguf(path: Path, arch: str, lora: LoraWeights, record: dict) -> None:
    """The LoRA GGUF llama.cpp loads with `--lora` (written to `path`, which the caller makes
    atomic)."""
    from gguf import GGUFWriter, Keys, LlamaFileType

    writer = GGUFWriter(str(path), arch)
    writer.add_type("adapter")
    writer.add_string(Keys.Adapter.TYPE, "lora")
    writer.add_float32(Keys.Adapter.LORA_ALPHA, lora.alpha)
    writer.add_name(f"aglora {record.get('run_name') or 'adapter'}")
    writer.add_file_type(LlamaFileType.ALL_F32)
    writer.add_quantization_version(2)
    writer.add_string(EXPORT_KEY, json.dumps(record, sort_keys=True))
    for name, (a, b) in lora.factors.items():
        writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a, dtype=np.float32))
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b, dtype=np.float32))
    _finish(writer)
    writer.write_tensors_to_file()
    writer.close()


def _copy_metadata(reader, writer, file_type: int, record: dict) -> None:
    """Every key of the base except the file's own (GGUF.*, architecture, alignment, file type),
    then the new file type and the export record."""
    from gguf import GGUFValueType

    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in (
                "general.architecture", "general.alignment", "general.file_type", EXPORT_KEY):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    alignment = field_value(reader, "general.alignment")
    if alignment:
        writer.add_custom_alignment(int(alignment))
    writer.add_file_type(file_type)
    writer.add_string(EXPORT_KEY, json.dumps(record, sort_keys=True))


def output_matrix(reader) -> str:
    """The name of the matrix that maps the last hidden state to logits: `output.weight`, or
    the token embedding when the model ties them (no output tensor in the file)."""
    names = {t.name for t in reader.tensors}
    return "output.weight" if "output.weight" in names else "token_embd.weight"


def bits_per_weight(qtype) -> float:
    from gguf import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[qtype]
    return 8 * size / block


def _target_type(tensor, qtype, output: str):
    """The type a merged tensor is written in: integer tensors as they are, 1D -> F32, the
    output matrix (`output`) at least Q8_0, rows that do not divide into the type's blocks ->
    F16, else `qtype`."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    shape = _shape(tensor)
    if tensor.tensor_type.name in _INTEGERS:
        return tensor.tensor_type
    if len(shape) == 1:
        return GGMLQuantizationType.F32
    if (tensor.name == output
            and bits_per_weight(qtype) < bits_per_weight(GGMLQuantizationType.Q8_0)):
        qtype = GGMLQuantizationType.Q8_0
    if shape[-1] % GGML_QUANT_SIZES[qtype][0]:
        return GGMLQuantizationType.F16
    return qtype


def target_types(reader, qtype) -> dict:
    """Tensor name -> the type the merged export writes it in (`_target_type`), in file order."""
    output = output_matrix(reader)
    return {t.name: _target_type(t, qtype, output) for t in reader.tensors}


def _encoded(values: np.ndarray, qtype) -> np.ndarray:
    from gguf.quants import quantize

    return quantize(np.ascontiguousarray(values, dtype=np.float32), qtype)


def merged_tensors(reader, lora: LoraWeights,
                   targets: dict) -> Iterator[tuple[str, object, np.ndarray]]:
    """(name, type written, data) of every base tensor, the adapter folded in (lazily);
    `targets`: `target_types` of the reader."""
    from gguf.quants import dequantize

    for tensor in reader.tensors:
        target = targets[tensor.name]
        if target == tensor.tensor_type and tensor.name not in lora.factors:
            yield tensor.name, target, np.asarray(tensor.data)  # same type: the same bytes
            continue
        values = dequantize(np.asarray(tensor.data), tensor.tensor_type).reshape(_shape(tensor))
        if tensor.name in lora.factors:
            values = values + lora.delta(tensor.name)
        yield tensor.name, target, _encoded(values, target)


def _nbytes(shape: tuple[int, ...], qtype) -> int:
    from gguf import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape[:-1], dtype=np.int64)) * shape[-1] // block * size


def write_merged_gguf(path: Path, reader, lora: LoraWeights, quant: str, record: dict) -> dict:
    """The base GGUF with the adapter merged into its weights, in `quant`; returns what the
    export record adds: `f16_fallback` (the 2D tensors written F16 because their rows do not
    divide into the type's blocks), `output_matrix` and `output_type` (its name and type)."""
    from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType

    qtype = GGMLQuantizationType[QUANTS[quant][0]]
    file_type = LlamaFileType[QUANTS[quant][1]]
    targets = target_types(reader, qtype)
    output = output_matrix(reader)
    fallback = [t.name for t in reader.tensors
                if len(_shape(t)) > 1 and targets[t.name] == GGMLQuantizationType.F16
                and qtype != GGMLQuantizationType.F16]
    added = {"f16_fallback": fallback, "output_matrix": output,
             "output_type": targets[output].name}
    record = {**record, **added}
    writer = GGUFWriter(str(path), str(field_value(reader, "general.architecture")))
    _copy_metadata(reader, writer, int(file_type), record)
    for tensor in reader.tensors:  # the tensor table first: the data then streams
        target, shape = targets[tensor.name], _shape(tensor)
        writer.add_tensor_info(tensor.name, shape, np.dtype(np.float32), _nbytes(shape, target),
                               raw_dtype=target)
    _finish(writer)
    writer.write_ti_data_to_file()
    for _, _, data in merged_tensors(reader, lora, targets):
        writer.write_tensor_data(data)
    writer.close()
    return added
