"""Reference for `aglora ban`: the base model with the banned titles blocked at decoding time.

    python benchmarks/ban_blocklist_baseline.py --item "The Matrix" [--item ...]

A recommender can also "ban" a title by forbidding its tokens while generating (transformers'
`bad_words_ids`). That keeps the model's weights and lists everywhere else exactly, so its list
validity (share of listed items that are catalogue titles) says how much validity a ban costs on
this model whatever the method: when the blocked slot is refilled with invented titles even
here, the validity drop is the base model's, not the adapter's. Lists are generated on the same
held-apart prompts and with the same settings as `aglora ban` (greedy + seeded samples,
temperature, length), through `model.generate`; the greedy lists are comparable one to one with
`aglora ban`'s, the sampled ones only in distribution (another sampler and seeds). Prints a table.
A blocklist does not change the model, so it moves no likelihood rank: it stops exposure in
generated text only, and a paraphrased or misspelled title passes it.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from aglora.concepts import Probe
from aglora.config import ModelConfig
from aglora.generation import generation_context
from aglora.models import load_model
from aglora.recommend.ban import resolve_items
from aglora.recommend.catalog import load_catalog
from aglora.recommend.matcher import TitleMatcher, normalize
from aglora.recommend.measure import base_measurements
from aglora.recommend.metrics import exposure, names_banned, validity
from aglora.recommend.prompts import make_prompts
from aglora.recommend.settings import RecConfig
from aglora.text import context_ids


def banned_token_sequences(tok, titles: list[str]) -> list[list[int]]:
    """Token sequences of each title as the model writes it (bare, after a space, quoted)."""
    seqs: set[tuple[int, ...]] = set()
    for title in titles:
        for form in (title, " " + title, title.upper(), " " + title.upper()):
            ids = tok(form, add_special_tokens=False)["input_ids"]
            if ids:
                seqs.add(tuple(ids))
    return [list(s) for s in sorted(seqs)]


@torch.no_grad()
def blocked_lists(model, tok, prompts, rec: RecConfig, bad: list[list[int]]) -> list[list[str]]:
    """[greedy, sample_1..sample_n] per prompt with the banned sequences blocked."""
    out = []
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    torch.manual_seed(rec.seed_gen)
    for p in prompts:
        probe = Probe(prompt=p.text, id=p.id)
        ids = torch.tensor([context_ids(tok, probe, generation_context(tok, probe))])  # [1, T]
        texts = []
        for n in range(1 + rec.n_samples):
            kwargs = ({"do_sample": False} if n == 0 else
                      {"do_sample": True, "temperature": rec.temperature, "top_k": 0, "top_p": 1.0})
            gen = model.generate(ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=rec.max_new_tokens, bad_words_ids=bad,
                                 pad_token_id=pad, **kwargs)  # [1, T + new]
            texts.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
        out.append(texts)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--item", action="append", required=True, help="banned title (repeat)")
    parser.add_argument("--catalog", default=None, help="catalogue file (default: the shipped one)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    catalog = load_catalog(args.catalog)
    movies = resolve_items(catalog, args.item)
    rec = RecConfig()
    _, eval_prompts = make_prompts(catalog, rec.n_train_prompts, rec.n_eval_prompts, rec.seed)
    model, tok = load_model(ModelConfig())
    matcher = TitleMatcher(catalog.titles)
    keys = {normalize(m.title) for m in movies}
    clean = [i for i, p in enumerate(eval_prompts) if not names_banned(p, keys)]

    start = time.time()
    base, _ = base_measurements(model, tok, eval_prompts, catalog, rec, need_ranks=False)
    t_base = time.time() - start  # near 0 when `aglora ban` has cached the base lists
    bad = banned_token_sequences(tok, [m.title for m in movies])
    start = time.time()
    blocked = blocked_lists(model, tok, eval_prompts, rec, bad)
    t_blocked = time.time() - start

    def row(name: str, gens: list[list[str]], seconds: float) -> str:
        val, n_items = validity(gens, matcher)
        dval, _ = validity(gens, matcher, distinct=True)
        greedy = [[g[0]] for g in gens]
        gval, _ = validity(greedy, matcher)
        exp = exposure([gens[i] for i in clean], keys, matcher)
        return (f"| {name} | {100 * exp:.1f} % | {100 * val:.1f} % ({n_items} items) | "
                f"{100 * dval:.1f} % | {100 * gval:.1f} % | {seconds:.0f} s |")

    print(f"banned: {', '.join(m.title for m in movies)}; {len(eval_prompts)} held-apart prompts "
          f"x {1 + rec.n_samples} lists; blocked token sequences: {len(bad)}")
    print(f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| lists | banned exposure | validity | validity (distinct) | validity (greedy only) "
          "| time |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(row("base (aglora sampler, as in `aglora ban`)", base, t_base))
    print(row("base, titles blocked (model.generate)", blocked, t_blocked))


if __name__ == "__main__":
    main()
