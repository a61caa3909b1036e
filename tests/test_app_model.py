"""Model-level tests: drive a real (small) evolution through the dashboard's worker thread and
check the data that reaches the plots (Pipes, Buffers, and the Bokeh document)."""
from __future__ import annotations

import logging
import re
import time

import numpy as np
import pytest

SMALL = dict(n_points=64, T=0.3, width=16, sketch_rank=32, fit_points=256, fit_steps=60, gn_steps=2,
             mala_steps=5, autorun=False)
STATUS = re.compile(r"^`t = (\d+\.\d\d) · steps (\d+) · rejected (\d+) · dt (\S+)`")

pytestmark = pytest.mark.xdist_group("app_model")


def _drive(e, until, timeout=180.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        e.render()
        lane = e.worker.lanes.get("main")
        if lane is not None and until(lane):
            e.render()
            return lane
        time.sleep(0.05)
    raise AssertionError(f"timed out; lane state {lane.state if lane else None}: {lane.message if lane else ''} "
                         f"(lanes {sorted(e.worker.lanes)}, page closed {e._closed}, worker closed "
                         f"{e.worker.closed}, worker alive {e.worker.alive})")


def _sources(root, n):
    from bokeh.models import ColumnDataSource

    return [m for m in root.references() if isinstance(m, ColumnDataSource)
            and "x" in m.data and len(m.data["x"]) == n]


@pytest.fixture(scope="module")
def driven():
    """One small run, stepped to the end, rendered into a Bokeh document along the way."""
    import panel as pn
    from bokeh.document import Document

    from app.main import MNEExplorer

    e = MNEExplorer(live=False, **SMALL)
    doc = Document()
    root = pn.panel(e).get_root(doc)
    assert e.run()
    lane = _drive(e, lambda ln: ln.preview_points is not None or ln.latest is not None)
    preview_shown = None
    if lane.latest is None:  # the initial fit is still running: the start points are on screen
        preview_shown = (np.array(e.live.field.points_pipe.data), np.array(lane.preview_points))
    lane = _drive(e, lambda ln: ln.latest is not None)
    first_points = np.array(e.live.field.points_pipe.data)
    src = _sources(root, SMALL["n_points"])
    first_cds = [np.array(s.data["x"]) for s in src]
    lane = _drive(e, lambda ln: ln.state in ("done", "warning", "failed"))
    yield {"e": e, "root": root, "lane": lane, "first_points": first_points, "first_cds": first_cds,
           "preview_shown": preview_shown}
    e.close()


def test_run_finishes_and_status_advances(driven):
    e, lane = driven["e"], driven["lane"]
    assert lane.state in ("done", "warning"), lane.message
    m = STATUS.match(e.status.object)
    assert m, e.status.object
    assert float(m.group(1)) == pytest.approx(SMALL["T"], abs=0.005)
    assert int(m.group(2)) == lane.latest.num_accepted >= 2
    assert e.progress.value == 1000
    assert e.phase.object.startswith(("✓ done", "⚠"))


def test_start_points_show_before_the_fit_ends(driven):
    lane = driven["lane"]
    assert lane.preview_points is not None and lane.preview_points.shape == (SMALL["n_points"], 2)
    assert np.all(np.isfinite(lane.preview_points))
    if driven["preview_shown"] is not None:
        shown, preview = driven["preview_shown"]
        np.testing.assert_allclose(shown, preview[:, :2])


def test_points_pipe_and_bokeh_source_move(driven):
    e, root = driven["e"], driven["root"]
    pts = np.asarray(e.live.field.points_pipe.data)
    assert pts.shape == (SMALL["n_points"], 2)
    assert not np.allclose(pts, driven["first_points"]), "points did not move"
    np.testing.assert_allclose(pts, driven["lane"].latest.points[:, :2])
    sources = _sources(root, SMALL["n_points"])
    assert sources, "no Bokeh data source holds the collocation points"
    now = [np.array(s.data["x"]) for s in sources]
    assert any(not np.allclose(a, b) for a, b in zip(now, driven["first_cds"])), "Bokeh source not updated"
    assert any(np.allclose(np.asarray(s.data["x"]), pts[:, 0]) for s in sources)


def test_contours_of_model_and_exact(driven):
    e, lane = driven["e"], driven["lane"]
    f = e.live.field.field_pipe.data
    assert f["model"] is not None and np.isfinite(f["model"]).all()
    assert f["t"] == pytest.approx(lane.latest.t)
    x0, x1, y0, y1 = f["extent"]
    assert x0 < -4 and x1 > 4, "two-modes (±2.5) must be inside the fixed axes"
    from app.plots import contour_lines

    assert contour_lines(f["xs"], f["ys"], f["model"])
    if getattr(lane.target, "has_exact", False) and lane.has_exact:
        assert f["exact"] is not None


def test_spectrum_weights_and_diagnostics(driven):
    e, lane = driven["e"], driven["lane"]
    spec = e.live.spectrum.pipe.data
    assert spec["rank"] == SMALL["sketch_rank"]
    assert spec["reg"] > 0
    eig = np.asarray(spec["eig"])
    assert eig.size > 0 and np.all(np.diff(eig[np.isfinite(eig)]) <= 1e-9 * np.nanmax(eig))
    # the full N×N NTK spectrum behind the sketch's n eigenvalues, at the final step, so the rank
    # line cuts through it; the axis holds λ
    from app.plots import spectrum_ylim

    full = np.asarray(spec["full"])
    assert full.shape == (SMALL["n_points"],) and lane.full_spectrum[0] == pytest.approx(lane.latest.t)
    np.testing.assert_allclose(full, lane.evolution.run.ntk_spectrum(lane.latest.t)[1])
    assert spec["rank"] < full.size
    lo, hi = spectrum_ylim(eig, spec["reg"], full)
    assert lo < spec["reg"] < hi and hi > np.nanmax(full)
    weights = e.live.weights.pipe.data
    assert set(weights) == set(lane.latest.layer_weights)
    assert e.live.diagnostics.rows == len(lane.history)
    diag = e.live.diagnostics.buffer.data
    assert len(diag) == len(lane.history)
    assert np.all(np.diff(diag["t"].to_numpy()) > 0)
    assert np.isfinite(diag["residual"].to_numpy()).all()


def test_replay_scrubber(driven):
    e, lane = driven["e"], driven["lane"]
    assert e.live.scrubber.end == len(lane.history) - 1
    e.live.scrubber.value = 1
    assert e.live.follow_live is False
    np.testing.assert_allclose(e.live.field.points_pipe.data, lane.history[1].points[:, :2])
    assert "(replay)" in e.status.object
    assert e.live.diagnostics.marker_pipe.data == pytest.approx(lane.history[1].t)
    t0 = time.time()
    while (e.live.replay_field is None or e.live.replay_field[1].t != pytest.approx(lane.history[1].t)) and time.time() - t0 < 30:
        time.sleep(0.05)
    e.render()
    assert e.live.field.field_pipe.data["t"] == pytest.approx(lane.history[1].t)
    e.live.follow_live = True
    e.render()
    np.testing.assert_allclose(e.live.field.points_pipe.data, lane.latest.points[:, :2])


def test_pin_overlays(driven):
    e = driven["e"]
    pin = e.pin()
    assert pin is not None
    assert e.live.spectrum.pinned_pipe.data[-1]["label"] == pin["label"]
    assert len(e.live.diagnostics.pinned_pipe.data) == len(e.pins) >= 1
    e.clear_pins()
    assert e.live.spectrum.pinned_pipe.data == []


def test_exports_of_the_finished_run_download(driven, tmp_path):
    """The Live tab's download buttons hand over the run as a replay page, a GIF with one frame
    per recorded step, and a zip that load_run opens."""
    import base64
    import io
    import zipfile

    from PIL import Image

    import mne_core as mc

    e, lane = driven["e"], driven["lane"]
    e.render()
    n = len(lane.evolution.run.times)
    got = {}
    for kind, widget in (("gif", e.live.export_gif), ("zip", e.live.export_zip), ("html", e.live.export_html)):
        assert not widget.disabled
        widget._clicks += 1  # what a click does: the callback runs and the data reaches the browser
        head, b64 = widget.data.split(",", 1)
        assert widget.filename.endswith("." + kind) and "base64" in head, (widget.filename, head)
        got[kind] = base64.b64decode(b64)
    assert not e.live.export_msg.visible
    assert Image.open(io.BytesIO(got["gif"])).n_frames == n
    with zipfile.ZipFile(io.BytesIO(got["zip"])) as z:
        z.extractall(tmp_path)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    np.testing.assert_allclose(mc.load_run(folder).times, lane.evolution.run.times)
    assert b"Bokeh" in got["html"] and b"points" in got["html"]


def test_bad_run_keeps_last_run_and_explains(driven):
    e = driven["e"]
    before = np.array(e.live.field.points_pipe.data)
    e.settings.param.update(target_kind="energy", expression="x0**2/2 + x1**2/2", init="exact")
    assert e.run()  # validated fine, fails in the worker (no exact samples for an expression)
    t0 = time.time()
    while not e.message.visible and time.time() - t0 < 60:
        e.render()
        time.sleep(0.05)
    assert "could not start" in e.message.object and "last run is kept" in e.message.object
    assert e.worker.lanes["main"] is driven["lane"]
    np.testing.assert_allclose(e.live.field.points_pipe.data, before)
    e.settings.param.update(target_kind="named", init="mala")


def test_changing_rtol_and_reg_does_not_recompile_the_step(driven, caplog):
    """A second run with other rtol and λ (same shapes) compiles no integrator step."""
    import jax

    e = driven["e"]
    e.settings.param.update(rtol=3e-4, reg=1e-6, target_kind="named")
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING):
            assert e.run()
            _drive(e, lambda ln: ln.state in ("done", "warning", "failed") and ln.latest is not None)
    finally:
        jax.config.update("jax_log_compiles", False)
    lane = e.worker.lanes["main"]
    assert lane.state in ("done", "warning"), lane.message
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    # the integrator (init/step) and the diagnostics solve are compiled once per shape class;
    # the data-free start is not part of this guarantee
    steps = [c for c in compiled if re.search(r"Compiling jit\((_?step|_step_impl|_init_impl|diag|vf)\)", c)]
    assert not steps, "changing rtol/λ recompiled the step:\n" + "\n".join(compiled)


