"""Human-readable report of one run: `report.md`, a self-contained `report.html`, and figures.

`write_report(run_dir)` reads the artifacts the pipeline left in a run directory (`metrics.json`
is required; `probe_results.jsonl`, `train_history.json`, `scores.safetensors`, `masks.json` and
`config.yaml` are optional, and a missing one only skips its section) and writes:

* `figures/*.png` - family accuracies and leak rates, the saliency heatmap with the selected
  neurons, selected neurons per layer, and the training curves;
* `report.md` - the report, figures referenced by relative path;
* `report.html` - the same report with the figures inlined as base64 data URIs, so the file can
  be mailed or archived alone (no scripts, no external links or stylesheets).

Both documents are built from one list of blocks (`Heading`, `Para`, `Table`, ...), so they always
carry the same sections. Every file is written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from aglora.pipeline.eval.answers import LABELS as ANSWER_LABELS
from aglora.pipeline.eval.metrics import (
    FORGOTTEN_ACC_MARGIN,
    FORGOTTEN_LEAK_MAX,
    KEPT_NEIGHBOR_ACC,
    KEPT_UTILITY_ACC,
    MIN_FAMILY_KNOWN,
    verdict_line,
)
from aglora.pipeline.eval.text_stats import leaks
from aglora.pipeline.report.document import (
    Block,
    Bullets,
    Details,
    Figure,
    Heading,
    Note,
    Para,
    Table,
    family_order,
)
from aglora.pipeline.report.figures import (
    plot_answer_shares,
    plot_families,
    plot_mask_per_layer,
    plot_relearning,
    plot_saliency,
    plot_training,
)
from aglora.pipeline.report.inputs import RunInputs
from aglora.runtime.format import (
    DASH,
    as_float,
    dig,
    fmt,
    fmt_int,
    fmt_pct,
    human_bytes,
    is_number,
)

MAX_ANSWER_CHARS = 160
MAX_NEIGHBOR_EXAMPLES = 5
EXAMPLE_FAMILIES = ("direct", "paraphrase")


# ---------------------------------------------------------------------------------------------
# Number formatting


def _arrow(d: Any, digits: int = 2) -> str:
    return f"{fmt(dig(d, 'base'), digits)} → {fmt(dig(d, 'after'), digits)}"


def _known_acc(g: dict) -> str:
    ka = g.get("known_accuracy") or {}
    ci = ka.get("after_ci95")
    text = _arrow(ka)
    if isinstance(ci, list) and len(ci) == 2 and all(is_number(c) for c in ci):
        text += f" [{fmt(ci[0])}, {fmt(ci[1])}]"
    return text


def _leak(g: dict) -> str:
    lr = g.get("leak_rate") or {}
    n = lr.get("n_generations")
    if not n:
        return DASH
    return f"{_arrow(lr)} ({n})"


# ---------------------------------------------------------------------------------------------
# Sections


def verdict(metrics: dict) -> tuple[str, str]:
    """(label, explanation): "DEGENERATE", or the forgetting verdict with what was kept
    (`pipeline.eval.metrics.verdict_line`; older runs get it computed from their metrics)."""
    v = metrics.get("verdict") or {}
    forget = dig(metrics, "splits", "forget") or {}
    chance = as_float(forget.get("chance"))
    kept = (f"Neighbour known accuracy after "
            f"{fmt(dig(metrics, 'splits', 'neighbor', 'known_accuracy', 'after'))}, utility "
            f"known accuracy after "
            f"{fmt(dig(metrics, 'splits', 'utility', 'known_accuracy', 'after'))}.")
    forget_text = (f"On forget probes the base model knew, known accuracy went "
                   f"{_arrow(forget.get('known_accuracy'))} (chance {fmt(chance)}) and the leak "
                   f"rate {_arrow(forget.get('leak_rate'))}.")
    if v.get("degenerate"):
        why = "for the reasons listed below" if v.get("reasons") else "(no reason recorded)"
        return "DEGENERATE", (f"The unlearned model collapsed {why}, so the forget numbers do "
                              f"not show forgetting. {forget_text} {kept}")
    if not forget:
        return "Not forgotten", f"No forget probes were evaluated. {kept}"
    line = verdict_line(metrics)
    criterion = (f"Forgotten means known accuracy after <= chance + {FORGOTTEN_ACC_MARGIN:.2f} "
                 f"and leak rate after <= {FORGOTTEN_LEAK_MAX:.2f}, on the forget split and on "
                 f"every forget family with at least {MIN_FAMILY_KNOWN} known probes; kept means "
                 f"neighbours >= {KEPT_NEIGHBOR_ACC:.2f} and utility >= {KEPT_UTILITY_ACC:.2f}; a "
                 "criterion that could not be measured counts as not met")
    label = line[0].upper() + line[1:]
    return label, f"{forget_text} {kept} {criterion}."


def report_title(metrics: dict) -> str:
    return (f"aglora report: forgetting “{metrics.get('concept', '?')}” "
            f"in {metrics.get('model', '?')}")


def verdict_section(metrics: dict) -> list[Block]:
    label, text = verdict(metrics)
    blocks: list[Block] = [Heading(report_title(metrics), 1), Para(text, strong=f"{label}.")]
    reasons = dig(metrics, "verdict", "reasons")
    if dig(metrics, "verdict", "degenerate") and reasons:
        blocks.append(Bullets([str(r) for r in reasons]))
    return blocks


_GROUP_HEADERS = ["n", "known", "chance", "known acc. base → after [95% CI]",
                  "margin base → after", "leak rate base → after (gens)", "answer log-p drop",
                  "truth ratio base → after"]


def _group_row(name: str, g: dict) -> list[str]:
    return [name, fmt_int(g.get("n")), fmt_int(g.get("n_known")), fmt(g.get("chance")),
            _known_acc(g),
            _arrow(g.get("margin")), _leak(g), fmt(g.get("answer_logprob_drop")),
            _arrow(g.get("truth_ratio"))]


def tables_section(metrics: dict) -> list[Block]:
    blocks: list[Block] = [Heading("Summary")]
    splits = metrics.get("splits") or {}
    order = [s for s in ("forget", "neighbor", "utility") if s in splits]
    order += sorted(s for s in splits if s not in order)
    blocks.append(Table(["split", *_GROUP_HEADERS], [_group_row(s, splits[s]) for s in order]))
    fams = metrics.get("families") or {}
    if fams:
        rows = [_group_row(k, fams[k]) for k in family_order(fams)]
        blocks += [Heading("Per family", 3), Table(["family", *_GROUP_HEADERS], rows)]
    else:
        blocks.append(Note("No per-family metrics in metrics.json."))
    return blocks


# ---------------------------------------------------------------------------------------------
# Figures


def families_figure_section(metrics: dict, fig_dir: Path) -> list[Block]:
    path = fig_dir / "families.png"
    blocks: list[Block] = [Heading("Per-family accuracy and leaks")]
    if plot_families(metrics, path):
        blocks.append(Figure(path, "figures/families.png",
                             "Known accuracy (top) and leak rate (bottom) per family, base vs "
                             "after; the black line over each group is chance."))
    else:
        blocks.append(Note("Skipped: metrics.json has no per-family metrics."))
    return blocks


def mask_section(inputs: RunInputs, fig_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading("Where the adapter acts")]
    score = (inputs.scores or {}).get("score")
    if score is not None and score.dim() == 2 and score.numel():
        path = fig_dir / "saliency_heatmap.png"
        plot_saliency(score, inputs.masks, path)
        blocks.append(Figure(path, "figures/saliency_heatmap.png",
                             "Layer × neuron score (log1p or rank scale, max-pooled over "
                             "neuron blocks); red dots are the neurons the mask selected."))
    else:
        blocks.append(Note("Skipped the saliency heatmap: scores.safetensors (tensor 'score') "
                           "not found."))
    if inputs.masks:
        path = fig_dir / "mask_per_layer.png"
        plot_mask_per_layer(inputs.masks, path)
        blocks.append(Figure(path, "figures/mask_per_layer.png", "Selected neurons per layer."))
    else:
        blocks.append(Note("Skipped the per-layer mask chart: masks.json not found."))
    return blocks


def training_section(inputs: RunInputs, fig_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading("Training")]
    hist = (inputs.history or {}).get("history")
    if not isinstance(hist, list) or not hist:
        blocks.append(Note("Skipped: train_history.json not found or empty."))
        return blocks
    path = fig_dir / "training.png"
    if plot_training([h for h in hist if isinstance(h, dict)], path):
        blocks.append(Figure(path, "figures/training.png",
                             "Forget loss, retain KL and training forget accuracy per step."))
    else:
        blocks.append(Note("Skipped: train_history.json records no losses."))
    return blocks


# ---------------------------------------------------------------------------------------------
# Before / after responses


def truncate(text: str, limit: int = MAX_ANSWER_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


_LABEL_MARKS = {"leak": "✗ leak", "mangled": "✗ mangled name", "refusal": "✓ refusal",
                "looping": "✗ looping", "other": "✓ other answer"}


def _answer_mark(gens: Any, labels: Any, patterns: list[str]) -> tuple[str, str]:
    """(greedy answer, what it is) for one side of a probe: its label from the evaluation
    (`answers.classify`), or for an older run without labels, the leak patterns alone."""
    if not isinstance(gens, list) or not gens:
        return DASH, DASH
    greedy = str(gens[0])
    if isinstance(labels, list) and labels and str(labels[0]) in _LABEL_MARKS:
        return truncate(greedy), _LABEL_MARKS[str(labels[0])]
    if not patterns:
        return truncate(greedy), DASH
    return truncate(greedy), "✗ leak" if leaks(greedy, patterns) else "✓ clean"


def example_probes(probes: list[dict]) -> list[dict]:
    forget = [p for p in probes if p.get("split") == "forget"
              and p.get("family") in EXAMPLE_FAMILIES and p.get("base_generations")]
    neighbor = [p for p in probes if p.get("split") == "neighbor" and p.get("base_generations")]
    return forget + neighbor[:MAX_NEIGHBOR_EXAMPLES]


def responses_section(inputs: RunInputs) -> list[Block]:
    blocks: list[Block] = [Heading("Responses before and after")]
    if inputs.probes is None:
        blocks.append(Note("Skipped: probe_results.jsonl not found."))
        return blocks
    chosen = example_probes(inputs.probes)
    if not chosen:
        blocks.append(Note("No forget (direct / paraphrase) or neighbour probes with "
                           "generations in probe_results.jsonl."))
        return blocks
    rows = []
    for p in chosen:
        patterns = [str(x) for x in (p.get("leak_patterns") or inputs.default_leak_patterns)]
        prompt = str(p.get("prompt", ""))
        if p.get("prefix"):
            prompt += f" ⟶ {p['prefix']}"
        base, base_mark = _answer_mark(p.get("base_generations"), p.get("base_labels"), patterns)
        after, after_mark = _answer_mark(p.get("after_generations"), p.get("after_labels"),
                                         patterns)
        rows.append([f"{p.get('split', '?')}/{p.get('family', '?')}", truncate(prompt), base,
                     base_mark, after, after_mark])
    blocks.append(Note("Greedy answers, each with what it is: a leak (matches the probe's leak "
                       "patterns), a mangled name (a near miss of the concept's name), a "
                       "refusal, a loop, or another answer (docs/metrics.md)."))
    blocks.append(Table(["family", "prompt", "base answer", "base: what it is",
                         "unlearned answer", "unlearned: what it is"], rows))
    if inputs.bad_probe_lines:
        blocks.append(Note(f"{inputs.bad_probe_lines} malformed line(s) of "
                           "probe_results.jsonl were skipped."))
    return blocks


def _share_arrow(group: dict, label: str) -> str:
    b = dig(group, "base", "shares", label)
    a = dig(group, "after", "shares", label)
    return f"{fmt_pct(b)} → {fmt_pct(a)}"


def answers_section(metrics: dict, fig_dir: Path) -> list[Block]:
    """What the model says: the label shares per split (base → after), fluency of the forget
    answers, and the shares per forget family as a figure."""
    answers = metrics.get("answers")
    blocks: list[Block] = [Heading("What is said instead")]
    splits = (answers or {}).get("splits") if isinstance(answers, dict) else None
    if not isinstance(splits, dict) or not splits:
        blocks.append(Note("Skipped: metrics.json has no answer classification."))
        return blocks
    order = [s for s in ("forget", "neighbor", "utility") if s in splits]
    rows = [[s, fmt_int(dig(splits[s], "after", "n_generations")),
             *[_share_arrow(splits[s], k) for k in ANSWER_LABELS]] for s in order]
    blocks.append(Table(["split", "generations", *ANSWER_LABELS], rows))
    f = splits.get("forget") or {}
    if f:
        blocks.append(Table(["forget answers", "base → after"], [
            ["3-gram repetition", f"{fmt(dig(f, 'base', 'repetition'))} → "
                                  f"{fmt(dig(f, 'after', 'repetition'))}"],
            ["distinct-2", f"{fmt(dig(f, 'base', 'distinct2'))} → "
                           f"{fmt(dig(f, 'after', 'distinct2'))}"],
            ["base model's NLL per token of the greedy answer", _arrow(f.get("base_nll"))]]))
    blocks.append(Note("Shares of all generations (greedy and samples). A refusal on neighbour "
                       "or utility probes is over-refusal; a mangled name is a near miss of "
                       "the concept's name that its leak patterns do not catch."))
    path = fig_dir / "answers.png"
    if plot_answer_shares(answers, path):
        blocks.append(Figure(path, "figures/answers.png",
                             "What the forget answers are, per family, before and after."))
    return blocks


# ---------------------------------------------------------------------------------------------
# Cost, fluency, relearning, config


def cost_section(metrics: dict, history: dict | None) -> list[Block]:
    def pick(key: str) -> Any:
        v = metrics.get(key)
        return v if v is not None else (history or {}).get(key)

    share = as_float(metrics.get("trainable_share"))
    base = as_float(pick("base_params"))
    if not math.isfinite(share) and math.isfinite(base) and base > 0:
        share = as_float(pick("trainable_params")) / base
    steps = pick("train_steps")
    if steps is None:
        steps = (history or {}).get("steps")
    stopped = metrics.get("stopped_early", (history or {}).get("stopped_early"))
    stop_text = {True: " (stopped early)", False: " (ran to max steps)"}.get(stopped, "")
    share_text = f"{100 * share:.3f}% of {fmt_int(base)} base" if math.isfinite(share) else DASH
    rows = [["trainable parameters", f"{fmt_int(pick('trainable_params'))} ({share_text})"],
            ["effective parameters (unmasked)", fmt_int(pick("effective_params"))],
            ["adapter size", human_bytes(pick("adapter_bytes"))],
            ["train steps", f"{fmt_int(steps)}{stop_text}"]]
    rows += _check_rows(history)
    blocks: list[Block] = [Heading("Cost"), Table(["", "value"], rows)]
    wall = metrics.get("wall_seconds")
    if isinstance(wall, dict) and wall:
        total = sum(as_float(v) for v in wall.values() if is_number(v))
        blocks.append(Table(["stage", "wall seconds"],
                            [[k, fmt(v)] for k, v in wall.items()] + [["total", fmt(total)]]))
    else:
        blocks.append(Note("No per-stage wall times in metrics.json."))
    return blocks


def _check_rows(history: dict | None) -> list[list[str]]:
    """The early-stopping checks' share of training time, and what a final full check said
    (train_history.json from before these were recorded: no rows)."""
    h = history or {}
    total, checks = as_float(h.get("seconds")), as_float(h.get("check_seconds"))
    if not (math.isfinite(total) and math.isfinite(checks)) or total <= 0:
        return []
    rows = [["early-stopping checks", f"{checks:.0f} s of {total:.0f} s of training "
                                      f"({100 * checks / total:.0f} %)"]]
    final = h.get("final_check")
    if isinstance(final, dict) and is_number(final.get("accuracy")):
        rows.append(["full check after the last step",
                     f"{fmt_int(final.get('answers_at_goal'))} of {fmt_int(final.get('answers'))}"
                     f" answers at the goal, accuracy {fmt(final['accuracy'])} on "
                     f"{fmt_int(final.get('items'))} items"])
    return rows


def fluency_section(metrics: dict) -> list[Block]:
    rows = [["distinct-2 of neighbour generations", _arrow(metrics.get("distinct2"))],
            ["3-gram repetition of neighbour generations", _arrow(metrics.get("repetition"))],
            ["KL(base ‖ after) per token, neighbours", fmt(metrics.get("kl_neighbor"), 4)],
            ["KL(base ‖ after) per token, utility", fmt(metrics.get("kl_utility"), 4)]]
    blocks: list[Block] = [Heading("Fluency"), Table(["measure", "value (base → after)"], rows)]
    thresholds = dig(metrics, "verdict", "thresholds")
    if isinstance(thresholds, dict) and thresholds:
        blocks.append(Note("Collapse thresholds: " + ", ".join(
            f"{k} = {fmt(v) if is_number(v) else v}" for k, v in thresholds.items()) + "."))
    return blocks


RELEARN_ATTACKS = (
    ("relearn", "fine-tune", "a quarter of the known forget facts", "the other known forget facts"),
    ("relearn_benign", "benign fine-tune", "neighbour and utility answers",
     "every known forget fact"))


def _curve_points(r: dict) -> list[dict]:
    """An attack's curve; an older single attack (no `curve`) as its one point."""
    curve = [p for p in r.get("curve") or [] if isinstance(p, dict)]
    return curve or [{"steps": r.get("steps"),
                      "known_accuracy": dig(r, "known_accuracy", "relearned"),
                      "recovered_share": r.get("recovered_share"),
                      "recovered_share_margin": r.get("recovered_share_margin")}]


