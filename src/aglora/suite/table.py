"""The suite's table and figure: one row per concept, from its run's metrics.json.

Columns: known forget probes, forget known accuracy after (chance), the worst forget family with
enough known probes, the forget leak rate, neighbour and utility known accuracy after,
KL(base || after) on neighbours, training steps, trainable parameters, minutes, and the verdict
(`pipeline.eval.metrics.verdict_line`). The targets each row is read against are printed above
the table; a row that misses one says so in the table, nothing is hidden.
"""

from __future__ import annotations

from pathlib import Path

from aglora.pipeline.eval.metrics import MIN_FAMILY_KNOWN, verdict_line
from aglora.runtime.artifacts import write_json, write_text, write_with
from aglora.runtime.format import dig, fmt, fmt_count

TARGETS = {"forget_margin": 0.05, "family_margin": 0.10, "leak": 0.05, "neighbor": 0.90,
           "utility": 0.95, "kl": 0.05}


def worst_family(metrics: dict) -> tuple[str, float]:
    """(name, known accuracy after minus chance) of the worst forget family with at least
    `MIN_FAMILY_KNOWN` known probes."""
    worst = ("–", float("nan"))
    for key, g in (metrics.get("families") or {}).items():
        if not key.startswith("forget/") or g.get("n_known", 0) < MIN_FAMILY_KNOWN:
            continue
        gap = g["known_accuracy"]["after"] - g["chance"]
        if worst[1] != worst[1] or gap > worst[1]:
            worst = (key.split("/", 1)[1], gap)
    return worst


def row_values(row: dict) -> dict:
    m = row["metrics"]
    f = m["splits"].get("forget", {})
    name, gap = worst_family(m)
    chance = f.get("chance", float("nan"))
    return {
        "concept": row["concept"], "n_known_forget": f.get("n_known", 0),
        "n_known_neighbor": dig(m, "splits", "neighbor", "n_known") or 0,
        "forget_after": dig(f, "known_accuracy", "after"), "chance": chance,
        "worst_family": name, "worst_family_after": chance + gap if gap == gap else gap,
        "leak_after": dig(f, "leak_rate", "after"),
        "neighbor_after": dig(m, "splits", "neighbor", "known_accuracy", "after"),
        "utility_after": dig(m, "splits", "utility", "known_accuracy", "after"),
        "kl_neighbor": m.get("kl_neighbor"), "steps": m.get("train_steps"),
        "trainable_params": m.get("trainable_params"), "minutes": row["minutes"],
        "verdict": verdict_line(m),
    }


def meets(v: dict) -> dict[str, bool]:
    """Each target line of the row (NaN never meets)."""
    def le(x, line):
        return x is not None and x == x and x <= line

    def ge(x, line):
        return x is not None and x == x and x >= line
    return {"forget": le(v["forget_after"], v["chance"] + TARGETS["forget_margin"]),
            "worst family": le(v["worst_family_after"], v["chance"] + TARGETS["family_margin"]),
            "leak": le(v["leak_after"], TARGETS["leak"]),
            "neighbours": ge(v["neighbor_after"], TARGETS["neighbor"]),
            "utility": ge(v["utility_after"], TARGETS["utility"]),
            "KL": le(v["kl_neighbor"], TARGETS["kl"])}


def suite_markdown(rows: list[dict], title: str) -> str:
    vals = [row_values(r) for r in rows]
    lines = [f"# {title}", "",
             f"Targets: forget known accuracy after <= chance + {TARGETS['forget_margin']}, "
             f"every forget family with >= {MIN_FAMILY_KNOWN} known probes <= chance + "
             f"{TARGETS['family_margin']}, leak rate <= {TARGETS['leak']}, neighbours >= "
             f"{TARGETS['neighbor']}, utility >= {TARGETS['utility']}, KL(base‖after) on "
             f"neighbours <= {TARGETS['kl']}. A missed target is marked ✗.", "",
             "| concept | known forget / neighbour | forget after (chance) | worst family | leak | "
             "neighbours | utility | KL | steps | trainable | min | verdict |",
             "|" + " --- |" * 12]
    for v in vals:
        ok = meets(v)

        def mark(key: str, text: str, ok: dict = ok) -> str:
            return text if ok[key] else f"{text} ✗"
        worst = f"{v['worst_family']} {fmt(v['worst_family_after'])}"
        lines.append(
            f"| {v['concept']} | {v['n_known_forget']} / {v['n_known_neighbor']} | "
            f"{mark('forget', fmt(v['forget_after']))} ({fmt(v['chance'])}) | "
            f"{mark('worst family', worst)} | "
            f"{mark('leak', fmt(v['leak_after']))} | {mark('neighbours', fmt(v['neighbor_after']))}"
            f" | {mark('utility', fmt(v['utility_after']))} | "
            f"{mark('KL', fmt(v['kl_neighbor'], 4))} | {fmt(v['steps'], 0)} | "
            f"{fmt_count(v['trainable_params'])} | {fmt(v['minutes'], 1)} | {v['verdict']} |")
    n_ok = sum(all(meets(v).values()) for v in vals)
    lines += ["", f"{n_ok} of {len(vals)} concepts meet every target.", ""]
    return "\n".join(lines)


def suite_figure(rows: list[dict], path: Path) -> None:
    """Forget (vs chance), neighbour and utility known accuracy after, per concept."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    vals = [row_values(r) for r in rows]
    fig = Figure(figsize=(max(6.0, 1.3 * len(vals) + 2), 4.2))
    ax = fig.subplots()
    x = range(len(vals))
    w = 0.26
    for off, key, label in ((-w, "forget_after", "forget (after)"),
                            (0.0, "neighbor_after", "neighbours (after)"),
                            (w, "utility_after", "utility (after)")):
        ax.bar([i + off for i in x], [v[key] if v[key] is not None else 0 for v in vals], w,
               label=label)
    for i, v in enumerate(vals):
        ax.hlines(v["chance"], i - 1.5 * w, i - 0.5 * w, colors="black", linewidth=1.5)
    ax.axhline(TARGETS["neighbor"], color="grey", ls="--", lw=1)
    ax.set_xticks(list(x))
    ax.set_xticklabels([v["concept"] for v in vals], rotation=20, ha="right", fontsize=8,
                       parse_math=False)  # a name with "$" is text, not mathtext
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("known accuracy after")
    ax.set_title("Each concept with the same settings (black: chance; dashed: neighbour line)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def write_suite(rows: list[dict], out: Path, title: str) -> str:
    out = Path(out)
    md = suite_markdown(rows, title)
    write_text(out / "suite.md", md)
    write_json(out / "suite.json", {"rows": [row_values(r) for r in rows],
                                    "meets": [meets(row_values(r)) for r in rows],
                                    "targets": TARGETS})
    suite_figure(rows, out / "suite.png")
    return md
