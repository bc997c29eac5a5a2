"""Run the recommended settings on each concept of a suite, one run directory each.

The shipped suite (`SUITE`) holds concepts of different kinds. Any concept spec path or
`builtin:NAME` can be given instead; concepts kept out of every tuning decision are run the same
way and reported on their own table. Every run resumes: a rerun skips finished concepts.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from aglora.config import forget_config
from aglora.pipeline.run import RunContext, check_inputs, open_run, run_all
from aglora.runtime.artifacts import read_json

SUITE = ("builtin:inception", "builtin:lord-of-the-rings", "builtin:michael-jackson",
         "builtin:albert-einstein", "builtin:eiffel-tower", "builtin:coca-cola")

log = logging.getLogger("aglora")


def concept_slug(spec: str) -> str:
    return spec.split(":", 1)[1] if spec.startswith("builtin:") else Path(spec).stem


def run_suite(concepts: list[str], out: Path, model: str | None = None,
              overrides: list[str] | None = None, force: bool = False) -> list[dict]:
    """Forget each concept into `out/<slug>`; returns one row of results per concept."""
    out = Path(out)
    for spec in concepts:  # every concept checked before the first model loads
        check_inputs(RunContext(cfg=forget_config(spec, model, overrides),
                                run_dir=out / concept_slug(spec)))
    rows = []
    for n, spec in enumerate(concepts, 1):
        slug = concept_slug(spec)
        log.info(f"[suite] ({n}/{len(concepts)}) {slug}")
        start = time.time()
        run_dir = out / slug
        # a bad spec or probe file fails here, before any model loads or file is deleted
        ctx = open_run(forget_config(spec, model, overrides), run_dir, force=force, check=True)
        run_all(ctx)
        state = read_json(run_dir / "state.json")
        rows.append({"concept": slug, "spec": spec, "run_dir": str(run_dir),
                     "minutes": sum(state.get("wall_seconds", {}).values()) / 60,
                     "this_call_minutes": (time.time() - start) / 60,
                     "metrics": read_json(run_dir / "metrics.json")})
    return rows
