"""The dashboard tried as a lecturer would, in headless Chromium at 1280×720, with screenshots.

Serves the app (``app.main.serve`` on localhost), then: opens the default page (its recording
plays), picks the *rank too small* preset, changes the seed while it runs (the run restarts with
a notice), compares *loose* against *tight tolerance*, asks for a conditional x1 | x0 = 1 in the
Samples tab, downloads the HTML replay and the run's zip, and opens presentation mode in the dark
theme.  Writes one PNG per step and prints a table of what each step showed and when.

Usage: ``python benchmarks/lecture_walkthrough.py --out DIR [--timeout 240]``.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from app_soak import ARGS, CHROMIUM, Server, free_port  # noqa: E402

VIEWPORT = {"width": 1280, "height": 720}
ENDED = "text=/done in|finished with a warning|failed/"


def tab(page, name: str):
    return page.locator(".bk-tab", has_text=name).first


def number_input(page, label: str):
    """The text input of the widget labelled ``label`` (Bokeh capitalizes labels)."""
    lab = page.locator("label", has_text=re.compile(rf"^{re.escape(label)}", re.IGNORECASE))
    return page.locator(".bk-input-group", has=lab).locator("input").first


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for the screenshots and downloads")
    ap.add_argument("--timeout", type=float, default=240.0, help="longest wait for one step (s)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = Server(port)
    url = f"http://localhost:{port}/"
    rows = []
    ms = int(1000 * args.timeout)

    def row(step, what, t0):
        rows.append((step, what, time.perf_counter() - t0))
        print(f"{step}: {what} ({rows[-1][2]:.1f} s)", flush=True)

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            ctx = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
            page = ctx.new_page()
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            t0 = time.perf_counter()
            page.goto(url, wait_until="domcontentloaded")
            page.locator("text=/t = [1-9]\\d*\\.\\d+ · steps|t = 0\\.[0-9]*[1-9][0-9]* · steps/").first.wait_for(
                timeout=ms)
            row("1 open", "the default preset's recording moves", t0)
            page.locator(ENDED).first.wait_for(timeout=ms)
            page.screenshot(path=str(out / "1-open.png"))

            t0 = time.perf_counter()
            page.locator("select").first.select_option("rank-too-small")
            page.locator("text=/steps [1-9]/").first.wait_for(timeout=ms)
            row("2 preset", "rank too small computes live (no recording yet on this server)", t0)
            seed = number_input(page, "seed")
            seed.fill("3")
            seed.press("Enter")
            page.locator("text=/restarted with the new settings/").first.wait_for(timeout=ms)
            row("3 mid-run change", "seed changed during the run: restarted, with a notice", t0)
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(out / "2-restart-notice.png"))
            page.locator(ENDED).first.wait_for(timeout=ms)
            row("3 mid-run change", "the restarted run ended", t0)
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(out / "3-rank-too-small.png"))

            t0 = time.perf_counter()
            tab(page, "Compare").click()
            page.get_by_role("button", name=re.compile("Run side by side")).first.click()
            page.wait_for_timeout(2000)
            page.locator("text=/A: .*(done|warning|failed)/").first.wait_for(timeout=ms)
            row("4 compare", "two presets side by side", t0)
            page.screenshot(path=str(out / "4-compare.png"))

            t0 = time.perf_counter()
            tab(page, "Live").click()
            page.locator("select").first.select_option("two-modes")
            page.locator(ENDED).first.wait_for(timeout=ms)
            page.get_by_role("button", name=re.compile("Run$")).first.click()  # live, to sample it
            deadline = time.time() + args.timeout  # the live run replaces the recording: wait for its end
            page.wait_for_timeout(3000)
            while time.time() < deadline and (page.locator("text=/· recorded/").count() > 0
                                              or page.locator(ENDED).count() == 0):
                page.wait_for_timeout(500)
            tab(page, "Samples").click()
            page.locator(".bk-Checkbox", has_text="condition on y").locator("input").first.check()
            axis = number_input(page, "coordinate")
            axis.fill("0")
            axis.press("Enter")
            value = number_input(page, "y value")
            value.fill("1")
            value.press("Enter")
            page.get_by_role("button", name="Draw samples").click()
            try:
                page.locator("text=/ESS = /").first.wait_for(timeout=ms)
            finally:
                page.screenshot(path=str(out / "5-conditional.png"))
            row("5 conditional", "x1 | x0 = 1: partial-diffusion run evolved, weighted histogram + exact", t0)
            page.wait_for_timeout(1500)
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(out / "5-conditional.png"))

            t0 = time.perf_counter()
            tab(page, "Live").click()
            for label, name in (("Replay page (HTML)", "replay.html"), ("Run directory (zip)", "run.zip")):
                with page.expect_download(timeout=ms) as dl:
                    page.get_by_role("button", name=label).click()
                dl.value.save_as(str(out / name))
            with zipfile.ZipFile(out / "run.zip") as z:
                names = z.namelist()
            row("6 export", f"replay.html {(out / 'replay.html').stat().st_size // 1000} kB, zip with {len(names)} files",
                t0)

            t0 = time.perf_counter()
            present = ctx.new_page()
            present.goto(url + "?present=1&theme=dark", wait_until="domcontentloaded")
            present.locator(ENDED).first.wait_for(timeout=ms)
            row("7 present", "presentation mode, dark theme", t0)
            present.screenshot(path=str(out / "7-present-dark.png"))
            browser.close()
    finally:
        server.close()
    print("\n| step | what the page showed | seconds |\n|---|---|---|")
    for step, what, sec in rows:
        print(f"| {step} | {what} | {sec:.1f} |")
    if errors:
        print("page errors:", errors[:5])


if __name__ == "__main__":
    main()
