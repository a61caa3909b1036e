"""Soak test of one dashboard server: open, run and close many sessions; RSS over time and how
fast a closed session stops computing.

Starts ``app.main.serve`` in a subprocess on localhost (logging the worker threads' stops), then
for each of N sessions opens the page in headless Debian Chromium with small run settings in the
URL, waits for the particles to move (status ``t > 0``), and closes the tab: every other session
mid-run (its worker must stop within a second), the others after the run has finished.  After
each session it records the server's RSS.  Bounded: ``--minutes`` (default 3) stops early.

Each session runs its own seed (``--seeds``), so it computes live instead of playing the recording
an earlier session left (and the server's bounded recording store fills up).

Usage: ``python benchmarks/app_soak.py [--sessions 20] [--minutes 3] [--query '...'] [--seeds 1000]``.
Prints one line per session and a summary: RSS after the first session, at the end, and after
an idle pause; the time from a tab's close to its worker thread's end (max and median).
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
QUERY = "n_points=64&width=16&T=0.5&fit_steps=100&fit_points=256&gn_steps=2&mala_steps=5&sketch_rank=32"
STATUS = re.compile(r"t = (\d+\.\d+) · steps")
STOPPED = re.compile(r"app\.worker worker (\S+) stopped ([\d.]+) s after close \(at ([\d.]+)\)")
LEFT = re.compile(r"the browser left ([\d.]+) s ago \(at ([\d.]+)\)")
SERVER = """
import logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(name)s %(message)s")
for name in ("app.worker", "app.session"):
    logging.getLogger(name).setLevel(logging.INFO)
from app.main import serve
serve(port=int(sys.argv[1]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``app.main.serve`` in a subprocess; its log lines are collected in a thread."""

    def __init__(self, port: int, env: dict | None = None):
        self.port = port
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
        self.lines: list[tuple[float, str]] = []
        threading.Thread(target=self._read, daemon=True).start()
        t0 = time.time()
        while True:
            try:  # a TCP probe: every GET of the page would build a session
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except Exception:
                if self.proc.poll() is not None or time.time() - t0 > 120:
                    raise RuntimeError("server did not start:\n" + "\n".join(l for _, l in self.lines[-20:]))
                time.sleep(0.2)

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.time(), line.rstrip()))

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def stops(self) -> list[float]:
        """time.time() of every worker-thread end the server logged."""
        return [float(m.group(3)) for _, l in self.lines if (m := STOPPED.search(l))]

    def lefts(self) -> list[float]:
        """time.time() at which the render loop first saw each closed tab's connection gone."""
        return [float(m.group(2)) for _, l in self.lines if (m := LEFT.search(l))]

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def status_t(page) -> float | None:
    try:
        text = page.locator("text=/t = \\d+\\.\\d+ · steps/").first.inner_text(timeout=200)
    except Exception:
        return None
    m = STATUS.search(text)
    return float(m.group(1)) if m else None


def wait_for(page, cond, timeout: float) -> float | None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if cond():
            return time.perf_counter() - t0
        page.wait_for_timeout(50)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--minutes", type=float, default=3.0, help="stop opening sessions after this long")
    ap.add_argument("--query", default=QUERY, help="run settings in the URL (kept small)")
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of idle before the last RSS")
    ap.add_argument("--seeds", type=int, default=1000,
                    help="session i runs seed i mod SEEDS: distinct seeds compute live (no recording of them "
                         "yet) and fill the server's recording store; 1 lets later sessions play the recording")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    t_start = time.time()
    server = Server(port)
    print(f"server up in {time.time() - t_start:.1f} s, RSS {server.rss_mb():.0f} MB", flush=True)
    url = f"http://localhost:{port}/?{args.query}"
    rows, close_lat = [], []
    deadline = time.time() + 60 * args.minutes
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for i in range(args.sessions):
            if time.time() > deadline:
                print(f"time limit reached after {i} sessions", flush=True)
                break
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            t0 = time.perf_counter()
            page.goto(f"{url}&seed={i % args.seeds}", wait_until="domcontentloaded")
            moving = wait_for(page, lambda: (status_t(page) or 0) > 0, 60)
            mid_run = i % 2 == 1
            if not mid_run:  # let it finish (the phase line says done)
                wait_for(page, lambda: page.locator("text=/done in|finished with a warning|failed/").count() > 0, 60)
            n_stops, n_lefts = len(server.stops()), len(server.lefts())
            t_close = time.time()
            ctx.close()
            # the worker thread's end, as the server logged it
            t1 = time.perf_counter()
            while len(server.stops()) <= n_stops and time.perf_counter() - t1 < 30:
                time.sleep(0.02)
            stops = server.stops()
            latency = stops[-1] - t_close if len(stops) > n_stops else None
            lefts = server.lefts()
            seen = lefts[-1] - t_close if len(lefts) > n_lefts else None
            if latency is not None:
                close_lat.append((mid_run, latency))
            rss = server.rss_mb()
            rows.append((i + 1, moving, mid_run, latency, rss))
            print(f"session {i + 1:3d}: moving after {moving if moving is None else round(moving, 2)} s, "
                  f"closed {'mid-run' if mid_run else 'after done'}, worker stopped "
                  f"{'?' if latency is None else f'{latency:.2f}'} s after close "
                  f"(gone seen by the page after {'?' if seen is None else f'{seen:.2f}'} s), "
                  f"RSS {rss:.0f} MB, {time.perf_counter() - t0:.1f} s", flush=True)
        browser.close()
    time.sleep(args.idle)
    idle_rss = server.rss_mb()
    server.close()
    if not rows:
        return
    first, last = rows[0][4], rows[-1][4]
    lat = [v for _, v in close_lat]
    lat_mid = [v for m, v in close_lat if m]
    print(f"\nsessions: {len(rows)}; RSS after the first {first:.0f} MB, after the last {last:.0f} MB "
          f"({100 * (last / first - 1):+.1f} %), after {args.idle:.0f} s idle {idle_rss:.0f} MB "
          f"({100 * (idle_rss / first - 1):+.1f} %)")
    if lat:
        print(f"tab closed → worker stopped: median {statistics.median(lat):.2f} s, max {max(lat):.2f} s "
              f"(mid-run closes: max {max(lat_mid) if lat_mid else float('nan'):.2f} s); "
              f"{len(rows) - len(lat)} stops not seen")
    moving = [r[1] for r in rows if r[1] is not None]
    if moving:
        print(f"time to moving particles: median {statistics.median(moving):.2f} s, max {max(moving):.2f} s")


if __name__ == "__main__":
    main()
