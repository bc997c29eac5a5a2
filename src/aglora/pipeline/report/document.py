"""A report as a list of blocks, rendered to Markdown and to self-contained HTML.

Both renderings come from the same blocks, so `report.md` and `report.html` always carry the
same sections. HTML escapes every piece of text (concept names, prompts and generations are
user-written); figures are inlined as base64 PNG data URIs, with no scripts and no external
links or stylesheets, so the file can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str
    strong: str = ""


@dataclass
class Note:
    """A one-line remark, e.g. why a section was skipped."""

    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    path: Path  # absolute path of the written PNG
    rel: str  # path relative to the run directory, e.g. "figures/families.png"
    caption: str


@dataclass
class Details:
    summary: str
    body: str
    path: str


Block = Heading | Para | Note | Bullets | Table | Figure | Details


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def render_markdown(blocks: Iterable[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(f"**{b.strong}** {b.text}" if b.strong else b.text)
        elif isinstance(b, Note):
            out.append(f"*{b.text}*")
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {_md_cell(i)}" for i in b.items))
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.headers) + " |",
                     "|" + "---|" * len(b.headers)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Figure):
            out.append(f"![{b.caption}]({b.rel})\n\n*{b.caption}*")
        elif isinstance(b, Details):
            out.append(f"{b.summary}: [`{b.path}`]({b.path})")
    return "\n\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
figure{margin:1em 0}img{max-width:100%;height:auto}figcaption{color:#555;font-size:.9em}
.note{color:#666;font-style:italic}pre{background:#f6f6f6;padding:.8em;overflow:auto}
.verdict{font-size:1.05em;padding:.7em 1em;border-radius:6px;background:#f4f6fb}
"""


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_block(b: Block) -> str:
    e = html.escape
    if isinstance(b, Heading):
        return f"<h{b.level}>{e(b.text)}</h{b.level}>"
    if isinstance(b, Para):
        strong = f"<strong>{e(b.strong)}</strong> " if b.strong else ""
        cls = ' class="verdict"' if b.strong else ""
        return f"<p{cls}>{strong}{e(b.text)}</p>"
    if isinstance(b, Note):
        return f'<p class="note">{e(b.text)}</p>'
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Table):
        head = "".join(f"<th>{e(h)}</th>" for h in b.headers)
        rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    if isinstance(b, Figure):
        return (f'<figure><img src="{_png_data_uri(b.path)}" alt="{e(b.caption)}">'
                f"<figcaption>{e(b.caption)}</figcaption></figure>")
    if isinstance(b, Details):
        return (f"<details><summary>{e(b.summary)} ({e(b.path)})</summary>"
                f"<pre>{e(b.body)}</pre></details>")
    raise TypeError(f"unknown block {b!r}")


def render_html(blocks: list[Block], title: str) -> str:
    body = "\n".join(_html_block(b) for b in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


def family_order(fams: dict) -> list[str]:
    rank = {"forget": 0, "neighbor": 1, "utility": 2}
    return sorted(fams, key=lambda k: (rank.get(k.split("/", 1)[0], 3), k))