def test_side_by_side_compare():
    from app.main import MNEExplorer

    import panel as pn
    from bokeh.document import Document
    from bokeh.models import GlyphRenderer

    from app.plots import COMPARE_COLORS

    e = MNEExplorer(live=False, **SMALL)
    root = pn.panel(e.compare).get_root(Document())
    try:
        e.compare.left = "current settings"
        e.compare.right = "current settings"
        e.settings.seed = 3
        assert e.run_compare()
        t0 = time.time()
        while time.time() - t0 < 180:
            e.render()
            lanes = [e.worker.lanes.get(k) for k in "AB"]
            if all(ln is not None and ln.latest is not None and ln.latest.t > 0 for ln in lanes):
                break
            time.sleep(0.05)
        e.render()
        a, b = (e.compare.fields[k] for k in "AB")
        assert a.field_pipe.data["extent"] == b.field_pipe.data["extent"], "axes must be shared and fixed"
        assert len(a.points_pipe.data) == len(b.points_pipe.data) == SMALL["n_points"]
        assert {p["label"] for p in e.compare.diagnostics.pinned_pipe.data} == {"A: current settings", "B: current settings"}
        assert "t = " in e.compare.status["A"].object
        # one colour per run in every plot, and one legend (the key) that names it
        for pipe in (e.compare.spectrum.pinned_pipe, e.compare.diagnostics.pinned_pipe):
            assert {p["label"][0]: p["color"] for p in pipe.data} == COMPARE_COLORS
        colors = []
        for r in root.references():
            if isinstance(r, GlyphRenderer):
                colors += [c for c in (getattr(r.glyph, "line_color", None), getattr(r.glyph, "fill_color", None))
                           if isinstance(c, str)]
                colors += [c for c in r.data_source.data.get("color", []) if isinstance(c, str)]
        for k, color in COMPARE_COLORS.items():
            # spectrum + 2 diagnostics + the field's model contours and points
            assert colors.count(color) >= 5, (k, color, colors)
            assert color in e.compare.key.object and e.worker.lanes[k].label in e.compare.key.object
        assert "solid" in e.compare.key.object and "dashed" in e.compare.key.object
    finally:
        e.close()


