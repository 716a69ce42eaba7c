"""Rendering the leaderboard: ``leaderboards/README.md`` (tables) and ``leaderboards/index.html``
(per table: a chart of the test scores with their 95% CIs, the table, test score against calibration
error, the learning curves; charts as inline SVG, one self-contained file that reads offline).
``benchmarks/page_check.py`` checks the page in a headless browser (legends inside their figures, no
console errors) and keeps a screenshot.

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
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from promptgym.bench.ranking import Row, Table, baseline_agents, rank
from promptgym.bench.receipts import budget_verified, trusted_keys
from promptgym.bench.schema import BENCH_SEEDS, TIERS, created_date
from promptgym.bench.store import LEADERBOARD_DIR, load_entries, write_text_atomic
from promptgym.errors import ConfigError
from promptgym.lm.presets import DEFAULT_MODEL
from promptgym.metrics.registry import METRIC_REGISTRY, Format, MetricSpec, metric_spec
from promptgym.metrics.stats import curve_on_grid
from promptgym.tasks import TASK_NAMES, get_task

__all__ = ["HEADERS", "HTML_HEADERS", "PROTOCOL_MARKER", "headers", "html_headers", "html_page", "markdown_page",
           "render_html", "render_markdown", "summary", "versus_cell", "write_leaderboard"]

PROTOCOL_MARKER = "<!-- protocol -->"
PROTOCOL_END = "<!-- /protocol -->"
PROTOCOL_FILE = "PROTOCOL.md"
GRID_POINTS = 201  # learning-curve resolution: budget / 200 calls (5 calls in the lite tier)
VERIFIED_MARK = "✓"  # after the Calls of a budget-verified entry (promptgym.bench.receipts)
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def summary() -> str:
    """The paragraph above the tables. Built when a page is rendered, not at import, so the list of
    baselines is the agent registry's, and the metric definitions the metric registry's, as they stand
    then (a baseline or a metric registered later is named). Wrapped at 100 characters, never inside a
    word, so that a new definition re-flows the paragraph instead of leaving a ragged line."""
    columns = [spec for spec in METRIC_REGISTRY.values() if spec.column]
    definitions = " ".join(f"**{spec.label}**{_scope(spec)}: {spec.description}." for spec in columns)
    recorded = _and([spec.label for spec in columns if spec.recorded] + ["OOD AUROC"])
    floor = _and([spec.label for spec in columns if spec.bare_vote_na])
    floor_note = (f"; {floor} – for vote sets of schema version 1 (a bare vote histogram puts probability 0 on labels, "
                  f"so its {floor} is the 1e-12 floor's)") if floor else ""
    unscaled = _and([spec.label for spec in columns if spec.fmt is not Format.PERCENT])
    scale = f"All values but {unscaled} are ×100." if unscaled else "All values are ×100."
    text = f"""\
Each entry tunes a prompt for a frozen LM through the black-box interface only, once per data seed
({", ".join(map(str, BENCH_SEEDS))}: the published 16-shot train/dev splits), under a fixed budget of
LM calls per run (tiers: {", ".join(f"{t} = {b:,}" for t, b in TIERS.items())}; every call counts, dev
evaluations included), and scores its final prompt(s) once on the task's test split. There is one
table per env id, tier and model: a rank is read against the same model's rows only. **Score** is the
mean ± standard deviation over the five seeds of the task metric. **95% CI**: percentile bootstrap
resampling seeds and test rows. {definitions} **OOD AUROC**: how well the
max-probability tells the task's test inputs from another task's (0.5 = chance): the mean over the
OOD tasks the entry was scored on, then in brackets the lowest–highest of them and after the slash
their number (a bare value: one OOD task, as entries of protocol version 1 have); it ranks OOD
detection only where it agrees on every OOD task (see the protocol). {recorded} are means over
the seeds; – for entries submitted before they were recorded, or a task without OOD pairs{floor_note}.
**AUC**: area under the best-so-far dev curve divided by the budget (sample efficiency; – for an
entry that never evaluated a prompt on dev). **Calls**: mean LM calls per seed; {VERIFIED_MARK} marks a
*budget verified* entry: every run was made against promptgym serve with a key of its own, and that
server's signed usage receipt (its key in leaderboards/trusted_keys) shows the search within the
tier and the submitted prompts among the calls it scored. Calls without {VERIFIED_MARK} are as the
submitter's harness reported them (the scores are re-checked all the same). {scale}
"+ calibration": the agent's final prompts with one bias per label fitted on the training
examples (charged to the same budget). **vs best baseline**:
difference to the best baseline ({", ".join(sorted(baseline_agents()))}) on the same model with
the 95% CI of a paired bootstrap; ≈ marks entries *not* distinguishable from it (the CI contains 0)."""
    return _wrap(" ".join(text.split()))


def _wrap(text: str, width: int = 100) -> str:
    """``text`` in lines of at most ``width`` characters, broken at spaces only and never inside a
    **bold** term (the page renders either way; the Markdown source reads better)."""
    glued = re.sub(r"\*\*[^*]+\*\*", lambda m: m.group(0).replace(" ", "\0"), text)
    return textwrap.fill(glued, width=width, break_long_words=False, break_on_hyphens=False).replace("\0", " ")


def _and(names: Sequence[str]) -> str:
    """ "A", "A and B", "A, B and C" (empty for none)."""
    return ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + (names[-1] if names else "")


def _scope(spec: MetricSpec) -> str:
    """" (MRPC, QQP, CoLA only)" for a metric limited to some tasks, in catalog order; empty for every task."""
    if spec.tasks is None:
        return ""
    known = [get_task(t).env_name for t in TASK_NAMES if t in spec.tasks]
    return f" ({', '.join(known + sorted(t for t in spec.tasks if t not in TASK_NAMES))} only)"


def _anchor(table: Table) -> str:
    """The section id: ``<env id>-<tier>``, plus ``-<model>`` for a model other than the default (so the
    default model's links stay what they were before tables were split by model)."""
    suffix = "" if table.model == DEFAULT_MODEL else f"-{table.model}"
    return f"{table.env_id}-{table.tier}{suffix}".lower()


def _title(table: Table) -> str:
    return f"{table.env_id} · {table.tier} tier ({TIERS[table.tier]:,} calls) · {table.model} · {table.metric}"


def _pct(x: float, sign: bool = False) -> str:
    return f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}"


