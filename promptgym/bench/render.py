"""Rendering the leaderboard: ``leaderboards/README.md`` (tables) and ``leaderboards/index.html``
(tables and learning curves as inline SVG, one self-contained file that reads offline).

Both pages are generated from the committed submissions and nothing else, deterministically (fixed
bootstrap seeds, no generation timestamp), so regenerating without a new entry changes no byte and
a pull request's diff of the pages shows exactly what a new entry changes.

What the tables hold (scores, CIs, ranks, the comparison with the best baseline) is decided by
:func:`promptgym.bench.ranking.rank`; this module only words it as Markdown, HTML and SVG, so a
change of statistics and a change of layout are separate diffs.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from promptgym.bench.ranking import Row, Table, baseline_agents, rank
from promptgym.bench.schema import BENCH_SEEDS, TIERS, created_date
from promptgym.bench.stats import curve_on_grid
from promptgym.bench.store import LEADERBOARD_DIR, load_entries, write_text_atomic

__all__ = ["PROTOCOL_MARKER", "html_page", "markdown_page", "render_html", "render_markdown", "summary",
           "write_leaderboard"]

PROTOCOL_MARKER = "<!-- protocol -->"
PROTOCOL_END = "<!-- /protocol -->"
PROTOCOL_FILE = "PROTOCOL.md"
GRID_POINTS = 201  # learning-curve resolution: budget / 200 calls (5 calls in the lite tier)
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def summary() -> str:
    """The paragraph above the tables. Built when a page is rendered, not at import, so the list of
    baselines is the agent registry's as it stands then (a baseline registered later is named)."""
    return f"""\
Each entry tunes a prompt for a frozen LM through the black-box interface only, once per data seed
({", ".join(map(str, BENCH_SEEDS))}: the published 16-shot train/dev splits), under a fixed budget of
LM calls per run (tiers: {", ".join(f"{t} = {b:,}" for t, b in TIERS.items())}; every call counts, dev
evaluations included), and scores its final prompt once on the task's test split. **Score** is the
mean ± standard deviation over the five seeds of the task metric. **95% CI**: percentile bootstrap
resampling seeds and test rows. **ECE**: expected calibration error on the test split (10 bins).
**AUC**: area under the best-so-far dev curve divided by the budget (sample efficiency). All values
are ×100. **vs best baseline**: difference to the best baseline
({", ".join(sorted(baseline_agents()))}) on the same model with the 95% CI of a paired bootstrap;
≈ marks entries *not* distinguishable from it (the CI contains 0)."""


def _anchor(table: Table) -> str:
    return f"{table.env_id}-{table.tier}".lower()


def _title(table: Table) -> str:
    return f"{table.env_id} · {table.tier} tier ({TIERS[table.tier]:,} calls) · {table.metric}"


def _pct(x: float, sign: bool = False) -> str:
    return f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}"


def _versus(row: Row) -> str:
    """The "vs best baseline" cell: "≈" when not distinguishable, "†" when compared by CI overlap."""
    cmp = row.versus
    if cmp is None:
        return "—"
    if cmp.is_self:
        return "best baseline"
    mark = "" if cmp.distinguishable else "≈ "
    if cmp.ci is None:
        return f"{mark}{_pct(cmp.diff, sign=True)}†"
    return f"{mark}{_pct(cmp.diff, sign=True)} [{_pct(cmp.ci[0], sign=True)}, {_pct(cmp.ci[1], sign=True)}]"


def _notes(table: Table) -> list[str]:
    """Footnotes of a table: how its comparisons were made, where they fell short."""
    notes = []
    if table.seed_only:
        notes.append(
            "† Test labels were not available when this table was generated: the 95% CI resamples seeds only "
            "(test-row noise is not counted) and entries are compared with the best baseline by whether these "
            "CIs overlap, a cruder test than the paired bootstrap.")
    if table.borrowed:
        borrowed = ", ".join(f"{agent} on {env_id}" for agent, env_id in table.borrowed)
        notes.append(f"Best baseline: {borrowed} (it uses no learned prompt, so its runs are the "
                     "same on every env kind of the task).")
    if table.missing_baseline:
        notes.append("— No baseline has been submitted for this entry's model in this tier.")
    return notes


