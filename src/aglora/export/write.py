"""Write an export of a run's adapter: a checked peft adapter or a merged model directory.

`plan_export` checks everything that needs no model — the format, the run and its adapter (read
and validated), the output path, the vLLM rules when asked — before `write_export` loads the
run's base model (`model` of its config.yaml), refuses an adapter whose recorded base fingerprint
is not this model's, and writes the export atomically (`runtime.artifacts.atomic_dir`), with
`aglora-export.json` (the base fingerprint, the run, the adapter's sha256). An existing output
path is refused; `force` replaces only a previous export (a folder holding aglora-export.json).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from aglora.config import RunConfig
from aglora.errors import AgloraError
from aglora.export.validate import (
    ADAPTER_FILES,
    CONFIG_FILE,
    AdapterInfo,
    peft_problems,
    read_adapter,
    shape_problems,
)
from aglora.export.vllm import MAX_LORA_RANKS, VllmCheck, check_vllm
from aglora.runtime.artifacts import atomic_dir, digest

log = logging.getLogger("aglora")

EXPORT_FILE = "aglora-export.json"
FORMATS = ("peft", "merged")
CHECKS = ("vllm",)


@dataclass
class ExportPlan:
    run_dir: Path
    out: Path
    fmt: str
    cfg: RunConfig
    adapter: AdapterInfo
    vllm: VllmCheck | None = None

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


def check_out_path(out: Path, run_dir: Path, force: bool) -> None:
    """Refuse an output path that exists (unless `force` and it holds a previous export), lies
    in the run directory, or cannot be written."""
    out = Path(out)
    if _inside(out, run_dir):
        raise AgloraError(f"--out {out} lies inside the run directory {run_dir}; an export "
                          "there would mix with the run's own files: choose a path outside it")
    if out.exists() or out.is_symlink():
        if not force:
            raise AgloraError(f"--out {out} exists; choose another --out, or pass --force to "
                              "replace a previous export there")
        if not (out.is_dir() and not out.is_symlink() and (out / EXPORT_FILE).is_file()):
            raise AgloraError(f"--out {out} is not an aglora export (no {EXPORT_FILE}); --force "
                              "replaces only a previous export: choose another --out")
    probe = out.parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise AgloraError(f"--out {out}: {probe} is a file, not a directory; choose another "
                          "--out")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise AgloraError(f"--out {out}: {probe} is not writable; choose a writable --out")


def plan_export(run_dir: Path, fmt: str, out: Path, force: bool = False,
                check: str | None = None, max_lora_rank: int | None = None) -> ExportPlan:
    """Everything checked before the model loads; a problem is an AgloraError. A failed vLLM
    check is not raised: it is in the plan's `vllm`, for the caller to show and refuse."""
    from aglora.pipeline.run import reopen_run

    if fmt not in FORMATS:
        raise AgloraError(f"--format {fmt!r}: unknown export format; use {' or '.join(FORMATS)}")
    if check is not None and check not in CHECKS:
        raise AgloraError(f"--check {check!r}: unknown check; use {', '.join(CHECKS)}")
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
    check_out_path(out, run_dir, force)
    ctx = reopen_run(run_dir)  # the run's config; holds its lock while the export is written
    recorded = ctx.state.get("artifacts", {}).get("train", {})
    if isinstance(recorded, dict) and recorded.get("adapter") not in (None, digest(adapter_dir)):
        raise AgloraError(f"{adapter_dir} changed since training wrote it (its sha256 differs "
                          f"from state.json); retrain it: aglora train {run_dir}")
    info = read_adapter(adapter_dir)
    if info.base_fingerprint is None:
        raise AgloraError(f"{adapter_dir}/aglora.json records no base_fingerprint, so the base "
                          f"model it was made for is unknown; retrain it: aglora train {run_dir}")
    plan = ExportPlan(run_dir, out, fmt, ctx.cfg, info)
    if check == "vllm":
        plan.vllm = check_vllm(info, max_lora_rank)
    else:
        problems = peft_problems(info)
        if problems:
            raise AgloraError(f"{adapter_dir} is not an adapter aglora exports: "
                              + "; ".join(problems))
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
    base, tok = load_model(cfg.model)
    actual = fingerprint(base)
    diff = _base_differs(plan.adapter.base_fingerprint, actual)
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


def _write_merged(base, tok, adapter_dir: Path, tmp: Path) -> None:
    """The base with the adapter folded into its weights (peft's merge_and_unload), saved as
    safetensors with its tokenizer: a plain transformers model directory."""
    from aglora.model.adapter import load_adapter

    merged = load_adapter(base, adapter_dir, check=False).merge_and_unload()  # checked above
    merged.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)


def export_run(run_dir: Path, fmt: str, out: Path, force: bool = False,
               check: str | None = None, max_lora_rank: int | None = None) -> dict:
    """`plan_export` then `write_export`: a failed vLLM check is an AgloraError naming every
    problem, and nothing is written."""
    return write_export(plan_export(run_dir, fmt, out, force, check, max_lora_rank))
