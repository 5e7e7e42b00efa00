"""The report as a document: a list of blocks (headings, paragraphs, bullet lists, tables, images) rendered once to
Markdown and once to a self-contained HTML page, so the two say the same thing; plus CSV tables for scripting and
the number formats of the report.

Text conventions inside blocks: a pair of backticks marks inline code (kept in Markdown, ``<code>`` in HTML); a
``\\n`` in a table header is a line break in HTML and a space in Markdown. Everything else is text: HTML-escaped on
the page, and ``|`` escaped in Markdown table cells.
"""
from __future__ import annotations

import csv
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MISSING = "–"  # an empty cell (en dash)


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    numeric: tuple[bool, ...] = ()  # per column: right-aligned numbers (default: all but the first column)

    def __post_init__(self) -> None:
        bad = [i for i, row in enumerate(self.rows) if len(row) != len(self.header)]
        if bad:
            raise ValueError(f"table rows {bad} do not have the header's {len(self.header)} cells")

    def is_numeric(self, j: int) -> bool:
        return self.numeric[j] if self.numeric else j > 0


@dataclass(frozen=True)
class Image:
    src: str  # a path relative to the report's folder
    alt: str


Block = Heading | Paragraph | Bullets | Table | Image


# --------------------------------------------------------------------------------------------------------------------
# Number formats


def pct(x: float | None) -> str:
    """A rate as a percentage with one decimal: 0.4567 -> "45.7"."""
    return MISSING if x is None else f"{100 * x:.1f}"


def points(x: float) -> str:
    """A difference of rates in percentage points, signed: 0.031 -> "+3.1"."""
    return f"{100 * x:+.1f}"


def p_value(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else "<0.001"


def step_list(steps: Sequence[int]) -> str:
    """Sorted steps with runs of consecutive ones collapsed: [0, 1, 2, 3, 5] -> "0–3, 5"."""
    out: list[str] = []
    ordered = sorted(set(steps))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}–{ordered[j]}" if j > i + 1
                   else f"{ordered[i]}, {ordered[j]}")
        i = j + 1
    return ", ".join(out) if out else MISSING


# --------------------------------------------------------------------------------------------------------------------
# Markdown


def _md_cell(text: str) -> str:
    return text.replace("\n", " ").replace("|", "\\|")


def _md_table(t: Table) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in t.header) + " |",
             "|" + "|".join("---:" if t.is_numeric(j) else ":---" for j in range(len(t.header))) + "|"]
    for row in t.rows:
        cells = [f"**{_md_cell(c.text)}**" if c.bold and c.text != MISSING else _md_cell(c.text) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_markdown(blocks: Sequence[Block]) -> str:
    parts: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append("#" * b.level + " " + b.text)
        elif isinstance(b, Paragraph):
            parts.append(b.text)
        elif isinstance(b, Bullets):
            parts.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            parts.append(_md_table(b))
        elif isinstance(b, Image):
            parts.append(f"![{b.alt}]({b.src})")
        else:
            raise TypeError(f"unknown block {b!r}")
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------------------------------
# HTML

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0 1.2em; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 4px 9px; }
th { background: #f6f8fa; vertical-align: bottom; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fbfbfc; }
b { color: #0b5a2a; }
code { background: #eff1f3; padding: 1px 4px; border-radius: 4px; font-size: 0.92em; }
img { max-width: 100%; border: 1px solid #d0d7de; margin: .5em 0 1em; }
""".strip()


def _inline(text: str) -> str:
    """Escaped text with `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{'<br>'.join(html.escape(part) for part in h.split(chr(10)))}</th>" for h in t.header)
    body = []
    for row in t.rows:
        cells = []
        for j, c in enumerate(row):
            text = _inline(c.text)
            if c.bold and c.text != MISSING:
                text = f"<b>{text}</b>"
            cells.append(f"<td class=\"num\">{text}</td>" if t.is_numeric(j) else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def to_html(blocks: Sequence[Block], title: str) -> str:
    parts: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            parts.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            parts.append("<ul>\n" + "\n".join(f"<li>{_inline(i)}</li>" for i in b.items) + "\n</ul>")
        elif isinstance(b, Table):
            parts.append(_html_table(b))
        elif isinstance(b, Image):
            parts.append(f"<img src=\"{html.escape(b.src, quote=True)}\" alt=\"{html.escape(b.alt, quote=True)}\">")
        else:
            raise TypeError(f"unknown block {b!r}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
            + "\n".join(parts) + "\n</body>\n</html>\n")


# --------------------------------------------------------------------------------------------------------------------
# CSV


def write_csv(path: str, fieldnames: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    """Rows as CSV with a header (written even when there are no rows); None is an empty field."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fieldnames))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in fieldnames})
    return path
