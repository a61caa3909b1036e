"""The Live tab: the particle cloud over energy contours, the NTK spectrum, the diagnostics and
the weights of one run, with a replay scrubber.

:class:`LiveTab` owns its views (created once) and renders a :class:`app.worker.Lane` into them;
it never touches the engine (replayed contours are computed by the worker as a job).
"""
from __future__ import annotations

import io
import threading
import time

import numpy as np
import panel as pn
import param

from app.plots import (EMPTY_WEIGHTS, LIVE_COLOR, DiagnosticsView, FieldView, SpectrumView, WeightsView,
                       run_key_html)

#: While the server is congested (light renders), still render in full at least this often (s).
FULL_EVERY_S = 5.0
#: The plots besides the particle cloud, in the order a running lane's frames update them.
#: Updating all of them costs ≈ 0.5 s of the server's event loop (HoloViews; measured while the
#: default recording plays), and while a callback runs the loop sees nothing else — another
#: session's message, a closed tab (the soak measured closes seen 0.6–0.9 s late).  So a frame of
#: a running lane moves the cloud and brings *one* stale plot up to date, in turn (each ≈ 0.1–0.2
#: s); a new run or projection and an ended run are still drawn whole in one frame.
STAGES = ("field", "spectrum", "weights", "diagnostics")

#: What each plot shows, in one line (shown under the plots).
CAPTIONS = {
    "field": "Particle cloud: the collocation points X_t over the model energy U_θ(t) (solid) and the exact "
             "one (dashed).",
    "spectrum": "NTK spectrum: eigenvalues of the full N×N kernel K = JJᵀ on the points (grey) and of the "
                "n×n sketch ΩᵀKΩ the solve uses (black); the sketch keeps n directions (red line), λ "
                "regularizes what lies below it (green line).",
    "residual": "Residual: how well the parameter velocity solves the energy equation (small is good).",
}


