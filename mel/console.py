"""Terminal output through rich: the console and the table every command prints with.

Off a terminal (a pipe, a log file, a test's ``io.StringIO``) the output is plain text: no ANSI codes (whatever
``FORCE_COLOR`` says), lines never wrapped or cropped. Text is printed as it is: rich markup, emoji codes and
highlighting are off, so ``[step 1/2]`` or a summary with ``:colons:`` reaches the stream unchanged. Tables keep
their natural width, on a narrow terminal too (`show`).
"""
from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console, RenderableType
from rich.table import Table

PLAIN_WIDTH = 120
"""The console's width off a terminal, fixed so that ``COLUMNS`` cannot change what a pipe or a test receives."""


def console(stream: TextIO | None = None) -> Console:
    """A console on ``stream`` (default: ``sys.stdout`` as it is now, so a redirected stdout is honoured)."""
    file = stream if stream is not None else sys.stdout
    tty = bool(getattr(file, "isatty", lambda: False)())
    return Console(file=file, force_terminal=tty, width=None if tty else PLAIN_WIDTH, soft_wrap=True,
                   markup=False, emoji=False, highlight=False)


def table(*headers: str, left: tuple[str, ...] = ()) -> Table:
    """A borderless table, columns two spaces apart, right-aligned but for those named in ``left``."""
    out = Table(box=None, pad_edge=False, header_style="bold")
    for header in headers:
        out.add_column(header, justify="left" if header in left else "right", no_wrap=True)
    return out


def show(renderable: RenderableType = "", stream: TextIO | None = None) -> None:
    """Print ``renderable`` on ``stream``. A table wider than the console keeps its natural width (a terminal wraps
    its lines) instead of rich squashing its numbers into ellipses."""
    out = console(stream)
    if isinstance(renderable, Table):
        natural = out.measure(renderable, options=out.options.update_width(10_000)).maximum
        out.width = max(out.width, natural)
    out.print(renderable)  # rich flushes the stream after each print
