"""The spine of a run: the stages, the run directory they share, and resume.

`record -> score -> mask -> train -> eval -> report`, each a function of (RunContext) that reads
its inputs from and writes its outputs to one run directory. `state.json` lists the finished
stages with their wall time; `run_all` skips finished stages (resume) and stops on the first error
without touching what earlier stages wrote. A directory that holds a run with another
configuration is refused unless `force` is given.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from aglora.concepts import ConceptSpec, Probe, load_concept, load_tofu
from aglora.config import RunConfig, config_from_dict, config_to_dict, dump_config, load_yaml
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

log = logging.getLogger("aglora")

STAGES = ("record", "score", "mask", "train", "eval", "report")
OUTPUTS = {
    "record": ["activations.safetensors"],
    "score": ["scores.safetensors"],
    "mask": ["masks.safetensors", "masks.json"],
    "train": ["adapter/adapter_model.safetensors", "train_history.json"],
    "eval": ["metrics.json", "probe_results.jsonl"],
    "report": ["report.md", "report.html"],
}


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
            self._model, self._tok = load_model(self.cfg.model)
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
        path = self.run_dir / "state.json"
        self.state = read_json(path) if path.is_file() else {"finished": {}, "wall_seconds": {}}

    def finish(self, stage: str, seconds: float) -> None:
        self.state["finished"][stage] = True
        self.state["wall_seconds"][stage] = round(seconds, 3)
        write_json(self.run_dir / "state.json", self.state)

    def is_finished(self, stage: str) -> bool:
        return bool(self.state.get("finished", {}).get(stage)) and all(
            (self.run_dir / o).exists() for o in OUTPUTS[stage])


def open_run(cfg: RunConfig, run_dir: Path, force: bool = False) -> RunContext:
    """Create or reopen a run directory for `cfg`, refusing one that holds another run."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    text = dump_config(cfg)
    if cfg_path.is_file() and not _same_config(cfg_path, text):
        if not force:
            old = load_yaml(cfg_path)
            new = yaml.safe_load(text)
            diff = _diff_keys(old, new)
            raise AgloraError(f"{run_dir} holds another run (its config differs in "
                              f"{', '.join(diff[:4]) or 'format'}); choose another --out or pass "
                              "--force to overwrite it")
        shutil.rmtree(run_dir)
    elif run_dir.is_dir() and any(run_dir.iterdir()) and not cfg_path.is_file():
        if not force:
            raise AgloraError(f"{run_dir} is not empty and holds no aglora run; choose another "
                              "--out or pass --force")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(cfg_path, text)
    ctx = RunContext(cfg=cfg, run_dir=run_dir)
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
    cfg_path = Path(run_dir) / "config.yaml"
    if not cfg_path.is_file():
        raise AgloraError(f"{run_dir} holds no run (no config.yaml); start one with "
                          "`aglora run CONFIG --out DIR`")
    ctx = RunContext(cfg=config_from_dict(load_yaml(cfg_path)), run_dir=Path(run_dir))
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


def stage_train(ctx: RunContext) -> None:
    from aglora.model.adapter import attach_lora, count_parameters, save_adapter
    from aglora.pipeline.train.loop import train
    model, tok = ctx.base()
    if ctx._peft is not None:
        raise AgloraError("this process already holds an adapter; run train in a new process")
    mask = load_mask(ctx.run_dir / "masks.safetensors")
    torch.manual_seed(ctx.cfg.train.seed)
    peft_model = attach_lora(model, mask, ctx.cfg.lora)
    ctx._peft = peft_model
    concept, items = ctx.concept, ctx.training
    result = train(peft_model, tok, items.forget, items.retain, ctx.cfg.train,
                   concept.refusals, concept.alternatives,
                   validation=items.forget_validation or None)
    trainable, effective, base_params = count_parameters(peft_model)
    meta = {"concept": concept.name, "masked": ctx.cfg.lora.masked,
            "mask": mask.summary() if ctx.cfg.lora.masked else None,
            "config": config_to_dict(ctx.cfg)}
    adapter_bytes = save_adapter(peft_model, ctx.run_dir / "adapter", meta)
    write_json(ctx.run_dir / "train_history.json", {
        "steps": result.steps, "stopped_early": result.stopped_early,
        "seconds": result.seconds, "history": result.history,
        "trainable_params": trainable, "effective_params": effective,
        "base_params": base_params, "adapter_bytes": adapter_bytes})


def eval_probes(ctx: RunContext) -> list[Probe]:
    probes = ctx.concept.eval_probes()
    if not probes:
        raise AgloraError(f"{ctx.concept.source}: lists no evaluation probes under 'probes:'")
    if ctx.cfg.eval.include_tofu:
        probes += load_tofu(ctx.cfg.eval.tofu_limit)
    return probes


def stage_eval(ctx: RunContext) -> None:
    from aglora.pipeline.eval.evaluate import evaluate
    from aglora.pipeline.eval.relearn import relearn_from_records
    model, tok = ctx.adapted()
    probes = eval_probes(ctx)
    metrics, records = evaluate(model, tok, probes, ctx.cfg.eval, ctx.concept.leak_patterns)
    if ctx.cfg.eval.relearn_steps:
        log.info(f"[aglora] relearning attack: {ctx.cfg.eval.relearn_steps} steps")
        metrics["relearn"] = relearn_from_records(
            model, tok, probes, records, ctx.cfg.eval.relearn_steps, ctx.cfg.eval.batch_size,
            seed=ctx.cfg.eval.seed)
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
    STAGE_FUNCS[stage](ctx)
    ctx.finish(stage, time.time() - start)
    log.info(f"[aglora] {stage} done in {time.time() - start:.1f}s")


def run_all(ctx: RunContext, until: str | None = None) -> None:
    """Run every stage not finished yet, in order (resume after an interruption)."""
    for stage in STAGES:
        if ctx.is_finished(stage):
            log.info(f"[aglora] {stage}: already finished, skipped")
        else:
            # A stage rerun invalidates the ones after it.
            for later in STAGES[STAGES.index(stage) + 1:]:
                ctx.state["finished"].pop(later, None)
            run_stage(ctx, stage)
        if stage == until:
            break
