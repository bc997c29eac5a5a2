"""What the terminal shows after a command: the evaluation summary and a ban's list metrics."""

from __future__ import annotations

from aglora.pipeline.eval.metrics import verdict_line
from aglora.runtime.format import fmt, fmt_pct


def print_summary(metrics: dict) -> None:
    rows = [("group", "n_known", "chance", "known acc base→after", "leak base→after")]
    for name, g in list(metrics["splits"].items()) + list(metrics.get("families", {}).items()):
        ka, lr = g["known_accuracy"], g["leak_rate"]
        rows.append((name, str(g["n_known"]), fmt(g["chance"]),
                     f"{fmt(ka['base'])} → {fmt(ka['after'])}",
                     f"{fmt(lr['base'])} → {fmt(lr['after'])}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    d = metrics["distinct2"]
    print(f"distinct-2 {fmt(d['base'])} → {fmt(d['after'])}; KL(base‖model) neighbours "
          f"{metrics.get('kl_neighbor', float('nan')):.4f}")
    answers = (metrics.get("answers") or {}).get("splits") or {}
    if answers.get("forget"):
        shares = answers["forget"]["after"]["shares"]
        line = "forget answers after: " + ", ".join(
            f"{k} {fmt_pct(shares.get(k), 0)}" for k in ("refusal", "other", "mangled", "leak",
                                                         "looping"))
        over = [f"{name} {fmt_pct(answers[s]['after']['shares'].get('refusal'), 0)}"
                for s, name in (("neighbor", "neighbours"), ("utility", "utility"))
                if answers.get(s)]
        print(line + ("; refusals elsewhere: " + ", ".join(over) if over else ""))
    print_attacks(metrics)
    if metrics.get("splits", {}).get("forget"):
        print("VERDICT: " + verdict_line(metrics))
    if "trainable_params" in metrics:
        print(f"trainable params {metrics['trainable_params']:,} "
              f"({100 * metrics['trainable_share']:.3f} % of base)")


def _curve(attack: dict) -> str:
    """'5: 10 % / 22 %, 10: ...': recovered share of accuracy / margin per checkpoint."""
    return ", ".join(f"{p['steps']}: {fmt_pct(p.get('recovered_share'), 0)} / "
                     f"{fmt_pct(p.get('recovered_share_margin'), 0)}"
                     for p in attack.get("curve") or [])


def _relearn_lines(r: dict) -> list[str]:
    ka = r["known_accuracy"]
    lines = [f"relearning attack: {r['steps']} steps on {r['n_train']} forget facts bring the "
             f"other {r['n_held']} from {fmt(ka['after'])} back to {fmt(ka['relearned'])} known "
             f"accuracy (base {fmt(ka['base'])}): {fmt_pct(r['recovered_share'], 0)} of the gap "
             "recovered"]
    if len(r.get("curve") or []) > 1:
        lines.append(f"relearning curve, steps: recovered accuracy / margin {_curve(r)}")
    return lines


def _benign_lines(r: dict) -> list[str]:
    return [f"benign relearning on {r['n_train']} neighbour and utility answers, all "
            f"{r['n_scored']} known forget facts scored, steps: recovered accuracy / margin "
            f"{_curve(r)}"]


def _in_context_lines(r: dict) -> list[str]:
    ka = r["known_accuracy"]
    return [f"in-context attack: {r['n_context']} forget facts in the prompt bring the other "
            f"{r['n_held']} from {fmt(ka['after'])} to {fmt(ka['after_with_context'])} known "
            f"accuracy (base {fmt(ka['base'])}, base with them {fmt(ka['base_with_context'])}): "
            f"{fmt_pct(r['recovered_share'], 0)} of the gap recovered (margin "
            f"{fmt_pct(r['recovered_share_margin'], 0)})"]


ATTACK_LINES = (("relearn", "relearning attack", _relearn_lines),
                ("relearn_benign", "benign relearning", _benign_lines),
                ("relearn_in_context", "in-context attack", _in_context_lines))


def print_attacks(metrics: dict) -> None:
    """A short line per robustness attack in `metrics` (nothing for one that is absent)."""
    for key, name, lines in ATTACK_LINES:
        r = metrics.get(key)
        if r:
            print("\n".join([f"{name}: {r['error']}"] if "error" in r else lines(r)))


def print_recommendation(r: dict) -> None:
    print(f"banned: {', '.join(r['banned'])} ({r['n_titles']} catalogue titles, "
          f"{r['n_lists']} held-apart lists, {r['n_rank_prompts']} ranked prompts)")
    print(f"  exposure        {fmt_pct(r['exposure']['base'])} → {fmt_pct(r['exposure']['after'])}")
    for title, t in r["banned_titles"].items():
        print(f"  {title}: exposure {fmt_pct(t['exposure']['base'])} → "
              f"{fmt_pct(t['exposure']['after'])},"
              f" median rank {t['median_rank']['base']:g} → {t['median_rank']['after']:g}")
    print(f"  NDCG@10 (rest)  {fmt(r['ndcg10']['mean'])} (min "
          f"{fmt(r['ndcg10']['min'])})")
    print(f"  validity        {fmt_pct(r['validity']['base'])} → {fmt_pct(r['validity']['after'])}")
    if "validity_others" in r:
        vo = r["validity_others"]
        ci = vo.get("ratio_ci95")
        ratio = vo["after"] / vo["base"] if vo["base"] else float("nan")
        print(f"  validity of the other items (banned titles left out) {fmt_pct(vo['base'])} → "
              f"{fmt_pct(vo['after'])} ({ratio:.2f}× base"
              + (f", 95 % interval {ci[0]:.2f}–{ci[1]:.2f}×)" if ci else ")"))
    if "validity_distinct" in r:
        vd = r["validity_distinct"]
        print(f"  validity (distinct items per list) {fmt_pct(vd['base'])} → "
              f"{fmt_pct(vd['after'])}")
    print(f"  genre agreement {fmt_pct(r['genre_agreement']['base'])} → "
          f"{fmt_pct(r['genre_agreement']['after'])}")
    inter = r.get("interference")
    if inter:
        print(f"  with {inter['other_run']} loaded too: this ban "
              f"{fmt_pct(inter['this']['exposure_alone'])} → "
              f"{fmt_pct(inter['this']['exposure_both'])}, "
              f"other ban {fmt_pct(inter['other']['exposure_alone'])} → "
              f"{fmt_pct(inter['other']['exposure_both'])}: "
              + ("INTERFERE" if inter["interferes"] else "no interference"))
