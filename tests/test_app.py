"""Unit tests of the dashboard: the UI-free Settings, presets, and the Viewer's reactions
(no engine steps here; see test_app_model.py for the plot data of a real run)."""
from __future__ import annotations

import json
import math

import param
import pytest

from app.settings import DEFAULT_PRESET, PRESET_NAMES, PRESETS, Settings

SMALL = dict(n_points=64, T=0.2, width=16, sketch_rank=32, fit_points=256, fit_steps=50, gn_steps=2,
             mala_steps=5)


# ----------------------------------------------------------------------------- settings
def test_defaults_match_engine_config():
    from mne_core import EvolveConfig

    cfg = Settings().to_config()
    default = EvolveConfig().resolved(2)  # auto sizes shown as their 2-D values
    for field in mc_fields():
        if field != "target":
            assert getattr(cfg, field) == getattr(default, field), field
    assert cfg.target == {"kind": "named", "name": "two-modes"}


def mc_fields():
    from mne_core import FIELDS

    return list(FIELDS)


def test_every_config_field_is_a_setting_and_a_cli_option():
    """One source of truth: each EvolveConfig field is a Settings parameter (with the config's
    choices, bounds and help) and a command-line option of evolve and sample."""
    import argparse

    import param

    from app.cli import build_parser
    from mne_core import FIELDS

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for cmd in ("evolve", "sample"):
        dests = {a.dest: a for a in subs[cmd]._actions}
        for name, f in FIELDS.items():
            if name == "target":
                continue  # --target / --energy / --dim
            assert name in dests, (cmd, name)
            if f.metadata["choices"] is not None:
                assert list(dests[name].choices) == list(f.metadata["choices"]), (cmd, name)
            assert f.metadata["help"] in dests[name].help
    for name, f in FIELDS.items():
        if name == "target":
            continue
        assert name in Settings.param, name
        p = Settings.param[name]
        assert p.doc == f.metadata["help"], name
        if f.metadata["choices"] is not None:
            assert list(p.objects) == list(f.metadata["choices"]), name
        if f.metadata["bounds"] is not None and isinstance(p, param.Number):
            assert tuple(p.bounds) == tuple(f.metadata["bounds"]), name


def test_every_setting_has_doc_and_is_in_the_url():
    s = Settings()
    for name in Settings.RUN_PARAMS + ("preset", "speed", "autorun", "proj_x", "proj_y"):
        assert s.param[name].doc, name
        assert name in Settings.URL_PARAMS
    assert "seed" in Settings.URL_PARAMS


def test_bounds_are_enforced():
    s = Settings()
    with pytest.raises(ValueError):
        s.sketch_rank = 0
    with pytest.raises(ValueError):
        s.n_points = 10**6
    with pytest.raises(ValueError):
        s.solver = "magic"


def test_presets_are_data_and_apply():
    assert DEFAULT_PRESET == "two-modes"
    for pair in PRESETS["compare"]:
        assert all(p in PRESET_NAMES for p in pair)
    for name in ("rank-too-small", "rank-enough", "loose-tolerance", "tight-tolerance", "funnel"):
        assert name in PRESET_NAMES
        s = Settings(preset=name)
        for k, v in PRESETS["presets"][name]["settings"].items():
            assert getattr(s, k) == v
        s.to_config()  # every preset is a valid engine config
    s = Settings(preset="rank-too-small")
    assert s.sketch_rank == 4
    s.preset = "rank-enough"
    assert s.sketch_rank == 256
    s.preset = "funnel"
    assert s.to_config().target == {"kind": "named", "name": "funnel", "dim": 2}


def test_preset_and_overrides_in_one_batch_keep_the_overrides():
    # what pn.state.location.sync does with ?preset=rank-too-small&seed=7&sketch_rank=8
    s = Settings()
    s.param.update(preset="rank-too-small", seed=7, sketch_rank=8)
    assert (s.preset, s.seed, s.sketch_rank, s.T) == ("rank-too-small", 7, 8, 2.0)
    s2 = Settings(preset="funnel", seed=3)
    assert (s2.target_name, s2.seed) == ("funnel", 3)


