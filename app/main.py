"""MNE Explorer: the dashboard, composed of one small Viewer per tab over UI-free settings.

Serve it with ``mne-explorer serve --port 5006`` (calls :func:`serve`), ``panel serve app/main.py``,
or embed it in Jupyter: ``from app import MNEExplorer; MNEExplorer()``.

- :class:`app.settings.Settings` / :class:`app.settings.SampleSettings`: every input, URL-synced;
- :class:`app.live.LiveTab`, :class:`app.compare.CompareTab`, :class:`app.samples.SamplesTab`: the tabs;
- :class:`MNEExplorer` (here): the controls, the header (teaching text, status), the session's
  :class:`app.worker.SessionWorker`, the render loop and the URL.

Threads: the worker pulls snapshots from the engine; a periodic callback (15 Hz) on the
session's document renders the latest of them into Pipes and Buffers created once.  The page
never blocks on the engine.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
import traceback

import numpy as np
import panel as pn
import param

from app.compare import CURRENT, CompareTab
from app.fields import cached_initial_field
from app.live import LiveTab
from app.pacing import FrameBudget
from app.plots import pin_color
from app.samples import SamplesTab
from app.settings import PRESET_NAMES, SampleSettings, Settings
from app.shortcuts import KEYS, KeyShortcuts
from app.status import bar_color, format_status, phase_text, recorded_note
from app.watch import CHANNEL, lane_frame, watch_application
from app.worker import SessionWorker

__all__ = ["MNEExplorer", "create_app", "serve", "format_status"]

log = logging.getLogger("app.session")

RENDER_PERIOD_MS = 66  # ~15 Hz
#: Largest mixture JSON accepted by the upload box (bytes): far below the websocket's message
#: limit (Bokeh's default is 20 MiB), so a too-large file gets a message instead of a dead session.
MAX_UPLOAD_BYTES = 1_000_000
#: A served session whose browser has been gone this long (s) stops computing at once, long
#: before Bokeh discards the session (its unused-session lifetime is 15 s or more).
DISCONNECT_GRACE_S = 0.2
#: A setting changed during a run restarts it this long after the last change (a slider drag
#: sends many values; the run restarts once, with the last).
RESTART_DEBOUNCE_S = 0.4

#: The status line: ≥ 15 px, dark on light (contrast ≈ 15:1) or light on dark.  A Markdown pane
#: renders in its own shadow root, so the rules go in its ``stylesheets``.
STATUS_CSS = {
    "light": ":host {font-size: 16px;} code {font-size: 16px; font-weight: 600; color: #111111; "
             "background-color: #eef1f4; padding: 2px 6px; border-radius: 4px;}",
    "dark": ":host {font-size: 16px;} code {font-size: 16px; font-weight: 600; color: #f2f2f2; "
            "background-color: #2b2f36; padding: 2px 6px; border-radius: 4px;}",
}
PRESENT_CSS = ":host {font-size: 20px;} h2 {font-size: 30px;}"


class EvolutionFactory:
    """Builds the Evolution of one config (in the worker: it may compile); the compute pool reads
    ``config`` to run it elsewhere (:class:`app.pool.DaskPool`)."""

    __slots__ = ("config",)

    def __init__(self, config):
        self.config = config

    def __call__(self, target=None):
        return _engine().Evolution(self.config, target=target)


def _engine():
    import mne_core

    return mne_core


class MNEExplorer(pn.viewable.Viewer):
    """The dashboard: controls, live plots of one run, replay, comparison and sampling."""

    settings = param.ClassSelector(class_=Settings, doc="All run and display settings (URL-synced when served).")
    sample_settings = param.ClassSelector(class_=SampleSettings, doc="Inputs of the Samples tab (URL-synced).")

    def __init__(self, settings: Settings | None = None, live: bool | None = None,
                 sample_settings: SampleSettings | None = None, pool=None, **setting_values):
        super().__init__(settings=settings or Settings(**setting_values),
                         sample_settings=sample_settings or SampleSettings())
        from app.plots import ensure_backend

        ensure_backend()
        s = self.settings
        self._served = bool(pn.state.curdoc and pn.state.curdoc.session_context)
        self._ctx = pn.state.curdoc.session_context if self._served else None
        self._live = self._served or _in_notebook() if live is None else live
        if self._served:
            self._read_display_args()
        if s.theme == "dark" and self._served:
            pn.config.theme = "dark"  # session-local
        if pool is None and self._served:
            from app.pool import server_pool

            pool = server_pool()
        self._gone_since = None  # when the browser's connection went away (served sessions)
        self._seen_connection = False
        self._connection_lock = threading.Lock()  # the render loop and the worker both ask
        self.worker = SessionWorker(pool=pool)
        if self._served:  # the worker stops itself when the tab is gone, even while the
            # server's event loop is busy (building another session's page, ~1.5 s)
            self.worker.abandoned = self._connection_lost
        self.worker.speed = s.speed
        self._loaded = False
        self._callback = None
        self._budget = FrameBudget(RENDER_PERIOD_MS / 1000.0)  # spacing of the periodic plot updates
        self._closed = False
        self._pending = False  # settings changed since the run on screen started
        self._shared = None    # identity of the frame last published to /watch (?broadcast=1)
        self._restart_due: float | None = None  # monotonic time of a mid-run restart
        self._restart_names: list[str] = []     # the settings changed since the restart was asked
        self.pins: list[dict] = []

        fontscale = 1.5 if s.present else 1.0
        self.live = LiveTab(self.worker, fontscale=fontscale)
        self.compare = CompareTab(self.worker, fontscale=fontscale)
        self.samples = SamplesTab(self.worker, self.sample_settings, fontscale=fontscale)
        self.shortcuts = KeyShortcuts()
        self._build_widgets()
        self._build_layout()
        self._show_initial_field()
        #: (object, watcher) of every watch on objects that may outlive the session (the URL
        #: location holds the settings): close() removes them, so nothing keeps the page alive
        self._watchers = [
            (self.shortcuts, self.shortcuts.param.watch(lambda e: self.shortcut(self.shortcuts.key), "presses")),
            (s, s.param.watch(self._on_settings, list(Settings.RUN_PARAMS))),
            (s, s.param.watch(self._on_preset, ["preset"])),
            (s, s.param.watch(lambda e: setattr(self.worker, "speed", e.new), ["speed"])),
            (s, s.param.watch(self._on_projection, ["proj_x", "proj_y"])),
            (s, s.param.watch(self._validate_target, ["expression", "dim", "target_kind", "mixture", "target_name"])),
            (s, s.param.watch(self._on_present, ["present"])),
            (self.live, self.live.param.watch(self._on_replay, ["replaying", "follow_live"])),
        ]

        if self._served:
            loc = pn.state.location
            loc.sync(s, {p: p for p in Settings.URL_PARAMS}, on_error=self.url_error)
            loc.sync(self.sample_settings, dict(SampleSettings.URL_NAMES))
            pn.state.onload(self._on_load)
            pn.state.on_session_destroyed(lambda ctx: self.close(wait=False))
        elif self._live:
            self._on_load()

    # ------------------------------------------------------------------------------- widgets
    def _build_widgets(self):
        s = self.settings
        w = pn.widgets

        def fp(pname, cls=None, **kw):
            widget = (cls or _default_widget(s, pname)).from_param(s.param[pname], **kw)
            return _describe(widget, s.param[pname].doc)

        self.preset_select = fp("preset", w.Select, label=self._preset_title(), options=PRESET_NAMES)
        self.run_button = w.Button(label="▶ Run", color="primary", width=66, description="Run (space)")
        self.pause_button = w.Button(label="Pause", width=72, description="Pause / resume (space)")
        self.step_button = w.Button(label="Step", width=56, description="One integrator step (→)")
        self.reset_button = w.Button(label="Reset", width=60, description="Stop and clear (r)")
        self.run_button.on_click(lambda e: self.run())
        self.pause_button.on_click(lambda e: self.toggle_pause())
        self.step_button.on_click(lambda e: self.step())
        self.reset_button.on_click(lambda e: self.reset())
        self.speed_widget = fp("speed", w.RadioButtonGroup, label="speed", color="light")
        self.pin_button = w.Button(label="Pin run", width=100, description="Keep this run's spectrum and diagnostics")
        self.clear_pins_button = w.Button(label="Clear pins", width=100)
        self.pin_button.on_click(lambda e: self.pin())
        self.clear_pins_button.on_click(lambda e: self.clear_pins())
        self.compare.button.on_click(lambda e: self.run_compare())

        self.target_kind = fp("target_kind", w.RadioButtonGroup, label="target", color="light")
        self.target_name = fp("target_name", w.Select, label="named target")
        self.expression = fp("expression", w.TextInput, label="energy U₀(x)")
        self.expression_error = pn.pane.Alert("", alert_type="danger", visible=False, margin=(0, 10))
        self.dim = fp("dim", w.IntInput, label="dimension d")
        # FileDropper: the browser refuses a file above the limit with its own message, and sends
        # the others in chunks far below the websocket's message limit
        self.upload = w.FileDropper(accepted_filetypes=[".json", "application/json"], multiple=False,
                                    max_file_size=f"{MAX_UPLOAD_BYTES // 1000}KB", chunk_size=250_000,
                                    height=90, sizing_mode="stretch_width")
        self.upload.param.watch(self._on_upload, "value")
        self.upload_msg = pn.pane.Alert("", alert_type="danger", visible=False, margin=(0, 10))
        self.proj = pn.Row(fp("proj_x", w.IntInput, label="x axis", width=90),
                           fp("proj_y", w.IntInput, label="y axis", width=90))

        self.solver = fp("solver", w.Select)
        self.rank = fp("sketch_rank", w.EditableIntSlider, label="sketch rank n")
        self.reg = _log_slider(s, "reg", "log₁₀ λ (relative reg)", -14, -1)
        self.integrator = fp("integrator", w.Select)
        self.clock = fp("clock", w.Select)
        self.rtol = _log_slider(s, "rtol", "log₁₀ rtol", -10, -1)
        self.atol = _log_slider(s, "atol", "log₁₀ atol", -12, -1)
        self.n_points = fp("n_points", w.EditableIntSlider, label="collocation points N")
        self.T = fp("T", w.EditableFloatSlider, label="final time T", step=0.1)
        self.seed = fp("seed", w.IntInput)
        self.width_w = fp("width", w.EditableIntSlider, label="width")
        self.depth_w = fp("depth", w.IntSlider, label="depth")
        self.activation = fp("activation", w.Select)
        self.network = fp("network", w.Select)
        self.precision = fp("precision", w.RadioButtonGroup, color="light")
        kinds = {"init": w.Select, "wide_headroom": w.FloatInput, "standardize": w.Select, "refresh": w.Select,
                 "fit_scores": w.Select}
        self.advanced = [fp(p, kinds.get(p, w.IntInput))
                         for p in ("init", "fit_points", "fit_steps", "gn_steps", "mala_steps", "wide_headroom",
                                   "standardize", "refresh", "fit_scores", "max_steps")]
        self.advanced.insert(0, fp("sketch_kind", w.Select))
        self.advanced.append(fp("diffuse", w.TextInput))
        self.display = [fp("present", w.Checkbox, label="presentation mode (hide controls)"),
                        fp("theme", w.RadioButtonGroup, color="light"),
                        fp("broadcast", w.Checkbox, label="share this run at /watch (for the class)")]

        self.message = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self.pending = pn.pane.Alert("Settings changed: press ▶ Run (or space) to apply them.", alert_type="info",
                                     visible=False, sizing_mode="stretch_width", margin=(0, 10))
        css = [STATUS_CSS[s.theme]] + ([PRESENT_CSS] if s.present else [])
        self.status = pn.pane.Markdown(f"`{format_status(None)}`", css_classes=["mne-status"], stylesheets=css,
                                       margin=(0, 10))
        self.phase = pn.pane.Markdown("ready", margin=(0, 10), css_classes=["mne-phase"], stylesheets=css)
        self.progress = pn.indicators.Progress(value=0, max=1000, width=260, bar_color="primary")
        self.teach = pn.pane.Markdown(s.teach, sizing_mode="stretch_width",
                                      stylesheets=[PRESENT_CSS] if s.present else [])
        self._validate_target()
        self._update_target_widgets()

    def _build_layout(self):
        card = lambda title, *objs, collapsed=False: pn.Card(*objs, title=title, collapsed=collapsed,  # noqa: E731
                                                             sizing_mode="stretch_width", margin=(4, 2))
        self.controls = pn.Column(
            self.preset_select,
            pn.Row(self.run_button, self.pause_button, self.step_button, self.reset_button),
            pn.Row(pn.pane.Markdown("speed", margin=(8, 5)), self.speed_widget),
            pn.Row(self.pin_button, self.clear_pins_button),
            card("Target", self.target_kind, self.target_name, self.expression, self.expression_error,
                 self.dim, pn.pane.Markdown("Gaussian mixture (JSON upload):", margin=(0, 10)), self.upload,
                 self.upload_msg, self.proj),
            card("Method", self.solver, self.rank, self.reg, self.integrator, self.clock, self.rtol, self.atol,
                 self.n_points, self.T, self.seed),
            card("Network", self.width_w, self.depth_w, self.activation, self.network, self.precision),
            card("Advanced (data-free start)", *self.advanced, collapsed=True),
            card("Display", *self.display, collapsed=True),
            width=300, visible=not self.settings.present,
        )
        self.tabs = pn.Tabs(("Live", self.live), ("Compare", self.compare), ("Samples", self.samples),
                            dynamic=True, sizing_mode="stretch_width")
        header = pn.Column(
            pn.pane.Markdown("## MNE Explorer: neural evolution of energies, live", margin=(0, 10),
                             stylesheets=[PRESENT_CSS] if self.settings.present else []),
            self.teach,
            pn.Row(self.status, self.progress, self.phase, self.shortcuts, sizing_mode="stretch_width"),
            self.message, self.pending,
            sizing_mode="stretch_width")
        self._layout = pn.Row(self.controls, pn.Column(header, self.tabs, sizing_mode="stretch_width"),
                              sizing_mode="stretch_width")

    def __panel__(self):
        return self._layout

    def _preset_title(self) -> str:
        return "Preset (modified)" if self.settings.modified else "Preset"

    # ------------------------------------------------------------------------------ URL
    def _read_display_args(self):
        """``?present=1`` / ``?theme=dark`` before the page is built (the layout depends on them)."""
        args = pn.state.session_args or {}
        flag = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
        if "present" in args:
            self.settings.present = flag(args["present"][0]).lower() in ("1", "true", "yes", "on")
        if "theme" in args and flag(args["theme"][0]) in ("light", "dark"):
            self.settings.theme = flag(args["theme"][0])

    def url_error(self, values: dict):
        """Some URL settings are invalid: apply the valid ones one by one, report the others."""
        bad = []
        for name, value in values.items():
            if name == "preset":
                continue
            if isinstance(self.settings.param[name], param.Boolean) and value in (0, 1):
                value = bool(value)  # ?present=1
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
        try:
            target = _engine().target_from_spec(self.settings.to_config().target)
            f = cached_initial_field(target, (self.settings.proj_x, self.settings.proj_y))
            if f is not None:
                self.live.field.show_field(f)
        except Exception:
            pass

    # ------------------------------------------------------------------------------ lifecycle
    def _on_load(self):
        try:
            self._start_live()
        except Exception:  # never let a session die on load; show what happened
            traceback.print_exc()
            self._show_message("Could not start: " + traceback.format_exc(limit=1).strip().splitlines()[-1])

    def _start_live(self):
        if self._callback is None and self._live:
            self._callback = pn.state.add_periodic_callback(self._tick, period=RENDER_PERIOD_MS)
        self._loaded = True
        if self.settings.autorun:
            self.run(recorded=True)
        self.render()

    def close(self, wait: bool = True):
        """Stop the worker thread and the render loop and drop the session's runs (called when
        the session ends or its browser is gone).  ``wait=False`` does not wait for the thread
        (it ends after the step it is in), so the server's event loop never blocks on it."""
        if self._closed:
            return
        self._closed = True
        self.pins = []
        if self._shared is not None:
            CHANNEL.release(self)
            self._shared = None
        if self._callback is not None:
            try:
                self._callback.stop()
                self._callback.callback = _nothing  # Panel may keep the callback object
            except Exception:
                pass
            self._callback = None
        self.worker.close(timeout=1.0 if wait else 0)
        # break every reference from longer-lived objects (settings synced to the URL location,
        # Panel's per-document records) back to this page, so the session's plots can be freed
        for obj, watcher in self._watchers:
            try:
                obj.param.unwatch(watcher)
            except Exception:
                pass
        self._watchers = []
        if self._served:
            for obj in (self.settings, self.sample_settings):
                try:
                    pn.state.location.unsync(obj)
                except Exception:
                    pass
            from app.memory import trim_soon

            trim_soon()

    def _connection_lost(self) -> bool:
        """A served session whose browser was connected and has been gone DISCONNECT_GRACE_S: the
        tab was closed (Bokeh discards the session only 15 s or more later).  Called from the
        render loop and from the worker thread, hence the lock."""
        with self._connection_lock:
            return self._connection_lost_locked()

    def _connection_lost_locked(self) -> bool:
        ctx = self._ctx
        session = getattr(ctx, "_session", None) if ctx is not None else None  # bokeh ServerSession
        if session is None:
            return False
        if session.connection_count > 0:
            self._gone_since = None
            self._seen_connection = True
            return False
        if not self._seen_connection:
            return False  # the page is still loading
        now = time.monotonic()
        if self._gone_since is None:
            self._gone_since = now
        if now - self._gone_since < DISCONNECT_GRACE_S:
            return False
        try:
            session.request_expiration()  # discarded at Bokeh's next check of unused sessions
        except Exception:
            pass
        return True

    # -------------------------------------------------------------------------------- actions
    def _factory(self, settings: Settings):
        """Validate the settings here (cheap: inline errors at once) and return the function that
        builds the Evolution in the worker (it may compile)."""
        cfg = settings.to_config()
        _engine().target_from_spec(cfg.target)
        return cfg, EvolutionFactory(cfg)

    def run(self, recorded: bool = False) -> bool:
        """Start a run of the current settings (or resume a paused one). Returns False on bad input.
        ``recorded``: play this server's recording of the same settings at once if there is one
        (opening the page, choosing a preset) instead of computing it."""
        self._budget.reset()  # the user waits for this one: show it at the next tick
        lane = self.worker.lanes.get("main")
        if (lane is not None and lane.paused and lane.active and lane.evolution is not None
                and lane.factory.config == self._config_or_none()):
            self.worker.pause("main", False)
            self.pause_button.label = "Pause"
            return True
        return self._start_main(paused=False, steps=0, recorded=recorded)

    def _config_or_none(self):
        try:
            return self.settings.to_config()
        except Exception:
            return None

    def _start_main(self, paused: bool, steps: int, recorded: bool = False) -> bool:
        try:
            cfg, factory = self._factory(self.settings)
        except Exception as err:
            self._show_message(f"Cannot start this run: {_clean_message(err)}. The last run is kept.")
            return False
        self._show_message("")
        self._set_pending(False)
        self._restart_due, self._restart_names = None, []
        s = self.settings
        proj = (s.proj_x, s.proj_y)
        recording = None
        if recorded:
            from app import recordings

            recording = recordings.lookup(recordings.recording_key(cfg, proj))
        self.worker.start_lane("main", factory, T=cfg.T, spec=cfg.target, label=_label(s), proj=proj,
                               paused=paused, steps=steps, recording=recording)
        self.live.new_run()
        self.pause_button.label = "Resume" if paused else "Pause"
        return True

    def toggle_pause(self):
        lane = self.worker.lanes.get("main")
        if lane is None or not lane.active:
            return
        paused = not lane.paused
        self.worker.pause("main", paused)
        self.pause_button.label = "Resume" if paused else "Pause"

    def step(self):
        lane = self.worker.lanes.get("main")
        if lane is None or not lane.active:
            self._start_main(paused=True, steps=1)
        else:
            self.worker.step("main")
            self.pause_button.label = "Resume"

    def reset(self):
        self._restart_due, self._restart_names = None, []
        self.worker.stop_lane("main")
        self.live.reset()
        self.status.object = f"`{format_status(None)}`"
        self.phase.object = "reset"
        self.progress.value = 0
        self.progress.bar_color = "primary"
        self.pause_button.label = "Pause"
        self._show_message("")

    def shortcut(self, key: str):
        """A keyboard shortcut: space run/pause, → step, r reset (see :mod:`app.shortcuts`)."""
        action = KEYS.get(key)
        if action == "run_pause":
            lane = self.worker.lanes.get("main")
            if lane is not None and lane.active and not self._pending:
                self.toggle_pause()
            else:
                self.run()
        elif action == "step":
            self.step()
        elif action == "reset":
            self.reset()

    def pin(self) -> dict | None:
        """Keep the current run's diagnostics and spectrum, overlaid on the live plots."""
        lane = self.worker.lanes.get("main")
        if lane is None or lane.latest is None:
            return None
        pin = {"label": f"{len(self.pins) + 1}: {lane.label}", "diag": lane.history_diag(),
               "color": pin_color(len(self.pins)),
               "eig": np.asarray(lane.latest.gram_eigenvalues, dtype=float),
               "settings": self.settings.run_values()}
        self.pins.append(pin)
        self._show_pins()
        return pin

    def clear_pins(self):
        self.pins = []
        self._show_pins()

    def _show_pins(self):
        self.live.show_pins(self.pins)
        self.compare.show_pins(self.pins)

    def run_compare(self) -> bool:
        """Run two settings (presets or the current settings) side by side on shared axes."""
        lanes = {}
        for key, choice in self.compare.choices().items():
            s = Settings(**self.settings.run_values()) if choice == CURRENT else Settings(preset=choice)
            try:
                lanes[key] = (self._factory(s), s, choice)
            except Exception as err:
                self.compare.show_error(f"{key} ({choice}): {_clean_message(err)}")
                return False
        self.compare.show_error("")
        for key, ((cfg, factory), s, choice) in lanes.items():
            self.worker.start_lane(key, factory, T=cfg.T, spec=cfg.target, label=f"{key}: {choice}",
                                   proj=(s.proj_x, s.proj_y))
        self.compare.started(lanes)
        return True

    def draw_samples(self) -> bool:
        """Sample the finished live run with the Samples tab's settings."""
        return self.samples.draw()

    def _on_upload(self, event):
        for name, data in (event.new or {}).items():
            self.upload_mixture(data, name)

    def upload_mixture(self, data, filename: str | None = None) -> bool:
        """A Gaussian-mixture JSON (bytes or text) becomes the target; bad files are reported inline."""
        if not data:
            return False
        if len(data) > MAX_UPLOAD_BYTES:
            self._set_error(self.upload_msg, f"{filename or 'upload'}: the file has {len(data) / 1e6:.1f} MB; "
                            f"mixture JSON files up to {MAX_UPLOAD_BYTES / 1e6:.0f} MB are accepted")
            self._update_target_widgets()
            return False
        try:
            text = data.decode("utf-8") if isinstance(data, bytes) else str(data)
            spec = json.loads(text)
            if not isinstance(spec, dict):
                raise ValueError("the JSON must be an object with weights, means and covariances")
            spec.setdefault("kind", "gaussian_mixture")
            _engine().target_from_spec(spec)
        except Exception as err:
            self._set_error(self.upload_msg, f"{filename or 'upload'}: {_clean_message(err)}")
            return False
        self._set_error(self.upload_msg, "")
        dim = len(spec["means"][0]) if spec.get("means") else self.settings.dim
        self.settings.param.update(mixture=json.dumps(spec, separators=(",", ":")),
                                   target_kind="gaussian_mixture", dim=int(dim))
        return True

    # ------------------------------------------------------------------------------- reactions
    def _on_settings(self, *events):
        self._update_target_widgets()
        self._update_teach()
        lane = self.worker.lanes.get("main")
        if lane is None:
            return
        if lane.active:
            # mid-run: the change is applied by a restart (debounced), with a notice
            for e in events:
                if e.name not in self._restart_names:
                    self._restart_names.append(e.name)
            self._restart_due = time.monotonic() + RESTART_DEBOUNCE_S
        else:
            self._set_pending(True)

    def apply_pending_restart(self, now: float | None = None) -> bool:
        """Restart the live run with the current settings if a setting changed during it (called
        by the render loop once the debounce has passed).  Returns True when it restarted."""
        due = self._restart_due
        if due is None or (now if now is not None else time.monotonic()) < due:
            return False
        self._restart_due = None
        names, self._restart_names = self._restart_names, []
        lane = self.worker.lanes.get("main")
        if lane is None or not lane.active:
            self._set_pending(True)
            return False
        if getattr(lane.factory, "config", None) == self._config_or_none():
            return False  # already running these settings (e.g. a preset change restarted it)
        paused = bool(lane.paused)
        if not self._start_main(paused=paused, steps=0):
            return False
        changed = ", ".join(f"{n} = {_short(getattr(self.settings, n))}" for n in names)
        self._show_message(f"Settings changed during the run ({changed}): restarted with the new settings.",
                           "info")
        return True

    def _update_teach(self):
        self.teach.object = self.settings.teach
        self.preset_select.label = self._preset_title()

    def _set_pending(self, value: bool):
        self._pending = value
        self.pending.visible = value

    def _on_preset(self, event):
        self._update_teach()
        if self._loaded and self._live:
            self.run(recorded=True)

    def _on_present(self, event):
        self.controls.visible = not event.new

    def _on_projection(self, *events):
        lane = self.worker.lanes.get("main")
        self.live.forget()
        if lane is not None:
            lane.proj = (self.settings.proj_x, self.settings.proj_y)  # contours follow on the next run
            self.live.field.show_points(lane.latest.points if lane.latest is not None else None, lane.proj)

    def _on_replay(self, *events):
        snap = self.live.replaying
        if snap is not None and not self.live.follow_live:
            self.status.object = f"`{format_status(snap)}` (replay)"
        elif self.live.follow_live:
            self.render()

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
            _engine().target_from_spec(s.target_spec())
        except Exception as err:
            self._set_error(box, _clean_message(err))
        else:
            self._set_error(box, "")
        self._update_target_widgets()

    def _set_error(self, pane, text):
        pane.object = text
        pane.visible = bool(text)

    # ------------------------------------------------------------------------------- rendering
    def _tick(self):
        """The periodic callback: render, with the plot updates paced (:mod:`app.pacing`)."""
        start = time.perf_counter()
        due = self._budget.tick(start)
        self.render(plots=due, light=self._budget.congested)
        self._budget.done(start, time.perf_counter(), rendered=due)

    def render(self, plots: bool = True, light: bool = False):
        """Push the latest state of every lane into the plots (runs on the document's thread).
        ``plots=False`` (a paced tick) does only the cheap duties: notice a closed tab, apply a
        pending restart, share the newest frame with ``/watch``; ``light`` (the server's loop is
        congested) updates only the particle cloud and the status of the main run."""
        if self._closed:
            return
        if self._served and self._connection_lost():
            gone = self._gone_since or time.monotonic()
            log.info("session %s: the browser left %.3f s ago (at %.3f); stopping its runs", self.worker.name,
                     time.monotonic() - gone, time.time() - (time.monotonic() - gone))
            self.close(wait=False)
            return
        self.apply_pending_restart()
        lane = self.worker.lanes.get("main")
        self._share(lane)
        if not plots:
            return
        if lane is not None:
            self._render_main(lane, light)
        if light:
            return
        for key in "AB":
            other = self.worker.lanes.get(key)
            if other is not None:
                self.compare.render(key, other)
        self.samples.render()

    def _render_main(self, lane, light: bool = False):
        if lane.state == "waiting":  # the place in the queue changes without a new snapshot
            text = queue_text(lane)
            if self.phase.object != text:
                self.phase.object = text
        if not self.live.render(lane, light=light):
            return
        # read the state once: the worker may end the lane meanwhile, and it restores the last run
        # *before* it marks a lane that could not start failed, so this order never shows it
        state = lane.state
        if state == "failed" and self.worker.lanes.get("main") is not lane:
            return  # a new run that could not start; the worker restored the last one (next frame)
        snap = lane.latest
        self.phase.object = phase_text(lane) if state != "waiting" else queue_text(lane)
        if lane.notice:
            self._show_message(f"The new run could not start: {lane.notice}. The last run is kept.")
        elif state == "failed":
            self._show_message(f"Run failed: {lane.message}." + (
                f" Everything up to t = {float(snap.t):.2f} is kept." if snap is not None else ""))
        elif state == "warning":
            self._show_message(f"⚠ The run finished, but its result is not accurate: {lane.message}.", "warning")
        elif lane.recorded and not self.message.visible:
            self._show_message(recorded_note(lane), "info")
        if state in ("waiting", "preparing") and snap is None:
            self.progress.value = -1 if lane.stage_fraction <= 0 else int(1000 * lane.stage_fraction)
            self.progress.bar_color = "secondary"
        elif snap is not None:
            self.progress.bar_color = bar_color(lane)
            self.progress.value = int(1000 * min(1.0, max(0.0, float(snap.t) / lane.T)))
        if self.live.follow_live:
            self.status.object = f"`{format_status(snap)}`"

    def _share(self, lane):
        """Publish the main run's newest frame to the ``/watch`` pages (``?broadcast=1``)."""
        if not self.settings.broadcast or lane is None:
            if self._shared is not None:
                CHANNEL.release(self)
                self._shared = None
            return
        ident = (id(lane), id(lane.latest), lane.state, id(lane.preview_points))
        if ident == self._shared:
            return
        frame = lane_frame(lane)
        if frame is not None:
            CHANNEL.publish(self, frame)
            self._shared = ident

    def _show_message(self, text, kind: str = "danger"):
        self.message.object = text
        self.message.alert_type = kind
        self.message.visible = bool(text)