def test_a_run_that_ends_inaccurate_shows_a_warning_not_a_green_bar():
    """rank-too-small at T = 0.5: the engine's verdict is WARNING (T too small for ρ_T ≈ N(0, I));
    the page shows an amber bar, the reason, and no green anywhere."""
    from mne_core import Status

    from app.main import MNEExplorer

    small = dict(SMALL, T=0.5)
    e = MNEExplorer(live=False, preset="rank-too-small", **small)
    try:
        assert e.run()
        lane = _drive(e, lambda ln: ln.state in ("done", "warning", "failed"))
        assert lane.evolution.status == Status.WARNING, (lane.state, lane.evolution.message)
        assert lane.state == "warning"
        assert e.progress.bar_color == "warning"
        assert e.message.visible and e.message.alert_type == "warning"
        assert lane.evolution.message and lane.evolution.message in e.message.object
        assert e.phase.object.startswith("⚠") and lane.evolution.message in e.phase.object
    finally:
        e.close()


def test_funnel_preset_runs_to_its_stated_outcome():
    """The funnel is labelled a lesson in failure: at small settings the run, or the samples drawn
    from it with one-shot weights, must not end ``ok``."""
    import mne_core

    from app.settings import PRESETS, Settings

    assert PRESETS["presets"]["funnel"]["expect"] == "not ok"
    assert "failure" in PRESETS["presets"]["funnel"]["title"].lower()
    small = {k: v for k, v in SMALL.items() if k not in ("T", "sketch_rank", "autorun")}
    evo = mne_core.Evolution(Settings(preset="funnel", **small).to_config())
    evo.prepare()
    for _ in evo.steps():
        pass
    if evo.status == mne_core.Status.OK:
        res = mne_core.sample(evo.run, 1000, method="is", imh=False)
        assert res.status != mne_core.Status.OK, res.summary()
    else:
        assert evo.status in (mne_core.Status.WARNING, mne_core.Status.FAILED), evo.status


