"""MNE Explorer: the dashboard (a thin ``pn.viewable.Viewer`` over :class:`app.settings.Settings`).

Serve it with ``mne-explorer serve --port 5006`` (calls :func:`serve`), ``panel serve app/main.py``,
or embed it in Jupyter: ``from app import MNEExplorer; MNEExplorer()``.

Threads: one :class:`app.worker.SessionWorker` per session pulls snapshots from the engine; a
periodic callback (15 Hz) on the session's document renders the latest of them into Pipes and
Buffers created once.  The page never blocks on the engine.
"""
from __future__ import annotations

import json
import math
import sys
import time

import numpy as np
import panel as pn
import param

from app.plots import EMPTY_WEIGHTS, DiagnosticsView, FieldView, SamplesView, SpectrumView, WeightsView
from app.settings import PRESET_NAMES, PRESETS, Settings
from app.worker import SessionWorker

RENDER_PERIOD_MS = 66  # ~15 Hz

CSS = """
.mne-status pre, .mne-status code {font-size: 15px; font-weight: 600;}
"""


def format_status(snap) -> str:
    """The status line: ``t = 1.23 · steps 45 · rejected 3 · dt 0.021``."""
    if snap is None:
        return "t = 0.00 · steps 0 · rejected 0 · dt 0.000"
    dt = float(snap.dt) if snap.dt is not None and math.isfinite(float(snap.dt)) else 0.0
    dt_text = f"{dt:.3f}" if dt >= 1e-3 or dt == 0 else f"{dt:.1e}"
    return (f"t = {float(snap.t):.2f} · steps {int(snap.num_accepted)} · "
            f"rejected {int(snap.num_rejected)} · dt {dt_text}")


def _engine():
    import mne_core

    return mne_core


