"""The Samples tab: draw samples from a finished run's model density, weighted against the
target (``mne_core.sample``), optionally conditional on one coordinate.

Inputs live in the UI-free :class:`app.settings.SampleSettings`; the engine call runs as a job in
the session's worker thread.
"""
from __future__ import annotations

import time

import numpy as np
import panel as pn

from app.plots import ConditionalView, SamplesView
from app.settings import SampleSettings

#: The worker lane of the partial-diffusion run a conditional needs (evolved on request).
COND_LANE = "cond"


def _engine():
    import mne_core

    return mne_core


class SamplesTab(pn.viewable.Viewer):
    """Controls from :class:`SampleSettings`, a summary line and the weighted samples."""

    def __init__(self, worker, settings: SampleSettings | None = None, fontscale: float = 1.0, **params):
        super().__init__(**params)
        self.worker = worker
        self.settings = settings or SampleSettings()
        self.available = hasattr(_engine(), "sample")
        self.view = SamplesView(fontscale=fontscale)
        self.cond_view = ConditionalView(fontscale=fontscale)
        self._scatter_pane = pn.pane.HoloViews(self.view.plot, sizing_mode="stretch_width")
        self._cond_pane = pn.pane.HoloViews(self.cond_view.plot, sizing_mode="stretch_width", visible=False)
        self._waiting = None  # (request, proj, lane): a conditional waiting for its partial-diffusion run
        s, w = self.settings, pn.widgets
        self.widgets = {
            "n_samples": w.IntInput.from_param(s.param.n_samples, label="samples", width=110),
            "seed": w.IntInput.from_param(s.param.seed, label="seed", width=90),
            "method": w.RadioButtonGroup.from_param(s.param.method, color="light", width=110),
            "conditional": w.Checkbox.from_param(s.param.conditional, label="condition on y"),
            "axis": w.IntInput.from_param(s.param.axis, label="coordinate", width=90),
            "value": w.FloatInput.from_param(s.param.value, label="y value", width=90),
        }
        for name, widget in self.widgets.items():
            if "description" in widget.param:
                widget.description = s.param[name].doc
        self.button = w.Button(label="Draw samples", color="primary", width=130)
        self.button.on_click(lambda e: self.draw())
        self.summary = pn.pane.Markdown("")
        self.message = pn.pane.Alert("", alert_type="warning", visible=False)
        self.result = None  # (stamp, result dict, error, proj), set by the worker
        self._seen = None
        if self.available:
            ws = self.widgets
            self._layout = pn.Column(
                pn.pane.Markdown("Draw samples from the final model density and importance-weight them against "
                                 "the target (bias removal); optionally fix one coordinate to y."),
                pn.Row(ws["n_samples"], ws["seed"], ws["method"], self.button),
                pn.Row(ws["conditional"], ws["axis"], ws["value"]),
                self.message, self.summary, self._scatter_pane, self._cond_pane, sizing_mode="stretch_width")
        else:
            self._layout = pn.pane.Alert("Sampling (weighted samples, ESS, log Ẑ, conditional samples) needs "
                                         "`mne_core.sample`, which this version of the engine does not have yet.",
                                         alert_type="info")

    def __panel__(self):
        return self._layout

    def show_message(self, text: str, kind: str = "warning"):
        self.message.object = text
        self.message.alert_type = kind
        self.message.visible = bool(text)

    def draw(self) -> bool:
        """Sample the live lane's finished run (in the worker); False when it cannot start."""
        if not self.available:
            return False
        lane = self.worker.lanes.get("main")
        if lane is not None and getattr(lane, "recording", None) is not None:
            self.show_message("This is a recorded run (the page keeps only what it shows, not the network): "
                              "press ▶ Run to compute it live, then draw samples.")
            return False
        if lane is None or lane.state not in ("done", "warning") or lane.evolution is None:
            self.show_message("Finish a run first (sampling uses the model at t = T).")
            return False
        try:
            request = self.settings.request(lane.dim)
        except ValueError as err:
            self.show_message(str(err))
            return False
        cond = request.get("condition")
        if cond is not None:
            want = tuple(i for i in range(lane.dim) if i not in cond)
            have = lane.factory.config.diffuse
            if have is None or tuple(sorted(have)) != want:
                return self._conditional_run(lane, request, want)
        self._sample(lane.evolution.run, request, lane.proj)
        return True

    def _conditional_run(self, lane, request, want) -> bool:
        """z | y = y* needs a run in which y does not diffuse: evolve it (same data-free start,
        ``diffuse`` = the free coordinates) in its own lane, then sample it (see :meth:`render`)."""
        config = lane.factory.config.replace(diffuse=want)
        other = self.worker.lanes.get(COND_LANE)
        fixed = ", ".join(f"x{i} = {v:g}" for i, v in request["condition"].items())
        if other is not None and other.factory.config == config and other.state in ("done", "warning"):
            self._sample(other.evolution.run, request, lane.proj)
            return True
        if other is None or other.factory.config != config or other.state in ("failed", "stopped"):
            other = self.worker.start_lane(COND_LANE, type(lane.factory)(config), T=config.T, spec=config.target,
                                           label=f"partial diffusion of {list(want)}", proj=lane.proj)
        self._waiting = (request, lane.proj, other)
        self.show_message(
            f"Conditioning on {fixed} needs a run in which only {', '.join(f'x{i}' for i in want)} diffuse "
            f"(partial diffusion, diffuse = {list(want)}): evolving it now from the same data-free start; "
            "the samples follow when it ends.", kind="info")
        return True

    def _sample(self, run, request, proj):
        self.show_message("drawing samples…", kind="info")
        mne = _engine()
        request = dict(request)

        def job():
            res = mne.sample(run, request.pop("n_samples"), **request)
            out = {k: np.asarray(getattr(res, k)) for k in ("samples", "log_weights")}
            out["summary"] = res.summary()
            cond = res.condition
            out["condition"] = cond
            if cond is not None:
                free = [i for i in range(run.target.dim) if i not in cond]
                axis = next((i for i in proj if i in free), free[0])
                z = out["samples"][:, axis]
                lo, hi = np.quantile(z[np.isfinite(z)], [0.0005, 0.9995])
                grid = np.linspace(lo, hi, 201)
                out.update(axis=axis, grid=grid, exact=mne.exact_conditional_density(mne.original_target(run.target), cond, grid))
            return out

        def done(result, error):
            self.result = (time.perf_counter(), result, error, proj)

        self.worker.submit(job, done)

    def _follow_conditional_run(self):
        lane = self._waiting[2]  # the lane started for this request (the worker may restore another)
        if lane.state in ("done", "warning"):
            request, proj, _ = self._waiting
            self._waiting = None
            self._sample(lane.evolution.run, request, proj)
        elif lane.state in ("failed", "stopped"):
            self._waiting = None
            self.show_message(f"The partial-diffusion run for the conditional failed: {lane.message}. "
                              "Nothing was sampled.", kind="danger")
        elif lane.latest is not None:
            text = self.message.object.split(" · ")[0]
            self.show_message(f"{text} · t = {float(lane.latest.t):.2f} / {lane.T:g}", kind="info")

    def render(self):
        if self._waiting is not None:
            self._follow_conditional_run()
        if self.result is None or self.result[0] == self._seen:
            return
        self._seen = self.result[0]
        _, result, error, proj = self.result
        if error:
            self.show_message(f"Sampling failed: {error}")
            return
        summary = result["summary"]
        status = str(summary.get("status", "ok"))
        if status in ("warning", "failed"):
            self.show_message(f"Sampling {status}: {summary.get('status_message', '')}",
                              "danger" if status == "failed" else "warning")
        else:
            self.show_message("")
        cond = result.get("condition")
        self._scatter_pane.visible = cond is None
        self._cond_pane.visible = cond is not None
        if cond is None:
            self.view.show(result["samples"], result["log_weights"], proj)
        else:
            axis = result["axis"]
            given = ", ".join(f"x{i} = {v:g}" for i, v in cond.items())
            self.cond_view.show(result["samples"][:, axis], result["log_weights"], f"x{axis}",
                                f"x{axis} | {given}", grid=result["grid"], exact=result["exact"])
        self.summary.object = summary_text(summary)


