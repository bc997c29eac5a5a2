"""Which items of a concept spec or probe file does the base model know?

An item with an answer and distractors is scored by likelihood choice (summed log-probability of
each option after the item's context, the evaluation's own scoring). It is *known* when the
answer beats the best distractor by at least `min_margin` nats: a margin near zero is a coin
flip that unlearning cannot be judged on, so the default line sits above it. Items without
options are listed but never known. Optionally each item's greedy answer is generated too, so a
person can see what the model actually says.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from aglora.concepts import Probe, load_concept, load_probes

DEFAULT_MIN_MARGIN = 0.5  # nats: the answer must beat the best distractor by this much


@dataclass
class ItemCheck:
    probe: Probe
    source: str              # the file the item came from
    margin: float | None     # answer - best distractor (nats); None without options
    known: bool
    greedy: str | None = None


def items_of(path: str) -> list[tuple[Probe, str]]:
    """(item, source) for a probe file (.jsonl) or a concept spec (its forget and retain items
    and the probes of its probe files; `builtin:NAME` works too)."""
    if path.endswith(".jsonl"):
        return [(p, path) for p in load_probes(path)[0]]
    spec = load_concept(path)
    out = [(p, f"{spec.source} (training)") for p in spec.forget + spec.retain]
    for probe_file in spec.probe_files:
        out += [(p, str(probe_file)) for p in load_probes(probe_file)[0]]
    return out


def check_items(model: nn.Module, tok, items: list[tuple[Probe, str]],
                min_margin: float = DEFAULT_MIN_MARGIN, generate_answers: bool = True,
                batch_size: int = 32, max_new_tokens: int = 24) -> list[ItemCheck]:
    """Score every item on `model` (and generate its greedy answer if asked)."""
    from aglora.model.decode import generate
    from aglora.model.likelihood import margin, score_options
    probes = [p for p, _ in items]
    scores = score_options(model, tok, probes, batch_size, progress="check")
    greedy = (generate(model, tok, probes, 0, max_new_tokens=max_new_tokens,
                       batch_size=batch_size, desc="greedy answers")
              if generate_answers else [[None] for _ in probes])
    out = []
    for (probe, source), s, g in zip(items, scores, greedy, strict=True):
        m = margin(s) if len(s) > 1 else None
        out.append(ItemCheck(probe, source, m, m is not None and m >= min_margin, g[0]))
    return out


def summary(checks: list[ItemCheck]) -> list[dict]:
    """Per split and per split/family: items, items with options, known, known share."""
    groups: dict[str, list[ItemCheck]] = defaultdict(list)
    for c in checks:
        groups[c.probe.split].append(c)
        groups[c.probe.key].append(c)
    rows = []
    for name in sorted(groups, key=lambda k: (k.count("/"), k)):
        cs = groups[name]
        with_choice = [c for c in cs if c.margin is not None]
        known = sum(c.known for c in cs)
        rows.append({"group": name, "n": len(cs), "n_choice": len(with_choice), "n_known": known,
                     "known_share": known / len(with_choice) if with_choice else float("nan")})
    return rows


def write_known(checks: list[ItemCheck], out: Path) -> int:
    """Write the known items as a probe file (JSONL, fields as read); returns how many."""
    import json

    from aglora.runtime.artifacts import write_text
    known = [c.probe.to_dict() for c in checks if c.known]
    write_text(out, "".join(json.dumps(k) + "\n" for k in known))
    return len(known)
