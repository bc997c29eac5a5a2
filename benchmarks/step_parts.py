"""Where training's time goes: any `aglora` command with the default objective's set-up (the
base model's side, before the first step), its forget and retain terms, `Tensor.backward`, and
the early-stopping checks (the final full one apart) timed, printed as one table when training
ends (the command stops there, before evaluation).

    python benchmarks/step_parts.py ban --item "Star Wars" --item "The Matrix" \
        --item "The Dark Knight" --out runs/step-parts --force \
        --set train.max_steps=6 --set train.check_every=100 --set train.check_final_full=false

Compare two code versions by running it in each checkout, one after the other.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict

import torch

SECONDS: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def _timed(name: str, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SECONDS[name] += time.perf_counter() - start
            CALLS[name] += 1
    return wrapper


def main() -> None:
    from aglora.cli import main as cli_main
    from aglora.pipeline.train import loop
    from aglora.pipeline.train.objectives import AnswerObjective
    from aglora.pipeline.train.stopping import GoalChecker

    AnswerObjective.__init__ = _timed("objective set-up", AnswerObjective.__init__)
    GoalChecker.check = _timed("checks", GoalChecker.check)
    GoalChecker.full = _timed("final full check", GoalChecker.full)
    AnswerObjective.forget_loss = _timed("forget terms", AnswerObjective.forget_loss)
    AnswerObjective.retain_loss = _timed("retain terms", AnswerObjective.retain_loss)
    torch.Tensor.backward = _timed("backward", torch.Tensor.backward)
    train = _timed("whole train call", loop.train)

    def train_then_stop(*args, **kwargs):
        train(*args, **kwargs)
        print("| part | seconds | calls |\n| --- | --- | --- |")
        for name in ("objective set-up", "forget terms", "retain terms", "backward", "checks",
                     "final full check", "whole train call"):
            print(f"| {name} | {SECONDS[name]:.1f} | {CALLS[name]} |")
        raise SystemExit(0)

    loop.train = train_then_stop
    sys.argv = ["aglora", *sys.argv[1:]]
    cli_main()


if __name__ == "__main__":
    main()
