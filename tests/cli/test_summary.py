"""The printed run summary (aglora.cli.summary)."""

from __future__ import annotations


def test_summary_prints_the_relearning_attack(capsys):
    from aglora.cli.summary import print_summary

    group = {"n_known": 4, "chance": 0.25, "known_accuracy": {"base": 1.0, "after": 0.25},
             "leak_rate": {"base": 0.5, "after": 0.0}}
    metrics = {"splits": {"forget": group}, "distinct2": {"base": 0.7, "after": 0.7},
               "kl_neighbor": 0.01,
               "relearn": {"steps": 20, "n_train": 1, "n_held": 3, "recovered_share": 0.4,
                           "known_accuracy": {"base": 1.0, "after": 0.25, "relearned": 0.55}}}
    print_summary(metrics)
    out = capsys.readouterr().out
    assert ("relearning attack: 20 steps on 1 forget facts bring the other 3 from 0.25 back to "
            "0.55 known accuracy (base 1.00): 40 % of the gap recovered") in out


def test_summary_prints_what_the_forget_answers_are(capsys):
    from aglora.cli.summary import print_summary

    def shares(**kw):
        return {"after": {"shares": {**dict.fromkeys(
            ("leak", "mangled", "refusal", "looping", "other"), 0.0), **kw}}}
    group = {"n_known": 4, "chance": 0.25, "known_accuracy": {"base": 1.0, "after": 0.25},
             "leak_rate": {"base": 0.5, "after": 0.0}}
    metrics = {"splits": {"forget": group}, "distinct2": {"base": 0.7, "after": 0.7},
               "answers": {"splits": {"forget": shares(refusal=0.8, other=0.15, mangled=0.05),
                                      "utility": shares(refusal=0.02, other=0.98)}}}
    print_summary(metrics)
    out = capsys.readouterr().out
    assert ("forget answers after: refusal 80 %, other 15 %, mangled 5 %, leak 0 %, looping 0 %; "
            "refusals elsewhere: utility 2 %") in out


def _point(steps: int, share: float, share_margin: float) -> dict:
    return {"steps": steps, "known_accuracy": 0.5, "margin": 0.0, "recovered_share": share,
            "recovered_share_margin": share_margin}


def test_summary_prints_a_line_per_robustness_attack(capsys):
    from aglora.cli.summary import print_summary

    group = {"n_known": 4, "chance": 0.25, "known_accuracy": {"base": 1.0, "after": 0.25},
             "leak_rate": {"base": 0.5, "after": 0.0}}
    curve = [_point(5, 0.1, 0.2), _point(10, 0.25, float("nan"))]
    metrics = {"splits": {"forget": group}, "distinct2": {"base": 0.7, "after": 0.7},
               "relearn": {"steps": 10, "n_train": 2, "n_held": 6, "recovered_share": 0.25,
                           "known_accuracy": {"base": 1.0, "after": 0.25, "relearned": 0.4375},
                           "curve": curve},
               "relearn_benign": {"steps": 10, "n_train": 30, "n_scored": 8, "curve": curve},
               "relearn_in_context": {
                   "n_context": 2, "n_held": 6, "recovered_share": 0.5,
                   "recovered_share_margin": 0.75,
                   "known_accuracy": {"base": 1.0, "after": 0.25, "base_with_context": 1.0,
                                      "after_with_context": 0.625}}}
    print_summary(metrics)
    out = capsys.readouterr().out
    assert "relearning attack: 10 steps on 2 forget facts bring the other 6" in out
    assert ("relearning curve, steps: recovered accuracy / margin 5: 10 % / 20 %, 10: 25 % / –"
            in out)
    assert ("benign relearning on 30 neighbour and utility answers, all 8 known forget facts "
            "scored, steps: recovered accuracy / margin 5: 10 % / 20 %, 10: 25 % / –") in out
    assert ("in-context attack: 2 forget facts in the prompt bring the other 6 from 0.25 to 0.62 "
            "known accuracy (base 1.00, base with them 1.00): 50 % of the gap recovered "
            "(margin 75 %)") in out


def test_summary_prints_an_attack_that_could_not_run(capsys):
    from aglora.cli.summary import print_attacks

    print_attacks({"relearn_in_context": {"error": "too few base-known forget probes"}})
    assert capsys.readouterr().out == "in-context attack: too few base-known forget probes\n"
