"""Check the leaderboard page in a real headless browser, and keep a screenshot of it.

    python benchmarks/page_check.py [leaderboards/index.html] [--screenshot leaderboards/screenshot.png]

Opens the page in Chromium (driven by Playwright, using the system's Chromium: Debian's
``chromium`` package, ``/usr/bin/chromium``; no browser download) at 1400 px wide and checks that:

* it renders: one section per table, each with its score-CI chart, its score-against-ECE chart and
  its learning-curve chart, every chart visible with a non-zero size;
* every chart's legend box lies inside its figure (the SVG) and the figure inside the page's
  content: nothing clipped, no horizontal scrolling needed for a chart or a table;
* chart text is at least 12 px;
* no table cell breaks a line inside a word (no "calibrat/ed", "smollm2-/135m");
* the console shows no errors, the page throws none and requests nothing that fails.

Then it writes a full-page screenshot (1400 px wide). Exit status 0 when every check passes, 1
otherwise (each failure on its own line), 2 when no browser can be started. ``check_page`` is what
``tests/test_leaderboard_page.py`` calls.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "leaderboards" / "index.html"
SCREENSHOT = ROOT / "leaderboards" / "screenshot.png"
WIDTH = 1400
MIN_FONT_PX = 12
CHART_KINDS = ("ci", "calibration", "curves")  # the charts of every section, by their SVG class
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserUnavailable(RuntimeError):
    """No Chromium binary, or Playwright is not installed."""


def find_chromium() -> str | None:
    """The Chromium to drive: ``$PROMPTGYM_CHROMIUM`` when set, else the first on PATH."""
    env = os.environ.get("PROMPTGYM_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_unavailable_reason() -> str | None:
    """Why :func:`check_page` cannot run here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install playwright; no browser download is needed)"
    if find_chromium() is None:
        return "no Chromium found (apt-get install chromium, or set PROMPTGYM_CHROMIUM)"
    return None


# Runs in the page; returns the measurements the checks need (all in CSS pixels).
_MEASURE = r"""
() => {
  const rect = (el) => { const r = el.getBoundingClientRect();
    return {left: r.left + scrollX, top: r.top + scrollY, right: r.right + scrollX, bottom: r.bottom + scrollY,
            width: r.width, height: r.height}; };
  const figures = [...document.querySelectorAll("section figure")].map((fig) => {
    const svg = fig.querySelector('svg');
    const section = fig.closest('section');
    return {
      section: section ? section.id : '',
      kind: svg ? svg.getAttribute('class') : '',
      figure: rect(fig), svg: svg ? rect(svg) : null,
      legends: svg ? [...svg.querySelectorAll('g.legend')].map(rect) : [],
      legendTexts: svg ? [...svg.querySelectorAll('g.legend text')].map((t) => ({text: t.textContent, ...rect(t)}))
                       : [],
      fontSizes: svg ? [...svg.querySelectorAll('text')].map((t) => parseFloat(getComputedStyle(t).fontSize)) : [],
      overflowing: fig.scrollWidth > fig.clientWidth + 1,
    };
  });
  const wrapped = [];  // cells with a line break inside a word ("calibrat|ed", "smollm2-|135m")
  const range = document.createRange();
  for (const td of document.querySelectorAll('td, th')) {
    const walker = document.createTreeWalker(td, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const text = node.textContent;
      let top = null;
      for (let i = 0; i < text.length; i++) {
        range.setStart(node, i); range.setEnd(node, i + 1);
        const rects = range.getClientRects();
        if (!rects.length) continue;
        const t = rects[0].top;
        if (top !== null && t > top + 2 && i > 0 && /\S/.test(text[i - 1]) && /\S/.test(text[i])) {
          wrapped.push(td.textContent);
        }
        top = t;
      }
    }
  }
  return {
    sections: document.querySelectorAll('section').length,
    tables: document.querySelectorAll('section table').length,
    wideTables: [...document.querySelectorAll('section table')].filter(
      (t) => t.parentElement.scrollWidth > t.parentElement.clientWidth + 1).map((t) => t.closest('section').id),
    figures, wrapped,
    pageWidth: document.documentElement.scrollWidth, viewWidth: document.documentElement.clientWidth,
  };
}
"""


