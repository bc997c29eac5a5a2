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