def test_url_query_round_trip():
    """A link reproduces the run: Panel's Location.sync applies the query to fresh settings."""
    from panel.io.location import Location

    s = Settings(preset="loose-tolerance", seed=11, reg=1e-6, n_points=256, autorun=False, dim=3)
    loc = Location(search="?" + s.url_query())
    t = Settings()
    loc.sync(t, {p: p for p in Settings.URL_PARAMS})
    assert t.run_values() == s.run_values()
    assert t.to_config() == s.to_config()
    assert t.autorun is False and t.preset == "loose-tolerance"


def test_url_with_only_a_preset_and_a_seed():
    from panel.io.location import Location

    t = Settings()
    Location(search="?preset=rank-too-small&seed=5").sync(t, {p: p for p in Settings.URL_PARAMS})
    assert (t.sketch_rank, t.seed, t.T) == (4, 5, 2.0)


def test_target_specs():
    s = Settings(target_kind="energy", expression="x0**2/2 + x1**2/2", dim=2)
    assert s.target_spec() == {"kind": "energy", "expression": "x0**2/2 + x1**2/2", "dim": 2}
    mix = {"weights": [1.0], "means": [[0.0, 1.0]], "covariances": [[[1.0, 0.0], [0.0, 1.0]]]}
    s = Settings(target_kind="gaussian_mixture", mixture=json.dumps(mix))
    assert s.target_spec()["kind"] == "gaussian_mixture"
    s = Settings(target_kind="gaussian_mixture", mixture="{not json")
    with pytest.raises(ValueError, match="malformed"):
        s.target_spec()


def test_bad_numbers_and_memory_are_refused_with_a_message():
    from mne_core import ConfigError

    s = Settings()
    with pytest.raises(ValueError):
        s.reg = float("nan")  # bounds reject NaN
    s = Settings(n_points=16384, width=1024, depth=8)
    assert s.problems() and "exhaust memory" in s.problems()[0]
    with pytest.raises(ConfigError, match="exhaust memory"):
        s.to_config()


def test_num_params_matches_network():
    from mne_core import init_energy_network

    s = Settings(width=24, depth=3)
    net, theta = init_energy_network(2, 24, 3, "tanh")
    assert s.num_params() == net.num_params == theta.size


def test_num_params_counts_the_block_network():
    """On a separable target above d = 4 the run builds a block network; the app counts that one."""
    from mne_core import Evolution

    s = Settings(target_kind="named", target_name="many-well", dim=8, width=64, depth=2)
    ev = Evolution(s.to_config())
    assert ev.net.blocks is not None
    assert s.num_params() == ev.net.num_params
    mlp = Settings(target_kind="named", target_name="many-well", dim=8, width=64, depth=2, network="mlp")
    assert mlp.num_params() == Evolution(mlp.to_config()).net.num_params != s.num_params()


# ----------------------------------------------------------------------------- viewer
@pytest.fixture
def explorer():
    from app.main import MNEExplorer

    e = MNEExplorer(live=False, autorun=False, **SMALL)
    yield e
    e.close()


def test_bad_url_values_are_reported_and_the_rest_applied():
    from panel.io.location import Location

    from app.main import MNEExplorer

    e = MNEExplorer(live=False, autorun=False)
    try:
        Location(search="?seed=9&reg=nan&sketch_rank=-3&T=1.5").sync(
            e.settings, {p: p for p in Settings.URL_PARAMS}, on_error=e.url_error)
        assert (e.settings.seed, e.settings.T) == (9, 1.5)
        assert e.settings.sketch_rank == 256 and e.settings.reg == Settings().reg
        assert e.message.visible and "reg" in e.message.object and "sketch_rank" in e.message.object
    finally:
        e.close()


