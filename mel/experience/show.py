"""Reading a step's meta-experiences: a Markdown report (published as a Prefect artifact) and a terminal view
(``mel show RUN_DIR --step N``). Rows are those of ``step_NNNN/meta_experiences.parquet``, with the replay stage's
stats."""
from __future__ import annotations

import difflib
import json
import textwrap
from typing import Protocol

from mel.verify.extract import extract_code


class ReplayCounts(Protocol):
    """What the reports read of a step's replay stats (`mel.stages.replay.ReplayStats`, which imports this module)."""

    @property
    def pairs(self) -> int: ...
    @property
    def built(self) -> int: ...
    @property
    def accepted(self) -> int: ...
    @property
    def replay(self) -> str: ...
    @property
    def p_pair(self) -> float: ...
    @property
    def p_accept(self) -> float: ...
    @property
    def p_usable(self) -> float: ...
    @property
    def retention(self) -> float: ...


def pair_diff(y_plus: str | None, y_minus: str, context: int = 1, max_lines: int = 30) -> str:
    """A unified diff from y+'s program to y-'s (code extracted from the completions), or "" without y+."""
    if y_plus is None:
        return ""
    a = extract_code(y_plus).splitlines()
    b = extract_code(y_minus).splitlines()
    lines = list(difflib.unified_diff(a, b, "y+", "y-", n=context, lineterm=""))
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"... ({len(lines) - max_lines} more diff lines)"]
    return "\n".join(lines)


def _verdict(row: dict) -> str:
    if not row["built_ok"]:
        return f"REJECTED (malformed: {row['reject_reason']})"
    if row["accepted"]:
        return "ACCEPTED" + (" (in the NLL term)" if row["selected"] else " (not drawn into the NLL term)")
    return f"REJECTED by {row['replay']} replay ({row['replay_status']}: {row['replay_detail'][:200]})"


def _header(step: int, stats: ReplayCounts) -> str:
    return (f"step {step + 1}: {stats.accepted} of {stats.pairs} meta-experiences accepted ({stats.built} "
            f"well-formed, replay {stats.replay}); p_pair {stats.p_pair:.2f}, p_accept {stats.p_accept:.2f}, "
            f"p_usable {stats.p_usable:.2f}, retention {stats.retention:.2f}")


def _pick(rows: list[dict], only: str | None) -> list[dict]:
    if only == "accepted":
        return [r for r in rows if r["accepted"]]
    if only == "rejected":
        return [r for r in rows if not r["accepted"]]
    return sorted(rows, key=lambda r: not r["accepted"])  # accepted first, then rejected, stable


def terminal_report(rows: list[dict], step: int, stats: ReplayCounts, only: str | None = None, limit: int = 20,
                    width: int = 100) -> str:
    picked = _pick(rows, only)
    out = [_header(step, stats), ""]
    for r in picked[:limit]:
        out.append("=" * width)
        out.append(f"prompt {r['prompt_index']} pair {r['pair_index']} ({r['problem_id']}, {r['origin']}, "
                   f"builder {r['builder']}{', ' + r['category'] if r['category'] else ''}): {_verdict(r)}")
        prompt = json.loads(r["problem_json"]).get("prompt", "") if r["problem_json"] else ""
        out.append(textwrap.shorten("x: " + " ".join(prompt.split()), width=width, placeholder=" ..."))
        diff = pair_diff(r["y_plus"], r["y_minus"])
        if diff:
            out += ["y+ -> y- diff:", textwrap.indent(diff, "  ")]
        elif r["y_plus"] is None:
            out.append(textwrap.shorten("y- (no pair): " + " ".join(r["y_minus"].split()), width=width,
                                        placeholder=" ..."))
        for label, key in (("s*", "bifurcation_step"), ("C", "critique"), ("H", "heuristic")):
            out.append(textwrap.fill(f"{label}: {' '.join(r[key].split())}", width=width,
                                     subsequent_indent="    "))
    if len(picked) > limit:
        out.append(f"... {len(picked) - limit} more (use --limit)")
    if not picked:
        out.append("(no meta-experiences to show)")
    return "\n".join(out)


def _cell(text: str, n: int = 160) -> str:
    text = " ".join((text or "").split()).replace("|", "\\|")
    return text if len(text) <= n else text[: n - 3] + "..."


def markdown_report(rows: list[dict], step: int, stats: ReplayCounts, limit: int = 50) -> str:
    out = [f"# Meta-experiences, {_header(step, stats)}", ""]
    out += ["| prompt | pair | verdict | category | s* | C | H |", "|---|---|---|---|---|---|---|"]
    for r in _pick(rows, None)[:limit]:
        out.append(f"| {r['prompt_index']} ({_cell(r['problem_id'], 40)}) | {r['pair_index']} | "
                   f"{_cell(_verdict(r), 80)} | {r['category'] or '-'} | {_cell(r['bifurcation_step'], 80)} | "
                   f"{_cell(r['critique'])} | {_cell(r['heuristic'])} |")
    accepted = [r for r in rows if r["accepted"]][:3]
    for r in accepted:
        diff = pair_diff(r["y_plus"], r["y_minus"])
        if diff:
            out += ["", f"**prompt {r['prompt_index']} pair {r['pair_index']}: y+ -> y-**", "", "```diff", diff, "```"]
    if len(rows) > limit:
        out.append(f"\n{len(rows) - limit} more rows in the Parquet artifact.")
    return "\n".join(out)
