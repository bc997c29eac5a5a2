"""Number formatting for every table aglora prints or writes (terminal, report, bench, tracks).

One convention everywhere: a value that is missing, not a number or not finite prints as an en
dash, so a table never shows `nan` or raises on a metric that could not be measured.
"""

from __future__ import annotations

import math
from typing import Any

DASH = "–"


def as_float(x: Any) -> float:
    """`x` as a float; NaN for anything that is not an int or float (booleans included)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return math.nan
    return float(x)


def is_number(x: Any) -> bool:
    """Whether `x` is a finite int or float."""
    return math.isfinite(as_float(x))


def fmt(x: Any, digits: int = 2) -> str:
    """Fixed-point with `digits` decimals, or the dash."""
    v = as_float(x)
    return f"{v:.{digits}f}" if math.isfinite(v) else DASH


def fmt_pct(x: Any, digits: int = 1) -> str:
    """A share in [0, 1] as a percentage ('12.5 %'), or the dash."""
    v = as_float(x)
    return f"{100 * v:.{digits}f} %" if math.isfinite(v) else DASH


def fmt_int(x: Any) -> str:
    """An integer with thousands separators, or the dash."""
    v = as_float(x)
    return f"{int(v):,}" if math.isfinite(v) else DASH


def fmt_count(x: Any) -> str:
    """A count with a k / M / G suffix (one decimal), or the dash."""
    v = as_float(x)
    if not math.isfinite(v):
        return DASH
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:.1f}{unit}"
    return f"{v:.0f}"


def fmt_p(p: Any) -> str:
    """A p-value: three significant digits, scientific notation below 1e-3."""
    v = as_float(p)
    if not math.isfinite(v):
        return DASH
    return f"{v:.3g}" if v >= 1e-3 else f"{v:.1e}"


def fmt_mean_sd(st: dict | None, digits: int = 2, scale: float = 1.0) -> str:
    """'mean ± sd' of a {"mean", "sd", "n"} summary ('mean' alone for one value), or the dash."""
    if not st or st.get("n", 0) == 0:
        return DASH
    mean = st["mean"] * scale
    if st["n"] == 1:
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} ± {fmt(st['sd'] * scale, digits)}"


def human_bytes(n: Any) -> str:
    """Bytes in B / KiB / MiB / GiB, or the dash."""
    v = as_float(n)
    if not math.isfinite(v):
        return DASH
    for unit in ("B", "KiB", "MiB", "GiB"):
        if v < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return DASH  # pragma: no cover


def dig(d: Any, *keys: str) -> Any:
    """d[k1][k2]...; None where a level is missing or not a mapping."""
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d