def test_status_format():
    from types import SimpleNamespace

    from app.main import format_status

    snap = SimpleNamespace(t=1.234, num_accepted=45, num_rejected=3, dt=0.0213)
    assert format_status(snap) == "t = 1.23 · steps 45 · rejected 3 · dt 0.021"
    assert format_status(None) == "t = 0.00 · steps 0 · rejected 0 · dt 0.000"
    assert format_status(SimpleNamespace(t=0.5, num_accepted=1, num_rejected=0, dt=2e-5)).endswith("dt 2.0e-05")


def test_viewer_renders_to_bokeh(explorer):
    import panel as pn
    from bokeh.document import Document

    root = pn.panel(explorer).get_root(Document())
    assert root is not None
    assert explorer.status.object == "`t = 0.00 · steps 0 · rejected 0 · dt 0.000`"


def test_inline_expression_errors(explorer):
    s = explorer.settings
    s.target_kind = "energy"
    s.expression = "x0**2 + __import__('os')"
    assert explorer.expression_error.visible
    assert explorer.expression_error.object
    s.expression = "x0**2/2 + x1**2/2"
    assert not explorer.expression_error.visible
    s.expression = "x0 +* 2"
    assert explorer.expression_error.visible
    # a bad expression does not start a run, and says so inline
    assert explorer.run() is False
    assert explorer.message.visible and "Cannot start" in explorer.message.object
    assert "main" not in explorer.worker.lanes


def test_json_upload(explorer):
    good = {"kind": "gaussian_mixture", "weights": [0.5, 0.5], "means": [[-1.0, 0.0], [1.0, 0.0]],
            "covariances": [[[0.5, 0.0], [0.0, 0.5]], [[0.5, 0.0], [0.0, 0.5]]]}
    assert explorer.upload_mixture(json.dumps(good).encode(), "good.json")
    assert explorer.settings.target_kind == "gaussian_mixture"
    assert json.loads(explorer.settings.mixture)["weights"] == [0.5, 0.5]
    assert not explorer.upload_msg.visible
    before = explorer.settings.mixture
    assert not explorer.upload_mixture(b"{ not json")
    assert explorer.upload_msg.visible and explorer.settings.mixture == before
    bad = dict(good, covariances=[[[-1.0, 0.0], [0.0, 0.5]], [[0.5, 0.0], [0.0, 0.5]]])
    assert not explorer.upload_mixture(json.dumps(bad).encode())
    assert explorer.upload_msg.visible and explorer.settings.mixture == before


def test_a_too_large_upload_is_refused_inline_and_the_session_keeps_working(explorer):
    """Above MAX_UPLOAD_BYTES (far below the websocket's limit) the upload box says why, the
    target is unchanged, and the next (good) upload works; the widget refuses such files in the
    browser too and sends the others in chunks below the websocket limit."""
    from app.main import MAX_UPLOAD_BYTES

    good = {"kind": "gaussian_mixture", "weights": [0.5, 0.5], "means": [[-1.0, 0.0], [1.0, 0.0]],
            "covariances": [[[0.5, 0.0], [0.0, 0.5]], [[0.5, 0.0], [0.0, 0.5]]]}
    explorer.settings.target_kind = "gaussian_mixture"  # the upload box shows with this target kind
    before = explorer.settings.mixture
    big = json.dumps(dict(good, comment="x" * MAX_UPLOAD_BYTES)).encode()
    assert MAX_UPLOAD_BYTES < 20 * 2**20  # Bokeh's websocket message limit
    assert not explorer.upload_mixture(big, "big.json")
    assert explorer.upload_msg.visible and "big.json" in explorer.upload_msg.object
    assert "1 MB" in explorer.upload_msg.object and explorer.settings.mixture == before
    # through the widget, as the browser delivers it (text content per file name)
    explorer.upload.value = {"big.json": big.decode()}
    assert explorer.upload_msg.visible and explorer.settings.mixture == before
    explorer.upload.value = {"good.json": json.dumps(good)}
    assert not explorer.upload_msg.visible
    assert json.loads(explorer.settings.mixture)["weights"] == [0.5, 0.5]
    assert explorer.upload.max_file_size == "1000KB"
    assert explorer.upload.chunk_size * 4 < 20 * 2**20