class MNEExplorer(pn.viewable.Viewer):
    """The dashboard: controls, live plots of one run, replay, comparison and sampling."""

    settings = param.ClassSelector(class_=Settings, doc="All settings (URL-synced when served).")

    def __init__(self, settings: Settings | None = None, live: bool | None = None, **setting_values):
        super().__init__(settings=settings or Settings(**setting_values))
        s = self.settings
        self.worker = SessionWorker()
        self.worker.speed = s.speed
        self._served = bool(pn.state.curdoc and pn.state.curdoc.session_context)
        self._live = self._served or _in_notebook() if live is None else live
        self._loaded = False
        self._callback = None
        self._seen = {}                  # lane key -> (version, field_version)
        self._follow_guard = False
        self._scrub_field = None         # (version, Field) computed for the replayed time
        self._scrub_seen = None
        self._sample_result = None
        self._sample_seen = None
        self.pins: list[dict] = []
        self._closed = False

        # --- views (created once) -------------------------------------------------------------
        self.field = FieldView()
        self.spectrum = SpectrumView()
        self.weights = WeightsView()
        self.diagnostics = DiagnosticsView()
        self.compare_fields = {"A": FieldView("A", width=400, height=380), "B": FieldView("B", width=400, height=380)}
        self.compare_spectrum = SpectrumView(width=400, height=260)
        self.compare_diag = DiagnosticsView(width=400, height=160)
        self.samples = SamplesView()
        self._build_widgets()
        self._build_layout()
        self._show_initial_field()

        s.param.watch(self._on_settings, list(Settings.RUN_PARAMS))
        s.param.watch(self._on_preset, ["preset"])
        s.param.watch(lambda e: setattr(self.worker, "speed", e.new), ["speed"])
        s.param.watch(self._on_projection, ["proj_x", "proj_y"])
        s.param.watch(self._validate_target, ["expression", "dim", "target_kind", "mixture", "target_name"])

        if self._served:
            pn.state.location.sync(s, {p: p for p in Settings.URL_PARAMS}, on_error=self._url_error)
            pn.state.onload(self._on_load)
            pn.state.on_session_destroyed(lambda ctx: self.close())
        elif self._live:
            self._on_load()

    # ------------------------------------------------------------------------------- widgets
    def _build_widgets(self):
        s = self.settings
        w = pn.widgets
        fp = lambda pname, cls=None, **kw: (cls or _default_widget(s, pname)).from_param(s.param[pname], **kw)  # noqa: E731
        self.preset_select = fp("preset", w.Select, name="Preset", options=PRESET_NAMES)
        self.run_button = w.Button(name="▶ Run", button_type="primary", width=70)
        self.pause_button = w.Button(name="Pause", width=80)
        self.step_button = w.Button(name="Step", width=60)
        self.reset_button = w.Button(name="Reset", width=60)
        self.run_button.on_click(lambda e: self.run())
        self.pause_button.on_click(lambda e: self.toggle_pause())
        self.step_button.on_click(lambda e: self.step())
        self.reset_button.on_click(lambda e: self.reset())
        self.speed_widget = fp("speed", w.RadioButtonGroup, name="speed", button_type="light")
        self.pin_button = w.Button(name="Pin run", width=100)
        self.clear_pins_button = w.Button(name="Clear pins", width=100)
        self.pin_button.on_click(lambda e: self.pin())
        self.clear_pins_button.on_click(lambda e: self.clear_pins())

        self.target_kind = fp("target_kind", w.RadioButtonGroup, name="target", button_type="light")
        self.target_name = fp("target_name", w.Select, name="named target")
        self.expression = fp("expression", w.TextInput, name="energy U₀(x)")
        self.expression_error = pn.pane.Alert("", alert_type="danger", visible=False, margin=(0, 10))
        self.dim = fp("dim", w.IntInput, name="dimension d")
        self.upload = w.FileInput(accept=".json", name="mixture JSON", multiple=False)
        self.upload.param.watch(self._on_upload, "value")
        self.upload_msg = pn.pane.Alert("", alert_type="danger", visible=False, margin=(0, 10))
        self.proj = pn.Row(fp("proj_x", w.IntInput, name="x axis", width=90),
                           fp("proj_y", w.IntInput, name="y axis", width=90))

        self.solver = fp("solver", w.Select)
        self.rank = fp("sketch_rank", w.EditableIntSlider, name="sketch rank n")
        self.reg = _log_slider(s, "reg", "log₁₀ λ (relative reg)", -14, -1)
        self.integrator = fp("integrator", w.Select)
        self.rtol = _log_slider(s, "rtol", "log₁₀ rtol", -10, -1)
        self.atol = _log_slider(s, "atol", "log₁₀ atol", -12, -1)
        self.n_points = fp("n_points", w.EditableIntSlider, name="collocation points N")
        self.T = fp("T", w.EditableFloatSlider, name="final time T", step=0.1)
        self.seed = fp("seed", w.IntInput)
        self.width_w = fp("width", w.EditableIntSlider, name="width")
        self.depth_w = fp("depth", w.IntSlider, name="depth")
        self.activation = fp("activation", w.Select)
        self.precision = fp("precision", w.RadioButtonGroup, button_type="light")
        self.advanced = [fp(p, w.IntInput if p != "init" else w.Select)
                         for p in ("init", "fit_points", "fit_steps", "gn_steps", "mala_steps", "max_steps")]
        self.advanced.insert(0, fp("sketch_kind", w.Select))
        self.advanced.append(fp("diffuse", w.TextInput))

        self.message = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self.status = pn.pane.Markdown(f"`{format_status(None)}`", css_classes=["mne-status"],
                                       stylesheets=[CSS], margin=(0, 10))
        self.phase = pn.pane.Markdown("ready", margin=(0, 10))
        self.progress = pn.indicators.Progress(value=0, max=1000, width=320, bar_color="primary")
        self.teach = pn.pane.Markdown(self.settings.teach, sizing_mode="stretch_width")

        self.scrubber = w.IntSlider(name="replay (accepted step)", start=0, end=1, value=0, width=420)
        self.follow = w.Checkbox(name="follow live", value=True)
        self.scrubber.param.watch(self._on_scrub, "value")
        self.follow.param.watch(self._on_follow, "value")

        # compare
        choices = ["current settings"] + PRESET_NAMES
        pair = (PRESETS.get("compare") or [[PRESET_NAMES[0], PRESET_NAMES[0]]])[0]
        self.compare_left = w.Select(name="left (A)", options=choices, value=pair[0], width=200)
        self.compare_right = w.Select(name="right (B)", options=choices, value=pair[1], width=200)
        self.compare_button = w.Button(name="▶ Run side by side", button_type="primary", width=160)
        self.compare_button.on_click(lambda e: self.run_compare())
        self.compare_status = {k: pn.pane.Markdown(f"**{k}** `{format_status(None)}`") for k in "AB"}
        self.compare_msg = pn.pane.Alert("", alert_type="danger", visible=False)
        self.pins_md = pn.pane.Markdown("No pinned runs: press **Pin run** to keep a run for comparison.")

        # sampling
        self.sample_n = w.IntInput(name="samples", value=2000, start=10, end=200000, width=110)
        self.sample_seed = w.IntInput(name="seed", value=0, start=0, width=90)
        self.sample_conditional = w.Checkbox(name="condition on y", value=False)
        self.sample_axis = w.IntInput(name="coordinate", value=1, start=0, width=90)
        self.sample_y = w.FloatInput(name="y value", value=0.0, width=90)
        self.sample_button = w.Button(name="Draw samples", button_type="primary", width=130)
        self.sample_button.on_click(lambda e: self.draw_samples())
        self.sample_md = pn.pane.Markdown("")
        self.sample_msg = pn.pane.Alert("", alert_type="warning", visible=False)
        self._validate_target()
        self._update_target_widgets()

    def _build_layout(self):
        card = lambda title, *objs, collapsed=False: pn.Card(*objs, title=title, collapsed=collapsed,  # noqa: E731
                                                             sizing_mode="stretch_width", margin=(4, 2))
        controls = pn.Column(
            self.preset_select,
            pn.Row(self.run_button, self.pause_button, self.step_button, self.reset_button),
            pn.Row(pn.pane.Markdown("speed", margin=(8, 5)), self.speed_widget),
            pn.Row(self.pin_button, self.clear_pins_button),
            self.message,
            card("Target", self.target_kind, self.target_name, self.expression, self.expression_error,
                 self.dim, pn.pane.Markdown("Gaussian mixture (JSON upload):", margin=(0, 10)), self.upload,
                 self.upload_msg, self.proj),
            card("Method", self.solver, self.rank, self.reg, self.integrator, self.rtol, self.atol,
                 self.n_points, self.T, self.seed),
            card("Network", self.width_w, self.depth_w, self.activation, self.precision),
            card("Advanced (data-free start)", *self.advanced, collapsed=True),
            width=340,
        )
        live = pn.Column(
            pn.Row(self.field.plot, self.spectrum.plot),
            pn.Row(self.weights.plot, _grid2(self.diagnostics.plots)),
            pn.Row(self.scrubber, self.follow),
        )
        compare = pn.Column(
            pn.Row(self.compare_left, self.compare_right, self.compare_button),
            self.compare_msg,
            pn.Row(pn.Column(self.compare_status["A"], self.compare_fields["A"].plot),
                   pn.Column(self.compare_status["B"], self.compare_fields["B"].plot)),
            pn.Row(self.compare_spectrum.plot, _grid2(self.compare_diag.plots)),
            pn.pane.Markdown("### Pinned runs (overlaid on the Live tab's spectrum and diagnostics)"),
            self.pins_md,
        )
        available = hasattr(_engine(), "sample")
        if available:
            sampling = pn.Column(
                pn.pane.Markdown("Draw samples from the final model density and importance-weight them "
                                 "against the target (bias removal); optionally fix one coordinate to y."),
                pn.Row(self.sample_n, self.sample_seed, self.sample_button),
                pn.Row(self.sample_conditional, self.sample_axis, self.sample_y),
                self.sample_msg, self.sample_md, self.samples.plot)
        else:
            sampling = pn.pane.Alert("Sampling (weighted samples, ESS, log Ẑ, conditional samples) needs "
                                     "`mne_core.sample`, which this version of the engine does not have yet.",
                                     alert_type="info")
        self.tabs = pn.Tabs(("Live", live), ("Compare", compare), ("Samples", sampling), dynamic=False)
        header = pn.Column(
            pn.pane.Markdown("## MNE Explorer: neural evolution of energies, live", margin=(0, 10)),
            self.teach,
            pn.Row(self.status, self.progress, self.phase),
            sizing_mode="stretch_width")
        self._layout = pn.Row(controls, pn.Column(header, self.tabs, sizing_mode="stretch_width"),
                              sizing_mode="stretch_width")

    def _url_error(self, values: dict):
        """Some URL settings are invalid: apply the valid ones one by one, report the others."""
        bad = []
        for name, value in values.items():
            if name == "preset":
                continue
            try:
                self.settings.param.update(**{name: value})
            except Exception as err:
                bad.append(f"{name}={value!r} ({_clean_message(err)})")
        if "preset" in values:
            try:
                self.settings.param.update(preset=values["preset"],
                                           **{k: v for k, v in values.items() if k != "preset"
                                              and not any(b.startswith(f"{k}=") for b in bad)})
            except Exception as err:
                bad.append(f"preset={values['preset']!r} ({_clean_message(err)})")
        if bad:
            self._show_message("Ignored invalid settings in the URL: " + "; ".join(bad))

    def _show_initial_field(self):
        """First frame without waiting for the worker: the target's contours if already cached."""
        from app.worker import _FIELD_CACHE, initial_field

        try:
            spec = self.settings.to_config().target
            target = _engine().target_from_spec(spec)
            proj = (self.settings.proj_x, self.settings.proj_y)
            import json as _json

            if (_json.dumps(target.spec, sort_keys=True, default=str), proj) in _FIELD_CACHE:
                self.field.show_field(initial_field(target, proj)[0])
        except Exception:
            pass

    def __panel__(self):
        return self._layout

    # ------------------------------------------------------------------------------ lifecycle
    def _on_load(self):
        try:
            self._start_live()
        except Exception:  # never let a session die on load; show what happened
            import traceback

            traceback.print_exc()
            self._show_message("Could not start: " + traceback.format_exc(limit=1).strip().splitlines()[-1])

    def _start_live(self):
        if self._callback is None and self._live:
            self._callback = pn.state.add_periodic_callback(self.render, period=RENDER_PERIOD_MS)
        self._loaded = True
        if self.settings.autorun:
            self.run()
        self.render()

    def close(self):
        """Stop the worker thread and the render loop (called when the session ends)."""
        self._closed = True
        if self._callback is not None:
            try:
                self._callback.stop()
            except Exception:
                pass
            self._callback = None
        self.worker.close(timeout=1.0)

    # -------------------------------------------------------------------------------- actions
    def _factory(self, settings: Settings):
        """Validate the settings here (cheap: inline errors at once) and return the function that
        builds the Evolution in the worker (it may compile)."""
        mne = _engine()
        cfg = settings.to_config()
        mne.target_from_spec(cfg.target)
        return cfg, (lambda target=None: mne.Evolution(cfg, target=target))

    def run(self) -> bool:
        """Start a run of the current settings (or resume a paused one). Returns False on bad input."""
        lane = self.worker.lanes.get("main")
        if (lane is not None and lane.paused and lane.active and lane.evolution is not None
                and lane.evolution.config == self._config_or_none()):
            self.worker.pause("main", False)
            self.pause_button.name = "Pause"
            return True
        return self._start_main(paused=False, steps=0)

    def _config_or_none(self):
        try:
            return self.settings.to_config()
        except Exception:
            return None

    def _start_main(self, paused: bool, steps: int) -> bool:
        try:
            cfg, factory = self._factory(self.settings)
        except Exception as err:
            self._show_message(f"Cannot start this run: {_clean_message(err)}. The last run is kept.")
            return False
        self._show_message("")
        s = self.settings
        self.worker.start_lane("main", factory, T=cfg.T, spec=cfg.target, label=_label(s), proj=(s.proj_x, s.proj_y),
                               paused=paused, steps=steps)
        self._seen.pop("main", None)
        self.diagnostics.reset()
        self._set_follow(True)
        self.pause_button.name = "Resume" if paused else "Pause"
        return True

    def toggle_pause(self):
        lane = self.worker.lanes.get("main")
        if lane is None or not lane.active:
            return
        paused = not lane.paused
        self.worker.pause("main", paused)
        self.pause_button.name = "Resume" if paused else "Pause"

    def step(self):
        lane = self.worker.lanes.get("main")
        if lane is None or not lane.active:
            self._start_main(paused=True, steps=1)
        else:
            self.worker.step("main")
            self.pause_button.name = "Resume"

    def reset(self):
        self.worker.stop_lane("main")
        self._seen.pop("main", None)
        self.diagnostics.reset()
        self.field.show_points(None)
        self.field.show_field(None)
        self.spectrum.pipe.send({"eig": np.array([1.0]), "rank": 0, "reg": 0.0})
        self.weights.pipe.send(EMPTY_WEIGHTS)
        self.status.object = f"`{format_status(None)}`"
        self.phase.object = "reset"
        self.progress.value = 0
        self.pause_button.name = "Pause"
        self._set_follow(True)

    def pin(self) -> dict | None:
        """Keep the current run's diagnostics and spectrum, overlaid on the live plots."""
        lane = self.worker.lanes.get("main")
        if lane is None or lane.latest is None:
            return None
        pin = {"label": f"{len(self.pins) + 1}: {lane.label}", "diag": lane.history_diag(),
               "eig": np.asarray(lane.latest.gram_eigenvalues, dtype=float),
               "settings": self.settings.run_values()}
        self.pins.append(pin)
        self._show_pins()
        return pin

    def clear_pins(self):
        self.pins = []
        self._show_pins()

    def _show_pins(self):
        self.spectrum.pinned_pipe.send(self.pins)
        self.diagnostics.pinned_pipe.send(self.pins)
        if self.pins:
            self.pins_md.object = "\n".join(f"- **{p['label']}**" for p in self.pins)
        else:
            self.pins_md.object = "No pinned runs."

    def run_compare(self) -> bool:
        """Run two settings (presets or the current settings) side by side on shared axes."""
        lanes = {}
        for key, choice in (("A", self.compare_left.value), ("B", self.compare_right.value)):
            s = Settings(**self.settings.run_values()) if choice == "current settings" else Settings(preset=choice)
            try:
                lanes[key] = (self._factory(s), s, choice)
            except Exception as err:
                self.compare_msg.object = f"{key} ({choice}): {_clean_message(err)}"
                self.compare_msg.visible = True
                return False
        self.compare_msg.visible = False
        for key, ((cfg, factory), s, choice) in lanes.items():
            self.worker.start_lane(key, factory, T=cfg.T, spec=cfg.target, label=f"{key}: {choice}", proj=(s.proj_x, s.proj_y))
            self._seen.pop(key, None)
        self.compare_diag.reset()
        return True

    def draw_samples(self):
        mne = _engine()
        lane = self.worker.lanes.get("main")
        if not hasattr(mne, "sample"):
            return
        if lane is None or lane.state not in ("done", "warning"):
            self._sample_message("Finish a run first (sampling uses the model at t = T).")
            return
        n, seed = int(self.sample_n.value), int(self.sample_seed.value)
        condition = ({int(self.sample_axis.value): float(self.sample_y.value)}
                     if self.sample_conditional.value else None)
        self._sample_message("drawing samples…", kind="info")

        def job():
            res = mne.sample(lane.evolution.run, n, seed=seed, condition=condition)
            return {k: (np.asarray(getattr(res, k)) if k in ("samples", "log_weights") else getattr(res, k, None))
                    for k in ("samples", "log_weights", "log_z", "log_z_stderr", "ess", "ess_fraction")}

        def done(result, error):
            self._sample_result = (time.perf_counter(), result, error, lane.proj)

        self.worker.submit(job, done)

    def _sample_message(self, text, kind="warning"):
        self.sample_msg.object = text
        self.sample_msg.alert_type = kind
        self.sample_msg.visible = bool(text)

    # ------------------------------------------------------------------------------- reactions
    def _on_settings(self, *events):
        self._update_target_widgets()
        lane = self.worker.lanes.get("main")
        if lane is not None and self._loaded:
            self.phase.object = f"{self._phase_text(lane)} · settings changed: press ▶ Run to apply"

    def _on_preset(self, event):
        self.teach.object = self.settings.teach
        if self._loaded and self._live:
            self.run()

    def _on_projection(self, *events):
        lane = self.worker.lanes.get("main")
        self._seen.pop("main", None)
        if lane is not None:
            proj = (self.settings.proj_x, self.settings.proj_y)
            lane.proj = proj  # points follow at once; contours follow on the next run
            self.field.show_points(lane.latest.points if lane.latest is not None else None, lane.proj)

    def _update_target_widgets(self):
        kind = self.settings.target_kind
        self.target_name.visible = kind == "named"
        self.expression.visible = kind == "energy"
        self.expression_error.visible = kind == "energy" and bool(self.expression_error.object)
        self.upload.visible = kind == "gaussian_mixture"
        self.upload_msg.visible = kind == "gaussian_mixture" and bool(self.upload_msg.object)

    def _validate_target(self, *events):
        """Inline errors for the expression box and the mixture spec (nothing runs)."""
        s = self.settings
        if s.target_kind == "named":
            self._set_error(self.expression_error, "")
            self._update_target_widgets()
            return
        box = self.expression_error if s.target_kind == "energy" else self.upload_msg
        try:
            spec = s.target_spec()
            _engine().target_from_spec(spec)
        except Exception as err:
            self._set_error(box, _clean_message(err))
        else:
            self._set_error(box, "")
        self._update_target_widgets()

    def _set_error(self, pane, text):
        pane.object = text
        pane.visible = bool(text)

    def _on_upload(self, event):
        if not event.new:
            return
        try:
            text = event.new.decode("utf-8") if isinstance(event.new, bytes) else str(event.new)
            spec = json.loads(text)
            if not isinstance(spec, dict):
                raise ValueError("the JSON must be an object with weights, means and covariances")
            spec.setdefault("kind", "gaussian_mixture")
            _engine().target_from_spec(spec)
        except Exception as err:
            self._set_error(self.upload_msg, f"{self.upload.filename or 'upload'}: {_clean_message(err)}")
            return
        self._set_error(self.upload_msg, "")
        dim = len(spec["means"][0]) if spec.get("means") else self.settings.dim
        self.settings.param.update(mixture=json.dumps(spec, separators=(",", ":")),
                                   target_kind="gaussian_mixture", dim=int(dim))

    def _on_scrub(self, event):
        if self._follow_guard:
            return
        lane = self.worker.lanes.get("main")
        if lane is None or not lane.history:
            return
        self._set_follow(False)
        self._show_history(lane, event.new)

    def _on_follow(self, event):
        if self._follow_guard:
            return
        self._seen.pop("main", None)
        if event.new:
            self.diagnostics.mark(None)
            self.render()

    def _set_follow(self, value):
        self._follow_guard = True
        try:
            self.follow.value = value
        finally:
            self._follow_guard = False

    def _show_history(self, lane, k):
        k = max(0, min(int(k), len(lane.history) - 1))
        snap = lane.history[k]
        self._show_snapshot(lane, snap)
        self.diagnostics.mark(snap.t)
        self.status.object = f"`{format_status(snap)}` (replay)"

        def job():
            return self.worker.field_at(lane, snap.t)

        def done(result, error):
            if result is not None:
                self._scrub_field = (time.perf_counter(), result)

        self.worker.submit(job, done)

    def _show_snapshot(self, lane, snap, view=None):
        view = view or self.field
        view.show_points(snap.points, lane.proj)
        if view is self.field:
            self.spectrum.show(snap)
            self.weights.show(snap)

    # ------------------------------------------------------------------------------- rendering
    def render(self):
        """Push the latest state of every lane into the plots (runs on the document's thread)."""
        if self._closed:
            return
        lane = self.worker.lanes.get("main")
        if lane is not None:
            self._render_main(lane)
        for key in "AB":
            other = self.worker.lanes.get(key)
            if other is not None:
                self._render_compare(key, other)
        if self._scrub_field is not None and self._scrub_field[0] != self._scrub_seen and not self.follow.value:
            self._scrub_seen = self._scrub_field[0]
            self.field.show_field(self._scrub_field[1])
        if self._sample_result is not None and self._sample_result[0] != self._sample_seen:
            self._sample_seen = self._sample_result[0]
            self._render_samples(*self._sample_result[1:])

    def _render_main(self, lane):
        seen = self._seen.get("main", (-1, -1))
        version, field_version = lane.version, lane.field_version
        if (version, field_version) == seen:
            return
        self._seen["main"] = (version, field_version)
        snap = lane.latest
        self.phase.object = self._phase_text(lane)
        if lane.notice:
            self._show_message(f"The new run could not start: {lane.notice}. The last run is kept.")
        elif lane.state == "failed":
            self._show_message(f"Run failed: {lane.message}." + (
                f" Everything up to t = {float(snap.t):.2f} is kept." if snap is not None else ""))
        elif lane.state == "warning":
            self._show_message(f"Run finished with a warning: {lane.message}.", "warning")
        if lane.state == "preparing" and snap is None:
            self.progress.value = -1 if lane.stage_fraction <= 0 else int(1000 * lane.stage_fraction)
            self.progress.bar_color = "secondary"
        elif snap is not None:
            self.progress.bar_color = {"done": "success", "warning": "warning",
                                       "failed": "danger"}.get(lane.state, "primary")
            self.progress.value = int(1000 * min(1.0, max(0.0, float(snap.t) / lane.T)))
        if not self.follow.value:
            return
        self.status.object = f"`{format_status(snap)}`"
        if field_version != seen[1]:
            self.field.show_field(lane.field_)
        if snap is None and lane.preview_points is not None:
            self.field.show_points(lane.preview_points, lane.proj)  # the start points, before the fit ends
        if version != seen[0] and snap is not None:
            self._show_snapshot(lane, snap)
            self.diagnostics.append(lane.history_diag())
            n = len(lane.history)
            self._follow_guard = True
            try:
                self.scrubber.end = max(1, n - 1)
                self.scrubber.value = max(0, n - 1)
            finally:
                self._follow_guard = False

    def _render_compare(self, key, lane):
        seen = self._seen.get(key, (-1, -1))
        if (lane.version, lane.field_version) == seen:
            return
        self._seen[key] = (lane.version, lane.field_version)
        view = self.compare_fields[key]
        snap = lane.latest
        extra = "" if lane.state != "failed" else f" · failed: {lane.message}"
        self.compare_status[key].object = f"**{lane.label}** `{format_status(snap)}` {lane.state}{extra}"
        if lane.field_version != seen[1] and lane.field_ is not None:
            # shared fixed axes: both sides use the union of their extents
            others = [ln.extent for k, ln in self.worker.lanes.items() if k in "AB" and ln.extent]
            f = lane.field_
            if others:
                ext = (min(e[0] for e in others), max(e[1] for e in others),
                       min(e[2] for e in others), max(e[3] for e in others))
                f = type(f)(f.t, f.xs, f.ys, f.model, f.exact, ext)
            view.show_field(f)
        if snap is not None:
            view.show_points(snap.points, lane.proj)
            pins = [{"label": ln.label, "diag": ln.history_diag(),
                     "eig": np.asarray(ln.latest.gram_eigenvalues, dtype=float)}
                    for k, ln in sorted(self.worker.lanes.items()) if k in "AB" and ln.latest is not None]
            self.compare_spectrum.pinned_pipe.send(pins)
            self.compare_diag.pinned_pipe.send(pins)

    def _render_samples(self, result, error, proj):
        if error:
            self._sample_message(f"Sampling failed: {error}")
            return
        self._sample_message("")
        self.samples.show(result["samples"], result["log_weights"], proj)
        parts = []
        if result.get("ess") is not None:
            frac = result.get("ess_fraction")
            parts.append(f"ESS = {float(result['ess']):.0f}" + (f" ({100 * float(frac):.0f} %)" if frac is not None else ""))
        if result.get("log_z") is not None:
            se = result.get("log_z_stderr")
            parts.append(f"log Ẑ = {float(result['log_z']):.3f}" + (f" ± {float(se):.3f}" if se is not None else ""))
        self.sample_md.object = " · ".join(parts)

    def _phase_text(self, lane) -> str:
        if lane.state == "preparing":
            stage = f"{lane.stage} {100 * lane.stage_fraction:.0f} %" if lane.stage else "compiling"
            return f"preparing… ({stage}): data-free start"
        if lane.state == "running":
            return "paused" if lane.paused and lane.steps_allowed == 0 else "running"
        if lane.state == "done":
            wall = (lane.latest.wall_time if lane.latest is not None else 0.0) or 0.0
            return f"done in {wall:.1f} s"
        if lane.state == "failed":
            return f"failed: {lane.message}"
        if lane.state == "warning":
            wall = (lane.latest.wall_time if lane.latest is not None else 0.0) or 0.0
            return f"warning after {wall:.1f} s: {lane.message}"
        return lane.state

    def _show_message(self, text, kind: str = "danger"):
        self.message.object = text
        self.message.alert_type = kind
        self.message.visible = bool(text)


