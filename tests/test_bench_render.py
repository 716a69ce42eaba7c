"""Leaderboard files and pages: the store (atomic, no overwrite, strict reading) and the renderers.

Submissions are synthetic (see ``test_bench_schema.make_submission``); the tests check file
handling and the structure of the generated Markdown and HTML, not any result.
"""

from __future__ import annotations

import copy
import json
import os
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import f1_score
from test_bench_schema import TEST_LABELS, few_calls_submission, make_predictions, make_submission

from promptgym.bench import render as render_module
from promptgym.bench import store as store_module
from promptgym.bench.ranking import baseline_agents
from promptgym.bench.render import PROTOCOL_MARKER, render_html, render_markdown, write_leaderboard
from promptgym.bench.store import add_submission, dumps_submission, load_entries, submission_filename
from promptgym.errors import InvalidSubmissionError

SVG = "{http://www.w3.org/2000/svg}"
COLUMN = {h: i for i, h in enumerate(render_module.HEADERS)}
VS, AUC, CALLS = COLUMN["vs best baseline"], COLUMN["AUC"], COLUMN["Calls"]
HTML_AUC = render_module.HTML_HEADERS.index("AUC")  # the page's tables leave out the per-seed column


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _entries() -> list[dict[str, Any]]:
    """Four entries on one env/tier: a strong agent, one that equals a baseline, two baselines."""
    strong = make_submission("bdpl", predictions=make_predictions(TEST_LABELS, [0, 1, 0, 1, 0]), submitter="alice")
    twin = make_submission("bbt", predictions=make_predictions(TEST_LABELS, [12, 11, 13, 12, 12]), submitter="bob")
    manual = make_submission("manual", predictions=make_predictions(TEST_LABELS, [12, 11, 13, 12, 12]),
                             submitter="promptgym", created="2025-01-01T00:00:00Z")
    rand = make_submission("random", predictions=make_predictions(TEST_LABELS, [18, 19, 20, 18, 17]),
                           submitter="promptgym")
    return [twin, rand, strong, manual]


# ------------------------------------------------------------------------------------------ store
def test_filename_comes_from_validated_fields_only(tmp_path: Path) -> None:
    sub = make_submission("bdpl", tier="standard", created="2025-03-04T05:06:07+02:00")
    name = submission_filename(sub)
    assert re.fullmatch(r"2025-03-04_bdpl_standard_[0-9a-f]{12}\.json", name)
    other = copy.deepcopy(sub)
    other["runs"][0]["wall_seconds"] = 99.0
    assert submission_filename(other) != name  # content hash
    bad = copy.deepcopy(sub)
    bad["agent"]["name"] = "../../etc"
    with pytest.raises(InvalidSubmissionError, match="agent.name"):
        submission_filename(bad)


def test_add_submission_writes_once_and_reads_back(tmp_path: Path) -> None:
    sub = make_submission()
    path = add_submission(tmp_path, sub)
    assert path.parent == tmp_path / "leaderboards" / "PromptSST2-v0"
    assert path.name == submission_filename(sub)
    assert json.loads(path.read_text(encoding="utf-8")) == sub
    assert load_entries(tmp_path) == [sub]
    before = _snapshot(tmp_path)
    with pytest.raises(FileExistsError, match="already"):
        add_submission(tmp_path, sub)
    assert _snapshot(tmp_path) == before
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_add_submission_invalid_or_over_budget_changes_nothing(tmp_path: Path) -> None:
    add_submission(tmp_path, make_submission())
    before = _snapshot(tmp_path)
    bad = make_submission("other")
    bad["runs"][0]["test"]["ece"] = float("nan")
    with pytest.raises(InvalidSubmissionError, match=r"runs\[0\]\.test\.ece"):
        add_submission(tmp_path, bad)
    over = make_submission("other")
    over["runs"][1]["calls_used"] = 1001
    with pytest.raises(InvalidSubmissionError, match=r"runs\[1\]\.calls_used"):
        add_submission(tmp_path, over)
    assert _snapshot(tmp_path) == before


def test_add_submission_is_atomic_when_the_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = add_submission(tmp_path, make_submission())
    before = _snapshot(tmp_path)

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store_module.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        add_submission(tmp_path, make_submission("other"))
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before  # no partial file, no temp file, first entry intact
    assert first.exists()


