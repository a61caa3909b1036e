"""The Live tab: the particle cloud over energy contours, the NTK spectrum, the diagnostics and
the weights of one run, with a replay scrubber.

:class:`LiveTab` owns its views (created once) and renders a :class:`app.worker.Lane` into them;
it never touches the engine (replayed contours are computed by the worker as a job).
"""
from __future__ import annotations

import time

import numpy as np
import panel as pn
import param

from app.plots import EMPTY_WEIGHTS, DiagnosticsView, FieldView, SpectrumView, WeightsView

#: What each plot shows, in one line (shown under the plots).
CAPTIONS = {
    "field": "Particle cloud: the collocation points X_t over the model energy U_θ(t) (solid) and the exact "
             "one (dashed).",
    "spectrum": "NTK spectrum: eigenvalues of the Gram matrix JJᵀ on the points; the sketch keeps n "
                "directions (red), λ regularizes the rest (green).",
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
        self.scrubber.param.watch(self._on_scrub, "value")
        self.param.watch(self._on_follow, "follow_live")
        #: contours at the replayed time, once the worker has computed them: (stamp, Field)
        self.replay_field = None
        self._replay_seen = None
        self._guard = False
        self._seen = (-1, -1)
        diag = dict(zip(("dt", "residual", "rejected", "energy_error"), self.diagnostics.plots))
        pane = lambda obj, cls: pn.pane.HoloViews(obj, css_classes=[cls], sizing_mode="stretch_width",  # noqa: E731
                                                   min_width=200)
        self._layout = pn.Column(
            pn.Row(pane(self.field.plot, "mne-field"), pane(self.spectrum.plot, "mne-spectrum"),
                   pane(diag["residual"], "mne-residual"), sizing_mode="stretch_width"),
            pn.Row(pane(diag["dt"], "mne-dt"), pane(diag["energy_error"], "mne-energy-error"),
                   pane(diag["rejected"], "mne-rejected"), pane(self.weights.plot, "mne-weights"),
                   sizing_mode="stretch_width"),
            pn.Row(self.scrubber, self.follow, sizing_mode="stretch_width"),
            pn.pane.Markdown(" · ".join(CAPTIONS.values()), sizing_mode="stretch_width",
                             styles={"font-size": "13px"}),
            sizing_mode="stretch_width")

    def __panel__(self):
        return self._layout

    # --- what main calls ---------------------------------------------------------------------
    def forget(self):
        """Render the next lane state in full (a new run or a new projection)."""
        self._seen = (-1, -1)

    def reset(self):
        """Blank plots (no run)."""
        self.forget()
        self.diagnostics.reset()
        self.field.show_points(None)
        self.field.show_field(None)
        self.spectrum.pipe.send({"eig": np.array([1.0]), "rank": 0, "reg": 0.0})
        self.weights.pipe.send(EMPTY_WEIGHTS)
        self.set_follow(True)

    def new_run(self):
        self.forget()
        self.diagnostics.reset()
        self.set_follow(True)

    def show_pins(self, pins: list[dict]):
        self.spectrum.pinned_pipe.send(pins)
        self.diagnostics.pinned_pipe.send(pins)

    def render(self, lane) -> bool:
        """Push the lane's newest data into the plots; False when nothing changed."""
        self._render_replay()
        seen = self._seen
        version, field_version = lane.version, lane.field_version
        if (version, field_version) == seen:
            return False
        self._seen = (version, field_version)
        if not self.follow_live:
            return True
        snap = lane.latest
        if field_version != seen[1]:
            self.field.show_field(lane.field_)
        if snap is None and lane.preview_points is not None:
            self.field.show_points(lane.preview_points, lane.proj)  # the start points, before the fit ends
        if version != seen[0] and snap is not None:
            self.show_snapshot(lane, snap)
            self.diagnostics.append(lane.history_diag())
            n = len(lane.history)
            self._guard = True
            try:
                self.scrubber.end = max(1, n - 1)
                self.scrubber.value = max(0, n - 1)
            finally:
                self._guard = False
        return True

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