def test_log_sliders_drive_settings(explorer):
    explorer.reg.value = -6.0
    assert math.isclose(explorer.settings.reg, 1e-6)
    explorer.settings.rtol = 1e-3
    assert explorer.rtol.value == -3.0


def test_memory_exhausting_sizes_are_refused_inline(explorer):
    explorer.settings.param.update(n_points=16384, width=1024, depth=8)
    assert explorer.run() is False
    assert "exhaust memory" in explorer.message.object


def test_session_close_stops_the_worker(explorer):
    assert explorer.worker.alive
    explorer.close()
    assert not explorer.worker.alive


def test_an_abandoned_worker_stops_itself_without_the_page():
    """The worker of a session whose tab is gone ends by itself, between two steps, even when the
    page's render loop does not run (the server busy building another page)."""
    import time

    from app.worker import SessionWorker

    gone = {"now": False}
    worker = SessionWorker()
    worker.abandoned = lambda: gone["now"]
    try:
        time.sleep(0.3)
        assert worker.alive and not worker.closed
        gone["now"] = True
        t0 = time.monotonic()
        while worker.alive and time.monotonic() - t0 < 5:
            time.sleep(0.02)
        assert not worker.alive and worker.closed and time.monotonic() - t0 < 1.0
    finally:
        worker.close()


def test_sessions_are_isolated():
    from app.main import MNEExplorer

    a = MNEExplorer(live=False, autorun=False, seed=1)
    b = MNEExplorer(live=False, autorun=False, seed=2)
    try:
        a.settings.sketch_rank = 8
        assert b.settings.sketch_rank == 256 and b.settings.seed == 2
        assert a.worker is not b.worker and a.live.field.points_pipe is not b.live.field.points_pipe
    finally:
        a.close()
        b.close()


def test_sampling_tab_hidden_cleanly_without_engine_api(explorer):
    import mne_core
    import panel as pn

    tab = explorer.samples
    assert tab.available == hasattr(mne_core, "sample")
    if tab.available:
        assert tab.button in list(pn.panel(tab).select(type(tab.button)))
    else:
        assert "not have" in pn.panel(tab).object


def test_module_is_importable_without_serving():
    import app.main

    assert hasattr(app.main, "serve") and callable(app.main.serve)


# ----------------------------------------------------------------------------- structure
def test_plots_import_neither_the_worker_nor_a_backend():
    """plots.py needs only the display data (app.fields), and loading HoloViews' backend happens
    where the app is created, not at import."""
    import subprocess
    import sys

    code = ("import sys, holoviews as hv; import app.plots, app.fields; "
            "assert 'app.worker' not in sys.modules, 'plots imports the worker'; "
            "assert not hv.Store.renderers, 'hv.extension ran at import'; "
            "app.plots.ensure_backend(); assert 'bokeh' in hv.Store.renderers")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_worker_is_about_threads_only():
    import app.fields
    import app.worker

    for name in ("initial_field", "grid_points", "LEVELS", "GRID", "Field"):
        assert hasattr(app.fields, name)
    src = open(app.worker.__file__, encoding="utf-8").read()
    assert "def _extent" not in src and "def _grid" not in src and "meshgrid" not in src


def test_one_viewer_per_tab(explorer):
    from app.compare import CompareTab
    from app.live import LiveTab
    from app.samples import SamplesTab

    assert isinstance(explorer.live, LiveTab)
    assert isinstance(explorer.compare, CompareTab)
    assert isinstance(explorer.samples, SamplesTab)
    assert len(explorer.tabs) == 3


def test_no_deprecated_panel_api():
    import warnings

    from app.main import MNEExplorer

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e = MNEExplorer(live=False, autorun=False)
        e.close()
    bad = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught
           if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))
           and "/app/" in (w.filename or "")]
    assert not bad, bad