def _inside(inner: dict[str, float], outer: dict[str, float], slack: float = 0.5) -> bool:
    return (inner["left"] >= outer["left"] - slack and inner["top"] >= outer["top"] - slack
            and inner["right"] <= outer["right"] + slack and inner["bottom"] <= outer["bottom"] + slack)


def problems_in(measured: dict[str, Any], console: list[str]) -> list[str]:
    """Every failed check, worded for a person; empty when the page passes."""
    out = [f"console: {msg}" for msg in console]
    if measured["sections"] == 0:
        out.append("no table section rendered")
    if measured["tables"] != measured["sections"]:
        out.append(f"{measured['sections']} sections but {measured['tables']} tables")
    kinds: dict[str, set[str]] = {}
    for fig in measured["figures"]:
        where = f"{fig['section']} {fig['kind']} chart"
        kinds.setdefault(fig["section"], set()).add(fig["kind"])
        svg = fig["svg"]
        if svg is None or svg["width"] < 50 or svg["height"] < 50:
            out.append(f"{where}: not rendered")
            continue
        if not fig["legends"]:
            out.append(f"{where}: no legend")
        for legend in fig["legends"]:
            if not (_inside(legend, svg) and _inside(legend, fig["figure"])):
                out.append(f"{where}: legend box {legend} is not inside the figure {svg}")
        for text in fig["legendTexts"]:
            if not _inside(text, svg):
                out.append(f"{where}: legend text {text['text']!r} is clipped")
        small = [s for s in fig["fontSizes"] if s < MIN_FONT_PX]
        if small:
            out.append(f"{where}: {len(small)} text(s) smaller than {MIN_FONT_PX} px ({min(small)} px)")
        if fig["overflowing"]:
            out.append(f"{where}: wider than its figure (needs horizontal scrolling)")
    for section, seen in kinds.items():
        if seen != set(CHART_KINDS):
            out.append(f"{section}: charts {sorted(seen)}, expected {', '.join(CHART_KINDS)}")
    if measured["sections"] and len(kinds) != measured["sections"]:
        out.append(f"{measured['sections']} sections but charts in {len(kinds)}")
    out += [f"{section}: table wider than the page (needs horizontal scrolling)" for section in measured["wideTables"]]
    out += [f"table cell breaks inside a word: {text!r}" for text in dict.fromkeys(measured["wrapped"])]
    if measured["pageWidth"] > measured["viewWidth"] + 1:
        out.append(f"page is {measured['pageWidth']} px wide in a {measured['viewWidth']} px window")
    return out


def check_page(page_path: Path = PAGE, screenshot: Path | None = SCREENSHOT, width: int = WIDTH) -> list[str]:
    """Open ``page_path`` in headless Chromium, run the checks, write ``screenshot`` (unless None).

    Returns the problems found (empty: the page passes). Raises :class:`BrowserUnavailable` when
    Playwright or Chromium is missing.
    """
    reason = browser_unavailable_reason()
    if reason:
        raise BrowserUnavailable(reason)
    from playwright.sync_api import sync_playwright

    console: list[str] = []
    with tempfile.TemporaryDirectory(prefix="promptgym-page-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=find_chromium(), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": width, "height": 900}, device_scale_factor=1)
        try:
            page = context.new_page()
            page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}")
                    if msg.type in ("error", "warning") else None)
            page.on("pageerror", lambda err: console.append(f"page error: {err}"))
            page.on("requestfailed", lambda req: console.append(f"request failed: {req.url}"))
            page.goto(Path(page_path).resolve().as_uri(), wait_until="load")
            measured = page.evaluate(_MEASURE)
            if screenshot is not None:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            context.close()
    return problems_in(measured, console)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page", nargs="?", type=Path, default=PAGE, help="the page to check (default: %(default)s)")
    parser.add_argument("--screenshot", type=Path, default=SCREENSHOT,
                        help="where to write the full-page screenshot (default: %(default)s)")
    parser.add_argument("--no-screenshot", action="store_true", help="check only, write no screenshot")
    parser.add_argument("--width", type=int, default=WIDTH, help="window width in CSS px (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        problems = check_page(args.page, None if args.no_screenshot else args.screenshot, args.width)
    except BrowserUnavailable as exc:
        print(f"page_check: cannot run: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        return 1
    shot = "" if args.no_screenshot else f"; screenshot: {args.screenshot}"
    print(f"page_check: {args.page} passes at {args.width} px{shot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