def test_an_rtol_change_reuses_the_data_free_start(driven):
    """A run that changes only rtol skips the tempering and the fit: no prepare stage, the same
    start points at t = 0, and it runs to the end."""
    e = driven["e"]
    e.settings.param.update(target_kind="named", init="mala")
    first = e.worker.lanes["main"]
    assert first.latest is not None
    x0_before = first.history[0].points
    e.settings.rtol = 2e-4 if e.settings.rtol != 2e-4 else 5e-4
    assert e.run()
    lane = _drive(e, lambda ln: ln is not first and ln.latest is not None)
    assert lane.start_reused and lane.stages == [], lane.stages
    assert lane.evolution.run.fit_info["start_reused"] is True
    np.testing.assert_array_equal(lane.history[0].points, x0_before)
    lane = _drive(e, lambda ln: ln.state in ("done", "warning", "failed"))
    assert lane.state in ("done", "warning"), lane.message
    e.settings.seed += 1  # a start setting: the next run makes its own start
    assert e.run()
    lane = _drive(e, lambda ln: ln.latest is not None and ln.evolution.config.seed == e.settings.seed)
    assert not lane.start_reused and "fit (Adam)" in lane.stages
    e.reset()
    e.settings.seed -= 1


def test_the_default_page_plays_its_shipped_recording_at_once():
    """Opening the default preset plays the recording shipped for its exact settings: frames move
    at once (no evolution, no compute slot), it ends with the recorded verdict, and the page says
    that it is a recording; the Samples tab asks for a live run."""
    from app import recordings
    from app.main import MNEExplorer

    e = MNEExplorer(live=False, autorun=False)
    try:
        rec = recordings.lookup(recordings.recording_key(e.settings.to_config(), (0, 1)))
        assert rec is not None and rec.source == "shipped", "app/recorded/two-modes.npz no longer matches the " \
            "default settings: rebuild it with `python -m app.recordings`"
        assert e.run(recorded=True)
        lane = e.worker.lanes["main"]
        assert lane.recorded and lane.evolution is None
        first = _drive(e, lambda ln: len(ln.history) >= 2, timeout=10)
        p0 = np.array(e.live.field.points_pipe.data)
        lane = _drive(e, lambda ln: ln.state in ("done", "warning", "failed"), timeout=30)
        assert lane is first and lane.state == rec.state == "done"
        assert len(lane.history) == len(rec.snapshots) and lane.latest.t == pytest.approx(rec.T)
        assert np.abs(np.array(e.live.field.points_pipe.data) - p0).max() > 0.1, "the cloud must move"
        assert e.phase.object.endswith("· recorded")
        assert e.message.visible and "recorded run" in e.message.object and "▶ Run" in e.message.object
        assert e.live.weights.pipe.data and "weights" not in e.live.weights.pipe.data
        full = e.live.spectrum.pipe.data["full"]
        assert full is not None and len(full) == len(lane.latest.points) == 512
        assert not e.samples.draw() and "recorded run" in e.samples.message.object
    finally:
        e.close()