# ----------------------------------------------------------------------------- sample settings
def test_sample_settings_are_ui_free_validated_and_url_synced():
    from panel.io.location import Location

    from app.settings import SampleSettings

    s = SampleSettings(n_samples=500, seed=4, method="smc", conditional=True, axis=0, value=1.5)
    assert s.request(2) == {"n_samples": 500, "seed": 4, "method": "smc", "condition": {0: 1.5}}
    assert SampleSettings().condition(2) is None
    with pytest.raises(ValueError, match="does not exist"):
        SampleSettings(conditional=True, axis=3).condition(2)
    with pytest.raises(ValueError):
        SampleSettings(method="mcmc")
    with pytest.raises(ValueError):
        SampleSettings(n_samples=1)
    t = SampleSettings()
    Location(search="?" + s.url_query()).sync(t, dict(SampleSettings.URL_NAMES))
    assert t.param.values() | {"name": None} == s.param.values() | {"name": None}


def test_samples_tab_refuses_without_a_finished_run(explorer):
    assert explorer.draw_samples() is False
    assert explorer.samples.message.visible and "Finish a run" in explorer.samples.message.object


# ----------------------------------------------------------------------------- honest text
@pytest.fixture
def plain():
    from app.main import MNEExplorer

    e = MNEExplorer(live=False, autorun=False)  # the default preset, unmodified
    yield e
    e.close()


def test_teaching_text_and_preset_label_follow_the_settings(plain):
    explorer = plain
    s = explorer.settings
    title = PRESETS["presets"][s.preset]["title"]
    assert title in explorer.teach.object and explorer.preset_select.label == "Preset"
    s.rtol = 3e-4 if s.rtol != 3e-4 else 1e-3  # not part of the preset's lesson: its text still holds, marked modified
    assert title in explorer.teach.object and "modified" in explorer.teach.object
    assert explorer.preset_select.label == "Preset (modified)" and s.preset_label.endswith("(modified)")
    s.target_name = "ring"  # another target: the preset's text would be wrong
    assert title not in explorer.teach.object
    assert "Custom settings" in explorer.teach.object and "ring" in explorer.teach.object
    s.preset = "rank-enough"
    assert PRESETS["presets"]["rank-enough"]["title"] in explorer.teach.object
    assert explorer.preset_select.label == "Preset" and not s.modified
    s.sketch_rank = 8  # a setting the preset's lesson is about
    assert "Custom settings" in explorer.teach.object


from test_presets import OUTCOMES  # noqa: E402


def test_every_preset_states_its_outcome():
    """A preset is a success story or an explicitly labelled lesson in failure."""
    for name, p in PRESETS["presets"].items():
        assert p.get("expect") in OUTCOMES, name
        if p["expect"] != "ok":
            text = (p["title"] + " " + p["teach"]).lower()
            assert "failure" in text or "fail" in text or "warning" in text, name


def test_warning_state_is_amber_with_reason():
    from types import SimpleNamespace

    from app.status import bar_color, lane_badge, phase_text

    lane = SimpleNamespace(state="warning", message="energy error grew", latest=None, paused=False,
                           steps_allowed=0, stage="", stage_fraction=0.0)
    assert bar_color(lane) == "warning" and "energy error grew" in phase_text(lane)
    assert lane_badge(lane).startswith("⚠")
    lane.state = "done"
    assert bar_color(lane) == "success"
    lane.state = "failed"
    assert bar_color(lane) == "danger"


# ----------------------------------------------------------------------------- readable
def test_status_css_is_applied_to_the_status_pane(explorer):
    import re

    css = " ".join(explorer.status.stylesheets)
    sizes = [float(x) for x in re.findall(r"font-size:\s*(\d+(?:\.\d+)?)px", css)]
    assert sizes and min(sizes) >= 15


def test_presentation_mode_hides_controls():
    from app.main import MNEExplorer

    e = MNEExplorer(live=False, autorun=False, present=True)
    try:
        assert e.controls.visible is False
        e.settings.present = False
        assert e.controls.visible is True
    finally:
        e.close()


