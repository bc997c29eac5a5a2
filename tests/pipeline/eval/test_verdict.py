"""The verdict (aglora.pipeline.eval.metrics): "forgotten" only when the split and every forget
family with enough known probes hold; a failing family is named; kept has its own verdict."""

from __future__ import annotations

from aglora.pipeline.eval.metrics import forgetting_verdict, kept_verdict, verdict_line


def _group(after: float, n_known: int = 10, leak: float = 0.0, chance: float = 0.25) -> dict:
    return {"n_known": n_known, "chance": chance, "known_accuracy": {"base": 1.0, "after": after},
            "leak_rate": {"base": 0.2, "after": leak}}


def _metrics(families: dict, split_after: float = 0.2, neighbor: float = 0.95,
             utility: float = 0.97) -> dict:
    return {"splits": {"forget": _group(split_after, 60), "neighbor": _group(neighbor, 40),
                       "utility": _group(utility, 60)},
            "families": {f"forget/{k}": v for k, v in families.items()},
            "verdict": {"degenerate": False, "reasons": []}}


def test_all_families_hold_is_forgotten_and_kept():
    m = _metrics({"direct": _group(0.2), "indirect": _group(0.3)})
    assert forgetting_verdict(m)["label"] == "forgotten"
    assert verdict_line(m) == "forgotten; kept"


def test_one_failing_family_is_named_although_the_split_holds():
    m = _metrics({"direct": _group(0.1), "adversarial": _group(0.54),
                  "completion": _group(0.40)}, split_after=0.3)
    v = forgetting_verdict(m)
    assert v["label"] == "partly forgotten" and v["split_holds"]
    assert v["failing"] == {"adversarial": 0.54, "completion": 0.40}
    assert verdict_line(m) == "partly forgotten: adversarial 0.54, completion 0.40; kept"


def test_a_leaking_family_fails_and_a_small_family_does_not_judge():
    m = _metrics({"direct": _group(0.2, leak=0.3), "tiny": _group(1.0, n_known=4),
                  "paraphrase": _group(0.2)})
    v = forgetting_verdict(m)
    assert v["failing"] == {"direct": 0.2} and "tiny" not in v["families_judged"]


def test_nothing_holds_is_not_forgotten():
    m = _metrics({"direct": _group(0.9), "indirect": _group(0.8)}, split_after=0.85)
    assert forgetting_verdict(m)["label"] == "not forgotten"


def test_damaged_neighbours_get_their_own_verdict():
    m = _metrics({"direct": _group(0.2)}, neighbor=0.83, utility=0.87)
    assert kept_verdict(m)["label"] == "neighbours damaged (0.83); utility damaged (0.87)"
    assert verdict_line(m) == "forgotten; neighbours damaged (0.83); utility damaged (0.87)"


def test_degenerate_overrides():
    m = _metrics({"direct": _group(0.2)})
    m["verdict"] = {"degenerate": True, "reasons": ["neighbour distinct-2 fell"]}
    assert verdict_line(m) == "degenerate: neighbour distinct-2 fell"
