"""The spine of a run: the stages, the run directory they share, and resume.

`record -> score -> mask -> train -> eval -> report`, each a function of (RunContext) that reads
its inputs from and writes its outputs to one run directory. `state.json` lists the finished
stages with their wall time and, per stage, the sha256 of every input it read (the resolved
config, the concept spec, its include and probe files, the earlier stages' artifacts) and of every
artifact it wrote. `run_all` skips a finished stage only while all of these still match (resume)
and reruns it, and the stages after it, otherwise; it stops on the first error without touching
what earlier stages wrote. `check_inputs` validates everything that can be checked before a model
loads, and `ctx.base()` what needs the model (mask size, prompt lengths).

A directory that holds a run with another configuration is refused unless `force` is given;
`force` then deletes only aglora's own files (`RUN_FILES`, the stages' `ARTIFACTS`) and refuses a
directory holding anything else. One process at a time works in a run directory
(`aglora.runtime.lock`).

Under `accelerate launch` (docs/scale-out.md) the main process opens the directory, decides
what runs, runs every stage but `train` alone and writes every file; the other processes wait
for it (`aglora.runtime.processes.on_main`), read the mask it wrote, and take their share of
each training step (`TRAIN_EVERY_PROCESS`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from aglora.concepts import (
    ConceptSpec,
    Probe,
    load_concept,
    load_probes,
    load_tofu,
    resolve_concept_path,
)
from aglora.config import (
    EvalConfig,
    RunConfig,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_yaml,
)
from aglora.errors import AgloraError
from aglora.model.neurons import NeuronMask
from aglora.pipeline.mask import load_mask, save_mask, select
from aglora.runtime.artifacts import (
    load_tensors,
    read_json,
    save_tensors,
    write_eval_outputs,
    write_json,
    write_text,
)
from aglora.runtime.hashes import (
    changed_artifacts,
    changed_inputs,
    file_hashes,
    path_hashes,
    read_result,
    text_hash,
)
from aglora.runtime.lock import LOCK_NAME, lock_dir
from aglora.runtime.processes import is_main, on_main, ranks

log = logging.getLogger("aglora")

STAGES = ("record", "score", "mask", "train", "eval", "report")
# Everything each stage writes (files and folders), hashed into state.json when it finishes.
ARTIFACTS = {
    "record": ["activations.safetensors", "train_items.jsonl"],
    "score": ["scores.safetensors"],
    "mask": ["masks.safetensors", "masks.json"],
    "train": ["adapter", "train_history.json"],
    "eval": ["metrics.json", "probe_results.jsonl"],
    "report": ["report.md", "report.html", "figures"],
}
# The files of a run directory that aglora writes besides the stage artifacts (a ban's too):
# with `force`, these and the artifacts are all that is deleted.
RUN_FILES = ("config.yaml", "state.json", LOCK_NAME, "ban", "ban.json",
             "recommendation_lists.jsonl", "interference_lists.jsonl")
STAGE_SPEC_INPUTS = {"record": "items", "train": "items", "eval": "all"}  # which spec files
TRAIN_EVERY_PROCESS = ("train",)  # under a launch: stages every process runs (the rest: main)


@dataclass
class TrainingItems:
    forget: list[Probe]
    retain: list[Probe]
    forget_validation: list[Probe]
    retain_validation: list[Probe]

    def rows(self) -> list[dict]:
        """One JSON-able row per item, with its role ("train" or "validation")."""
        return [{**p.to_dict(), "role": role} for role, items in (
            ("train", self.forget + self.retain),
            ("validation", self.forget_validation + self.retain_validation)) for p in items]


@dataclass
class RunContext:
    cfg: RunConfig
    run_dir: Path
    _model: object = None
    _tok: object = None
    _concept: ConceptSpec | None = None
    _peft: object = None
    _training: TrainingItems | None = None
    state: dict = field(default_factory=dict)
    report_sections: tuple = ()  # extra report sections, e.g. a ban's (see pipeline.report)
    model_checks: tuple = ()  # more checks f(model, tok) right after the load, e.g. a ban's

    # ---- lazily loaded inputs -------------------------------------------------------------
    @property
    def concept(self) -> ConceptSpec:
        if self._concept is None:
            self._concept = load_concept(self.cfg.concept)
        return self._concept

    @property
    def training(self) -> TrainingItems:
        """The items record and train use: the spec's (in their forms, with `train.augment`)
        less the validation split (`train.validation_share`) that early stopping reads."""
        if self._training is None:
            from aglora.pipeline.augment import split_validation, training_items
            t = self.cfg.train
            forget, retain = training_items(self.concept, self.concept.description, t.seed,
                                            t.augment)
            f_train, f_val = split_validation(forget, t.validation_share, t.seed)
            r_train, r_val = split_validation(retain, t.validation_share, t.seed)
            self._training = TrainingItems(f_train, r_train, f_val, r_val)
        return self._training

    def base(self):
        if self._model is None:
            from aglora.model.load import load_model
            model, tok = load_model(self.cfg.model)
            check_model_fit(self, model, tok)
            for check in self.model_checks:
                check(model, tok)
            self._model, self._tok = model, tok
        return self._model, self._tok

    def adapted(self):
        """The model with this run's adapter: the one trained in this process, or loaded."""
        if self._peft is None:
            from aglora.model.adapter import load_adapter
            base, _ = self.base()
            self._peft = load_adapter(base, self.run_dir / "adapter")
        return self._peft, self._tok

    # ---- state ------------------------------------------------------------------------------
    def load_state(self) -> None:
        state, damaged = read_result(self.run_dir / "state.json")
        if damaged:  # a damaged state: every stage runs again
            log.warning(f"[aglora] warning: {damaged}; every stage runs again")
        state = state or {}
        for key in ("finished", "wall_seconds", "inputs", "artifacts"):
            if not isinstance(state.get(key), dict):
                state[key] = {}
        self.state = state

    def stage_inputs(self, stage: str) -> dict[str, str | None]:
        """sha256 of what `stage` reads: the resolved config, the concept files it uses and the
        artifacts of the stages before it."""
        out: dict[str, str | None] = {"config": text_hash(dump_config(self.cfg))}
        which = STAGE_SPEC_INPUTS.get(stage)
        if which:
            spec = self.concept
            out.update(file_hashes(spec.input_files() if which == "all" else spec.item_files()))
        for earlier in STAGES[:STAGES.index(stage)]:
            out.update(path_hashes(self.run_dir, ARTIFACTS[earlier]))
        return out

    def finish(self, stage: str, seconds: float,
               inputs: dict[str, str | None] | None = None) -> None:
        self.state["finished"][stage] = True
        self.state["wall_seconds"][stage] = round(seconds, 3)
        self.state["inputs"][stage] = inputs if inputs is not None else self.stage_inputs(stage)
        self.refresh_artifacts(stage, write=False)
        write_json(self.run_dir / "state.json", self.state)

    def refresh_artifacts(self, stage: str, write: bool = True) -> None:
        """Record the hashes of `stage`'s artifacts as they are now (after code that amends a
        finished stage's output on purpose, e.g. a ban's metrics)."""
        self.state["artifacts"][stage] = path_hashes(self.run_dir, ARTIFACTS[stage])
        if write:
            write_json(self.run_dir / "state.json", self.state)

    def stale_reason(self, stage: str) -> str | None:
        """Why `stage` must run (again), or None when it finished and nothing it read or wrote
        has changed since."""
        if not self.state["finished"].get(stage):
            return "not finished"
        return (changed_artifacts(self.state["artifacts"].get(stage), self.run_dir,
                                  ARTIFACTS[stage])
                or changed_inputs(self.state["inputs"].get(stage), self.stage_inputs(stage)))

    def is_finished(self, stage: str) -> bool:
        return self.stale_reason(stage) is None


