"""Reference for `aglora ban`: the base model with the banned titles blocked at decoding time.

    python benchmarks/ban_blocklist_baseline.py --item "The Matrix" [--item ...]
        [--run runs/ban-matrix ...] [--eval-prompts 40]

A recommender can also "ban" a title by forbidding its tokens while generating (the rule of
transformers' `bad_words_ids`). That keeps the model's weights and lists everywhere else exactly,
so its list validity (share of listed items that are catalogue titles) says how much validity a
ban costs on this model whatever the method: when the blocked slot is refilled with invented
titles even here, the validity drop is the base model's, not the adapter's. Lists are generated
on the held-apart prompts of `aglora ban`, with its sampler, seeds and settings (greedy + seeded
samples, temperature, length), so every list is comparable one to one with `aglora ban`'s.
`--run DIR` adds the lists of finished ban runs (their adapters) on the same prompts;
`--eval-prompts N` measures on N prompts instead of the ban's default 120 (the first N are the
same prompts); fewer widen the bootstrap interval of the validity ratio. Prints a table.
A blocklist does not change the model, so it moves no likelihood rank: it stops exposure in
generated text only, and a paraphrased or misspelled title passes it.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

import torch

from aglora.config import ModelConfig
from aglora.model.load import load_model
from aglora.recommend.ban import resolve_items
from aglora.recommend.catalog import load_catalog
from aglora.recommend.matcher import TitleMatcher, normalize
from aglora.recommend.measure import base_measurements, generate_lists
from aglora.recommend.metrics import (
    exposure,
    names_banned,
    ratio_interval,
    validity,
    validity_counts,
)
from aglora.recommend.prompts import make_prompts
from aglora.recommend.settings import RecConfig
from aglora.runtime.hostspeed import speed_line


def banned_token_sequences(tok, titles: list[str]) -> list[list[int]]:
    """Token sequences of each title as the model writes it (bare, after a space, quoted)."""
    seqs: set[tuple[int, ...]] = set()
    for title in titles:
        for form in (title, " " + title, title.upper(), " " + title.upper()):
            ids = tok(form, add_special_tokens=False)["input_ids"]
            if ids:
                seqs.add(tuple(ids))
    return [list(s) for s in sorted(seqs)]


def adapter_lists(run: Path, prompts, rec: RecConfig) -> list[list[str]]:
    """Lists of a finished ban run's adapter on `prompts` (a fresh base model each time)."""
    from aglora.model.adapter import load_adapter
    model, tok = load_model(ModelConfig())
    peft_model = load_adapter(model, run / "adapter")
    peft_model.eval()
    return generate_lists(peft_model, tok, prompts, rec, f"after ({run.name})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--item", action="append", required=True, help="banned title (repeat)")
    parser.add_argument("--catalog", default=None, help="catalogue file (default: the shipped one)")
    parser.add_argument("--run", action="append", default=[],
                        help="a finished `aglora ban` run with these items (repeat)")
    parser.add_argument("--eval-prompts", type=int, default=RecConfig().n_eval_prompts,
                        help="held-apart prompts to generate lists on")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    catalog = load_catalog(args.catalog)
    movies = resolve_items(catalog, args.item)
    rec = dataclasses.replace(RecConfig(), n_eval_prompts=args.eval_prompts)
    _, eval_prompts = make_prompts(catalog, rec.n_train_prompts, rec.n_eval_prompts, rec.seed)
    model, tok = load_model(ModelConfig())
    matcher = TitleMatcher(catalog.titles)
    keys = {normalize(m.title) for m in movies}
    clean = [i for i, p in enumerate(eval_prompts) if not names_banned(p, keys)]
    print(speed_line())

    start = time.time()
    base, _ = base_measurements(model, tok, eval_prompts, catalog, rec, need_ranks=False)
    rows = [("base", base, time.time() - start)]  # near 0 s when the base lists are cached
    bad = banned_token_sequences(tok, [m.title for m in movies])
    start = time.time()
    blocked = generate_lists(model, tok, eval_prompts, rec, "blocked", blocked=bad)
    rows.append(("base, titles blocked at decoding", blocked, time.time() - start))
    for run in args.run:
        start = time.time()
        rows.append((f"adapter {run}", adapter_lists(Path(run), eval_prompts, rec),
                     time.time() - start))

    base_counts = validity_counts(base, matcher, keys)
    base_others = validity(base, matcher, leave_out=keys)[0]

    def row(name: str, gens: list[list[str]], seconds: float) -> str:
        val, n_items = validity(gens, matcher)
        others, n_others = validity(gens, matcher, leave_out=keys)
        lo, hi = ratio_interval(base_counts, validity_counts(gens, matcher, keys))
        greedy = [[g[0]] for g in gens]
        g_others = validity(greedy, matcher, leave_out=keys)[0]
        exp = exposure([gens[i] for i in clean], keys, matcher)
        return (f"| {name} | {100 * exp:.1f} % | {100 * val:.1f} % ({n_items}) | "
                f"{100 * others:.1f} % ({n_others}) | **{others / base_others:.2f} ×** "
                f"[{lo:.2f}, {hi:.2f}] | {100 * g_others:.1f} % | {seconds:.0f} s |")

    print(f"banned: {', '.join(m.title for m in movies)}; {len(eval_prompts)} held-apart prompts "
          f"x {1 + rec.n_samples} lists; blocked token sequences: {len(bad)}")
    print(f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| lists | banned exposure | validity, all items (n) | validity of the other items "
          "(n) | other items, after / base [95 % interval] | other items, greedy lists only "
          "| time |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, gens, seconds in rows:
        print(row(name, gens, seconds))


if __name__ == "__main__":
    main()