def versus_cell(row: Row) -> str:
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
    ood_sets: dict[frozenset[str], list[str]] = {}
    for row in table.rows:
        if row.ood is not None:
            ood_sets.setdefault(frozenset(row.ood.tasks), []).append(row.name)
    if len(ood_sets) > 1:
        listed = "; ".join(f"{', '.join(sorted(tasks))}: {', '.join(names)}"
                           for tasks, names in sorted(ood_sets.items(), key=lambda kv: (len(kv[0]), sorted(kv[0]))))
        notes.append(f"OOD AUROC: these entries were scored on different OOD tasks ({listed}); a mean over other "
                     "OOD tasks does not compare, and no entry is better at OOD detection unless it is better on "
                     "every OOD task both have.")
    return notes


# A table's columns: these, with the metric registry's columns for the table's task between Calls and
# OOD AUROC (:attr:`promptgym.bench.ranking.Table.columns`, in registry order).
SEEDS_HEADER = f"Seeds {'/'.join(map(str, BENCH_SEEDS))}"
_LEADING: tuple[str, ...] = ("Rank", "Agent", "Submitter", "Model", "Score", "95% CI", SEEDS_HEADER, "Calls")
_TRAILING: tuple[str, ...] = ("OOD AUROC", "AUC", "vs best baseline", "Date", "Version")
# cells holding submitter-provided text (the rest we format ourselves)
_SUBMITTED_COLUMNS = frozenset({"Agent", "Submitter", "Model", "Version"})
_TEXT_COLUMNS = frozenset({"Agent", "Submitter", "Model", "vs best baseline"})  # left-aligned


def headers(table: Table) -> tuple[str, ...]:
    """The columns of ``table`` in README.md (a metric labelled like one of the table's own columns is refused)."""
    labels = tuple(spec.label for spec in table.columns)
    clash = sorted(set(labels) & {*_LEADING, *_TRAILING})
    if clash:
        raise ConfigError(f"metric column {clash[0]!r} is also one of the table's own columns; relabel its MetricSpec")
    return (*_LEADING, *labels, *_TRAILING)


def html_headers(table: Table) -> tuple[str, ...]:
    """The columns of ``table`` on index.html: those of README.md but the per-seed scores (16 columns do not
    fit 1,320 px: the seeds' scores are drawn in the CI chart and given as the Score cell's tooltip instead)."""
    return tuple(h for h in headers(table) if h != SEEDS_HEADER)


#: the columns every table has (a table of a task no task-limited metric applies to, such as SST-2, has exactly these)
HEADERS: tuple[str, ...] = (*_LEADING, *(s.label for s in METRIC_REGISTRY.values() if s.column and s.tasks is None),
                            *_TRAILING)
HTML_HEADERS: tuple[str, ...] = tuple(h for h in HEADERS if h != SEEDS_HEADER)  # the same on index.html


def _md_align(header: str) -> str:
    return "---" if header in _TEXT_COLUMNS or header in ("Date", "Version") else "---:"


NOT_APPLICABLE = "–"  # a metric that does not apply to an entry, or was not recorded (older submissions)