FORCE_DELETES = ("config.yaml, state.json, the stage outputs (activations, scores, masks, "
                 "adapter/, train_history.json, metrics.json, probe_results.jsonl, figures/, "
                 "report.*) and a ban's files (ban/, ban.json, recommendation lists)")


def _is_own(name: str) -> bool:
    """Whether a run directory entry is one aglora writes (or a temporary file of one)."""
    own = {*RUN_FILES, *(rel.split("/")[0] for rels in ARTIFACTS.values() for rel in rels)}
    if name in own:
        return True
    return name.startswith(".") and any(name.startswith(f".{o}.") for o in own)


def foreign_entries(run_dir: Path) -> list[str]:
    """Names in `run_dir` that aglora did not write."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if not _is_own(p.name))


def remove_temporaries(run_dir: Path) -> None:
    """Delete the temporary files and folders of atomic writes that a killed process left
    (`.NAME.*` beside one of aglora's own names); the lock is held, so none is in use."""
    for p in sorted(run_dir.iterdir()):
        if p.name.startswith(".") and p.name != LOCK_NAME and _is_own(p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def clear_run_dir(run_dir: Path) -> None:
    """Delete aglora's own files from `run_dir` (never anything else; the lock file stays)."""
    foreign = foreign_entries(run_dir)
    if foreign:  # checked by the callers before; never delete around someone else's files
        raise AgloraError(_foreign_message(run_dir, foreign))
    for p in sorted(run_dir.iterdir()):
        if p.name == LOCK_NAME:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _foreign_message(run_dir: Path, foreign: list[str]) -> str:
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    return (f"{run_dir} holds files aglora did not write ({shown}); --force deletes only "
            f"aglora's own ({FORCE_DELETES}), so move those files or choose another --out")


def check_out_dir(run_dir: Path) -> None:
    """Refuse an output path that is a file, or a directory (or parent) aglora cannot write."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise AgloraError(f"--out {run_dir} is a file, not a directory; choose another --out")
    probe = run_dir
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise AgloraError(f"--out {run_dir}: {probe} is a file, not a directory; choose another "
                          "--out")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise AgloraError(f"--out {run_dir}: {probe} is not writable (read-only); choose a "
                          "writable --out")


def prepare_run_dir(run_dir: Path, same_run: bool, force: bool, what: str = "run") -> None:
    """Check, create and lock a run directory; with `force`, clear aglora's files from one that
    holds another run. `same_run`: the directory holds this very run (resume) or none."""
    run_dir = Path(run_dir)
    check_out_dir(run_dir)
    has_run = (run_dir / "config.yaml").is_file()
    foreign = foreign_entries(run_dir)
    if not has_run and foreign:
        raise AgloraError(f"{run_dir} is not empty and holds no aglora run "
                          f"({', '.join(foreign[:3])}); choose another --out (--force deletes "
                          "only aglora's own files, never these)")
    if not same_run and foreign and force:
        raise AgloraError(_foreign_message(run_dir, foreign))
    if not same_run and not force:
        raise AgloraError(f"{run_dir} holds another {what}; choose another --out or pass "
                          f"--force to overwrite it (it deletes {FORCE_DELETES})")
    run_dir.mkdir(parents=True, exist_ok=True)
    lock_dir(run_dir)  # before anything is deleted: never under another process's feet
    remove_temporaries(run_dir)
    if not same_run:
        log.info(f"[aglora] --force: deleting the {what} in {run_dir}")
        clear_run_dir(run_dir)


def open_run(cfg: RunConfig, run_dir: Path, force: bool = False,
             check: bool = False) -> RunContext:
    """Create or reopen a run directory for `cfg`, refusing one that holds another run.
    `check`: run `check_inputs` first, before anything in the directory is written or deleted.
    Under a launch the main process does this; the others follow it (`_opened_on_main`)."""
    return _opened_on_main(lambda: _open_run(cfg, run_dir, force, check), Path(run_dir), cfg)


def _opened_on_main(open_fn, run_dir: Path, cfg: RunConfig | None = None) -> RunContext:
    """`open_fn()` on the main process; the other processes of a launch get a context that
    neither locks nor writes the directory (the config: `cfg`, else the one the main saved)."""
    if not ranks().launched:
        return open_fn()
    opened: list[RunContext] = []
    on_main(lambda: opened.append(open_fn()))
    if is_main():
        return opened[0]
    ctx = RunContext(cfg=cfg or config_from_dict(load_yaml(run_dir / "config.yaml")),
                     run_dir=run_dir)
    ctx.state = {key: {} for key in ("finished", "wall_seconds", "inputs", "artifacts")}
    return ctx


def _open_run(cfg: RunConfig, run_dir: Path, force: bool, check: bool) -> RunContext:
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    text = dump_config(cfg)
    checked = None
    if check:
        checked = RunContext(cfg=cfg, run_dir=run_dir)
        check_inputs(checked)
    check_out_dir(run_dir)
    same = cfg_path.is_file() and _same_config(cfg_path, text)
    if cfg_path.is_file() and not same and not force:
        try:
            diff = _diff_keys(load_yaml(cfg_path), yaml.safe_load(text))
        except AgloraError:
            diff = []
        raise AgloraError(f"{run_dir} holds another run (its config differs in "
                          f"{', '.join(diff[:4]) or 'format'}); choose another --out or pass "
                          f"--force to overwrite it (it deletes {FORCE_DELETES})")
    prepare_run_dir(run_dir, same_run=same or not cfg_path.is_file(), force=force)
    write_text(cfg_path, text)
    ctx = RunContext(cfg=cfg, run_dir=run_dir, _concept=checked._concept if checked else None)
    ctx.load_state()
    return ctx


def _same_config(cfg_path: Path, text: str) -> bool:
    """Whether a run's saved config is `text`, once keys added since it was written are filled
    with their defaults (a run from an earlier version, with the same settings, is the same run).
    """
    saved = cfg_path.read_text()
    if saved == text:
        return True
    try:
        return dump_config(config_from_dict(load_yaml(cfg_path))) == text
    except AgloraError:  # a key that no longer exists, say: another run
        return False


def reopen_run(run_dir: Path) -> RunContext:
    """Reopen an existing run directory with the configuration saved in it."""
    return _opened_on_main(lambda: _reopen_run(run_dir), Path(run_dir))


def _reopen_run(run_dir: Path) -> RunContext:
    cfg_path = Path(run_dir) / "config.yaml"
    if not cfg_path.is_file():
        raise AgloraError(f"{run_dir} holds no run (no config.yaml); start one with "
                          "`aglora run CONFIG --out DIR`")
    cfg = config_from_dict(load_yaml(cfg_path))
    lock_dir(Path(run_dir))
    ctx = RunContext(cfg=cfg, run_dir=Path(run_dir))
    ctx.load_state()
    return ctx


def _diff_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(prefix + k)
    return out


def check_inputs(ctx: RunContext) -> None:
    """Everything that can be checked before a model loads: the scorer and objectives, the
    concept spec with every include and probe file parsed, what the objectives need from the
    spec, and the device."""
    from aglora.model.load import resolve_device
    from aglora.pipeline.score import SCORERS
    from aglora.pipeline.train.objectives import check_objectives
    from aglora.pipeline.train.targets import ANSWER_OBJECTIVES, check_response_inputs
    cfg = ctx.cfg
    if cfg.score.scorer not in SCORERS:
        raise AgloraError(f"score.scorer={cfg.score.scorer!r}: unknown scorer; choose from "
                          f"{', '.join(sorted(SCORERS))}")
    check_objectives(cfg.train.forget_objective, cfg.train.retain_objective,
                     cfg.train.forget_response)
    concept = ctx.concept
    eval_probes(ctx)  # parses every probe file; refuses a spec without any
    check_response_inputs(cfg.train, concept.forget, concept.alternatives)
    if cfg.train.forget_objective in ANSWER_OBJECTIVES:
        missing = [p for p in concept.forget if not p.answer]
        if missing:
            raise AgloraError(f"train.forget_objective={cfg.train.forget_objective} needs an "
                              f"'answer' on every forget item; {missing[0].id!r} has none "
                              f"({concept.source})")
    resolve_device(cfg.model.device)


def check_model_fit(ctx: RunContext, model, tok) -> None:
    """What needs the loaded model: mask.k within its neurons, every prompt within its context."""
    from aglora.model.neurons import mlp_layers
    from aglora.model.tokens import check_lengths
    m = ctx.cfg.mask
    d_ff = [layer.d_ff for layer in mlp_layers(model)]
    if m.selection == "topk_global" and m.k > sum(d_ff):
        raise AgloraError(f"mask.k={m.k} exceeds the model's {sum(d_ff)} MLP neurons "
                          f"({len(d_ff)} layers); lower mask.k")
    if m.selection == "topk_per_layer" and m.k > min(d_ff):
        raise AgloraError(f"mask.k={m.k} exceeds the {min(d_ff)} neurons of a layer "
                          "(selection topk_per_layer); lower mask.k")
    if ctx._concept is None and not resolve_concept_path(ctx.cfg.concept).is_file():
        return  # a spec built from the model itself (a ban): it is written after this
    concept = ctx.concept
    check_lengths(tok, model, concept.forget, "forget item")
    check_lengths(tok, model, concept.retain, "retain item")
    check_lengths(tok, model, [p for f in concept.probe_files for p in load_probes(f)[0]],
                  "probe")


def _same_answer_warning(concept: ConceptSpec) -> None:
    forget_answers = {p.answer.lower() for p in concept.forget if p.answer}
    if not any(p.answer and p.answer.lower() in forget_answers for p in concept.retain):
        log.warning("[aglora] warning: no retain item shares an answer with a forget item; "
              "same-answer neighbours (e.g. the director's other films) are usually erased too "
              "unless the retain set holds some")


# ---- stages -----------------------------------------------------------------------------------
def stage_record(ctx: RunContext) -> None:
    from aglora.pipeline.record import record
    model, tok = ctx.base()
    concept = ctx.concept
    _same_answer_warning(concept)
    items = ctx.training
    write_text(ctx.run_dir / "train_items.jsonl",
               "".join(json.dumps(row) + "\n" for row in items.rows()))
    stats = record(model, tok, items.forget, items.retain, ctx.cfg.score.batch_size)
    save_tensors(ctx.run_dir / "activations.safetensors", stats)


def stage_score(ctx: RunContext) -> None:
    from aglora.pipeline.score import compute_scores
    stats = load_tensors(ctx.run_dir / "activations.safetensors")
    sc = ctx.cfg.score
    scores = compute_scores(stats, sc.scorer, sc.eps, sc.retain_weight, ctx.cfg.mask.seed)
    save_tensors(ctx.run_dir / "scores.safetensors", scores)


def _layer_indices(ctx: RunContext, n_layers: int) -> list[int]:
    if ctx._model is not None:
        from aglora.model.neurons import layer_indices
        return layer_indices(ctx._model)
    return list(range(n_layers))


def stage_mask(ctx: RunContext) -> None:
    score = load_tensors(ctx.run_dir / "scores.safetensors")["score"]
    mask = NeuronMask(select(score, ctx.cfg.mask), _layer_indices(ctx, score.shape[0]))
    save_mask(mask, ctx.run_dir)
    log.info(f"[aglora] selected {mask.n_selected} neurons in layers {mask.layers_with_neurons()}")


def _name_layer(ctx: RunContext, mask) -> int:
    """The layer the name misdirection term reads: the deepest with masked neurons (the middle
    layer for an unmasked adapter)."""
    layers = mask.layers_with_neurons() if ctx.cfg.lora.masked else []
    return max(layers) if layers else max(mask.layer_indices) // 2


def stage_train(ctx: RunContext) -> None:
    from aglora.model.adapter import attach_lora, count_parameters, save_adapter
    from aglora.model.forward import prefix_sharing
    from aglora.pipeline.augment import name_words
    from aglora.pipeline.train.loop import train
    from aglora.pipeline.train.shares import shard_layers
    tok = ctx.base()[1]  # the base stays referenced by ctx alone (FSDP drops it after training)
    if ctx._peft is not None:
        raise AgloraError("this process already holds an adapter; run train in a new process")
    mask = load_mask(ctx.run_dir / "masks.safetensors")
    torch.manual_seed(ctx.cfg.train.seed)
    peft_model = attach_lora(ctx.base()[0], mask, ctx.cfg.lora)
    ctx._peft = peft_model
    fsdp = ranks().launched and ranks().fsdp
    if fsdp:
        shard_layers(peft_model)
    concept, items = ctx.concept, ctx.training
    with prefix_sharing(not fsdp):
        result = train(peft_model, tok, items.forget, items.retain, ctx.cfg.train,
                       concept.refusals, concept.alternatives,
                       validation=items.forget_validation or None,
                       retain_validation=items.retain_validation or None,
                       names=name_words(concept), name_layer=_name_layer(ctx, mask))
    if fsdp:
        peft_model = _unsharded(ctx, peft_model, mask)
    if not is_main():
        return
    trainable, effective, base_params = count_parameters(peft_model)
    meta = {"concept": concept.name, "masked": ctx.cfg.lora.masked,
            "mask": mask.summary() if ctx.cfg.lora.masked else None,
            "config": config_to_dict(ctx.cfg)}
    adapter_bytes = save_adapter(peft_model, ctx.run_dir / "adapter", meta)
    write_json(ctx.run_dir / "train_history.json", {
        "steps": result.steps, "stopped_early": result.stopped_early,
        "stop_reason": result.stop_reason,
        "seconds": result.seconds, "check_seconds": result.check_seconds,
        "step_seconds": result.step_seconds, "final_check": result.final_check,
        "history": result.history,
        "trainable_params": trainable, "effective_params": effective,
        "base_params": base_params, "adapter_bytes": adapter_bytes})


def _unsharded(ctx: RunContext, sharded, mask: NeuronMask):
    """After FSDP training (every process): the LoRA weights gathered whole, the sharded model
    dropped, and on the main process a fresh base with them (saved, then evaluated)."""
    from aglora.model.adapter import attach_lora
    from aglora.pipeline.train.shares import full_lora_state, load_lora_state
    lora = full_lora_state(sharded)
    ctx._model = ctx._peft = None
    if not is_main():
        return None
    ctx._peft = attach_lora(ctx.base()[0], mask, ctx.cfg.lora)
    load_lora_state(ctx._peft, lora)
    return ctx._peft


def eval_probes(ctx: RunContext) -> list[Probe]:
    return concept_eval_probes(ctx.concept, ctx.cfg.eval)


def concept_eval_probes(concept: ConceptSpec, cfg: EvalConfig) -> list[Probe]:
    """A concept's evaluation probes, plus the TOFU utility probes if `cfg` asks for them;
    a spec without probes is refused."""
    probes = concept.eval_probes()
    if not probes:
        raise AgloraError(f"{concept.source}: lists no evaluation probes under 'probes:'")
    if cfg.include_tofu:
        probes += load_tofu(cfg.tofu_limit)
    return probes


def stage_eval(ctx: RunContext) -> None:
    from aglora.pipeline.eval.evaluate import evaluate
    from aglora.pipeline.eval.robustness import relearn_checkpoints, robustness
    model, tok = ctx.adapted()
    probes = eval_probes(ctx)
    metrics, records = evaluate(model, tok, probes, ctx.cfg.eval, ctx.concept.leak_patterns,
                                ctx.concept.name, ctx.concept.refusals)
    metrics.update(robustness(model, tok, probes, records, ctx.cfg.eval,
                              relearn_checkpoints(ctx.cfg.eval)))
    hist = read_json(ctx.run_dir / "train_history.json")
    metrics.update({
        "concept": ctx.concept.name,
        "model": str(getattr(ctx._model, "name_or_path", ctx.cfg.model.name_or_path)),
        "trainable_params": hist["trainable_params"], "effective_params": hist["effective_params"],
        "base_params": hist["base_params"],
        "trainable_share": hist["trainable_params"] / hist["base_params"],
        "adapter_bytes": hist["adapter_bytes"], "train_steps": hist["steps"],
        "stopped_early": hist["stopped_early"],
        "wall_seconds": dict(ctx.state.get("wall_seconds", {})),
    })
    metrics["wall_seconds"]["eval"] = round(metrics["eval_seconds"], 3)
    write_eval_outputs(ctx.run_dir, metrics, records)


def stage_report(ctx: RunContext) -> None:
    from aglora.pipeline.report import write_report
    write_report(ctx.run_dir, ctx.report_sections)


STAGE_FUNCS = {"record": stage_record, "score": stage_score, "mask": stage_mask,
               "train": stage_train, "eval": stage_eval, "report": stage_report}


def run_stage(ctx: RunContext, stage: str) -> None:
    log.info(f"[aglora] == {stage} ==")
    start = time.time()
    inputs = on_main(lambda: ctx.stage_inputs(stage))  # what the stage reads, hashed before
    if stage in TRAIN_EVERY_PROCESS:
        STAGE_FUNCS[stage](ctx)
    else:
        on_main(lambda: STAGE_FUNCS[stage](ctx))
    on_main(lambda: ctx.finish(stage, time.time() - start, inputs))
    log.info(f"[aglora] {stage} done in {time.time() - start:.1f}s")


def run_all(ctx: RunContext, until: str | None = None) -> None:
    """Run every stage not finished yet, in order (resume after an interruption); a finished
    stage whose inputs or artifacts changed runs again, and so do the stages after it."""
    for stage in STAGES:
        reason = on_main(lambda stage=stage: ctx.stale_reason(stage))  # the main decides
        if reason is None:
            log.info(f"[aglora] {stage}: already finished, skipped")
        else:
            if ctx.state["finished"].get(stage):
                log.info(f"[aglora] {stage}: rerun ({reason})")
            # A stage rerun invalidates the ones after it.
            for later in STAGES[STAGES.index(stage) + 1:]:
                ctx.state["finished"].pop(later, None)
            run_stage(ctx, stage)
        if stage == until:
            break