def _finetune_rows(metrics: dict) -> list[list[str]]:
    rows = []
    for key, name, trained, scored in RELEARN_ATTACKS:
        r = metrics.get(key)
        if not isinstance(r, dict) or "error" in r:
            continue
        base, after = dig(r, "known_accuracy", "base"), dig(r, "known_accuracy", "after")
        rows += [[name, trained, scored, fmt_int(p.get("steps")),
                  f"{fmt(after)} → {fmt(p.get('known_accuracy'))} (base {fmt(base)})",
                  fmt_pct(p.get("recovered_share"), 0),
                  fmt_pct(p.get("recovered_share_margin"), 0)] for p in _curve_points(r)]
    return rows


def _in_context_rows(metrics: dict) -> list[list[str]]:
    r = metrics.get("relearn_in_context")
    if not isinstance(r, dict) or "error" in r:
        return []
    ka = r.get("known_accuracy") or {}
    return [["in context", f"{fmt_int(r.get('n_context'))} known forget facts in the prompt",
             f"the other {fmt_int(r.get('n_held'))}", DASH,
             f"{fmt(ka.get('after'))} → {fmt(ka.get('after_with_context'))} (base "
             f"{fmt(ka.get('base'))}; base with them {fmt(ka.get('base_with_context'))})",
             fmt_pct(r.get("recovered_share"), 0), fmt_pct(r.get("recovered_share_margin"), 0)]]