def _calls(n: float) -> str:
    """A call count, the one way every page writes them: rounded, with thousands separators ("999", "1,000")."""
    return f"{round(n):,}"


def _has_curve(row: Row) -> bool:
    """True when some run evaluated a prompt on dev: without a single point, AUC and a curve do not apply."""
    return any(len(run["curve"]) for run in row.sub["runs"])


def _optional(value: float | None, fmt: Format) -> str:
    return NOT_APPLICABLE if value is None else fmt.text(value)


def _ood(row: Row) -> str:
    """The OOD AUROC cell: the mean over the entry's OOD tasks, with their range and number when
    there are several ("52.0 [34–70]/4": compact, tables already fill the page); a bare value for a
    single OOD task."""
    ood = row.ood
    if ood is None:
        return NOT_APPLICABLE
    if ood.n == 1:
        return _pct(ood.mean)
    return f"{_pct(ood.mean)} [{100 * ood.low:.0f}–{100 * ood.high:.0f}]/{ood.n}"


def _cells(row: Row, table: Table, trusted: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Every cell of ``row`` by column header (:func:`headers`); a registered metric the row does not have
    (not recorded by an older entry, not derivable here) is written as not applicable."""
    sub = row.sub
    calls = _calls(row.calls) + (f" {VERIFIED_MARK}" if trusted and budget_verified(sub, trusted) else "")
    cells = {"Rank": str(row.rank), "Agent": row.name, "Submitter": sub["submitter"], "Model": sub["model"]["name"],
             "Score": f"{_pct(row.mean)} ± {_pct(row.std)}", "95% CI": f"[{_pct(row.ci[0])}, {_pct(row.ci[1])}]",
             SEEDS_HEADER: " / ".join(_pct(s) for s in row.scores), "Calls": calls}
    cells.update({spec.label: _optional(row.metrics.get(spec.name), spec.fmt) for spec in table.columns})
    cells.update({"OOD AUROC": _ood(row), "AUC": _pct(row.auc) if _has_curve(row) else NOT_APPLICABLE,
                  "vs best baseline": versus_cell(row), "Date": created_date(sub), "Version": sub["promptgym_version"]})
    return cells


# -------------------------------------------------------------------------------------- markdown
def _md_escape(text: str) -> str:
    """Make submitter-controlled text inert in a Markdown table cell: no HTML, links, emphasis or
    column breaks (GitHub renders inline HTML, and a '|' would shift every later column)."""
    out = html.escape(text, quote=False)
    for ch in "\\`*_[]|#!<>":
        out = out.replace(ch, "\\" + ch)
    return " ".join(out.split())


def render_markdown(entries: Sequence[Mapping[str, Any]], labels_by_env: Mapping[str, np.ndarray] | None = None,
                    *, protocol: str | None = None, trusted: Mapping[str, Any] | None = None) -> str:
    """The content of ``leaderboards/README.md``: :func:`markdown_page` of the ranked ``entries``."""
    return markdown_page(rank(entries, labels_by_env), protocol=protocol, trusted=trusted)


def markdown_page(tables: Sequence[Table], *, protocol: str | None = None,
                  trusted: Mapping[str, Any] | None = None) -> str:
    """``leaderboards/README.md`` from ranked tables (``trusted``: the board's receipt keys, by fingerprint,
    see :func:`~promptgym.bench.receipts.trusted_keys`; without them no entry is marked budget verified).

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
        columns = headers(table)
        out += [f"## {_title(table)}", "", "| " + " | ".join(columns) + " |",
                "|" + "|".join(_md_align(h) for h in columns) + "|"]
        for row in table.rows:
            cells = _cells(row, table, trusted)
            out.append("| " + " | ".join(_md_escape(cells[h]) if h in _SUBMITTED_COLUMNS else cells[h]
                                         for h in columns) + " |")
        out.append("")
        for note in _notes(table):
            out += [note, ""]
    return "\n".join(out).rstrip("\n") + "\n"


# ------------------------------------------------------------------------------------------ html
FONT_PX = 12  # every chart text: tick labels, axis titles, legends (read at 1400 px without zooming)
CHAR_PX = 0.62 * FONT_PX  # a generous average glyph width, to size a chart around its longest label
MIN_Y_SPAN = 0.10  # the narrowest score axis (10 points ×100): a 16-shot dev split moves in ~3-point steps
LEGEND_CHARS = 44  # a legend name longer than this is cut (the full name is in the line's tooltip)

_CSS = f"""
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1320px;
  padding: 0 1em; color: #222; line-height: 1.45; }}
h1 {{ font-size: 1.6em; }} h2 {{ font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }}
div.scroll, figure {{ overflow-x: auto; }}
figure {{ margin: 0.8em 0; }}
table {{ border-collapse: collapse; font-size: 0.8em; margin: 0.5em 0; font-variant-numeric: tabular-nums; }}
th, td {{ border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: right; white-space: nowrap;
  word-break: keep-all; hyphens: manual; }}
th {{ background: #f4f4f4; white-space: normal; }}
td.text, th.text {{ text-align: left; }}
td.words {{ white-space: normal; overflow-wrap: normal; min-width: 8em; max-width: 16em; }}
td.name {{ white-space: normal; overflow-wrap: normal; }}
span.word {{ white-space: nowrap; }}
tr.baseline td {{ background: #fafaf0; }}
td.same {{ color: #8a6d00; font-weight: 600; }}
p.note, figcaption {{ font-size: 0.85em; color: #555; }}
pre {{ white-space: pre-wrap; background: #f8f8f8; padding: 1em; }}
svg {{ display: block; }}
svg text {{ font-family: inherit; font-size: {FONT_PX}px; fill: #333; }}
svg text.halo {{ paint-order: stroke; stroke: #fff; stroke-width: 3px; stroke-linejoin: round; }}
"""
_TEXT_ATTR = ' class="text"'
# Free text (the submitter) may wrap between words, never inside one: each word is a no-wrap span,
# as Chromium otherwise breaks "promptgym-baselines" after its hyphen in a narrow column.
_WORDS_COLUMNS = frozenset({"Submitter"})
_NAME_COLUMNS = frozenset({"Agent"})  # "bbt + calibration" may wrap before "+" (an agent name has no spaces)


def _inline_markdown(text: str) -> str:
    """Our own summary's **bold** and *italic* as HTML (the text is escaped first)."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out, flags=re.S)
    return re.sub(r"\*(.+?)\*", r"<em>\1</em>", out, flags=re.S)


def render_html(entries: Sequence[Mapping[str, Any]], labels_by_env: Mapping[str, np.ndarray] | None = None,
                *, protocol: str | None = None, trusted: Mapping[str, Any] | None = None) -> str:
    """The content of ``leaderboards/index.html``: :func:`html_page` of the ranked ``entries``."""
    return html_page(rank(entries, labels_by_env), protocol=protocol, trusted=trusted)


def html_page(tables: Sequence[Table], *, protocol: str | None = None, trusted: Mapping[str, Any] | None = None) -> str:
    """``leaderboards/index.html`` from ranked tables: one self-contained page (inline CSS and SVG, no
    scripts, no external assets) so it reads offline and from a file:// URL. It is also well-formed
    XML, which keeps it checkable with a strict parser.

    Each table's section holds, in reading order: the test scores with their 95% CIs as a
    dot-and-whisker chart (which entries are distinguishable, at a glance), the table, its notes,
    and the learning curves on dev.
    """
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
        budget = TIERS[table.tier]
        out += [f'<section id="{esc(_anchor(table))}">', f"<h2>{esc(_title(table))}</h2>",
                '<figure class="chart ci">', _ci_svg(table),
                f"<figcaption>Test {esc(table.metric)} (×100) of each entry: dot = mean over the seeds, small circles "
                f"= the seeds' scores, whisker = 95% CI (as in the table). Hollow diamonds are baselines; the dashed "
                f"line is the best baseline "
                f"on the entry's model. Entries whose whiskers overlap that line are not clearly better or worse."
                f"</figcaption>", "</figure>",
                '<div class="scroll"><table>',
                "<thead><tr>" + "".join(f'<th{_TEXT_ATTR if h in _TEXT_COLUMNS else ""}>{_header_html(h)}</th>'
                                        for h in html_headers(table)) + "</tr></thead>", "<tbody>"]
        for row in table.rows:
            cells = []
            all_cells = _cells(row, table, trusted)
            for h in html_headers(table):
                cell = all_cells[h]
                classes = ((["text"] if h in _TEXT_COLUMNS else []) + (["words"] if h in _WORDS_COLUMNS else [])
                           + (["name"] if h in _NAME_COLUMNS else [])
                           + (["same"] if h == "vs best baseline" and "≈" in cell else []))
                attr = f' class="{" ".join(classes)}"' if classes else ""
                if h == "Score":
                    attr += f' title="{esc(SEEDS_HEADER.lower())}: {esc(all_cells[SEEDS_HEADER])}"'
                if h == "Calls" and cell.endswith(VERIFIED_MARK):
                    attr += ' title="budget verified: signed usage receipts"'
                if h in _WORDS_COLUMNS or h in _NAME_COLUMNS:
                    content = " ".join(f'<span class="word">{esc(w)}</span>' for w in cell.split())
                else:
                    content = esc(cell)
                cells.append(f"<td{attr}>{content}</td>")
            row_attr = ' class="baseline"' if row.is_baseline else ""
            out.append(f"<tr{row_attr}>" + "".join(cells) + "</tr>")
        out += ["</tbody>", "</table></div>"]
        out += [f'<p class="note">{esc(note)}</p>' for note in _notes(table)]
        out += ['<figure class="chart calibration">', _calibration_svg(table),
                f"<figcaption>Test {esc(table.metric)} (×100) against the expected calibration error on the test split "
                f"(×100, 10 bins), each a mean over the seeds; numbers are ranks, as in the table, and hollow diamonds "
                f"are baselines. Up and to the left is better: a score whose confidence can be trusted. "
                f"\"+ calibration\" entries are an agent's final prompts with one bias per label fitted on the "
                f"training examples.</figcaption>", "</figure>"]
        out += ['<figure class="chart curves">', _svg(table),
                f"<figcaption>Best-so-far {esc(table.metric)} on the dev split (×100, mean over seeds) against LM "
                f"calls used, up to the {esc(table.tier)} budget of {_calls(budget)} calls. An entry that used at "
                f"most {_calls(_reference_calls(budget))} calls has no curve to speak of: it is drawn as a labelled "
                f"horizontal reference line at its dev score.</figcaption>",
                "</figure>", "</section>"]
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def _header_html(header: str) -> str:
    """A column header: a hyphenated word in it ("Macro-F1") kept on one line, since headers wrap and
    Chromium would break after the hyphen; the other words as plain text."""
    return " ".join(f'<span class="word">{html.escape(w)}</span>' if "-" in w else html.escape(w)
                    for w in header.split(" "))


def _text_px(text: str) -> float:
    return CHAR_PX * len(text)


def _entry_name(row: Row) -> str:
    name = f"{row.rank}. {row.name} ({row.sub['submitter']})"
    return name if len(name) <= LEGEND_CHARS else name[:LEGEND_CHARS - 1] + "…"


def _reference_calls(budget: int) -> float:
    """Entries using at most this many calls fit in the first step of the curve grid (and at least
    the 0-2 calls of the prompt-free baselines): drawn as a reference line, not as a curve."""
    return max(2.0, budget / (GRID_POINTS - 1))


def _is_reference(row: Row, budget: int) -> bool:
    return max(int(run["calls_used"]) for run in row.sub["runs"]) <= _reference_calls(budget)


def _legend(items: Sequence[tuple[str, str]], x: float, y: float, *, across: bool = False) -> str:
    """A legend as one ``<g class="legend">`` of (marker SVG drawn at the origin, label) items: one a
    line, or all on one line when ``across``."""
    esc = html.escape
    parts = [f'<g class="legend" transform="translate({x:.1f},{y:.1f})">']
    lx = 0.0
    for i, (marker, label) in enumerate(items):
        ly = 9 if across else 18 * i + 9
        parts.append(f'<g transform="translate({lx:.1f},{ly})">{marker}</g>')
        parts.append(f'<text x="{lx + 26:.1f}" y="{ly + 4}">{esc(label)}</text>')
        if across:
            lx += 26 + _text_px(label) + 18
    parts.append("</g>")
    return "".join(parts)


def _legend_size(items: Sequence[tuple[str, str]], *, across: bool = False) -> tuple[float, float]:
    """(width, height) of :func:`_legend`, estimated generously from the labels' lengths."""
    if across:
        return sum(26 + _text_px(label) + 18 for _, label in items) - 18, 18.0
    return 26 + max((_text_px(label) for _, label in items), default=0.0), 18.0 * len(items)


def _svg(table: Table) -> str:
    """Learning curves of one table as an inline SVG step chart, its legend inside the figure.

    Entries that made (almost) no calls, such as the prompt-free baselines, have no curve: they
    are a horizontal reference line at their dev score, labelled in the plot. Entries without
    any dev point are listed in the legend only.
    """
    budget = TIERS[table.tier]
    series = []
    for row in table.rows:
        grid, vals = curve_on_grid([r["curve"] for r in sorted(row.sub["runs"], key=lambda r: r["seed"])],
                                   budget, n_points=GRID_POINTS)
        series.append((row, grid, vals))
    values = np.concatenate([v[np.isfinite(v)] for _, _, v in series]) if series else np.empty(0)
    lo, hi, step = _nice_range(float(values.min()), float(values.max())) if values.size else (0.0, 1.0, 0.25)

    esc = html.escape
    items: list[tuple[str, str]] = []
    lines: list[str] = []
    refs: list[tuple[float, str, str]] = []  # (value, label, color) of reference lines
    left, top, plot_w, plot_h = 60, 14, 540, 240

    def x(c: float) -> float:
        return left + plot_w * c / budget

    def y(v: float) -> float:
        return top + plot_h * (1.0 - (v - lo) / (hi - lo))

    for i, (row, grid, vals) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        dash = ("", ' stroke-dasharray="6 3"', ' stroke-dasharray="2 2"')[(i // len(PALETTE)) % 3]
        name = _entry_name(row)
        ok = np.isfinite(vals)
        if not ok.any():
            items.append(("", f"{name}: {_calls(row.calls)} calls, no dev curve"))
            continue
        if _is_reference(row, budget):
            level = float(vals[ok][-1])
            lines.append(f'<line class="reference" x1="{left}" y1="{y(level):.1f}" x2="{left + plot_w}" '
                         f'y2="{y(level):.1f}" stroke="{color}" stroke-width="1.5" stroke-dasharray="8 4">'
                         f"<title>{esc(name)}: {100 * level:.1f}</title></line>")
            refs.append((level, f"{row.name} ({_calls(row.calls)} calls)", color))
            items.append((f'<line x1="0" y1="0" x2="18" y2="0" stroke="{color}" stroke-width="2" '
                          f'stroke-dasharray="5 3"/>', f"{name}: reference, {_calls(row.calls)} calls"))
            continue
        points = " ".join(f"{x(c):.1f},{y(v):.1f}" for c, v in _staircase(grid[ok], vals[ok]))
        lines.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8"{dash} points="{points}">'
                     f"<title>{esc(name)}</title></polyline>")
        lines.append(f'<circle cx="{x(grid[ok][-1]):.1f}" cy="{y(vals[ok][-1]):.1f}" r="2.5" fill="{color}"/>')
        items.append((f'<line x1="0" y1="0" x2="18" y2="0" stroke="{color}" stroke-width="2.5"{dash}/>', name))

    parts, legend_x = _plot_frame("curves", f"{esc(_title(table))} learning curves", items, left, top, plot_w, plot_h)
    parts += _ticks("y", lo, hi, step, left, plot_w, y)
    for k in range(5):
        c = budget * k / 4
        parts.append(f'<text x="{x(c):.1f}" y="{top + plot_h + 17}" text-anchor="middle">{_calls(c)}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 36}" text-anchor="middle">LM calls</text>')
    parts.append(f'<text transform="translate(16,{top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">'
                 f'dev {esc(table.metric)} ×100</text>')
    parts += lines
    placed: list[float] = []
    for level, label, color in sorted(refs, key=lambda r: -r[0]):  # top to bottom, pushed apart to stay legible
        ty = y(level) - 5
        if placed and ty < placed[-1] + FONT_PX + 2:
            ty = placed[-1] + FONT_PX + 2
        placed.append(ty)
        parts.append(f'<text class="halo reference-label" x="{left + plot_w - 6}" y="{ty:.1f}" text-anchor="end" '
                     f'fill="{color}">{esc(label)}</text>')
    parts.append(_legend(items, legend_x, top))
    parts.append("</svg>")
    return "\n".join(parts)


def _plot_frame(css: str, aria: str, items: Sequence[tuple[str, str]], left: float, top: float, plot_w: float,
                plot_h: float) -> tuple[list[str], float]:
    """The opening ``<svg>`` (sized to hold the plot, its axis labels and the legend on its right) and the
    plot's border, with the legend's x; the curve and calibration charts share this frame."""
    legend_w, legend_h = _legend_size(items)
    legend_x = left + plot_w + 24
    width = int(math.ceil(legend_x + legend_w + 12))
    height = int(max(top + plot_h + 44, top + legend_h + 12))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="{css}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{aria}">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    return parts, legend_x


def _ticks(axis: str, lo: float, hi: float, step: float, start: float, span: float, at: Any) -> list[str]:
    """Grid lines across the plot and ×100 labels every ``step`` from ``lo`` to ``hi``: ``axis`` "y" draws
    horizontal lines from ``start`` (the plot's left) over ``span`` (its width) with labels on the left, "x"
    vertical ones from ``start`` (its top) over ``span`` (its height) with labels underneath; ``at`` maps a
    value to its pixel."""
    parts = []
    for k in range(int(round((hi - lo) / step)) + 1):
        v = lo + k * step
        p = at(v)
        if axis == "y":
            parts.append(f'<line x1="{start}" y1="{p:.1f}" x2="{start + span}" y2="{p:.1f}" stroke="#eee"/>')
            parts.append(f'<text x="{start - 5}" y="{p + 4:.1f}" text-anchor="end">{100 * v:g}</text>')
        else:
            parts.append(f'<line x1="{p:.1f}" y1="{start}" x2="{p:.1f}" y2="{start + span}" stroke="#eee"/>')
            parts.append(f'<text x="{p:.1f}" y="{start + span + 17}" text-anchor="middle">{100 * v:g}</text>')
    return parts


def _ci_svg(table: Table) -> str:
    """Each entry's test score with its 95% CI, one line per entry in rank order (a dot-and-whisker
    chart); baselines are hollow diamonds and the best baseline of each model a dashed vertical line."""
    esc = html.escape
    rows = table.rows
    best = sorted({round(r.mean - r.versus.diff, 12) for r in rows if r.versus is not None})
    ends = [v for r in rows for v in (*r.ci, *r.scores)] + best
    lo, hi, step = _nice_range(min(ends), max(ends)) if ends else (0.0, 1.0, 0.25)
    names = [_entry_name(r) for r in rows]
    values = [f"{_pct(r.mean)} [{_pct(r.ci[0])}, {_pct(r.ci[1])}]" for r in rows]
    label_w = 8 + max((_text_px(n) for n in names), default=0.0)
    left, top, plot_w, row_h = label_w + 12, 10, 480, 22
    plot_h = row_h * max(len(rows), 1)
    value_x = left + plot_w + 10

    def x(v: float) -> float:
        return left + plot_w * (v - lo) / (hi - lo)

    items = [('<circle cx="9" cy="0" r="4.5" fill="#555"/>', "entry: mean over seeds"),
             ('<path d="M9,-5.5 L14.5,0 L9,5.5 L3.5,0 Z" fill="#fff" stroke="#555" stroke-width="1.8"/>',
              "baseline"),
             ('<circle cx="9" cy="0" r="2.5" fill="#fff" stroke="#555" stroke-width="1.2"/>', "one seed"),
             ('<line x1="0" y1="0" x2="18" y2="0" stroke="#555" stroke-width="2"/>', "95% CI"),
             ('<line x1="9" y1="-7" x2="9" y2="7" stroke="#777" stroke-dasharray="4 3"/>', "best baseline")]
    legend_y = top + plot_h + 44
    legend_w, legend_h = _legend_size(items, across=True)
    width = int(math.ceil(max(value_x + max((_text_px(v) for v in values), default=0.0), left + legend_w) + 12))
    height = int(legend_y + legend_h + 6)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="ci" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(_title(table))} test scores with 95% CIs">',
             f'<rect x="{left:.1f}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    parts += _ticks("x", lo, hi, step, top, plot_h, x)
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 34}" text-anchor="middle">'
                 f'test {esc(table.metric)} ×100</text>')
    models = {r.model for r in rows}
    for level in best:
        bases = sorted({r.model for r in rows if r.versus is not None and round(r.mean - r.versus.diff, 12) == level})
        title = "best baseline" + (f" ({', '.join(bases)})" if len(models) > 1 else "") + f": {_pct(level)}"
        parts.append(f'<line class="best-baseline" x1="{x(level):.1f}" y1="{top}" x2="{x(level):.1f}" '
                     f'y2="{top + plot_h}" stroke="#777" stroke-dasharray="4 3"><title>{esc(title)}</title></line>')
    for i, (row, name, value) in enumerate(zip(rows, names, values)):
        color = PALETTE[i % len(PALETTE)]
        cy = top + row_h * i + row_h / 2
        parts.append(f'<text x="{left - 8:.1f}" y="{cy + 4:.1f}" text-anchor="end">{esc(name)}</text>')
        parts.append(f'<line class="whisker" x1="{x(row.ci[0]):.1f}" y1="{cy:.1f}" x2="{x(row.ci[1]):.1f}" '
                     f'y2="{cy:.1f}" stroke="{color}" stroke-width="2"/>')
        for end in row.ci:
            parts.append(f'<line x1="{x(end):.1f}" y1="{cy - 4:.1f}" x2="{x(end):.1f}" y2="{cy + 4:.1f}" '
                         f'stroke="{color}" stroke-width="2"/>')
        for seed, score in zip(BENCH_SEEDS, row.scores):
            parts.append(f'<circle class="seed" cx="{x(score):.1f}" cy="{cy:.1f}" r="2.5" fill="#fff" '
                         f'stroke="{color}" stroke-width="1.2"><title>{esc(name)}: seed {seed}, {_pct(score)}'
                         f"</title></circle>")
        parts.append(_marker(row, x(row.mean), cy, color, "dot", f"<title>{esc(name)}: {esc(value)}</title>"))
        parts.append(f'<text x="{value_x:.1f}" y="{cy + 4:.1f}">{esc(value)}</text>')
    parts.append(_legend(items, left, legend_y, across=True))
    parts.append("</svg>")
    return "\n".join(parts)