def test_written_file_is_compact_enough_for_big_curves(tmp_path: Path) -> None:
    sub = make_submission()
    for run in sub["runs"]:
        run["curve"] = [[i // 10, 0.5] for i in range(run["calls_used"] * 10)][:10_000]
    text = dumps_submission(sub)
    assert len(text.encode()) < 5 * 1024 * 1024
    assert add_submission(tmp_path, sub).stat().st_size == len(text.encode())


def test_load_entries_is_strict(tmp_path: Path) -> None:
    assert load_entries(tmp_path) == []
    path = add_submission(tmp_path, make_submission())
    (path.parent / ".gitkeep").write_text("")  # hidden files are not entries
    assert len(load_entries(tmp_path)) == 1

    edited = json.loads(path.read_text())
    edited["runs"][0]["test"]["metric"] = 1.0
    path.write_text(json.dumps(edited))
    with pytest.raises(InvalidSubmissionError, match="file name does not match its content"):
        load_entries(tmp_path)

    edited["runs"][0]["test"]["ece"] = 2.0
    path.write_text(json.dumps(edited))
    with pytest.raises(InvalidSubmissionError, match=rf"{re.escape(path.name)}: runs\[0\]\.test\.ece"):
        load_entries(tmp_path)
    path.unlink()

    stray = tmp_path / "leaderboards" / "stray.json"
    stray.write_text("{}")
    with pytest.raises(InvalidSubmissionError, match="unexpected file"):
        load_entries(tmp_path)
    stray.unlink()

    wrong_dir = tmp_path / "leaderboards" / "PromptRTE-v0"
    wrong_dir.mkdir()
    sub = make_submission()
    (wrong_dir / submission_filename(sub)).write_text(dumps_submission(sub))
    with pytest.raises(InvalidSubmissionError, match="does not match its folder"):
        load_entries(tmp_path)


# ------------------------------------------------------------------------------------- markdown
def _table_rows(markdown: str) -> list[list[str]]:
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| Rank")]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in rows]


def test_markdown_has_a_sorted_row_per_entry_and_marks_baseline_ties() -> None:
    entries = _entries()
    md = render_markdown(entries, {"PromptSST2-v0": TEST_LABELS})
    assert md.count("## PromptSST2-v0 · lite tier (1,000 calls) · smollm2-135m · accuracy") == 1
    rows = _table_rows(md)
    assert [r[1] for r in rows] == ["bdpl", "manual", "bbt", "random"]  # by mean; tie -> earlier date first
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]
    by_agent = {r[1]: r for r in rows}
    assert by_agent["manual"][VS] == "best baseline"
    assert by_agent["bbt"][VS].startswith("≈ +0.0 [")  # identical predictions: not distinguishable
    assert not by_agent["bdpl"][VS].startswith("≈")  # clearly better
    assert by_agent["random"][VS].startswith("-")
    assert by_agent["bdpl"][4] == "99.0 ± 1.4"
    assert len(by_agent["bdpl"][6].split(" / ")) == 5
    assert "Test labels were not available" not in md
    assert "manual" in baseline_agents()


def test_markdown_without_labels_falls_back_to_ci_overlap() -> None:
    md = render_markdown(_entries(), None)
    assert "Test labels were not available" in md
    by_agent = {r[1]: r for r in _table_rows(md)}
    assert by_agent["bbt"][VS].startswith("≈") and by_agent["bbt"][VS].endswith("†")


def test_prompt_free_baselines_of_the_discrete_env_serve_the_other_env_kinds() -> None:
    """manual / calibrated use no learned prompt, so a subspace table is compared with them; random
    search in another space is not borrowed, and another task's baselines never are."""
    bbt = make_submission("bbt", predictions=make_predictions(TEST_LABELS, [0, 1, 0, 1, 0]),
                          env_id="PromptSST2-Subspace-v0")
    manual = make_submission("manual", predictions=make_predictions(TEST_LABELS, [12, 11, 13, 12, 12]))
    rand = make_submission("random", predictions=make_predictions(TEST_LABELS, [1, 1, 1, 1, 1]))
    rte_bbt = make_submission("bbt", env_id="PromptRTE-Subspace-v0")
    labels = {e: TEST_LABELS for e in ("PromptSST2-v0", "PromptSST2-Subspace-v0", "PromptRTE-Subspace-v0")}
    md = render_markdown([bbt, manual, rand, rte_bbt], labels)
    sections = {s.split("\n", 1)[0]: s for s in md.split("\n## ")[1:]}
    subspace = next(v for k, v in sections.items() if k.startswith("PromptSST2-Subspace-v0"))
    (row,) = _table_rows(subspace)
    assert row[1] == "bbt" and row[VS].startswith("+") and "[" in row[VS]  # vs manual, not vs random (better)
    assert "Best baseline: manual on PromptSST2-v0" in subspace
    rte = next(v for k, v in sections.items() if k.startswith("PromptRTE-Subspace-v0"))
    assert _table_rows(rte)[0][VS] == "—" and "No baseline has been submitted" in rte


def test_markdown_protocol_marker_and_empty_board() -> None:
    md = render_markdown([], None, protocol="## Protocol\n\nFull text.")
    assert PROTOCOL_MARKER in md
    assert md.index(PROTOCOL_MARKER) < md.index("Full text.") < md.index("<!-- /protocol -->")
    assert "No submissions yet" in md
    assert PROTOCOL_MARKER in render_markdown([], None)


def test_markdown_escapes_submitter_text() -> None:
    evil = make_submission(submitter="<script>x</script> | [a](http://e) *b*")
    md = render_markdown([evil], None)
    assert "<script>" not in md
    row = _table_rows(md)[0]
    assert len(row) == len(render_module.HEADERS)  # the '|' did not add a column
    assert "](http" not in md.replace("\\]", "")


def test_markdown_checks_claims_against_labels() -> None:
    sub = make_submission()
    sub["runs"][2]["test"]["metric"] = 0.99
    with pytest.raises(InvalidSubmissionError, match="claims test.metric 0.990000"):
        render_markdown([sub], {"PromptSST2-v0": TEST_LABELS})
    with pytest.raises(InvalidSubmissionError, match="test split has 39 rows"):
        render_markdown([make_submission()], {"PromptSST2-v0": TEST_LABELS[:39]})


def test_tables_split_by_env_and_tier_and_rendering_is_deterministic() -> None:
    entries = _entries() + [make_submission(tier="standard"), make_submission(env_id="PromptRTE-v0")]
    md = render_markdown(entries, {"PromptSST2-v0": TEST_LABELS})
    titles = re.findall(r"^## (.+)$", md, flags=re.M)
    assert titles == ["PromptRTE-v0 · lite tier (1,000 calls) · smollm2-135m · accuracy",
                      "PromptSST2-v0 · standard tier (8,000 calls) · smollm2-135m · accuracy",
                      "PromptSST2-v0 · lite tier (1,000 calls) · smollm2-135m · accuracy"]
    assert md == render_markdown(list(reversed(entries)), {"PromptSST2-v0": TEST_LABELS})
    assert "No baseline has been submitted" in md


def test_a_table_per_model_with_the_default_models_anchor_unchanged() -> None:
    gemma = [make_submission(agent, model="gemma3-270m", submitter="g") for agent in ("manual", "bbt")]
    doc = ET.fromstring(render_html(_entries() + gemma, {"PromptSST2-v0": TEST_LABELS}))
    sections = doc.findall(".//section")
    assert [sec.get("id") for sec in sections] == ["promptsst2-v0-lite", "promptsst2-v0-lite-gemma3-270m"]
    titles = [_text(sec.find("h2")) for sec in sections]  # type: ignore[arg-type]
    assert titles == ["PromptSST2-v0 · lite tier (1,000 calls) · smollm2-135m · accuracy",
                      "PromptSST2-v0 · lite tier (1,000 calls) · gemma3-270m · accuracy"]
    models = [{_text(tr[3]) for tr in sec.iter("tr") if tr[0].tag == "td"} for sec in sections]
    assert models == [{"smollm2-135m"}, {"gemma3-270m"}]
    ranks = [_text(tr[0]) for tr in sections[1].iter("tr") if tr[0].tag == "td"]
    assert ranks == ["1", "2"]  # ranked among Gemma's rows only
    links = [a.get("href") for a in doc.iter("a")]
    assert "#promptsst2-v0-lite" in links and "#promptsst2-v0-lite-gemma3-270m" in links


# ----------------------------------------------------------------------------------------- html
class _TagBalance(HTMLParser):
    VOID = {"meta", "br", "img", "hr", "input", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.external.append(value)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def test_html_is_self_contained_and_well_formed() -> None:
    entries = _entries() + [make_submission(tier="standard", submitter="<b>&amp; \"q\"</b>")]
    page = render_html(entries, {"PromptSST2-v0": TEST_LABELS}, protocol="Protocol <text> & more")
    checker = _TagBalance()
    checker.feed(page)
    assert checker.errors == [] and checker.stack == []
    assert checker.external == []  # no external assets: readable offline
    assert "<script" not in page and "<b>&amp;" not in page

    doc = ET.fromstring(page)  # strict XML parse: every tag closed, every entity escaped
    tables = doc.findall(".//table")
    assert len(tables) == 2
    assert [len(t.findall("./tbody/tr")) for t in tables] == [1, 4]
    assert [th.text for th in tables[1].findall("./thead/tr/th")] == list(render_module.HTML_HEADERS)
    svgs = doc.findall(f".//{SVG}svg")
    # scores first, then score against ECE, then curves
    assert [svg.get("class") for svg in svgs] == ["ci", "calibration", "curves"] * 2
    for svg, n_entries in zip(svgs[2::3], (1, 4)):
        width, height = (float(v) for v in svg.get("viewBox", "").split()[2:])
        lines = svg.findall(f"{SVG}polyline")
        assert len(lines) == n_entries
        for line in lines:
            points = [tuple(map(float, pt.split(","))) for pt in line.get("points", "").split()]
            assert len(points) >= 2
            assert all(0 <= px <= width and 0 <= py <= height for px, py in points)
            assert np.all(np.diff([px for px, _ in points]) >= 0)  # a staircase in calls
            assert line.find(f"{SVG}title") is not None
    assert "Protocol &lt;text&gt; &amp; more" in page


def test_html_marks_not_distinguishable_entries() -> None:
    doc = ET.fromstring(render_html(_entries(), {"PromptSST2-v0": TEST_LABELS}))
    same = [_text(td) for td in doc.iter("td") if td.get("class", "").split().count("same")]
    assert len(same) == 1 and same[0].startswith("≈")
    assert len([tr for tr in doc.iter("tr") if tr.get("class") == "baseline"]) == 2


def test_html_handles_entries_without_curves() -> None:
    sub = make_submission()
    for run in sub["runs"]:
        run["curve"] = []
    doc = ET.fromstring(render_html([sub], None))
    svg = doc.find(f".//{SVG}svg[@class='curves']")
    assert svg is not None and svg.findall(f"{SVG}polyline") == []
    legend = "".join(svg.find(f"{SVG}g[@class='legend']").itertext())  # type: ignore[union-attr]
    assert "no dev curve" in legend


def _text(el: ET.Element) -> str:
    """A cell's text as the browser shows it (name and submitter cells hold one span per word)."""
    return "".join(el.itertext())


def _section(doc: ET.Element, i: int = 0) -> ET.Element:
    return doc.findall(".//section")[i]


def _numbers(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", text)]


def test_auc_does_not_apply_to_entries_without_a_dev_curve() -> None:
    entries = [few_calls_submission("manual", 0, 0.6, predictions=make_predictions(TEST_LABELS, [12, 11, 13, 12, 12])),
               few_calls_submission("calibrated", 2, 0.6), make_submission("bdpl")]
    md = render_markdown(entries, {"PromptSST2-v0": TEST_LABELS})
    by_agent = {r[1]: r for r in _table_rows(md)}
    assert by_agent["manual"][AUC] == "–" and by_agent["manual"][CALLS] == "0"  # not "0.0": AUC does not apply
    assert by_agent["calibrated"][AUC] == "59.9" and by_agent["bdpl"][AUC] not in ("–", "0.0")
    doc = ET.fromstring(render_html(entries, {"PromptSST2-v0": TEST_LABELS}))
    cells = {_text(tr[1]): [_text(td) for td in tr] for tr in doc.iter("tr") if tr[0].tag == "td"}
    assert cells["manual"][HTML_AUC] == "–" and cells["calibrated"][HTML_AUC] == "59.9"


def test_call_counts_use_thousands_separators_everywhere() -> None:
    sub = make_submission(tier="standard")
    for run in sub["runs"]:
        run["calls_used"] = 7999
    short = make_submission("random", tier="lite")
    for run in short["runs"]:
        run["calls_used"] = 999
    md = render_markdown([sub, short], None)
    page = render_html([sub, short], None)
    assert {r[CALLS] for r in _table_rows(md)} == {"7,999", "999"}
    doc = ET.fromstring(page)
    text = " ".join("".join(el.itertext()) for el in doc.iter() if el.tag in ("td", "th", "h2", "figcaption", "p")
                    or el.tag == f"{SVG}text")
    assert "8,000" in text and "1,000" in text and "7,999" in text
    bare = [n for n in re.findall(r"(?<![\d,.-])\d{4,}(?![\d-])", text) if not re.fullmatch(r"20\d\d", n)]
    assert bare == []  # no "1000" or "7999" next to "1,000"


def test_table_cells_never_break_inside_words() -> None:
    page = render_html(_entries(), None)
    css = page[page.index("<style>"):page.index("</style>")]
    td_rule = re.search(r"th, td \{([^}]*)\}", css)
    assert td_rule and "white-space: nowrap" in td_rule.group(1) and "word-break: keep-all" in td_rule.group(1)
    assert "overflow-wrap: anywhere" not in css and "break-all" not in css and "hyphens: auto" not in css
    words = re.search(r"td\.words \{([^}]*)\}", css)  # the submitter may wrap between words only
    assert words and "overflow-wrap: normal" in words.group(1)
    doc = ET.fromstring(page)
    for tr in doc.iter("tr"):
        if tr[0].tag == "td":
            assert [i for i, td in enumerate(tr) if "words" in (td.get("class") or "")] == [2]
            for td in (tr[1], tr[2]):  # agent and submitter: every word a no-wrap span (a hyphen is no break)
                assert td.text is None and [w.text for w in td] == _text(td).split()
                assert all(w.tag == "span" and w.get("class") == "word" for w in td)
    span = re.search(r"span\.word \{([^}]*)\}", css)
    assert span and "white-space: nowrap" in span.group(1)


def test_few_call_baselines_are_reference_lines_not_curves() -> None:
    entries = [make_submission("bdpl"), few_calls_submission("calibrated", 2, 0.625),
               few_calls_submission("manual", 0, 0.6, predictions=make_predictions(TEST_LABELS, [12, 11, 13, 12, 12]))]
    doc = ET.fromstring(render_html(entries, {"PromptSST2-v0": TEST_LABELS}))
    svg = _section(doc).find(f".//{SVG}svg[@class='curves']")
    assert svg is not None
    assert [p.find(f"{SVG}title").text for p in svg.findall(f"{SVG}polyline")] == ["1. bdpl (unit test)"]  # type: ignore[union-attr]
    (ref,) = svg.findall(f"{SVG}line[@class='reference']")
    assert ref.get("y1") == ref.get("y2") and ref.get("stroke-dasharray")  # horizontal, dashed
    assert "62.5" in (ref.find(f"{SVG}title").text or "")  # type: ignore[union-attr]
    (label,) = svg.findall(f"{SVG}text[@class='halo reference-label']")
    assert label.text == "calibrated (2 calls)"
    legend = [t.text or "" for t in svg.find(f"{SVG}g[@class='legend']").iter(f"{SVG}text")]  # type: ignore[union-attr]
    assert legend == ["1. bdpl (unit test)", "2. calibrated (promptgym): reference, 2 calls",
                      "3. manual (promptgym): 0 calls, no dev curve"]
    assert all(len(t) <= 80 and "…" not in t for t in legend)  # nothing cut to "(no curv…"


def test_legends_are_inside_their_figures_in_readable_type() -> None:
    long = make_submission("bdpl", submitter="a submitter with a rather long name, longer than most")
    page = render_html([long, few_calls_submission("calibrated", 2, 0.6), few_calls_submission("manual", 0, 0.6)], None)
    assert re.search(r"svg text \{[^}]*font-size: (\d+)px", page).group(1) >= "12"  # type: ignore[union-attr]
    doc = ET.fromstring(page)
    for svg in doc.iter(f"{SVG}svg"):
        width = float(svg.get("width", "0"))
        legend = svg.find(f"{SVG}g[@class='legend']")
        assert legend is not None
        x0, y0 = _numbers(legend.get("transform", ""))
        for text in legend.iter(f"{SVG}text"):
            right = x0 + float(text.get("x", "0")) + render_module.CHAR_PX * len(text.text or "")
            assert right <= width, (svg.get("class"), text.text)  # generous glyph width: the browser check measures
        bottom = max(float(t.get("y", "0")) for t in legend.iter(f"{SVG}text")) + 5  # baseline + descenders
        assert y0 + bottom <= float(svg.get("height", "0"))


def test_a_score_ci_chart_per_table_marks_baselines_and_the_best_baseline() -> None:
    entries = _entries() + [make_submission(env_id="PromptRTE-v0")]
    doc = ET.fromstring(render_html(entries, {"PromptSST2-v0": TEST_LABELS}))
    sections = doc.findall(".//section")
    assert len(sections) == 2
    assert all(len(sec.findall(f".//{SVG}svg[@class='ci']")) == 1 for sec in sections)
    svg = sections[1].find(f".//{SVG}svg[@class='ci']")
    assert svg is not None
    dots = [el for el in svg if (el.get("class") or "").startswith("dot")]
    whiskers = svg.findall(f"{SVG}line[@class='whisker']")
    assert len(dots) == len(whiskers) == 4
    names = [(d.find(f"{SVG}title").text or "").split(":")[0] for d in dots]  # type: ignore[union-attr]
    assert names == ["1. bdpl (alice)", "2. manual (promptgym)", "3. bbt (bob)", "4. random (promptgym)"]
    assert [d.get("class") for d in dots] == ["dot", "dot baseline", "dot", "dot baseline"]
    rows = {_text(tr[1]): [_text(td) for td in tr] for tr in sections[1].iter("tr") if tr[0].tag == "td"}
    for dot, whisker, name in zip(dots, whiskers, names):
        lo, hi = _numbers(rows[name.split()[1]][5])
        assert (dot.find(f"{SVG}title").text or "").endswith(f"[{lo:.1f}, {hi:.1f}]")  # type: ignore[union-attr]
        x1, x2 = float(whisker.get("x1", "0")), float(whisker.get("x2", "0"))
        cx = float(dot.get("cx") or _numbers(dot.get("d", ""))[0])
        assert x1 <= cx <= x2
    (best,) = svg.findall(f"{SVG}line[@class='best-baseline']")
    manual_dot = dots[1]
    assert abs(float(best.get("x1", "0")) - _numbers(manual_dot.get("d", ""))[0]) < 0.11  # at manual's mean
    # the RTE table has no baseline: a CI chart still, and no best-baseline line
    rte = sections[0].find(f".//{SVG}svg[@class='ci']")
    assert rte is not None and rte.findall(f"{SVG}line[@class='best-baseline']") == []


def test_score_axes_have_a_minimum_span() -> None:
    for lo, hi in ((0.5, 0.5), (0.62, 0.63), (0.0, 0.0), (1.0, 1.0), (0.995, 1.0), (0.48, 0.76)):
        low, high, step = render_module._nice_range(lo, hi)
        assert high - low >= render_module.MIN_Y_SPAN - 1e-9 and low <= lo and high >= hi
        assert low >= 0.0 and high <= 1.0  # scores in [0, 1] keep their axis in [0, 1]
        assert 2 <= round((high - low) / step) <= 6
    assert render_module._nice_range(0.48, 0.76) == (0.4, 0.8, 0.1)
    # a flat curve is not zoomed to a couple of points
    flat = make_submission()
    for run in flat["runs"]:
        run["curve"] = [[10, 0.6875], [run["calls_used"], 0.6875]]
    svg = ET.fromstring(render_html([flat], None)).find(f".//{SVG}svg[@class='curves']")
    assert svg is not None
    ticks = [float(t.text or "") for t in svg.findall(f"{SVG}text[@text-anchor='end']") if t.get("class") is None]
    assert max(ticks) - min(ticks) >= 100 * render_module.MIN_Y_SPAN


# -------------------------------------------------------------------------------------- writing
def test_write_leaderboard(tmp_path: Path) -> None:
    for sub in _entries():
        add_submission(tmp_path, sub)
    board = tmp_path / "leaderboards"
    (board / "PROTOCOL.md").write_text("## Protocol\n\nHand-written.\n", encoding="utf-8")
    readme, index = write_leaderboard(tmp_path, {"PromptSST2-v0": TEST_LABELS})
    assert (readme, index) == (board / "README.md", board / "index.html")
    text = readme.read_text(encoding="utf-8")
    assert "Hand-written." in text and len(_table_rows(text)) == 4
    ET.fromstring(index.read_text(encoding="utf-8"))
    first = _snapshot(tmp_path)
    write_leaderboard(tmp_path, {"PromptSST2-v0": TEST_LABELS})
    assert _snapshot(tmp_path) == first  # regenerating changes no byte
    assert not [p for p in os.listdir(board) if p.startswith(".")]
    assert len(load_entries(tmp_path)) == 4  # generated pages are not mistaken for entries


# ------------------------------------------------------------------------ uncertainty and calibration
def _reliability_entries() -> list[dict[str, Any]]:
    """bbt and bbt + calibration with uncertainty metrics (different ECEs), and an old manual entry."""
    entries = []
    for agent, flips, ece, calibrated in (("bbt", 8, 0.20, False), ("bbt", 2, 0.04, True), ("manual", 12, 0.30, False)):
        sub = make_submission(agent, predictions=make_predictions(TEST_LABELS, [flips] * 5),
                              submitter="promptgym-baselines")
        for run in sub["runs"]:
            run["test"]["ece"] = ece
            if agent != "manual":
                run["test"].update(nll=0.6127, brier=0.4, aurc=0.25, aurc_10bin=0.26,
                                   ood={"rte": {"auroc_maxprob": 0.625, "auroc_entropy": 0.6}})
        if calibrated:
            sub["calibration"] = True
        entries.append(sub)
    return entries


def test_tables_show_nll_aurc_ood_and_dashes_for_old_entries() -> None:
    md = render_markdown(_reliability_entries(), {"PromptSST2-v0": TEST_LABELS})
    rows = {r[1]: r for r in _table_rows(md)}
    assert list(rows) == ["bbt + calibration", "bbt", "manual"]
    cols = [COLUMN[h] for h in ("ECE", "NLL", "AURC", "OOD AUROC")]
    assert [rows["bbt + calibration"][i] for i in cols] == ["4.0", "0.613", "25.0", "62.5"]
    assert [rows["manual"][i] for i in cols] == ["30.0", "–", "–", "–"]  # submitted before the metrics existed
    assert "**NLL**" in md and "**OOD AUROC**" in md and '"+ calibration"' in md
    doc = ET.fromstring(render_html(_reliability_entries(), {"PromptSST2-v0": TEST_LABELS}))
    cells = {_text(tr[1]): [_text(td) for td in tr] for tr in doc.iter("tr") if tr[0].tag == "td"}
    html_cols = [render_module.HTML_HEADERS.index(h) for h in ("ECE", "NLL", "AURC", "OOD AUROC")]
    assert [cells["bbt + calibration"][i] for i in html_cols] == ["4.0", "0.613", "25.0", "62.5"]
    assert [cells["manual"][i] for i in html_cols] == ["30.0", "–", "–", "–"]


def test_page_plots_each_entrys_score_against_its_ece() -> None:
    entries = _reliability_entries()
    doc = ET.fromstring(render_html(entries, {"PromptSST2-v0": TEST_LABELS}))
    svg = _section(doc).find(f".//{SVG}svg[@class='calibration']")
    assert svg is not None
    width, height = (float(v) for v in svg.get("viewBox", "").split()[2:])
    points = [p for p in svg if p.get("class", "").startswith("point")]
    assert len(points) == 3  # one marker per entry, in rank order
    names = ["".join(p.find(f"{SVG}title").itertext()) for p in points]  # type: ignore[union-attr]
    assert names[0].startswith("1. bbt + calibration") and "ECE 4.0" in names[0]
    assert points[2].get("class") == "point baseline" and points[2].tag == f"{SVG}path"  # manual: a diamond
    xs = [float(p.get("cx")) for p in points[:2]] + [float(points[2].get("d", "").split(",")[0][1:])]
    ys = [float(p.get("cy")) for p in points[:2]] + [float(points[2].get("d", "").split(",")[1].split()[0]) + 5.5]
    assert xs[0] < xs[1] < xs[2]  # ECE 4 < 20 < 30: left to right
    assert ys[0] < ys[1] < ys[2]  # score: higher is up (smaller y)
    assert all(0 < v < width for v in xs) and all(0 < v < height for v in ys)
    labels = [t.text for t in svg.findall(f"{SVG}text") if t.get("class") == "halo"]
    assert labels == ["1", "2", "3"]
    legend = "".join(svg.find(f"{SVG}g[@class='legend']").itertext())  # type: ignore[union-attr]
    assert "1. bbt + calibration (promptgym-baselines)" in legend and "3. manual" in legend


def test_ci_chart_draws_every_seed_and_the_score_cell_lists_them() -> None:
    doc = ET.fromstring(render_html(_reliability_entries(), {"PromptSST2-v0": TEST_LABELS}))
    svg = _section(doc).find(f".//{SVG}svg[@class='ci']")
    assert svg is not None
    seeds = [c for c in svg.findall(f"{SVG}circle") if c.get("class") == "seed"]
    assert len(seeds) == 3 * 5
    rows = [tr for tr in _section(doc).iter("tr") if tr[0].tag == "td"]
    score = rows[0][render_module.HTML_HEADERS.index("Score")]
    assert score.get("title", "").startswith("seeds 13/21/42/87/100: ") and score.get("title", "").count(" / ") == 4
    assert "Seeds 13/21/42/87/100" not in render_module.HTML_HEADERS  # drawn, not a column, on the page


# ----------------------------------------------------------------------------- task-limited columns
def _mrpc_and_sst2() -> list[dict[str, Any]]:
    """Two MRPC entries (F1, where the macro-F1 applies) and an SST-2 one (accuracy, where it does not)."""
    mrpc = [make_submission(agent, metric="f1", env_id="PromptMRPC-v0",
                            predictions=make_predictions(TEST_LABELS, flips))
            for agent, flips in (("bbt", [2, 4, 6, 8, 10]), ("manual", [12] * 5))]
    return [*mrpc, make_submission("bdpl")]


def test_macro_f1_is_a_column_of_the_tables_it_applies_to_only() -> None:
    labels = {"PromptMRPC-v0": TEST_LABELS, "PromptSST2-v0": TEST_LABELS}
    md = render_markdown(_mrpc_and_sst2(), labels)
    sections = {s.split(" ", 1)[0]: s for s in md.split("\n## ")[1:]}
    mrpc_header = next(line for line in sections["PromptMRPC-v0"].splitlines() if line.startswith("| Rank"))
    columns = [c.strip() for c in mrpc_header.strip("|").split("|")]
    assert columns[columns.index("Calls") + 1] == "Macro-F1" and len(columns) == len(render_module.HEADERS) + 1
    assert "Macro-F1" not in sections["PromptSST2-v0"] and "Macro-F1" not in render_module.HEADERS
    rows = {r[1]: r for r in _table_rows(sections["PromptMRPC-v0"])}
    for agent, flips in (("bbt", [2, 4, 6, 8, 10]), ("manual", [12] * 5)):
        expected = np.mean([f1_score(TEST_LABELS, p, average="macro") for p in make_predictions(TEST_LABELS, flips)])
        assert rows[agent][columns.index("Macro-F1")] == f"{100 * expected:.1f}"  # derived from the predictions
    doc = ET.fromstring(render_html(_mrpc_and_sst2(), labels))
    heads = {s.get("id"): [_text(th) for th in s.iter("th")] for s in doc.iter("section")}
    assert heads["promptmrpc-v0-lite"] == [c for c in columns if not c.startswith("Seeds ")]
    assert heads["promptsst2-v0-lite"] == list(render_module.HTML_HEADERS)
    assert "**Macro-F1** (MRPC, QQP, CoLA only):" in md  # the summary defines it, from the registry


def test_a_derived_column_is_not_available_without_the_test_labels() -> None:
    md = render_markdown(_mrpc_and_sst2(), None)
    section = next(s for s in md.split("\n## ")[1:] if s.startswith("PromptMRPC-v0"))
    header = next(line for line in section.splitlines() if line.startswith("| Rank"))
    column = [c.strip() for c in header.strip("|").split("|")].index("Macro-F1")
    assert {row[column] for row in _table_rows(section)} == {render_module.NOT_APPLICABLE}


def test_the_summary_is_wrapped_without_breaking_markdown() -> None:
    lines = render_module.summary().splitlines()
    assert max(len(line) for line in lines) <= 100
    assert not [line for line in lines if re.match(r"([-+*#>]|\d+[.)])(\s|$)", line)]  # no list, heading, quote
    assert all(line.count("**") % 2 == 0 for line in lines)  # no bold term broken across lines
