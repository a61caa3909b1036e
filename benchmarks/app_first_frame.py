"""Time to the dashboard's first frame with the default preset.

Serves the app as the README does (``mne-explorer serve``, falling back to ``panel serve
app/main.py``), opens it in headless Debian Chromium and records, from the moment the page
is requested:

- page: the document has loaded;
- first frame: the status line ``t = …`` and the target's energy contours are on screen;
- points: the data-free start is done and the collocation points are drawn;
- first step: the status shows t > 0 (the particles move).

Two sessions one after the other at 1280×720: the first on a fresh server, the second warm.  The
default preset plays its shipped recording (app/recorded/), so "first step" is the recording's
first frame; the model-level rows also time a live run (``run()``: data-free start, fit, first
step) and the recorded one (``run(recorded=True)``).  Prints a table.
Usage: ``python benchmarks/app_first_frame.py [--no-browser] [--screenshot PNG]``.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
STATUS = re.compile(r"t = (\d+\.\d+) · steps")

IMAGE_JS = """() => {
  for (const doc of Bokeh.documents) for (const m of doc.all_models) {
    const d = m.data;
    if (d && d.image && d.image.length) {
      const img = d.image[0]; const arr = img.flat ? img.flat() : img;
      for (let i = 0; i < arr.length; i += 7) if (arr[i] > 0) return true;
    }
  }
  return false;
}"""
POINTS_JS = """(n) => {
  for (const doc of Bokeh.documents) for (const m of doc.all_models) {
    const d = m.data; if (d && d.x && d.y && d.x.length === n) return true;
  }
  return false;
}"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser(screenshot: str | None = None, timeout: float = 240.0) -> dict:
    from playwright.sync_api import sync_playwright

    from app.settings import Settings

    n_points = Settings().n_points
    port = _free_port()
    exe = Path(sys.executable).parent / "mne-explorer"
    cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "mne_core.cli"]
    probe = subprocess.run(cli + ["serve", "--help"], capture_output=True, text=True, cwd=ROOT)
    if probe.returncode == 0:
        cmd, path = cli + ["serve", "--port", str(port)], "/"
    else:
        cmd, path = [sys.executable, "-m", "panel", "serve", "app/main.py", "--port", str(port),
                     "--allow-websocket-origin", f"localhost:{port}"], "/main"
    t_launch = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    url = f"http://localhost:{port}{path}"
    out: dict[str, float | None] = {}
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except Exception:
                if time.perf_counter() - t_launch > 90:
                    raise RuntimeError("server did not start")
                time.sleep(0.2)
        out["server start (s, not counted)"] = time.perf_counter() - t_launch
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for visit in ("first session", "second session"):
                page = b.new_page(viewport={"width": 1280, "height": 720})
                t0 = time.perf_counter()
                page.goto(url, wait_until="domcontentloaded")
                out[f"{visit}: page loaded"] = time.perf_counter() - t0
                marks = {"first frame (status + contours)": None, "points drawn": None, "first step (t > 0)": None}
                while time.perf_counter() - t0 < timeout and marks["first step (t > 0)"] is None:
                    now = time.perf_counter() - t0
                    try:
                        text = page.locator("text=/t = \\d+\\.\\d+ · steps/").first.inner_text(timeout=200)
                    except Exception:
                        text = ""
                    m = STATUS.search(text)
                    if marks["first frame (status + contours)"] is None and m and page.evaluate(IMAGE_JS):
                        marks["first frame (status + contours)"] = now
                    if marks["points drawn"] is None and page.evaluate(POINTS_JS, n_points):
                        marks["points drawn"] = now
                    if m and float(m.group(1)) > 0:
                        marks["first step (t > 0)"] = now
                    page.wait_for_timeout(50)
                out.update({f"{visit}: {k}": v for k, v in marks.items()})
                if screenshot and visit == "second session":
                    page.wait_for_selector("text=/done in/", timeout=60_000)
                    page.wait_for_timeout(1500)
                    page.screenshot(path=screenshot)
                page.close()
                time.sleep(2)
            b.close()
    finally:
        proc.terminate()
        proc.wait(10)
    return out


def model_level(timeout: float = 240.0) -> dict:
    import app.main as main

    t0 = time.perf_counter()
    e = main.MNEExplorer(live=False)
    out = {"viewer built": time.perf_counter() - t0}
    t1 = time.perf_counter()
    e.run()
    marks = {"first frame (contours)": None, "points (prepared)": None, "first step (t > 0)": None}
    while time.perf_counter() - t1 < timeout:
        lane = e.worker.lanes.get("main")
        now = time.perf_counter() - t1
        if lane is not None:
            if marks["first frame (contours)"] is None and lane.field_ is not None:
                marks["first frame (contours)"] = now
            if marks["points (prepared)"] is None and lane.latest is not None:
                marks["points (prepared)"] = now
            if lane.latest is not None and lane.latest.t > 0:
                marks["first step (t > 0)"] = now
                break
            if lane.state == "failed":
                break
        time.sleep(0.02)
    out.update({f"{k} after Run (live)": v for k, v in marks.items()})
    e.reset()
    t2 = time.perf_counter()
    e.run(recorded=True)
    moved = None
    while time.perf_counter() - t2 < 30:
        lane = e.worker.lanes.get("main")
        if lane is not None and len(lane.history) >= 2:
            moved = time.perf_counter() - t2
            break
        time.sleep(0.01)
    out["first step (t > 0) of the recording"] = moved
    e.close()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--no-model", action="store_true")
    ap.add_argument("--screenshot", help="save the second session's page at 1280×720 when its run is done")
    args = ap.parse_args()
    rows = []
    if not args.no_browser and Path(CHROMIUM).exists():
        rows += [("browser", k, v) for k, v in browser(screenshot=args.screenshot).items()]
    if not args.no_model:
        rows += [("model", k, v) for k, v in model_level().items()]
    print(f"\nMNE Explorer first frame, default preset — {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"| {'level':8} | {'event':42} | {'seconds':>8} |")
    print(f"|{'-' * 10}|{'-' * 44}|{'-' * 10}|")
    for level, k, v in rows:
        print(f"| {level:8} | {k:42} | {('%.2f' % v) if v is not None else 'timeout':>8} |")


if __name__ == "__main__":
    main()