def _marker(row: Row, cx: float, cy: float, color: str, css: str = "", tip: str = "") -> str:
    """An entry's marker centred at (cx, cy): a filled dot, or a hollow diamond for a baseline."""
    attr = f' class="{css}{" baseline" if row.is_baseline else ""}"' if css else ""
    if row.is_baseline:
        return (f'<path{attr} d="M{cx:.1f},{cy - 5.5:.1f} L{cx + 5.5:.1f},{cy:.1f} L{cx:.1f},{cy + 5.5:.1f} '
                f'L{cx - 5.5:.1f},{cy:.1f} Z" fill="#fff" stroke="{color}" stroke-width="1.8">{tip}</path>')
    return f'<circle{attr} cx="{cx:.1f}" cy="{cy:.1f}" r="4.5" fill="{color}">{tip}</circle>'


def _ece(row: Row) -> float:
    """A row's mean test ECE: every entry records it (the schema requires it), so it is never missing."""
    return float(row.metrics["ece"])  # type: ignore[arg-type]


def _calibration_svg(table: Table) -> str:
    """Each entry's test score against its test ECE (means over seeds) as a scatter chart, every
    marker labelled with the entry's rank and the legend inside the figure, right of the plot.

    The chart answers what the table can only list: does an entry buy its accuracy with
    over-confidence, and does calibration (or a distribution over prompts) move it left?
    """
    esc = html.escape
    rows = table.rows
    ece = metric_spec("ece")
    xlo, xhi, xstep = _padded_range([_ece(r) for r in rows])
    ylo, yhi, ystep = _padded_range([r.mean for r in rows])
    left, top, plot_w, plot_h = 60, 14, 420, 240

    def x(v: float) -> float:
        return left + plot_w * (v - xlo) / (xhi - xlo)

    def y(v: float) -> float:
        return top + plot_h * (1.0 - (v - ylo) / (yhi - ylo))

    items: list[tuple[str, str]] = []
    points: list[str] = []
    labels: list[str] = []
    for i, row in enumerate(rows):
        color = PALETTE[i % len(PALETTE)]
        name = _entry_name(row)
        cx, cy = x(_ece(row)), y(row.mean)
        tip = (f"<title>{esc(name)}: {esc(table.metric)} {_pct(row.mean)}, {esc(ece.label)} "
               f"{ece.fmt.text(_ece(row))}</title>")
        points.append(_marker(row, cx, cy, color, "point", tip))
        labels.append(f'<text class="halo" x="{cx + 7:.1f}" y="{cy - 6:.1f}">{row.rank}</text>')
        items.append((_marker(row, 9.0, 0.0, color), name))

    parts, legend_x = _plot_frame("calibration", f"{esc(_title(table))} test score against ECE", items, left, top,
                                  plot_w, plot_h)
    parts += _ticks("y", ylo, yhi, ystep, left, plot_w, y)
    parts += _ticks("x", xlo, xhi, xstep, top, plot_h, x)
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 36}" text-anchor="middle">'
                 f"test {esc(ece.label)} ×100 ({ece.direction.value})</text>")
    parts.append(f'<text transform="translate(16,{top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">'
                 f"test {esc(table.metric)} ×100</text>")
    parts += points + labels
    parts.append(_legend(items, legend_x, top))
    parts.append("</svg>")
    return "\n".join(parts)