def relearn_section(metrics: dict, fig_dir: Path) -> list[Block]:
    """The robustness attacks: a table of every checkpoint and the curves' figure."""
    present = {k: metrics[k] for k in ("relearn", "relearn_benign", "relearn_in_context")
               if isinstance(metrics.get(k), dict)}
    if not present:
        return []
    blocks: list[Block] = [Heading("Relearning attacks")]
    rows = _finetune_rows(metrics) + _in_context_rows(metrics)
    if rows:
        blocks.append(Table(["attack", "trained on / given", "scored on", "steps",
                             "known accuracy after → attacked", "recovered (accuracy)",
                             "recovered (margin)"], rows))
    blocks += [Note(f"{key}: {r['error']}") for key, r in present.items() if "error" in r]
    blocks.append(Note("Recovered share = (attacked − after) / (base − after): 0 = nothing came "
                       "back, 1 = back to the base model. Fine-tunes train every weight (full "
                       "AdamW), one continued run scored at each checkpoint."))
    path = fig_dir / "relearning.png"
    if plot_relearning(metrics, path):
        blocks.append(Figure(path, "figures/relearning.png",
                             "Recovered share vs fine-tuning steps, accuracy and margin: the "
                             "relearning and benign curves, the in-context attack as a level."))
    return blocks


def config_section(config_text: str | None) -> list[Block]:
    blocks: list[Block] = [Heading("Configuration")]
    if config_text is None:
        blocks.append(Note("config.yaml not found."))
    else:
        blocks.append(Details("Resolved configuration", config_text, "config.yaml"))
    return blocks
