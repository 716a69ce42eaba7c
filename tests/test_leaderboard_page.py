"""The leaderboard page in a real headless browser (``benchmarks/page_check.py``), and ``curve.png``.

The browser tests need Playwright and a Chromium (Debian's ``chromium`` package; Playwright drives
it, no browser download). Without them they skip, unless ``PROMPTGYM_REQUIRE_BROWSER=1`` (set in
CI, which installs Chromium): then a missing browser is a failure, so the check cannot silently
stop running.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_bench_schema import TEST_LABELS, few_calls_submission, make_predictions, make_submission

from promptgym.bench.render import render_html
from promptgym.bench.store import load_entries
from promptgym.lm.receipts import RECEIPT_FORMAT, Entry, extend
from promptgym.runs import curve_title, plot_curve
from promptgym.serve.receipts import ReceiptSigner

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "leaderboards" / "index.html"


@pytest.fixture(scope="module")
def page_check(benchmark_script: Any) -> Any:
    return benchmark_script("page_check")


@pytest.fixture(scope="module")
def browser(page_check: Any) -> None:
    reason = page_check.browser_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("PROMPTGYM_REQUIRE_BROWSER") == "1":
        pytest.fail(f"PROMPTGYM_REQUIRE_BROWSER=1 but the browser check cannot run: {reason}")
    pytest.skip(f"browser check skipped: {reason} (set PROMPTGYM_REQUIRE_BROWSER=1 to make this a failure)")


def _calibrated(agent: str, flips: list[int]) -> dict[str, Any]:
    """A "+ calibration" entry with every uncertainty metric (the widest kind of row)."""
    sub = make_submission(agent, predictions=make_predictions(TEST_LABELS, flips), submitter="promptgym-baselines")
    sub["calibration"] = True
    for i, run in enumerate(sub["runs"]):
        run["test"].update(ece=0.1 + 0.01 * i, nll=0.6, brier=0.4, aurc=0.2, aurc_10bin=0.21,
                           ood={"rte": {"auroc_maxprob": 0.6, "auroc_entropy": 0.55}})
    return sub


def _budget_verified(agent: str, signer: ReceiptSigner) -> dict[str, Any]:
    """An entry whose runs carry receipts ``signer`` signed (the page checks signatures and chains, not
    prompts: those were checked when it was submitted)."""
    sub = make_submission(agent, predictions=make_predictions(TEST_LABELS, [2, 3, 2, 3, 2]), submitter="ci")
    for i, run in enumerate(sub["runs"]):
        entries = [[f"{i}{k}".ljust(64, "a"), "b" * 64, "c" * 64] for k in range(3)]
        prefix = "d" * 64
        body = {"format": RECEIPT_FORMAT, "signer": signer.fingerprint, "key": f"seed-{run['seed']}",
                "key_id": f"{i}".rjust(32, "e"), "model": sub["model"]["name"],
                "model_sha256": sub["model"]["weights_sha256"], "dtype": "bfloat16",
                "calls": run["calls_used"] + 3, "examples": 100, "first_call": "", "last_call": "",
                "head": extend(prefix, [Entry(*e) for e in entries]), "issued": ""}
        run["receipt"] = {"body": body, "signature": signer.sign(body), "prefix_head": prefix, "entries": entries}
    return sub


def _synthetic_page(tmp_path: Path) -> Path:
    """A page with what the committed one has (curves, a 2-call and a 0-call baseline, a table
    without baseline) plus a long submitter name, calibrated entries with uncertainty metrics, a
    budget-verified entry and a standard-tier table."""
    signer = ReceiptSigner.load_or_create(tmp_path / "receipt-key.pem")
    entries = [
        _budget_verified("bbt", signer),
        make_submission("bdpl", predictions=make_predictions(TEST_LABELS, [0, 1, 0, 1, 0]),
                        submitter="a submitter with a rather long name, longer than most"),
        _calibrated("bdpl", [1, 1, 0, 1, 0]),
        _calibrated("ensemble", [4, 5, 3, 4, 5]),
        make_submission("random", predictions=make_predictions(TEST_LABELS, [18, 19, 20, 18, 17]),
                        submitter="promptgym-baselines"),
        few_calls_submission("calibrated", 2, 0.625, submitter="promptgym-baselines"),
        few_calls_submission("manual", 0, 0.5, submitter="promptgym-baselines",
                             predictions=make_predictions(TEST_LABELS, [12, 11, 13, 12, 12])),
        make_submission("bbt", env_id="PromptRTE-v0"),
        make_submission("bbt", tier="standard"),
    ]
    path = tmp_path / "index.html"
    page = render_html(entries, {"PromptSST2-v0": TEST_LABELS}, trusted={signer.fingerprint: signer.public_key})
    assert page.count("✓</td>") == 1 and page.count('title="budget verified') == 1
    path.write_text(page, encoding="utf-8")
    return path


def test_problems_are_reported_for_clipped_legends_and_console_errors(page_check: Any) -> None:
    """The checks themselves, on made-up measurements (no browser needed)."""
    box = {"left": 0.0, "top": 0.0, "right": 500.0, "bottom": 300.0, "width": 500.0, "height": 300.0}
    inside = {"left": 10.0, "top": 10.0, "right": 200.0, "bottom": 60.0, "width": 190.0, "height": 50.0}
    clipped = dict(inside, right=540.0)
    fig = {"section": "s", "kind": "curves", "figure": box, "svg": box, "legends": [inside],
           "legendTexts": [dict(inside, text="1. bdpl")], "fontSizes": [12.0], "overflowing": False}
    good = {"sections": 1, "tables": 1, "wideTables": [], "wrapped": [], "pageWidth": 1400, "viewWidth": 1400,
            "figures": [fig, dict(fig, kind="ci"), dict(fig, kind="calibration")]}
    assert page_check.problems_in(good, []) == []
    bad = dict(good, figures=[dict(fig, legends=[clipped], legendTexts=[dict(clipped, text="(no curv")],
                                   fontSizes=[11.0]), dict(fig, kind="ci"), dict(fig, kind="calibration")],
               wrapped=["calibrat ed"])
    problems = page_check.problems_in(bad, ["error: boom"])
    assert problems[0] == "console: error: boom"
    assert any("legend box" in p for p in problems) and any("'(no curv' is clipped" in p for p in problems)
    assert any("smaller than 12 px" in p for p in problems)
    assert any("breaks inside a word: 'calibrat ed'" in p for p in problems)
    assert "s: charts ['curves'], expected ci, calibration, curves" in page_check.problems_in(
        dict(good, figures=[fig]), [])


def test_synthetic_page_passes_in_a_headless_browser(page_check: Any, browser: None, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    assert page_check.check_page(_synthetic_page(tmp_path), shot) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(shot.read_bytes()[16:20], "big") == page_check.WIDTH  # PNG IHDR width


def test_browser_check_catches_a_clipped_legend_and_a_broken_word(page_check: Any, browser: None,
                                                                   tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><body><section id="s"><table><tr><td style="max-width: 3em; '
        'overflow-wrap: anywhere; white-space: normal">calibrated</td></tr></table>'
        '<figure><svg xmlns="http://www.w3.org/2000/svg" class="curves" width="200" height="100">'
        '<g class="legend" transform="translate(120,10)"><text x="0" y="12" style="font-size: 11px">'
        '1. manual (promptgym-baselines) (no curve)</text></g></svg></figure></section>'
        "<script>console.error('boom')</script></body></html>", encoding="utf-8")
    problems = page_check.check_page(page, None)
    assert "console: error: boom" in problems
    assert any("legend box" in p for p in problems) and any("is clipped" in p for p in problems)
    assert any("smaller than 12 px" in p for p in problems)
    assert any("breaks inside a word: 'calibrated'" in p for p in problems)


def test_committed_page_passes_in_a_headless_browser(page_check: Any, browser: None, tmp_path: Path) -> None:
    assert PAGE.is_file()
    assert page_check.check_page(PAGE, tmp_path / "shot.png") == []


def test_committed_screenshot_is_a_1400_px_png() -> None:
    shot = ROOT / "leaderboards" / "screenshot.png"
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(data[16:20], "big") == 1400
    assert load_entries(ROOT)  # the screenshot is a known top-level file, not a stray submission


# ---------------------------------------------------------------------------------- curve.png
def test_curve_png_has_plain_y_ticks_one_x_label_and_a_full_title(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = {"env_id": "PromptSST2-v0", "agent": "bbt", "model": "smollm2-135m", "split_seed": 13, "seed": 0,
              "budget": 1000}
    title = curve_title(config)
    for part in ("bbt", "PromptSST2-v0", "smollm2-135m", "split seed 13", "agent seed 0", "budget 1,000 calls"):
        assert part in title
    # a nearly flat train reward: matplotlib's default would print an offset like "1e-5−6.938e-1"
    rows = [(20 * i, -0.69381 + 1e-6 * i, 0.5 + 0.03125 * (i // 4)) for i in range(12)]
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to inspect it
    plot_curve(tmp_path / "curve.png", "calls", rows, "accuracy", title=title)
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (fig,) = figures
    fig.canvas.draw()
    assert fig._suptitle.get_text() == title
    assert fig._supxlabel.get_text() == "LM calls"
    for ax in fig.axes:
        assert ax.get_xlabel() == ""  # one x label for both panels
        assert ax.yaxis.get_offset_text().get_text() == ""
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        assert labels and not any("e" in s.lower() for s in labels)
        lo, hi = ax.get_ylim()
        assert hi - lo >= 0.1 - 1e-9  # a flat curve is not zoomed into noise
    assert np.isclose(np.mean(figures[0].axes[0].get_ylim()), -0.69381 + 5.5e-6, atol=1e-3)
    plt.close("all")