def _padded_range(values: Sequence[float]) -> tuple[float, float, float]:
    """:func:`_nice_range` of ``values`` widened by 3% of their span on each side (at least 0.5
    points), so that no marker sits on the plot's frame; kept inside [0, 1] like the scores."""
    if not values:
        return 0.0, 1.0, 0.25
    lo, hi = min(values), max(values)
    pad = max(0.03 * (hi - lo), 0.005)
    return _nice_range(max(0.0, lo - pad) if lo >= 0 else lo - pad, min(1.0, hi + pad) if hi <= 1 else hi + pad)


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


def _nice_range(lo: float, hi: float, min_span: float = MIN_Y_SPAN) -> tuple[float, float, float]:
    """Axis limits on round numbers with 2-6 ticks, e.g. (0.48, 0.76) -> (0.4, 0.8, 0.1).

    The range spans at least ``min_span`` so a flat or nearly flat series is not blown up into
    apparent differences the data cannot resolve; the window is centred on the data and, for scores
    in [0, 1], kept inside [0, 1].
    """
    if hi - lo < min_span:
        mid = (lo + hi) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
        if 0.0 <= mid <= 1.0:
            shift = max(0.0, -lo) - max(0.0, hi - 1.0)
            lo, hi = lo + shift, hi + shift
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
    trusted = trusted_keys(Path(root))
    markdown = markdown_page(tables, protocol=protocol, trusted=trusted)
    page = html_page(tables, protocol=protocol, trusted=trusted)
    board.mkdir(parents=True, exist_ok=True)
    readme, index = board / "README.md", board / "index.html"
    write_text_atomic(readme, markdown)
    write_text_atomic(index, page)
    return readme, index
