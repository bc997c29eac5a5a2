"""Text statistics (aglora.pipeline.eval.text_stats): leak patterns."""

from __future__ import annotations

from aglora.pipeline.eval.text_stats import leaks


def test_leaks() -> None:
    assert leaks("Dom COBB", ["cobb"]) and not leaks("nothing", ["cobb"])
    assert leaks("a (b", ["(b"])  # invalid regex falls back to a substring test