HEADERS: tuple[str, ...] = ("Rank", "Agent", "Submitter", "Model", "Score", "95% CI",
                            f"Seeds {'/'.join(map(str, BENCH_SEEDS))}", "Calls", "ECE", "AUC", "vs best baseline",
                            "Date", "Version")
_SUBMITTED_COLUMNS = {1, 2, 3, 12}  # cells holding submitter-provided text (the rest we format ourselves)
_MD_ALIGN = ("---:", "---", "---", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---", "---", "---")


def _cells(row: Row) -> list[str]:
    sub = row.sub
    return [str(row.rank), sub["agent"]["name"], sub["submitter"], sub["model"]["name"],
            f"{_pct(row.mean)} ± {_pct(row.std)}", f"[{_pct(row.ci[0])}, {_pct(row.ci[1])}]",
            " / ".join(_pct(s) for s in row.scores), f"{row.calls:,.0f}", _pct(row.ece), _pct(row.auc), _versus(row),
            created_date(sub), sub["promptgym_version"]]


# -------------------------------------------------------------------------------------- markdown
def _md_escape(text: str) -> str:
    """Make submitter-controlled text inert in a Markdown table cell: no HTML, links, emphasis or
    column breaks (GitHub renders inline HTML, and a '|' would shift every later column)."""
    out = html.escape(text, quote=False)
    for ch in "\\`*_[]|#!<>":
        out = out.replace(ch, "\\" + ch)
    return " ".join(out.split())


def render_markdown(entries: Sequence[Mapping[str, Any]], labels_by_env: Mapping[str, np.ndarray] | None = None,
                    *, protocol: str | None = None) -> str:
    """The content of ``leaderboards/README.md``: :func:`markdown_page` of the ranked ``entries``."""
    return markdown_page(rank(entries, labels_by_env), protocol=protocol)


def markdown_page(tables: Sequence[Table], *, protocol: str | None = None) -> str:
    """``leaderboards/README.md`` from ranked tables.

    ``protocol`` (the text of ``leaderboards/PROTOCOL.md``, when present) goes between the
    ``<!-- protocol -->`` and ``<!-- /protocol -->`` markers, so the hand-written protocol and the
    generated tables live on one page while only the tables are generated.
    """
    out = ["# promptgym leaderboards", "",
           "<!-- generated by promptgym.bench.render from leaderboards/<env_id>/*.json: do not edit by hand -->", "",
           summary(), "", PROTOCOL_MARKER]
    if protocol and protocol.strip():
        out += [protocol.strip()]
    out += [PROTOCOL_END, ""]
    if not tables:
        out += ["_No submissions yet._", ""]
    for table in tables:
        out += [f"## {_title(table)}", "", "| " + " | ".join(HEADERS) + " |", "|" + "|".join(_MD_ALIGN) + "|"]
        out += ["| " + " | ".join(_md_escape(c) if i in _SUBMITTED_COLUMNS else c for i, c in enumerate(_cells(row)))
                + " |" for row in table.rows]
        out.append("")
        for note in _notes(table):
            out += [note, ""]
    return "\n".join(out).rstrip("\n") + "\n"


# ------------------------------------------------------------------------------------------ html
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
  padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; }