class LiveTab(pn.viewable.Viewer):
    """Plots of the live run (or its replay at an earlier accepted step)."""

    follow_live = param.Boolean(default=True, doc="Show the newest step (off while replaying).")
    replaying = param.Parameter(default=None, doc="The replayed snapshot (None when following live).")

    def __init__(self, worker, fontscale: float = 1.0, **params):
        super().__init__(**params)
        self.worker = worker
        self.field = FieldView(fontscale=fontscale)
        self.spectrum = SpectrumView(fontscale=fontscale)
        self.weights = WeightsView(fontscale=fontscale)
        self.diagnostics = DiagnosticsView(fontscale=fontscale)
        self.scrubber = pn.widgets.IntSlider(label="replay (accepted step)", start=0, end=1, value=0,
                                             sizing_mode="stretch_width", max_width=600)
        self.follow = pn.widgets.Checkbox.from_param(self.param.follow_live, label="follow live")
        #: downloads of the finished run (built by app.export in the worker thread, on click)
        self.export_html = self._download("html", "Replay page (HTML)", "mne-run.html",
                                          "A standalone web page that replays the particle cloud over the "
                                          "contours: opens in any browser, no server needed.")
        self.export_gif = self._download("gif", "Animation (GIF)", "mne-run.gif",
                                         "An animated GIF of the particle cloud over the model (solid) and "
                                         "exact (dashed) contours, one frame per recorded step.")
        self.export_zip = self._download("zip", "Run directory (zip)", "mne-run.zip",
                                         "config.json, trajectory.npz, diagnostics.json and summary.json: "
                                         "unzip and open with mne_core.load_run or `mne-explorer sample`.")
        self.export_msg = pn.pane.Alert("", alert_type="warning", visible=False, sizing_mode="stretch_width")
        self._frames_cache = None
        #: the one legend of the pinned runs (their colours in the spectrum and every diagnostic)
        self.pins_key = pn.pane.HTML("", visible=False, sizing_mode="stretch_width", styles={"font-size": "14px"},
                                     css_classes=["mne-pins-key"])
        self.scrubber.param.watch(self._on_scrub, "value")
        self.param.watch(self._on_follow, "follow_live")
        #: contours at the replayed time, once the worker has computed them: (stamp, Field)
        self.replay_field = None
        self._replay_seen = None
        self._guard = False
        self._seen = (-1, -1)
        self._light_seen = -1
        self._last_full = -float("inf")  # monotonic time of the last full render
        self._shown = dict.fromkeys(STAGES, None)  # the lane state each stage shows
        self._turn = 0                              # the stage a running lane's next frame starts at
        diag = dict(zip(("dt", "residual", "rejected", "energy_error"), self.diagnostics.plots))
        pane = lambda obj, cls: pn.pane.HoloViews(obj, css_classes=[cls], sizing_mode="stretch_width",  # noqa: E731
                                                   min_width=200)
        self._layout = pn.Column(
            self.pins_key,
            pn.Row(pane(self.field.plot, "mne-field"), pane(self.spectrum.plot, "mne-spectrum"),
                   pane(diag["residual"], "mne-residual"), sizing_mode="stretch_width"),
            pn.Row(pane(diag["dt"], "mne-dt"), pane(diag["energy_error"], "mne-energy-error"),
                   pane(diag["rejected"], "mne-rejected"), pane(self.weights.plot, "mne-weights"),
                   sizing_mode="stretch_width"),
            pn.Row(self.scrubber, self.follow, sizing_mode="stretch_width"),
            pn.Row(pn.pane.Markdown("**Take it home:**", margin=(12, 5, 5, 10)), self.export_html, self.export_gif,
                   self.export_zip, sizing_mode="stretch_width", css_classes=["mne-exports"]),
            self.export_msg,
            pn.pane.Markdown(" · ".join(CAPTIONS.values()), sizing_mode="stretch_width",
                             styles={"font-size": "13px"}),
            sizing_mode="stretch_width")

    def __panel__(self):
        return self._layout

    # --- what main calls ---------------------------------------------------------------------
    def forget(self):
        """Render the next lane state in full (a new run or a new projection)."""
        self._seen = (-1, -1)
        self._light_seen = -1
        self._shown = dict.fromkeys(STAGES, None)

    def reset(self):
        """Blank plots (no run)."""
        self.forget()
        self.diagnostics.reset()
        self.field.show_points(None)
        self.field.show_field(None)
        self.spectrum.full = None
        self.spectrum.pipe.send({"eig": np.array([1.0]), "rank": 0, "reg": 0.0})
        self.weights.pipe.send(EMPTY_WEIGHTS)
        self.set_follow(True)
        self._enable_exports(None)

    def new_run(self):
        self.forget()
        self.spectrum.full = None
        self.diagnostics.reset()
        self.set_follow(True)

    def show_pins(self, pins: list[dict]):
        self.spectrum.pinned_pipe.send(pins)
        self.diagnostics.pinned_pipe.send(pins)
        self.pins_key.object = run_key_html([{"label": "live run", "color": LIVE_COLOR}] + list(pins)) if pins else ""
        self.pins_key.visible = bool(pins)

    def render(self, lane, light: bool = False) -> bool:
        """Push the lane's newest data into the plots; False when nothing changed.  ``light``: only
        the particle cloud (the other plots catch up at the next full render).  A full render of a
        running lane moves the cloud and updates one stale plot of :data:`STAGES`, in turn; a new
        run or projection and an ended run update every plot at once."""
        if light and not self._needs_full(lane):
            snap = lane.latest
            if not self.follow_live or snap is None or lane.version in (self._seen[0], self._light_seen):
                return False
            self._light_seen = lane.version
            self.field.show_points(snap.points, lane.proj)
            return True
        self._render_replay()
        whole = self._seen == (-1, -1) or not lane.active
        seen = self._seen
        version, field_version = lane.version, lane.field_version
        stale = [st for st in STAGES if self._shown[st] != self._state(st, lane)] if self.follow_live else []
        if (version, field_version) == seen and not stale:
            return False
        self._seen = (version, field_version)
        self._last_full = time.monotonic()
        self._enable_exports(lane)
        if not self.follow_live:
            return True
        snap = lane.latest
        if snap is None and lane.preview_points is not None:
            self.field.show_points(lane.preview_points, lane.proj)  # the start points, before the fit ends
        if version != seen[0] and snap is not None:
            self.field.show_points(snap.points, lane.proj)
            n = len(lane.history)
            self._guard = True
            try:
                self.scrubber.end = max(1, n - 1)
                self.scrubber.value = max(0, n - 1)
            finally:
                self._guard = False
        if not whole and stale:  # one stage per frame, the next stale one after the last drawn
            order = STAGES[self._turn:] + STAGES[:self._turn]
            stale = [next(st for st in order if st in stale)]
            self._turn = (STAGES.index(stale[0]) + 1) % len(STAGES)
        for st in stale:
            self._draw(st, lane, snap)
        return True

    def _state(self, stage: str, lane):
        """What a stage shows of the lane: the version of its data."""
        if stage == "field":
            return lane.field_version
        if stage == "spectrum":
            return lane.version, lane.spectrum_version
        return lane.version

    def _draw(self, stage: str, lane, snap):
        before, self._shown[stage] = self._shown[stage], self._state(stage, lane)
        if stage == "field":
            self.field.show_field(lane.field_)
        elif stage == "spectrum":
            if before is None or before[1] != lane.spectrum_version:  # a new full NTK spectrum
                full = lane.full_spectrum
                self.spectrum.show_full(None if full is None else full[1])
            if snap is not None:
                self.spectrum.show(snap)
        elif stage == "weights":
            if snap is not None:
                self.weights.show(snap)
        elif snap is not None:
            self.diagnostics.append(lane.history_diag())

    def _needs_full(self, lane) -> bool:
        """A light render would leave the page wrong, not just behind: a new run or projection
        (nothing shown for it yet), a run that has ended (its exports and replay), or no full
        render for FULL_EVERY_S (the contours a run updates every few steps, the diagnostics)."""
        return (self._seen == (-1, -1) or not lane.active
                or time.monotonic() - self._last_full > FULL_EVERY_S)

    def show_snapshot(self, lane, snap):
        self.field.show_points(snap.points, lane.proj)
        self.spectrum.show(snap)
        self.weights.show(snap)

    def set_follow(self, value: bool):
        self._guard = True
        try:
            self.follow_live = value
        finally:
            self._guard = False

    # --- exports ------------------------------------------------------------------------------
    def _download(self, kind: str, label: str, filename: str, doc: str):
        widget = pn.widgets.FileDownload(callback=lambda: self.export_file(kind), filename=filename, label=label,
                                         embed=False, auto=True, disabled=True,
                                         description=doc, width=190)
        return widget

    @staticmethod
    def exportable(lane) -> bool:
        """A run can be exported once it has a recorded step (while it runs, the export holds the
        steps so far: the worker builds it between two steps)."""
        return (lane is not None and lane.latest is not None and getattr(lane.evolution, "run", None) is not None
                and len(lane.evolution.run.times) > 0)

    def _enable_exports(self, lane):
        off = not self.exportable(lane)
        for w in (self.export_html, self.export_gif, self.export_zip):
            if w.disabled != off:
                w.disabled = off

    def export_file(self, kind: str, timeout: float = 120.0) -> io.BytesIO:
        """The bytes of export ``kind`` (html | gif | zip) of the finished live run, built in the
        worker thread (it owns the run).  On failure the message is shown under the buttons and a
        short text file explaining it is returned instead, so the page keeps working."""
        from app import export

        widget = {"html": self.export_html, "gif": self.export_gif, "zip": self.export_zip}[kind]
        lane = self._lane()
        result: dict = {}
        if not self.exportable(lane):
            result["error"] = "there is no recorded run to export yet: press Run first"
        else:
            run, proj = lane.evolution.run, tuple(lane.proj)
            done = threading.Event()

            def job():
                key = (id(run), len(run.times), proj)
                if kind != "zip" and (self._frames_cache is None or self._frames_cache[0] != key):
                    self._frames_cache = (key, export.replay_frames(run, proj))
                frames = None if kind == "zip" else self._frames_cache[1]
                if kind == "html":
                    return export.html_replay(run, frames=frames).encode("utf-8")
                if kind == "gif":
                    return export.gif_replay(run, frames=frames)
                return export.run_zip(run, export.export_name(run))

            def finished(value, error):
                result["data"], result["error"] = value, error
                done.set()

            self.worker.submit(job, finished)
            if not done.wait(timeout):
                result["error"] = "the export took too long (the worker is busy); try again when the run has ended"
            elif result.get("error") is None:
                widget.filename = f"{export.export_name(run)}.{kind}"
        if result.get("error"):
            self.export_msg.object = f"Export failed: {result['error']}."
            self.export_msg.visible = True
            widget.filename = "mne-export-error.txt"
            return io.BytesIO(f"MNE Explorer could not export this run: {result['error']}\n".encode())
        self.export_msg.visible = False
        return io.BytesIO(result["data"])

    # --- replay ------------------------------------------------------------------------------
    def _lane(self):
        return self.worker.lanes.get("main")

    def _on_scrub(self, event):
        if self._guard:
            return
        lane = self._lane()
        if lane is None or not lane.history:
            return
        self.set_follow(False)
        self.replay(lane, event.new)

    def replay(self, lane, k: int):
        """Show accepted step ``k`` of the lane (points, spectrum, weights at once; contours when the
        worker has computed them)."""
        k = max(0, min(int(k), len(lane.history) - 1))
        snap = lane.history[k]
        self.show_snapshot(lane, snap)
        self.diagnostics.mark(snap.t)
        self.replaying = snap

        def job():
            return self.worker.field_at(lane, snap.t)

        def done(result, error):
            if result is not None:
                self.replay_field = (time.perf_counter(), result)

        self.worker.submit(job, done)

    def _render_replay(self):
        if self.replay_field is not None and self.replay_field[0] != self._replay_seen and not self.follow_live:
            self._replay_seen = self.replay_field[0]
            self.field.show_field(self.replay_field[1])

    def _on_follow(self, event):
        if self._guard:
            return
        self.forget()
        if event.new:
            self.replaying = None
            self.diagnostics.mark(None)