#: Mode masses shown in the summary line (a many-well target has 2^d modes).
MASSES_SHOWN = 8


def summary_text(summary: dict) -> str:
    """``ESS = 812 (41 %) · log Ẑ = -0.012 ± 0.004 · mode masses 0.302 ± 0.006, 0.698 ± 0.006 (exact 0.3, 0.7)``
    from a SampleResult summary (an estimate the verdict withheld is not shown)."""
    parts = []
    if summary.get("ess") is not None:
        frac = summary.get("ess_fraction")
        system = (summary.get("smc") or {}).get("particles")      # an SMC system may hold more than the samples
        of = f" of {int(system)} particles" if system and system != summary.get("n_samples") else ""
        parts.append(f"ESS = {float(summary['ess']):.0f}" + (f" ({100 * float(frac):.0f} %{of})" if frac is not None else ""))
    if summary.get("log_z") is not None:
        se = summary.get("log_z_stderr")
        parts.append(f"log Ẑ = {float(summary['log_z']):.3f}" + (f" ± {float(se):.3f}" if se is not None else ""))
    masses, ses = summary.get("mode_masses"), summary.get("mode_masses_stderr")
    if masses:
        shown = masses[:MASSES_SHOWN]
        text = ", ".join(f"{m:.3f}" + (f" ± {ses[k]:.3f}" if ses else "") for k, m in enumerate(shown))
        more = f", … ({len(masses)} modes)" if len(masses) > len(shown) else ""
        exact = summary.get("mode_masses_exact")
        ref = f" (exact {', '.join(f'{m:.3g}' for m in exact[:MASSES_SHOWN])}{', …' if more else ''})" if exact else ""
        parts.append(f"mode masses {text}{more}{ref}")
    return " · ".join(parts)
