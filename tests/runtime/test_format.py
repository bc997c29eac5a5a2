"""Number formatting (aglora.runtime.format)."""

from __future__ import annotations

from aglora.runtime.format import human_bytes


def test_human_bytes() -> None:
    assert human_bytes(700000) == "683.6 KiB"
    assert human_bytes(512) == "512 B"