def test_keyboard_shortcuts(explorer):
    explorer.shortcuts.press("ArrowRight")  # a single step: starts a paused run
    lane = explorer.worker.lanes.get("main")
    assert lane is not None and lane.paused
    explorer.shortcuts.press("r")
    assert "main" not in explorer.worker.lanes and explorer.phase.object == "reset"
    explorer.shortcuts.press("x")  # not a shortcut: nothing happens
    assert "main" not in explorer.worker.lanes


def test_start_params_are_the_engines_start_fields():
    """Settings.START_PARAMS is the target plus mne_core.config.START_FIELDS; changing a start
    setting changes the engine's start_key, changing any other run setting keeps it."""
    from mne_core.config import FIELDS, START_FIELDS, start_key

    assert "target" in START_FIELDS and set(START_FIELDS) <= set(FIELDS)
    assert set(Settings.START_PARAMS) == set(Settings.TARGET_PARAMS) | (set(START_FIELDS) - {"target"})
    base = Settings(**SMALL)
    key = start_key(base.to_config())
    other = {"solver": "full", "sketch_kind": "gaussian", "sketch_rank": 16, "reg": 1e-3, "integrator": "dopri5", "clock": "log",
             "rtol": 1e-3, "atol": 1e-5, "T": 0.5, "max_steps": 99, "diffuse": "0",
             "seed": 7, "n_points": 32, "width": 8, "depth": 3, "activation": "tanh", "network": "blocks", "precision": "float32",
             "init": "exact", "fit_points": 512, "fit_steps": 7, "gn_steps": 3, "mala_steps": 6, "wide_headroom": 40.0,
             "standardize": "off", "refresh": "on", "fit_scores": "on",
             "target_name": "ring"}
    assert set(other) >= set(Settings.RUN_PARAMS) - {"target_kind", "expression", "mixture", "dim"}
    for name, value in other.items():
        s = Settings(**{**SMALL, name: value})
        same = start_key(s.to_config()) == key
        assert same == (name not in Settings.START_PARAMS), name
        assert (s.start_key() == base.start_key()) == same, name


def _root(plot):
    import panel as pn
    from bokeh.document import Document

    return pn.panel(plot).get_root(Document())


def _legend_and_colors(root):
    from bokeh.models import GlyphRenderer, Legend

    if not hasattr(root, "references"):
        root = _root(root)
    labels = [item.label.get("value") if isinstance(item.label, dict) else getattr(item.label, "value", item.label)
              for m in root.references() if isinstance(m, Legend) for item in m.items]
    glyphs = [r.glyph for r in root.references() if isinstance(r, GlyphRenderer)]
    return labels, glyphs


def _line_colors(root) -> list:
    """Every line colour drawn (a glyph's own, or the per-line colours of a batched MultiLine)."""
    from bokeh.models import GlyphRenderer

    out = []
    for r in root.references():
        if isinstance(r, GlyphRenderer):
            color = getattr(r.glyph, "line_color", None)
            if isinstance(color, str):
                out.append(color)
            out.extend(str(c) for c in r.data_source.data.get("color", []) if isinstance(c, str))
    return out


def test_pins_keep_their_colour_in_every_plot_and_no_placeholders():
    import numpy as np

    from app.plots import LIVE_COLOR, DiagnosticsView, SpectrumView, pin_color

    diag = {k: np.array([0.0, 0.1, 0.2]) + 1.0 for k in ("t", "dt", "residual", "rejected", "energy_error")}
    pins = [{"label": f"{i + 1}: run", "color": pin_color(i), "eig": np.array([3.0, 2.0, 1.0]) * (i + 1),
             "diag": diag} for i in range(2)]
    assert pin_color(0) != pin_color(1) and LIVE_COLOR not in (pin_color(0), pin_color(1))
    spectrum, diagnostics = SpectrumView(), DiagnosticsView()
    roots = [_root(plot) for plot in [spectrum.plot] + diagnostics.plots]
    for root in roots:
        labels, _ = _legend_and_colors(root)
        assert not any("no pinned" in str(label) for label in labels), labels
    spectrum.pinned_pipe.send(pins)
    diagnostics.pinned_pipe.send(pins)
    for root in roots:
        labels, _ = _legend_and_colors(root)
        colors = _line_colors(root)
        assert pin_color(0) in colors and pin_color(1) in colors and LIVE_COLOR in colors, colors
        assert not any("run" in str(label) or "no pinned" in str(label) for label in labels), labels
    spectrum.pinned_pipe.send(pins[1:])  # pin 2 keeps its colour when pin 1 goes
    assert pin_color(1) in _line_colors(roots[0])
    spectrum.pinned_pipe.send([])  # unpinning leaves no placeholder legend entry either
    labels, _ = _legend_and_colors(roots[0])
    assert labels == ["full NTK JJᵀ (N×N)", "sketch Gram ΩᵀKΩ (n×n)"], labels