def test_a_finished_live_run_becomes_the_servers_recording(driven, tmp_path):
    """The driven run ended: the server keeps its frames, a file round-trip keeps them, and a
    session that asks for the same settings replays the same cloud."""
    from app import recordings
    from app.main import MNEExplorer

    lane = driven["lane"]
    rec = recordings.lookup(recordings.recording_key(lane.factory.config, lane.proj))
    assert rec is not None and rec.source == "this server" and rec.state == lane.state
    assert [s.t for s in rec.snapshots] == [s.t for s in lane.history]
    np.testing.assert_allclose(rec.snapshots[-1].points, lane.history[-1].points, rtol=1e-6, atol=1e-6)  # float32
    assert rec.fields[0].t == 0 and rec.fields[-1].t == pytest.approx(lane.latest.t)
    back = recordings.Recording.load(rec.save(tmp_path / "r.npz"))
    assert back.key == rec.key and len(back.snapshots) == len(rec.snapshots)
    np.testing.assert_allclose(back.snapshots[-1].points, rec.snapshots[-1].points, atol=5e-3)  # float16
    np.testing.assert_allclose(back.snapshots[-1].gram_eigenvalues, rec.snapshots[-1].gram_eigenvalues, rtol=1e-6)
    np.testing.assert_allclose(back.fields[-1].model, rec.fields[-1].model, rtol=2e-3, atol=2e-2)

    other = MNEExplorer(live=False, **SMALL)  # the driven run's settings
    try:
        assert other.settings.to_config() == lane.factory.config
        assert other.run(recorded=True)
        replayed = _drive(other, lambda ln: ln.state in ("done", "warning", "failed"), timeout=30)
        assert replayed.recorded and replayed.state == lane.state
        np.testing.assert_allclose(replayed.latest.points, lane.history[-1].points, rtol=1e-6, atol=1e-6)
    finally:
        other.close()


def test_a_setting_changed_mid_run_restarts_it_with_a_notice(driven):
    """Moving a slider during a run restarts it with the new value (once, after the debounce)."""
    e = driven["e"]
    e.settings.param.update(target_kind="named", init="mala", T=1.0)   # long enough to be still running below
    assert e.run()
    first = e.worker.lanes["main"]
    assert first.active
    new_rtol = 7e-4 if e.settings.rtol != 7e-4 else 8e-4
    e.settings.rtol = new_rtol
    assert not e.apply_pending_restart(now=0.0), "restarts only after the debounce"
    assert e.apply_pending_restart(now=float("inf"))
    lane = e.worker.lanes["main"]
    assert lane is not first and lane.factory.config.rtol == new_rtol
    assert e.message.visible and e.message.alert_type == "info" and "restarted" in e.message.object
    assert "rtol" in e.message.object
    assert not e.apply_pending_restart(now=float("inf")), "one restart per change"
    lane = _drive(e, lambda ln: ln.state in ("done", "warning", "failed"))
    assert lane.state in ("done", "warning"), lane.message
    e.settings.rtol = 3e-3  # after the run: no restart, the hint asks for Run
    e.render()
    assert e.worker.lanes["main"] is lane and e.pending.visible


def test_time_left_extrapolates_the_pace_of_the_last_steps():
    from types import SimpleNamespace

    from app.status import format_left, phase_text, time_left

    snaps = [SimpleNamespace(t=0.1 * k, wall_time=0.5 * k) for k in range(11)]  # 0.2 model time / s
    lane = SimpleNamespace(history=snaps[:2], T=3.0)
    assert time_left(lane) is None
    lane.history = snaps
    assert time_left(lane) == pytest.approx((3.0 - 1.0) / 0.2)
    assert format_left(10.0) == "≈ 10 s left" and format_left(600) == "≈ 10 min left"
    lane = SimpleNamespace(history=snaps, T=3.0, state="running", paused=False, steps_allowed=0, latest=snaps[-1],
                           recording=None)
    assert phase_text(lane) == "running · ≈ 10 s left"


def test_a_conditional_from_the_app_evolves_its_partial_diffusion_run_and_shows_a_density():
    """Asking for x1 | x0 = 1 on a run with full diffusion evolves the run it needs (diffuse = [1],
    same data-free start, with a notice), then shows the weighted histogram of x1 with the exact
    conditional density.  A page of its own: the driven page's settings were changed by the tests
    above."""
    from app.main import MNEExplorer

    e = MNEExplorer(live=False, **SMALL)
    try:
        _conditional_on_a_finished_run(e)
    finally:
        e.close()


