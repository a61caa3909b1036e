"""Exports of a recorded run (app/export.py): the GIF has one frame per recorded step, the zip
of the run directory opens with load_run, and the standalone HTML page replays the particle
cloud in headless Chromium from file:// with no server and no console errors."""
from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

import mne_core as mc
from app import export

SMALL = dict(n_points=64, T=0.3, width=16, sketch_rank=32, fit_points=256, fit_steps=60, gn_steps=2,
             mala_steps=5, seed=2)
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def run():
    run = mc.evolve(mc.EvolveConfig(target={"kind": "named", "name": "gaussian", "dim": 2}, **SMALL))
    assert run.status.succeeded, run.message
    assert len(run.times) >= 3
    return run


@pytest.fixture(scope="module")
def frames(run):
    return export.replay_frames(run)


def test_frames_follow_the_recorded_points(run, frames):
    assert len(frames.times) == len(run.times)
    np.testing.assert_allclose(frames.times, run.times)
    for k in (0, len(run.times) - 1):
        np.testing.assert_allclose(frames.points[k], run.points[k][:, :2])
    assert all(frames.model_lines) and all(frames.exact_lines)  # gaussian: exact U_t known
    assert not np.allclose(frames.points[0], frames.points[-1])
    many = export.frame_indices(1000, 50)
    assert len(many) == 50 and many[0] == 0 and many[-1] == 999


def test_gif_has_one_frame_per_recorded_step(run, frames):
    from PIL import Image

    data = export.gif_replay(run, frames=frames)
    im = Image.open(io.BytesIO(data))
    assert im.format == "GIF" and im.n_frames == len(run.times)
    im.seek(0)
    first = np.asarray(im.convert("RGB"))
    im.seek(im.n_frames - 1)
    last = np.asarray(im.convert("RGB"))
    assert first.shape == (*export.GIF_SIZE[::-1], 3) and not np.array_equal(first, last)


def test_zip_round_trips_through_load_run(run, tmp_path):
    data = export.run_zip(run, export.export_name(run))
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
        z.extractall(tmp_path)
    top = {n.split("/")[0] for n in names}
    assert len(top) == 1
    assert {n.split("/", 1)[1] for n in names} >= {"config.json", "trajectory.npz", "summary.json"}
    loaded = mc.load_run(tmp_path / top.pop())
    np.testing.assert_allclose(loaded.times, run.times)
    np.testing.assert_allclose(loaded.points, run.points)
    assert loaded.status == run.status and loaded.config == run.config
    xs = np.asarray(run.points[-1][:5])
    np.testing.assert_allclose(loaded.energy(float(run.times[-1]), xs), run.energy(float(run.times[-1]), xs))


def test_a_run_with_nothing_recorded_is_refused_with_a_message():
    empty = mc.Run(mc.EvolveConfig(target={"kind": "named", "name": "gaussian", "dim": 2}, **SMALL))
    for fn in (export.replay_frames, export.run_zip):
        with pytest.raises(export.ExportError, match="no recorded steps"):
            fn(empty)


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium")
def test_html_replays_in_headless_chromium_without_a_server(run, frames, tmp_path):
    pw = pytest.importorskip("playwright.sync_api")
    html = export.html_replay(run, frames=frames)
    assert "cdn.bokeh.org" not in html and "<script type=\"text/javascript\" src=" not in html  # JS inline
    path = tmp_path / "replay.html"
    path.write_text(html, encoding="utf-8")
    errors, requests = [], []
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri())
            page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && "
                                   "Bokeh.documents[0].get_model_by_name('points')", timeout=30000)
            read = ("() => { const d = Bokeh.documents[0]; const s = d.get_model_by_name('points');"
                    " return {x: Array.from(s.data.x), frame: d.get_model_by_name('frame').value,"
                    " label: d.get_model_by_name('time_label').text}; }")
            before = page.evaluate(read)
            np.testing.assert_allclose(before["x"], frames.points[0][:, 0], atol=1e-3)
            page.get_by_text("Play").first.click()
            page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('frame').value >= "
                                   f"{len(frames.times) - 1}", timeout=20000)
            after = page.evaluate(read)
            page.screenshot(path=str(tmp_path / "replay.png"))
        finally:
            browser.close()
    assert after["frame"] == len(frames.times) - 1
    np.testing.assert_allclose(after["x"], frames.points[-1][:, 0], atol=1e-3)
    assert not np.allclose(after["x"], before["x"], atol=1e-3), "the points did not move"
    assert after["label"] != before["label"] and f"{frames.times[-1]:.3f}" in after["label"]
    # When Panel has been imported in the same process (other tests on this worker), Bokeh's
    # inline bundle also names Panel's stylesheets by relative file paths, which a file:// page
    # cannot load: harmless for the replay (checked above), so only those are tolerated.
    errors = [e for e in errors if "net::ERR_FILE_NOT_FOUND" not in e]
    assert not errors, errors
    assert all(u.startswith(("file:", "data:", "blob:")) for u in requests), requests


def test_the_engine_does_not_import_the_export():
    root = Path(__file__).resolve().parents[1] / "mne_core"
    pattern = re.compile(r"^\s*(from app\b|import app\b)", re.M)
    assert not [p.name for p in root.glob("*.py") if pattern.search(p.read_text())]
