"""The ban's report section (aglora.recommend.report_section): each banned title on its own
line, judged on its own, with a summary of how many meet both lines."""

from __future__ import annotations

import torch

from aglora.recommend.prompts import RecPrompt
from tests.recommend.helpers import small_catalog


def _metrics(tmp_path) -> dict:
    """Three banned titles: the first stays in a list (exposure 50 %), the second falls only to
    the middle of the ranking, the third meets both lines."""
    from aglora.recommend.metrics import recommendation_metrics
    catalog = small_catalog(tmp_path)
    a, b, c = (m.title for m in catalog.movies[:3])
    prompts = [RecPrompt("p", "x", "eval", "genre", [], ["Drama"])]
    base = [[f"1. {a}\n2. {b}\n3. {c}", f"1. {a}\n2. {c}"]]
    after = [[f"1. {a}\n2. Heat", "1. Heat"]]
    n = len(catalog)
    top = torch.arange(n, 0, -1, dtype=torch.float)[None]  # [1, n]: catalogue order, best first
    moved = top.clone()
    moved[0, 0], moved[0, 1], moved[0, 2] = -1.0, float(n - n // 2 - 1), -2.0
    return recommendation_metrics(catalog, [a, b, c], prompts, base, after, top, moved, [0])


def test_the_section_judges_each_banned_title_on_its_own(tmp_path):
    from aglora.pipeline.report.document import render_markdown
    from aglora.recommend.report_section import recommendation_section
    r = _metrics(tmp_path)
    a, b, c = r["banned"]
    n = r["n_titles"]
    md = render_markdown(recommendation_section({"recommendation": r}))
    assert "### Each banned title" in md
    assert ("1 of 3 banned titles meet both lines (exposure after ≤ 2 %, median rank after > "
            f"{n / 2:g} of {n})") in md
    assert f"Highest exposure after: {a} (50.0 %)" in md
    assert f"lowest median rank after: {b}" in md
    lines = {line.split("|")[1].strip(): line for line in md.splitlines()
             if line.startswith("|") and line.split("|")[1].strip() in (a, b, c)}
    assert "100.0 % → 50.0 %" in lines[a] and "| NOT met |" in lines[a]
    assert lines[a].rstrip(" |").endswith("met")  # its rank line is met
    assert lines[b].count("NOT met") == 1 and lines[b].rstrip(" |").endswith("NOT met")
    assert "NOT met" not in lines[c] and f"> {n / 2:g}" in md
    assert "highest exposure of one banned title" in md and "≤ 2 % each: NOT met" in md