def test_contour_legend_says_model_solid_exact_dashed():
    import mne_core as mc

    from app.fields import initial_field
    from app.plots import FieldView

    view = FieldView(color="#ff7f0e")
    f, _ = initial_field(mc.target_from_spec({"kind": "named", "name": "gaussian", "dim": 2}))
    view.show_field(f)
    labels, glyphs = _legend_and_colors(view.plot)
    assert any("model" in lb and "solid" in lb for lb in labels), labels
    assert any("exact" in lb and "dashed" in lb for lb in labels), labels
    dashed = [g for g in glyphs if getattr(g, "line_dash", None)]
    assert dashed and all(g.line_color != "#ff7f0e" for g in dashed)


def test_pin_key_in_the_live_tab(explorer):
    import numpy as np

    from app.plots import pin_color

    pins = [{"label": "1: x", "color": pin_color(0), "eig": np.ones(3),
             "diag": {k: np.arange(3.0) for k in ("t", "dt", "residual", "rejected", "energy_error")}}]
    explorer.live.show_pins(pins)
    assert explorer.live.pins_key.visible and pin_color(0) in explorer.live.pins_key.object
    explorer.compare.show_pins(pins)
    assert "1: x" in explorer.compare.pins_md.object and pin_color(0) in explorer.compare.pins_md.object
    explorer.live.show_pins([])
    assert not explorer.live.pins_key.visible


def test_server_memory_helpers_reach_glibc():
    """The served app caps malloc arenas and trims freed memory after sessions (glibc)."""
    import sys
    import time

    from app import memory

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    assert memory.limit_malloc_arenas(memory.ARENAS) is True
    assert isinstance(memory.trim(), bool)
    memory.trim_soon(0.01)
    memory.trim_soon(0.01)  # shares the pending one
    time.sleep(0.2)
    assert memory._PENDING["timer"] is None


def test_samples_summary_line_shows_mass_error_bars_and_hides_withheld_estimates():
    from app.samples import MASSES_SHOWN, summary_text
    s = {"ess": 812.0, "ess_fraction": 0.406, "log_z": -0.0123, "log_z_stderr": 0.0041,
         "mode_masses": [0.3021, 0.6979], "mode_masses_stderr": [0.0062, 0.0062], "mode_masses_exact": [0.3, 0.7]}
    assert summary_text(s) == ("ESS = 812 (41 %) · log Ẑ = -0.012 ± 0.004 · "
                               "mode masses 0.302 ± 0.006, 0.698 ± 0.006 (exact 0.3, 0.7)")
    failed = {"ess": 2.0, "ess_fraction": 0.001, "log_z": None, "log_z_withheld": -3.0, "mode_masses_withheld": [0.0, 1.0]}
    assert summary_text(failed) == "ESS = 2 (0 %)"
    grown = {"ess": 14560.0, "ess_fraction": 0.91, "n_samples": 4000, "smc": {"particles": 16000}}
    assert summary_text(grown) == "ESS = 14560 (91 % of 16000 particles)"
    many = {"mode_masses": [1 / 256] * 256, "mode_masses_stderr": [0.001] * 256}
    assert summary_text(many).count("±") == MASSES_SHOWN and "(256 modes)" in summary_text(many)