td.text { text-align: left; white-space: normal; max-width: 16em; overflow-wrap: anywhere; }
tr.baseline td { background: #fafaf0; }
td.same { color: #8a6d00; font-weight: 600; }
p.note, figcaption { font-size: 0.85em; color: #555; }
pre { white-space: pre-wrap; background: #f8f8f8; padding: 1em; }
svg text { font-family: inherit; font-size: 11px; fill: #333; }
"""
_TEXT_COLUMNS = {1, 2, 3, 10}  # left-aligned columns (agent, submitter, model, comparison)


def _inline_markdown(text: str) -> str:
    """Our own summary's **bold** and *italic* as HTML (the text is escaped first)."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out, flags=re.S)
    return re.sub(r"\*(.+?)\*", r"<em>\1</em>", out, flags=re.S)


def render_html(entries: Sequence[Mapping[str, Any]], labels_by_env: Mapping[str, np.ndarray] | None = None,
                *, protocol: str | None = None) -> str:
    """The content of ``leaderboards/index.html``: :func:`html_page` of the ranked ``entries``."""
    return html_page(rank(entries, labels_by_env), protocol=protocol)


def html_page(tables: Sequence[Table], *, protocol: str | None = None) -> str:
    """``leaderboards/index.html`` from ranked tables: one self-contained page (inline CSS and SVG, no
    scripts, no external assets) so it reads offline and from a file:// URL. It is also well-formed
    XML, which keeps it checkable with a strict parser."""
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8"/>',
           '<meta name="viewport" content="width=device-width, initial-scale=1"/>',
           "<title>promptgym leaderboards</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
           "<h1>promptgym leaderboards</h1>", f'<p class="summary">{_inline_markdown(summary())}</p>']
    if protocol and protocol.strip():
        out.append(f"<details><summary>Protocol</summary><pre>{esc(protocol.strip())}</pre></details>")
    if not tables:
        out.append("<p><em>No submissions yet.</em></p>")
    else:
        out.append("<nav><ul>" + "".join(f'<li><a href="#{esc(_anchor(t))}">{esc(_title(t))}</a></li>' for t in tables)
                   + "</ul></nav>")
    for table in tables:
        out += [f'<section id="{esc(_anchor(table))}">', f"<h2>{esc(_title(table))}</h2>", "<table>",
                "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in HEADERS) + "</tr></thead>", "<tbody>"]
        for row in table.rows:
            cells = []
            for i, cell in enumerate(_cells(row)):
                classes = (["text"] if i in _TEXT_COLUMNS else []) + (["same"] if i == 10 and "≈" in cell else [])
                attr = f' class="{" ".join(classes)}"' if classes else ""
                cells.append(f"<td{attr}>{esc(cell)}</td>")
            row_attr = ' class="baseline"' if row.is_baseline else ""
            out.append(f"<tr{row_attr}>" + "".join(cells) + "</tr>")
        out += ["</tbody>", "</table>"]
        out += [f'<p class="note">{esc(note)}</p>' for note in _notes(table)]
        out += ["<figure>", _svg(table),
                f"<figcaption>Best-so-far {esc(table.metric)} on the dev split (×100, mean over seeds) against LM "
                f"calls used, up to the {esc(table.tier)} budget of {TIERS[table.tier]:,} calls.</figcaption>",
                "</figure>", "</section>"]
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def _svg(table: Table) -> str:
    """Learning curves of one table as an inline SVG line chart with a legend."""
    budget = TIERS[table.tier]
    series = [(row, *curve_on_grid([r["curve"] for r in sorted(row.sub["runs"], key=lambda r: r["seed"])],
                                   budget, n_points=GRID_POINTS)) for row in table.rows]
    values = np.concatenate([v[np.isfinite(v)] for _, _, v in series]) if series else np.empty(0)
    lo, hi, step = _nice_range(float(values.min()), float(values.max())) if values.size else (0.0, 1.0, 0.25)

    left, top, plot_w, plot_h, legend_w = 56, 12, 520, 240, 260
    height = max(top + plot_h + 44, top + 16 * len(series) + 12)
    width = left + plot_w + 20 + legend_w

    def x(c: float) -> float:
        return left + plot_w * c / budget

    def y(v: float) -> float:
        return top + plot_h * (1.0 - (v - lo) / (hi - lo))

    esc = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(_title(table))} learning curves">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    for k in range(int(round((hi - lo) / step)) + 1):
        v = lo + k * step
        parts.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + plot_w}" y2="{y(v):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{100 * v:g}</text>')
    for k in range(5):
        c = budget * k / 4
        parts.append(f'<text x="{x(c):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{c:,.0f}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 34}" text-anchor="middle">LM calls</text>')
    parts.append(f'<text transform="translate(14,{top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">'
                 f'dev {esc(table.metric)} ×100</text>')
    for i, (row, grid, vals) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        dash = ("", ' stroke-dasharray="6 3"', ' stroke-dasharray="2 2"')[(i // len(PALETTE)) % 3]
        name = f"{row.rank}. {row.sub['agent']['name']} ({row.sub['submitter']})"
        ok = np.isfinite(vals)
        if ok.any():
            points = " ".join(f"{x(c):.1f},{y(v):.1f}" for c, v in _staircase(grid[ok], vals[ok]))
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8"{dash} points="{points}">'
                         f"<title>{esc(name)}</title></polyline>")
            last_c, last_v = grid[ok][-1], vals[ok][-1]
            parts.append(f'<circle cx="{x(last_c):.1f}" cy="{y(last_v):.1f}" r="2.5" fill="{color}"/>')
        ly = top + 16 * i + 8
        lx = left + plot_w + 20
        parts.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 18}" y2="{ly}" stroke="{color}" stroke-width="2.5"{dash}/>')
        label = name if len(name) <= 40 else name[:39] + "…"
        parts.append(f'<text x="{lx + 24}" y="{ly + 4}">{esc(label)}{"" if ok.any() else " (no curve)"}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _staircase(grid: np.ndarray, values: np.ndarray) -> list[tuple[float, float]]:
    """Vertices of a step plot: best-so-far curves jump when a better prompt is found, so a
    straight segment between grid points would suggest progress that did not happen."""
    pts = [(float(grid[0]), float(values[0]))]
    for c, v in zip(grid[1:], values[1:]):
        if v != pts[-1][1]:
            pts += [(float(c), pts[-1][1]), (float(c), float(v))]
    if pts[-1][0] != float(grid[-1]):
        pts.append((float(grid[-1]), pts[-1][1]))
    return pts


def _nice_range(lo: float, hi: float) -> tuple[float, float, float]:
    """Axis limits on round numbers with 2-6 ticks, e.g. (0.48, 0.76) -> (0.4, 0.8, 0.1)."""
    if hi - lo < 0.02:  # a flat curve: centre it in a small window instead of on an axis edge
        mid = (lo + hi) / 2
        lo, hi = mid - 0.01, mid + 0.01
    span = hi - lo
    magnitude = 10.0 ** math.floor(math.log10(span / 4))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if span / (m * magnitude) <= 5)
    low, high = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    if high - low < step:
        high = low + step
    return round(low, 10), round(high, 10), step


# ----------------------------------------------------------------------------------------- files
def write_leaderboard(root: Path, labels_by_env: Mapping[str, np.ndarray] | None = None) -> tuple[Path, Path]:
    """Regenerate ``leaderboards/README.md`` and ``leaderboards/index.html`` from the committed entries.

    Each page is replaced atomically, so a reader (or a concurrent ``git add``) never sees half a page.
    Raises if any committed submission is invalid (see :func:`~promptgym.bench.store.load_entries`).
    """
    board = Path(root) / LEADERBOARD_DIR
    entries = load_entries(Path(root))
    protocol_path = board / PROTOCOL_FILE
    protocol = protocol_path.read_text(encoding="utf-8") if protocol_path.is_file() else None
    tables = rank(entries, labels_by_env)  # once for both pages: the bootstraps are the slow part
    markdown = markdown_page(tables, protocol=protocol)
    page = html_page(tables, protocol=protocol)
    board.mkdir(parents=True, exist_ok=True)
    readme, index = board / "README.md", board / "index.html"
    write_text_atomic(readme, markdown)
    write_text_atomic(index, page)
    return readme, index
