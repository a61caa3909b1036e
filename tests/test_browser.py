"""Real-browser test: serve the app as the README does, open it in headless Debian Chromium,
press Run, and watch the status ``t = …`` advance and the plots update with no console errors.

Saves a screenshot to the test's temporary folder (``MNE_SAVE_SCREENSHOT=1``: over
``assets/screenshot.png``).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# small settings so a cold process compiles and runs in well under a minute on 2 cores
QUERY = ("autorun=false&n_points=128&T=0.6&width=32&sketch_rank=64&fit_points=512&fit_steps=300"
         "&gn_steps=5&mala_steps=10&seed=1")
STATUS = re.compile(r"t = (\d+\.\d+) · steps (\d+) · rejected (\d+) · dt ")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_command(port: int) -> tuple[list[str], str]:
    """`mne-explorer serve --port P` as `make app` does (the installed script, or the same CLI
    module when the project is not installed), else `panel serve app/main.py`."""
    exe = Path(sys.executable).parent / "mne-explorer"
    for cli in ([str(exe)] if exe.exists() else []) + [[sys.executable, "-m", "mne_core.cli"]]:
        cli = cli if isinstance(cli, list) else [cli]
        probe = subprocess.run(cli + ["serve", "--help"], capture_output=True, text=True, cwd=ROOT)
        if probe.returncode == 0 and "--port" in probe.stdout:
            return cli + ["serve", "--port", str(port)], "/"
    return ([sys.executable, "-m", "panel", "serve", "app/main.py", "app/watch.py", "--port", str(port),
             "--allow-websocket-origin", f"localhost:{port}"], "/main")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    cmd, path = _serve_command(port)
    env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://localhost:{port}{path}"
    deadline = time.time() + 240  # a loaded CI machine: the first page also builds a session
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()}")
        try:
            urllib.request.urlopen(url, timeout=60)
            break
        except Exception:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError(f"server did not start within 240 s: {log_path.read_text()[-2000:]}")
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _status(page) -> tuple[float, int, int] | None:
    try:
        text = page.locator("text=/t = \\d+\\.\\d+ · steps/").first.inner_text(timeout=1000)
    except Exception:
        return None
    m = STATUS.search(text)
    return (float(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


POINT_SOURCES_JS = """(n) => {
  const out = [];
  for (const doc of Bokeh.documents) {
    for (const m of doc.all_models) {
      const d = m.data;
      if (d && d.x && d.y && d.x.length === n) out.push(Array.from(d.x).slice(0, 4).join(','));
    }
  }
  return out;
}"""


VIEWPORT = {"width": 1280, "height": 720}  # a projector
KEY_PLOTS = (".mne-field", ".mne-spectrum", ".mne-residual")

STATUS_STYLE_JS = """() => {
  const deep = (root, sel) => {
    const hit = root.querySelector(sel);
    if (hit) return hit;
    for (const e of root.querySelectorAll('*')) {
      if (e.shadowRoot) { const h = deep(e.shadowRoot, sel); if (h) return h; }
    }
    return null;
  };
  const host = deep(document, '.mne-status');
  if (!host) return null;
  const root = host.shadowRoot || host;
  const el = root.querySelector('code') || root.querySelector('p') || host;
  const cs = getComputedStyle(el);
  let bg = 'rgba(0, 0, 0, 0)', node = el;
  while (node) {
    const c = getComputedStyle(node).backgroundColor;
    if (c && !c.startsWith('rgba(0, 0, 0, 0)') && c !== 'transparent') { bg = c; break; }
    node = node.parentElement || (node.getRootNode && node.getRootNode().host) || null;
  }
  if (bg.startsWith('rgba(0, 0, 0, 0)')) bg = 'rgb(255, 255, 255)';
  return {color: cs.color, background: bg, size: parseFloat(cs.fontSize), text: el.textContent};
}"""


def _luminance(css: str) -> float:
    r, g, b = (int(v) / 255 for v in re.findall(r"\d+", css)[:3])
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(fg: str, bg: str) -> float:
    """WCAG contrast ratio of two CSS rgb() colours."""
    a, b = sorted((_luminance(fg), _luminance(bg)), reverse=True)
    return (a + 0.05) / (b + 0.05)


needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian Chromium is not installed at "
                                    "/usr/bin/chromium (apt-get install chromium; .ci/run does this)")


def _open(browser, url: str, errors: list[str] | None = None):
    """A 1280×720 page at ``url`` once its status line ``t = … · steps`` is drawn; console and
    page errors go to ``errors``."""
    page = browser.new_page(viewport=VIEWPORT)
    if errors is not None:
        page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.goto(url, wait_until="domcontentloaded")
    page.locator("text=/t = \\d+\\.\\d+ · steps/").first.wait_for(timeout=60_000)
    return page


@needs_chromium
def test_run_in_real_browser(server, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = _open(browser, f"{server}?{QUERY}", errors)
        assert _status(page) == (0.0, 0, 0)
        page.get_by_role("button", name=re.compile("Run$")).first.click()

        # the status advances
        deadline = time.time() + 150
        seen = []
        while time.time() < deadline:
            st = _status(page)
            if st and (not seen or st != seen[-1]):
                seen.append(st)
            if st and st[0] >= 0.3 and len(seen) >= 3:
                break
            page.wait_for_timeout(250)
        assert seen and seen[-1][0] > 0.0, f"status never advanced: {seen}"
        assert len({s[0] for s in seen}) >= 2, f"t did not advance: {seen}"

        # the point cloud (128 points) is in a Bokeh data source and moves
        first = page.evaluate(POINT_SOURCES_JS, 128)
        assert first, "no data source holds the 128 collocation points"
        page.wait_for_timeout(1500)
        later = page.evaluate(POINT_SOURCES_JS, 128)
        st_end = _status(page)
        assert later != first or st_end[0] >= 0.59, "points did not move"
        page.wait_for_timeout(500)

        # readable on a projector: the three key plots inside the 1280×720 window and a status line of ≥ 15 px at contrast ≥ 4.5:1
        for sel in KEY_PLOTS:
            box = page.locator(sel).first.bounding_box()
            assert box is not None, f"{sel} not on the page"
            assert box["x"] >= 0 and box["y"] >= 0, (sel, box)
            assert box["x"] + box["width"] <= VIEWPORT["width"] + 1, (sel, box)
            assert box["y"] + box["height"] <= VIEWPORT["height"] + 1, (sel, box)
            assert box["width"] >= 200 and box["height"] >= 200, (sel, box)
        # (document.scrollWidth still reports 1996 px at 1280×720 although no visible element
        # reaches past the window: not yet explained, so not asserted)
        style = page.evaluate(STATUS_STYLE_JS)
        assert style is not None and "t = " in style["text"], style
        assert style["size"] >= 15, style
        assert contrast(style["color"], style["background"]) >= 4.5, style
        # The README's screenshot (assets/screenshot.png) shows the default preset after a full
        # run; this test saves its own small-settings view beside the test's temporary files,
        # or over the README's one with MNE_SAVE_SCREENSHOT=1.
        shot = (ROOT / "assets" / "screenshot.png" if os.environ.get("MNE_SAVE_SCREENSHOT") == "1"
                else tmp_path_factory.getbasetemp() / "screenshot.png")
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    errors = [e for e in errors if "favicon" not in e]
    assert not errors, "console errors:\n" + "\n".join(errors)


WATCH_STYLE_JS = """() => {
  const deep = (root, out) => {
    for (const e of root.querySelectorAll('*')) {
      if (e.shadowRoot) deep(e.shadowRoot, out);
      if (e.children.length === 0 && /t = \\d+\\.\\d+ · steps/.test(e.textContent)) out.push(e);
    }
    return out;
  };
  const el = deep(document, [])[0];
  if (!el) return null;
  return {size: parseFloat(getComputedStyle(el).fontSize), text: el.textContent};
}"""


@needs_chromium
def test_the_class_page_plays_and_then_follows_the_lecturers_shared_run(server):
    """/watch plays the recording at once (512 points, t advancing, large type); when a page with
    ?broadcast=1 runs, /watch shows that run (its 128 points, 'shared by the lecturer')."""
    from playwright.sync_api import sync_playwright

    watch_url = server.rstrip("/").rsplit("/", 1)[0] + "/watch" if server.endswith("/main") else server + "watch"
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        watch = _open(browser, watch_url, errors)
        seen = set()
        deadline = time.time() + 30
        while time.time() < deadline and len(seen) < 3:
            st = _status(watch)
            if st:
                seen.add(st[0])
            watch.wait_for_timeout(200)
        assert len(seen) >= 3, f"the recording does not play: {seen}"
        assert watch.evaluate(POINT_SOURCES_JS, 512), "the recording's 512 points are not drawn"
        style = watch.evaluate(WATCH_STYLE_JS)
        assert style is not None and style["size"] >= 20, style

        # slow playback (0.5 s between steps): the class sees the run while it runs
        lecturer = _open(browser, f"{server}?{QUERY}&broadcast=1&speed=slow")
        lecturer.get_by_role("button", name=re.compile("Run$")).first.click()
        deadline = time.time() + 150
        shared = []
        while time.time() < deadline:
            text = watch.locator("text=/shared by the lecturer/").first
            if text.count():
                st = _status(watch)
                if st and (not shared or st != shared[-1]):
                    shared.append(st)
                if len(shared) >= 2 and shared[-1][0] > 0:
                    break
                if shared and shared[-1][0] >= 0.6 - 1e-9:  # the run has ended (T = 0.6)
                    break
            watch.wait_for_timeout(250)
        assert shared and shared[-1][0] > 0, f"the shared run did not reach /watch: {shared}"
        assert watch.evaluate(POINT_SOURCES_JS, 128), "the lecturer's 128 points are not drawn"
        browser.close()
    errors = [e for e in errors if "favicon" not in e]
    assert not errors, "console errors:\n" + "\n".join(errors)
