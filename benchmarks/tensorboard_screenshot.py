"""Screenshot TensorBoard on a real run's events (the README's docs/tensorboard.png).

Starts ``tensorboard`` on 127.0.0.1 (a free port) over a run folder written with ``--log tensorboard``,
opens its scalars dashboard in headless Chromium (the same browser set-up as ``page_check.py``), waits
until the charts are drawn and saves a screenshot. It checks the dashboard really shows the run's
curves (the tag names appear on the page) and fails otherwise, so a blank page is never committed.

    PROMPTGYM_DATA_DIR=../shared/data .venv/bin/promptgym train --env PromptSST2-v0 --agent bdpl \\
        --budget 300 --seed 13 --log tensorboard --out /tmp/tbrun
    .venv/bin/python benchmarks/tensorboard_screenshot.py /tmp/tbrun --out docs/tensorboard.png
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from page_check import CHROMIUM_ARGS, find_chromium  # noqa: E402

EXPECTED = ("best_reward", "best_metric")  # the card titles (TensorBoard splits "train/" from the rest)
TAG_FILTER = "best_|calls_per_s"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"tensorboard did not answer at {url} within {seconds:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logdir", help="a run folder (or a parent of run folders) written with --log tensorboard")
    ap.add_argument("--out", default="docs/tensorboard.png")
    ap.add_argument("--width", type=int, default=1400)
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    port = free_port()
    tb = subprocess.Popen([str(Path(sys.executable).with_name("tensorboard")), "--logdir", args.logdir,
                           "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_up(url)
        with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=find_chromium(), headless=True, args=CHROMIUM_ARGS,
                viewport={"width": args.width, "height": 1000})
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(url + "#timeseries", wait_until="networkidle")
            page.wait_for_timeout(3000)
            page.locator("input[placeholder*='Filter tags']").first.fill(TAG_FILTER)
            page.keyboard.press("Escape")  # close the tag suggestions
            page.get_by_role("button", name="Settings").first.click()  # hide the settings side panel
            page.wait_for_timeout(4000)
            text = page.inner_text("body")
            missing = [t for t in EXPECTED if t not in text]
            if missing:
                raise SystemExit(f"the dashboard does not show {missing}: no screenshot written")
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out, full_page=False)
            context.close()
    finally:
        tb.terminate()
        tb.wait(timeout=30)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