# ---------------------------------------------------------------------------------- helpers
def _grid2(plots):
    return pn.Column(pn.Row(*plots[:2]), pn.Row(*plots[2:]), margin=0)


def _default_widget(s, name):
    return pn.widgets.Select if isinstance(s.param[name], param.Selector) else pn.widgets.IntInput


def _log_slider(s: Settings, name: str, label: str, lo: float, hi: float):
    """A slider over log₁₀ of a positive setting, kept in sync with it both ways."""
    value = getattr(s, name)
    start = math.log10(value) if value > 0 else lo
    slider = pn.widgets.EditableFloatSlider(name=label, start=lo, end=hi, step=0.25,
                                            value=float(np.clip(round(start, 2), lo, hi)), format="0.00")
    guard = {"on": False}

    def to_setting(event):
        if guard["on"]:
            return
        guard["on"] = True
        try:
            setattr(s, name, float(f"{10 ** event.new:.3g}"))
        finally:
            guard["on"] = False

    def to_slider(event):
        if guard["on"]:
            return
        guard["on"] = True
        try:
            v = event.new
            if v is not None and v > 0 and math.isfinite(v):
                slider.value = float(np.clip(round(math.log10(v), 2), lo, hi))
        finally:
            guard["on"] = False

    slider.param.watch(to_setting, "value")
    s.param.watch(to_slider, name)
    return slider