# ---------------------------------------------------------------------------------- helpers
def _nothing():
    pass


def _describe(widget, doc: str):
    """Give the widget its tooltip where the widget type supports one."""
    if doc and "description" in widget.param:
        widget.description = doc
    return widget


def _default_widget(s, name):
    return pn.widgets.Select if isinstance(s.param[name], param.Selector) else pn.widgets.IntInput


def _log_slider(s: Settings, name: str, label: str, lo: float, hi: float):
    """A slider over log₁₀ of a positive setting, kept in sync with it both ways."""
    value = getattr(s, name)
    start = math.log10(value) if value > 0 else lo
    slider = pn.widgets.EditableFloatSlider(label=label, start=lo, end=hi, step=0.25,
                                            value=float(np.clip(round(start, 2), lo, hi)), format="0.00")
    _describe(slider, s.param[name].doc)
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
    return (f"{s.preset_label} · {target} · {s.solver} n={s.sketch_rank} λ={s.reg:.0e} rtol={s.rtol:.0e} "
            f"N={s.n_points} seed={s.seed}")


def queue_text(lane) -> str:
    """The phase line of a lane waiting for a compute slot of the server's pool."""
    n = lane.queue_position
    if n <= 0:
        return "starting…"
    return f"⏳ waiting for a free compute slot: place {n} in the queue"


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "…"


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
    from app.plots import ensure_backend
    from app.worker import warm_up

    from app.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before any thread starts: glibc fixes the limit once arenas exist
    ensure_backend()
    warm_up()
    origins = ["*"] if address in ("0.0.0.0", "") else [f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]
    pn.serve({"/": create_app, "/watch": watch_application()}, port=port, address=address, show=show, title="MNE Explorer",
             websocket_origin=origins, threaded=False, start=True, verbose=False)


if pn.state.served:
    from mne_core.runtime import configure as _configure

    _configure()
    pn.extension()
    MNEExplorer().servable(title="MNE Explorer")
