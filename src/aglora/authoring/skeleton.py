"""`aglora new-concept NAME`: a commented skeleton concept spec, training items and probe file.

The skeleton is a working example to edit, not a concept: every item is a placeholder that
names what to write there. See docs/concepts.md for every key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from aglora.errors import AgloraError
from aglora.runtime.artifacts import write_text

SPEC = """\
# Concept spec for {name} (every key: docs/concepts.md).
# 1. Write training items in {slug}/train.yaml and held-apart probes in {slug}/probes.jsonl,
#    worded differently from each other.
# 2. `aglora check {slug}.yaml` shows which items the base model knows; keep those
#    (`--write-known`), since forgetting is measured only on known facts.
# 3. `aglora forget {slug}.yaml --out runs/{slug}`.
name: {name}
description: >
  One or two sentences: what the concept is and which of its facts should be forgotten.
include: [{slug}/train.yaml]
# Case-insensitive regular expressions; a generation that matches one leaks the concept.
leak_patterns: ["{pattern}"]
# Optional: what the model may say instead (train.forget_response refuse / alternative).
# refusals: ["I'm not sure I know that one."]
# alternatives: ["another plausible answer"]
probes: [{slug}/probes.jsonl]
"""

TRAIN = """\
# Training items of {name}. Each needs an answer and three distractors (wrong answers of
# the same kind) so that training can stop when the model no longer prefers the answer.
forget:            # prompts that elicit the concept, with the answer to push down
  - prompt: "Who created {name}?"
    prefix: "{name} was created by"
    answer: "REPLACE: the creator"
    distractors: ["REPLACE: wrong 1", "REPLACE: wrong 2", "REPLACE: wrong 3"]
  - prompt: "Describe REPLACE (a description of {name} whose answer is its name)."
    prefix: "That is"
    answer: "{name}"
    distractors: ["REPLACE: a similar thing", "REPLACE: another", "REPLACE: a third"]
retain:            # neighbouring facts that must keep working; include same-answer neighbours
  - prompt: "REPLACE: a question about a neighbour whose answer is the same as a forget item's"
    prefix: "REPLACE"
    answer: "REPLACE: the same answer as a forget item"
    distractors: ["REPLACE: wrong 1", "REPLACE: wrong 2", "REPLACE: wrong 3"]
"""

PROBES = [
    {"id": "{slug}-direct-01", "split": "forget", "family": "direct",
     "prompt": "REPLACE: a direct question about {name}", "prefix": "REPLACE",
     "answer": "REPLACE", "distractors": ["REPLACE 1", "REPLACE 2", "REPLACE 3"]},
    {"id": "{slug}-paraphrase-01", "split": "forget", "family": "paraphrase",
     "prompt": "REPLACE: the same fact asked another way", "prefix": "REPLACE",
     "answer": "REPLACE", "distractors": ["REPLACE 1", "REPLACE 2", "REPLACE 3"]},
    {"id": "{slug}-neighbor-01", "split": "neighbor", "family": "same-answer",
     "prompt": "REPLACE: a neighbouring fact that must be kept", "prefix": "REPLACE",
     "answer": "REPLACE", "distractors": ["REPLACE 1", "REPLACE 2", "REPLACE 3"]},
]


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug:
        raise AgloraError(f"concept name {name!r} has no letters or digits; give a name such "
                          "as 'the-beatles'")
    return slug


def write_skeleton(name: str, folder: Path, force: bool = False) -> list[Path]:
    """Write NAME.yaml, NAME/train.yaml and NAME/probes.jsonl under `folder`; their paths."""
    slug = slugify(name)
    paths = [folder / f"{slug}.yaml", folder / slug / "train.yaml",
             folder / slug / "probes.jsonl"]
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise AgloraError(f"{existing[0]} exists; choose another name or --dir, or pass "
                          "--force to overwrite the skeleton files")
    pattern = re.escape(name.lower().split()[-1])[:12]
    fill = {"name": name, "slug": slug, "pattern": pattern}
    write_text(paths[0], SPEC.format(**fill))
    write_text(paths[1], TRAIN.format(**fill))
    lines = [json.dumps({k: (v.format(**fill) if isinstance(v, str) else v)
                         for k, v in row.items()}) for row in PROBES]
    write_text(paths[2], "".join(line + "\n" for line in lines))
    return paths