def _conditional_on_a_finished_run(e):
    assert e.run()
    main = _drive(e, lambda ln: ln.state in ("done", "warning", "failed"))
    assert main.state in ("done", "warning") and main.factory.config.diffuse is None
    e.sample_settings.param.update(conditional=True, axis=0, value=1.0, n_samples=800, method="is")
    assert e.draw_samples()
    assert e.samples.message.visible and "partial diffusion" in e.samples.message.object
    t0 = time.time()
    while e.samples.result is None and time.time() - t0 < 180:
        e.render()
        time.sleep(0.05)
    e.render()
    cond_lane = e.worker.lanes["cond"]
    assert cond_lane.factory.config.diffuse == (1,) and cond_lane.start_reused
    _, result, error, _ = e.samples.result
    assert error is None, error
    assert result["condition"] == {0: 1.0} and result["axis"] == 1
    np.testing.assert_allclose(result["samples"][:, 0], 1.0)
    assert e.samples._cond_pane.visible and not e.samples._scatter_pane.visible
    data = e.samples.cond_view.pipe.data
    widths = np.diff(data["edges"])
    assert np.sum(data["density"] * widths) == pytest.approx(1.0, rel=1e-6)
    grid, exact = data["grid"], data["exact"]
    assert exact is not None and np.trapezoid(exact, grid) == pytest.approx(1.0, abs=0.02)
    if result["summary"]["status"] != "failed":  # the bias-corrected mean of x1 | x0 = 1 is near the exact one
        w = np.exp(result["log_weights"] - result["log_weights"].max())
        mean = np.sum(w * result["samples"][:, 1]) / np.sum(w)
        assert abs(mean - np.trapezoid(grid * exact, grid)) < 0.3
    e.sample_settings.conditional = False


def test_a_running_lane_moves_the_cloud_every_frame_and_one_other_plot_per_frame():
    """Full renders of a running lane (app.live.STAGES): each moves the particle cloud and
    updates exactly one of the stale plots, in turn, so none starves; an ended run is drawn whole."""
    from app.live import STAGES
    from app.main import MNEExplorer

    e = MNEExplorer(live=False, autorun=False)
    try:
        assert e.run(recorded=True)
        lane = _drive(e, lambda ln: len(ln.history) >= 2, timeout=10)
        live = e.live
        drawn = []
        for _ in range(3 * len(STAGES)):
            while lane.active and lane.version == live._seen[0]:
                time.sleep(0.01)
            if not lane.active:
                break
            before = dict(live._shown)
            e.render()
            changed = [st for st in STAGES if live._shown[st] != before[st]]
            assert len(changed) <= 1, changed
            drawn += changed
            assert np.array_equal(np.array(live.field.points_pipe.data)[:, :2],
                                  np.asarray(lane.history[-1].points)[:, :2]) or lane.version != live._seen[0]
        assert {"spectrum", "weights", "diagnostics"} <= set(drawn), drawn
        lane = _drive(e, lambda ln: ln.state in ("done", "warning", "failed"), timeout=30)
        assert all(live._shown[st] == live._state(st, lane) for st in STAGES)
        assert live.diagnostics.rows == len(lane.history)
    finally:
        e.close()


def test_a_congested_server_gets_light_frames_and_the_plots_catch_up_afterwards():
    """While the server's loop is congested (app.pacing) a render moves only the particle cloud:
    the diagnostics and weights keep their last state; the next full render brings them to the
    newest step."""
    from app.main import MNEExplorer

    e = MNEExplorer(live=False, autorun=False)
    try:
        assert e.run(recorded=True)
        lane = _drive(e, lambda ln: len(ln.history) >= 2, timeout=10)
        rows, weights = e.live.diagnostics.rows, e.live.weights.pipe.data
        t0 = time.time()
        while len(lane.history) < rows + 3 and time.time() - t0 < 10:
            time.sleep(0.05)
        e.render(light=True)
        shown = np.array(e.live.field.points_pipe.data)[:, :2]
        later = list(lane.history)[rows:]  # the recording keeps playing meanwhile
        assert any(np.array_equal(shown, np.asarray(sn.points)[:, :2]) for sn in later)
        assert e.live.diagnostics.rows == rows and e.live.weights.pipe.data is weights
        # full renders of a running lane bring one stale plot each, in turn: within len(STAGES)
        # frames both have caught up
        from app.live import STAGES

        for _ in STAGES:
            e.render()
        assert e.live.diagnostics.rows > rows and e.live.weights.pipe.data is not weights
        # a run that has ended is rendered in full even while the loop is congested
        lane = _drive(e, lambda ln: ln.state in ("done", "warning", "failed"), timeout=30)
        e.render(light=True)
        assert e.live.diagnostics.rows == len(lane.history)
    finally:
        e.close()
