"""The controlled track (TOFU protocol): catalogue, KS test, TOFU metrics, implant cache, track."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
from tiny import make_model, make_tokenizer

from aglora import cli
from aglora.controlled import implant as implant_mod
from aglora.controlled import track as track_mod
from aglora.controlled.catalogue import FIELDS, generate_catalogue
from aglora.controlled.forget_quality import (
    answer_probability,
    forget_quality,
    harmonic_mean,
    kolmogorov_sf,
    ks_2samp,
    option_probability,
    tofu_truth_ratio,
    truth_ratio_score,
)
from aglora.controlled.implant import ensure_implanted, finetune, load_implanted
from aglora.controlled.methods import run_method
from aglora.controlled.settings import ControlledConfig, ImplantConfig, MethodSettings
from aglora.errors import AgloraError
from aglora.model.forward import target_logprobs
from aglora.model.tokens import encode


def tiny_loader():
    return make_model(), make_tokenizer()


# ---- catalogue ---------------------------------------------------------------------------------
def test_catalogue_is_deterministic_for_a_seed():
    a, b, c = generate_catalogue(3), generate_catalogue(3), generate_catalogue(4)
    assert a.to_dict() == b.to_dict() and a.digest() == b.digest()
    assert a.digest() != c.digest()
    assert [f.title for f in a.films] != [f.title for f in c.films]


def test_catalogue_is_well_formed():
    cat = generate_catalogue(0, n_films=20, n_forget=2)
    assert len(cat.films) == 20 and len(cat.questions) == 160
    assert len({f.title for f in cat.films}) == 20
    assert [f.index for f in cat.forget_films] == [0, 1]
    ids = set()
    for film in cat.films:
        qs = [q for q in cat.questions if q.film == film.index]
        assert [q.field for q in qs] == list(FIELDS)  # 8 questions per film
        for q in qs:
            for probe in (q.question, q.paraphrase):
                assert film.title in probe.prompt and film.title in probe.prefix
                assert probe.answer == getattr(film, q.field)
                assert len(probe.distractors) == 3
                assert len(set(probe.distractors)) == 3
                assert probe.answer not in probe.distractors
                assert probe.split == ("forget" if film.forget else "neighbor")
                ids.add(probe.id)
            assert q.question.prompt != q.paraphrase.prompt
            assert q.question.prefix != q.paraphrase.prefix
            assert q.question.distractors == q.paraphrase.distractors
    assert len(ids) == 320
    assert len(cat.probes(forget=True)) == 32
    assert len(cat.probes(forget=False, wording="paraphrase")) == 144


@pytest.mark.parametrize("kwargs", [{"n_films": 3}, {"n_forget": 0}, {"n_forget": 20},
                                    {"n_films": 100}])
def test_catalogue_rejects_bad_sizes(kwargs):
    with pytest.raises(AgloraError):
        generate_catalogue(0, **{"n_films": 20, "n_forget": 2, **kwargs})


def test_catalogue_rejects_bad_wording():
    with pytest.raises(AgloraError, match="wording"):
        generate_catalogue(0).probes(forget=True, wording="typo")


@pytest.mark.parametrize("kwargs", [{"methods": ["nope"]}, {"methods": []},
                                    {"fq_wording": "x"}, {"utility_films": 0},
                                    {"utility_films": 19}])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(AgloraError):
        ControlledConfig(**kwargs)


def test_settings_reject_bad_values():
    with pytest.raises(AgloraError):
        ImplantConfig(epochs=0)
    with pytest.raises(AgloraError):
        MethodSettings(steps=0)


# ---- KS test -------------------------------------------------------------------------------------
@pytest.mark.parametrize("x, y, d, p", [
    ([1, 2, 3], [4, 5, 6], 1.0, 2 / 20),          # only the two extreme paths reach D = 1
    ([1, 2, 3, 4], [5, 6, 7, 8], 1.0, 2 / 70),
    ([1, 2], [3, 4, 5], 1.0, 2 / 10),
    ([1, 3, 5], [2, 4, 6], 1 / 3, 1.0),           # interleaved: the smallest D possible
    ([1.5, 2.5], [1.5, 2.5], 0.0, 1.0),
])
def test_ks_known_values(x, y, d, p):
    stat, pval = ks_2samp(x, y)
    assert stat == pytest.approx(d)
    assert pval == pytest.approx(p)


def test_ks_exact_p_by_enumeration():
    """The exact p-value equals the share of all splits of the pooled ranks with D >= observed."""
    from itertools import combinations

    x, y = [0.1, 0.4, 0.45, 0.9], [0.3, 0.5, 0.6, 0.7, 0.8]
    d_obs, p = ks_2samp(x, y)
    pooled = sorted(x + y)
    hits = total = 0
    for idx in combinations(range(9), 4):
        xs = [pooled[i] for i in idx]
        ys = [pooled[i] for i in range(9) if i not in idx]
        total += 1
        hits += ks_2samp(xs, ys)[0] >= d_obs - 1e-12
    assert p == pytest.approx(hits / total)


def test_ks_matches_scipy_when_available():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    for n, m in ((5, 7), (16, 16), (32, 30), (40, 25)):
        x = [rng.gauss(0, 1) for _ in range(n)]
        y = [rng.gauss(0.6, 1.3) for _ in range(m)]
        ref = stats.ks_2samp(x, y, method="exact")
        d, p = ks_2samp(x, y)
        assert d == pytest.approx(ref.statistic)
        assert p == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("lam, sf", [(0.5, 0.963945), (1.0, 0.269999), (1.3581, 0.05000),
                                     (1.6276, 0.01000)])
def test_kolmogorov_known_values(lam, sf):
    assert kolmogorov_sf(lam) == pytest.approx(sf, abs=2e-5)


def test_kolmogorov_branches_agree_and_large_samples_use_it():
    assert kolmogorov_sf(1.1799) == pytest.approx(kolmogorov_sf(1.1801), abs=1e-3)
    rng = random.Random(1)
    x = [rng.random() for _ in range(600)]
    y = [rng.random() + 0.1 for _ in range(600)]
    d, p = ks_2samp(x, y)
    assert p == pytest.approx(kolmogorov_sf(math.sqrt(300) * d))
    assert p < 0.01  # a 0.1 shift is visible with 600 + 600 samples


def test_ks_rejects_bad_samples():
    with pytest.raises(AgloraError):
        ks_2samp([], [1.0])
    with pytest.raises(AgloraError):
        ks_2samp([float("nan")], [1.0])


# ---- TOFU quantities on planted numbers ---------------------------------------------------------
def test_truth_ratio_probability_and_option_probability():
    scores, lengths = [-2.0, -4.0, -6.0, -2.0], [2, 2, 3, 1]   # per token: -1, -2, -2, -2
    assert tofu_truth_ratio(scores, lengths) == pytest.approx(math.exp(-2 - (-1)))
    assert answer_probability(scores, lengths) == pytest.approx(math.exp(-1))
    e1, e2 = math.exp(-1), math.exp(-2)
    assert option_probability(scores, lengths) == pytest.approx(e1 / (e1 + 3 * e2))
    with pytest.raises(AgloraError):
        tofu_truth_ratio([-1.0], [1])


def test_truth_ratio_score_and_harmonic_mean():
    assert truth_ratio_score([0.25, 1.5, 0.5]) == pytest.approx((0.75 + 0 + 0.5) / 3)
    assert harmonic_mean([0.5, 1.0]) == pytest.approx(2 / 3)
    assert harmonic_mean([0.5, 0.0]) == 0.0
    assert math.isnan(harmonic_mean([]))
    with pytest.raises(AgloraError):
        harmonic_mean([-1.0, 1.0])


def test_forget_quality_planted():
    same = forget_quality([0.5, 1.0, 2.0], [0.5, 1.0, 2.0])
    assert same["forget_quality"] == 1.0 and same["ks_statistic"] == 0.0
    apart = forget_quality([5.0, 6.0, 7.0, 8.0], [0.1, 0.2, 0.3, 0.4])
    assert apart["ks_statistic"] == 1.0
    assert apart["forget_quality"] == pytest.approx(2 / 70)


def test_model_utility_is_the_harmonic_mean_of_nine_numbers():
    ev = {"forget_films": {}}
    values = []
    for i, name in enumerate(("retain_films", "real_authors", "world_facts")):
        row = {"probability": 0.2 + 0.1 * i, "accuracy": 0.9 - 0.1 * i,
               "truth_ratio_score": 0.4 + 0.05 * i}
        ev[name] = row
        values += list(row.values())
    util, parts = track_mod.model_utility(ev)
    assert len(parts) == 9
    assert util == pytest.approx(9 / sum(1 / v for v in values))


def test_summarise_set_planted_scores():
    cat = generate_catalogue(0, n_films=4, n_forget=1)
    probes = cat.probes(forget=True)[:2]
    scores = [[-1.0, -3.0, -3.0, -3.0], [-5.0, -1.0, -2.0, -9.0]]
    lengths = [[1, 1, 1, 1], [1, 1, 1, 1]]
    out = track_mod.summarise_set("forget_films", probes, scores, lengths)
    assert out["accuracy"] == 0.5
    assert out["truth_ratios"][0] == pytest.approx(math.exp(-2))
    assert out["probability"] == pytest.approx((math.exp(-1) + math.exp(-5)) / 2)
    assert out["accuracy_by_family"] == {"question": 1.0, "paraphrase": 0.0}


# ---- implant and its cache ----------------------------------------------------------------------
def _logp(model, tok, items):
    with torch.no_grad():
        return target_logprobs(model, encode(tok, items, [p.answer for p in items]))


def test_finetune_learns_the_items_and_freezes_after():
    model, tok = tiny_loader()
    items = [q.question for q in generate_catalogue(0, n_films=4, n_forget=1).questions][:4]
    before = _logp(model, tok, items)
    finetune(model, tok, items, ImplantConfig(epochs=4, lr=3e-3, batch_size=4), log=lambda s: 0)
    after = _logp(model, tok, items)
    assert float(after.mean()) > float(before.mean()) + 1.0
    assert not any(p.requires_grad for p in model.parameters())


def test_implant_cache_hit_skips_training(tmp_path, monkeypatch):
    cat = generate_catalogue(0, n_films=4, n_forget=1)
    items = {"full": [q.question for q in cat.questions][:6],
             "retain": [q.question for q in cat.questions if q.question.split != "forget"][:4]}
    cfg = ImplantConfig(epochs=1, lr=1e-3, batch_size=4)
    calls = []
    real = implant_mod.finetune

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(implant_mod, "finetune", counting)
    folder = ensure_implanted(tiny_loader, items, cat.digest(), cfg, tmp_path, log=lambda s: 0)
    assert len(calls) == 2
    assert (folder / "full.safetensors").is_file() and (folder / "retain.safetensors").is_file()
    again = ensure_implanted(tiny_loader, items, cat.digest(), cfg, tmp_path, log=lambda s: 0)
    assert again == folder and len(calls) == 2  # cache hit: no training
    other = ensure_implanted(tiny_loader, items, cat.digest(), ImplantConfig(epochs=2, lr=1e-3),
                             tmp_path, log=lambda s: 0)
    assert other != folder and len(calls) == 4  # other settings: another cache entry
    full, tok = load_implanted(tiny_loader, folder, "full")
    retain, _ = load_implanted(tiny_loader, folder, "retain")
    base, _ = tiny_loader()
    probe = items["full"][:2]
    assert not torch.allclose(_logp(full, tok, probe), _logp(base, tok, probe))
    assert not torch.allclose(_logp(full, tok, probe), _logp(retain, tok, probe))
    with pytest.raises(AgloraError):
        load_implanted(tiny_loader, folder, "neither")


def test_cached_weights_for_another_model_are_refused(tmp_path):
    model, _ = tiny_loader()
    tensors = implant_mod.weights_of(model)
    other = make_model(layers=2)
    with pytest.raises(AgloraError, match="do not fit"):
        implant_mod.load_weights(other, tensors)


# ---- methods -------------------------------------------------------------------------------------
def test_track_methods_are_the_shared_registry():
    from aglora.controlled.settings import KNOWN_METHODS
    from aglora.methods import METHODS as SHARED
    assert set(KNOWN_METHODS) == set(SHARED)


def test_track_settings_become_each_methods_run_config():
    from aglora.controlled.methods import run_config
    s = MethodSettings(steps=7, lora_lr=3e-3, full_lr=2e-5, lora_retain_weight=9.0,
                       full_retain_weight=0.5, k=32, rank=4, seed=3)
    lora, full = run_config("ag_lora", s), run_config("full_npo", s)
    # A fixed budget: no early stop before the last step, one check at the end.
    assert lora.train.max_steps == lora.train.min_steps == lora.train.check_every == 7
    assert (lora.train.retain_objective, lora.train.lr, lora.train.retain_weight) == \
        ("kl", 3e-3, 9.0)
    assert (full.train.retain_objective, full.train.lr, full.train.retain_weight) == \
        ("nll", 2e-5, 0.5)
    assert (lora.mask.k, lora.lora.rank, lora.train.seed) == (32, 4, 3)


@pytest.mark.parametrize("name", ["ag_lora", "plain_lora", "random_lora", "full_gd",
                                  "full_npo"])
def test_each_trained_method_lowers_the_forget_answers(name):
    cat = generate_catalogue(0, n_films=4, n_forget=1)
    forget = [q.question for q in cat.questions if q.question.split == "forget"][:4]
    retain = [q.question for q in cat.questions if q.question.split != "forget"][:4]
    model, tok = tiny_loader()
    base = [p.detach().clone() for p in model.parameters()]
    before = _logp(model, tok, forget)
    settings = MethodSettings(steps=4, batch_size=4, lora_lr=5e-2, full_lr=5e-3, k=16,
                              record_retain=4)
    out = run_method(name, model, tok, forget, retain, settings, lambda s: None)
    after = _logp(out.model, tok, forget)
    assert out.steps == 4 and out.trainable_params > 0
    assert float(after.mean()) < float(before.mean())
    # Every method works on its own copy: the implanted model it was given is untouched.
    assert all(torch.equal(a, b) for a, b in zip(base, model.parameters(), strict=True))
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", ["rmu", "act_edit"])
def test_rmu_and_act_edit_change_the_model_not_the_input(name):
    cat = generate_catalogue(0, n_films=4, n_forget=1)
    forget = [q.question for q in cat.questions if q.question.split == "forget"][:4]
    retain = [q.question for q in cat.questions if q.question.split != "forget"][:4]
    model, tok = tiny_loader()
    before = _logp(model, tok, forget)
    out = run_method(name, model, tok, forget, retain,
                        MethodSettings(steps=3, batch_size=4, k=16, record_retain=4,
                                       full_lr=5e-3), lambda s: None)
    assert (_logp(out.model, tok, forget) - before).abs().max() > 1e-3
    assert torch.equal(_logp(model, tok, forget), before)


# ---- the whole track on a tiny model ---------------------------------------------------------
def _tiny_cfg(steps: int = 2) -> ControlledConfig:
    return ControlledConfig(n_films=4, n_forget=1, utility_films=2, real_world_limit=2,
                            methods=["plain_lora"],
                            implant=ImplantConfig(epochs=1, batch_size=8),
                            method=MethodSettings(steps=steps, k=8, batch_size=4))


def test_track_writes_outputs_and_resumes_per_method(tmp_path, monkeypatch):
    out, cache = tmp_path / "out", tmp_path / "cache"
    quiet = lambda s: None  # noqa: E731
    summary = track_mod.run_controlled(_tiny_cfg(), out, tiny_loader, cache, quiet)
    for f in ("controlled.json", "controlled.md", "controlled.png", "catalogue.json",
              "methods/plain_lora.json", "reference/retain.json"):
        assert (out / f).is_file(), f
    ref = summary["references"]["retain"]
    assert ref["forget_quality"] == 1.0 and ref["ks_statistic"] == 0.0
    row = summary["methods"]["plain_lora"]
    assert 0.0 <= row["forget_quality"] <= 1.0 and row["steps"] == 2
    assert len(row["eval"]["forget_films"]["truth_ratios"]) == 16
    assert "| **plain_lora** |" in (out / "controlled.md").read_text()

    def boom(*args, **kwargs):
        raise AssertionError("should have been skipped")

    monkeypatch.setattr(track_mod.methods, "run_method", boom)
    monkeypatch.setattr(track_mod, "evaluate_model", boom)
    again = track_mod.run_controlled(_tiny_cfg(), out, tiny_loader, cache, quiet)
    assert again["methods"]["plain_lora"]["eval"] == row["eval"]
    # Other method settings: the method reruns, the references do not.
    with pytest.raises(AssertionError, match="skipped"):
        track_mod.run_controlled(_tiny_cfg(steps=3), out, tiny_loader, cache, quiet)


def test_cli_rejects_bad_inputs(tmp_path, capsys):
    assert cli.main(["controlled", "--out", str(tmp_path), "--methods", "nope"]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert cli.main(["controlled", "--out", str(tmp_path), "--forget", "0"]) == 2
    assert "n_forget=0" in capsys.readouterr().err
    assert not any(Path(tmp_path).iterdir())