def _label(s: Settings) -> str:
    target = s.target_name if s.target_kind == "named" else s.target_kind
    return (f"{s.preset} · {target} · {s.solver} n={s.sketch_rank} λ={s.reg:.0e} rtol={s.rtol:.0e} "
            f"N={s.n_points} seed={s.seed}")


def _clean_message(err: Exception) -> str:
    text = str(err).strip().rstrip(".")
    return text or type(err).__name__


def _in_notebook() -> bool:
    ip = sys.modules.get("IPython")
    try:
        shell = ip.get_ipython() if ip is not None else None
    except Exception:
        shell = None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def create_app() -> pn.viewable.Viewable:
    """One session's page."""
    return pn.Column(MNEExplorer(), sizing_mode="stretch_width")


def serve(port: int = 5006, show: bool = False, address: str = "localhost") -> None:
    """Serve the dashboard at http://ADDRESS:PORT/ (prints the URL, then blocks)."""
    from mne_core.runtime import configure

    configure()
    host = "localhost" if address in ("0.0.0.0", "") else address
    url = f"http://{host}:{port}/"
    print(f"MNE Explorer: open {url}  (Ctrl+C to stop)", flush=True)
    from app.worker import warm_up

    warm_up()
    origins = ["*"] if address in ("0.0.0.0", "") else [f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]
    pn.serve(create_app, port=port, address=address, show=show, title="MNE Explorer",
             websocket_origin=origins, threaded=False, start=True, verbose=False)


if pn.state.served:
    from mne_core.runtime import configure as _configure

    _configure()
    pn.extension()
    MNEExplorer().servable(title="MNE Explorer")
