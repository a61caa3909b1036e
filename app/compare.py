"""The Compare tab: two settings (presets or the current settings) side by side on shared fixed
axes, with their spectra and diagnostics overlaid, and the list of pinned runs."""
from __future__ import annotations

import numpy as np
import panel as pn
import param

from app.fields import shared_extent
from app.plots import COMPARE_COLORS, DiagnosticsView, FieldView, SpectrumView, run_key_html
from app.settings import PRESET_NAMES, PRESETS
from app.status import format_status, lane_badge

CURRENT = "current settings"


class CompareTab(pn.viewable.Viewer):
    """Side-by-side runs A and B (lanes ``"A"`` and ``"B"`` of the worker)."""

    left = param.Selector(default=CURRENT, objects=[CURRENT] + PRESET_NAMES, doc="Settings of run A.")
    right = param.Selector(default=CURRENT, objects=[CURRENT] + PRESET_NAMES, doc="Settings of run B.")

    def __init__(self, worker, fontscale: float = 1.0, **params):
        pair = (PRESETS.get("compare") or [[CURRENT, CURRENT]])[0]
        params.setdefault("left", pair[0])
        params.setdefault("right", pair[1])
        super().__init__(**params)
        self.worker = worker
        self.fields = {k: FieldView(f"{k}", height=360, fontscale=fontscale, color=COMPARE_COLORS[k]) for k in "AB"}
        self.spectrum = SpectrumView(height=260, fontscale=fontscale)
        self.diagnostics = DiagnosticsView(height=200, fontscale=fontscale)
        w = pn.widgets
        self.left_select = w.Select.from_param(self.param.left, label="left (A)", width=200)
        self.right_select = w.Select.from_param(self.param.right, label="right (B)", width=200)
        self.button = w.Button(label="▶ Run side by side", color="primary", width=170)
        self.status = {k: pn.pane.Markdown(f"**{k}** `{format_status(None)}`") for k in "AB"}
        self.message = pn.pane.Alert("", alert_type="danger", visible=False)
        self.pins_md = pn.pane.HTML("No pinned runs: press <b>Pin run</b> to keep a run for comparison.")
        #: the one legend of the compared runs: the same colour in the fields, spectrum and diagnostics
        self.key = pn.pane.HTML(self._key_html(), sizing_mode="stretch_width", styles={"font-size": "14px"},
                                css_classes=["mne-compare-key"])
        self._seen: dict = {}
        stretch = dict(sizing_mode="stretch_width")
        self._layout = pn.Column(
            pn.Row(self.left_select, self.right_select, self.button),
            self.message,
            self.key,
            pn.Row(pn.Column(self.status["A"], self.fields["A"].plot, **stretch),
                   pn.Column(self.status["B"], self.fields["B"].plot, **stretch), **stretch),
            pn.Row(self.spectrum.plot, *self.diagnostics.plots[:2], **stretch),
            pn.pane.Markdown("### Pinned runs (overlaid on the Live tab's spectrum and diagnostics)"),
            self.pins_md, **stretch)

    def __panel__(self):
        return self._layout

    def choices(self) -> dict[str, str]:
        return {"A": self.left, "B": self.right}

    def show_error(self, text: str):
        self.message.object = text
        self.message.visible = bool(text)

    def started(self, keys):
        for k in keys:
            self._seen.pop(k, None)
        self.diagnostics.reset()
        self.key.object = self._key_html()

    def _key_html(self) -> str:
        runs = []
        for k in "AB":
            lane = self.worker.lanes.get(k)
            label = lane.label if lane is not None and lane.label else f"{k}: {self.choices()[k]}"
            runs.append({"label": label, "color": COMPARE_COLORS[k]})
        return run_key_html(runs, contours=True)

    def show_pins(self, pins: list[dict]):
        if pins:
            self.pins_md.object = run_key_html(pins).replace("margin-right:14px", "margin-right:14px;display:block")
        else:
            self.pins_md.object = "No pinned runs: press <b>Pin run</b> to keep a run for comparison."

    def render(self, key, lane):
        seen = self._seen.get(key, (-1, -1, 0))
        place = lane.queue_position
        if (lane.version, lane.field_version, place) == seen:
            return
        self._seen[key] = (lane.version, lane.field_version, place)
        view = self.fields[key]
        snap = lane.latest
        badge = f"⏳ waiting: place {place} in the queue" if place else lane_badge(lane)
        self.status[key].object = f"**{lane.label}** `{format_status(snap)}` {badge}"
        if lane.field_version != seen[1] and lane.field_ is not None:
            # shared fixed axes: both sides use the union of their extents
            ext = shared_extent(ln.extent for k, ln in self.worker.lanes.items() if k in "AB")
            view.show_field(lane.field_ if ext is None else lane.field_.with_extent(ext))
        if snap is not None:
            view.show_points(snap.points, lane.proj)
            pins = [{"label": ln.label, "diag": ln.history_diag(), "color": COMPARE_COLORS[k],
                     "eig": np.asarray(ln.latest.gram_eigenvalues, dtype=float)}
                    for k, ln in sorted(self.worker.lanes.items()) if k in "AB" and ln.latest is not None]
            self.spectrum.pinned_pipe.send(pins)
            self.diagnostics.pinned_pipe.send(pins)
