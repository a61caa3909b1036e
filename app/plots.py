"""Live plots: HoloViews DynamicMaps fed by Pipes and Buffers, created once per view.

Each ``*View`` owns its streams; ``show_*`` methods turn a snapshot (plain numpy) into stream
data.  Nothing here computes physics: energies come from the worker, histograms and contour
lines are drawing.
"""
from __future__ import annotations

import math

import contourpy
import holoviews as hv
import numpy as np
import pandas as pd
from holoviews.streams import Buffer, Pipe

from app.fields import LEVELS, Field
from app.recordings import weight_histograms


def ensure_backend() -> None:
    """Load HoloViews' Bokeh backend once (called where the app is created, not at import)."""
    if "bokeh" not in hv.Store.renderers or hv.Store.current_backend != "bokeh":
        hv.extension("bokeh", logo=False)

MODEL_COLOR = "#1f77b4"
EXACT_COLOR = "#222222"
POINT_COLOR = "#d62728"
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
#: One colour per run, the same in every plot and legend: A and B of the Compare tab, then the pins
#: (red and green are kept for the rank and λ markers, black for the live run).
COMPARE_COLORS = {"A": "#1f77b4", "B": "#ff7f0e"}
PIN_COLORS = ["#9467bd", "#8c564b", "#17becf", "#e377c2", "#bcbd22", "#7f7f7f"]
LIVE_COLOR = "#111111"


def pin_color(index: int) -> str:
    """The colour of the ``index``-th pinned run (kept by the pin for every plot)."""
    return PIN_COLORS[int(index) % len(PIN_COLORS)]


def run_key_html(runs: list[dict], contours: bool = False) -> str:
    """One legend for several plots: a colour swatch and the label of each run (dicts with
    ``label`` and ``color``), and optionally the solid/dashed contour key."""
    items = [f'<span style="display:inline-block;margin-right:14px"><span style="display:inline-block;width:22px;'
             f'height:4px;background:{r["color"]};vertical-align:middle;margin-right:5px"></span>'
             f'{_escape(r["label"])}</span>' for r in runs]
    if contours:
        items.append('<span style="display:inline-block">contours: ── model U_θ(t) (solid) &nbsp;'
                     '┄┄ exact U(t) (dashed)</span>')
    return " ".join(items)


def _escape(text) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
DIAG_KEYS = ("dt", "residual", "rejected", "energy_error")
DIAG_LABELS = {"dt": "step size dt", "residual": "residual ‖Jθ̇−f‖/‖f‖", "rejected": "rejected steps",
               "energy_error": "energy error vs exact"}
EMPTY_EXTENT = (-4.0, 4.0, -4.0, 4.0)
#: Narrowest a stretching plot gets (three key plots side by side fit a 1280 px window).
MIN_WIDTH = 200


def _size(width, height, fontscale=1.0) -> dict:
    """Plot size options: a fixed width, or (width None) stretching to its container's width."""
    size = {"height": height, "fontscale": fontscale}
    if width is None:
        size.update(responsive="width", min_width=MIN_WIDTH)
    else:
        size["width"] = width
    return size


def contour_lines(xs, ys, Z, levels=LEVELS) -> list[np.ndarray]:
    """Contour lines of Z − min Z at the given levels, as a list of (n, 2) arrays."""
    if Z is None:
        return []
    Z = np.where(np.isfinite(Z), Z, np.nan)
    if not np.isfinite(Z).any():
        return []
    Z = Z - np.nanmin(Z)
    gen = contourpy.contour_generator(xs, ys, np.ma.masked_invalid(Z))
    lines = []
    for level in levels:
        lines.extend(seg for seg in gen.lines(level) if len(seg) > 1)
    return lines


def empty_field() -> dict:
    xs = np.linspace(-4, 4, 8)
    return {"xs": xs, "ys": xs, "model": None, "exact": None, "extent": EMPTY_EXTENT, "t": 0.0}


def field_data(f: Field | None) -> dict:
    if f is None:
        return empty_field()
    return {"xs": f.xs, "ys": f.ys, "model": f.model, "exact": f.exact, "extent": f.extent, "t": f.t}


def _density_image(data):
    x0, x1, y0, y1 = data["extent"]
    Z = data["model"] if data["model"] is not None else data["exact"]
    if Z is None:
        img = np.zeros((len(data["ys"]), len(data["xs"])))
    else:
        Z = np.where(np.isfinite(Z), Z, np.nanmax(Z[np.isfinite(Z)]) if np.isfinite(Z).any() else 0.0)
        img = np.exp(-(Z - Z.min()))
    return hv.Image(img[::-1], bounds=(x0, y0, x1, y1), kdims=["x", "y"], vdims=["density"])


def lines_curve(lines, label: str) -> hv.Curve:
    """Contour lines as one Curve, segments separated by NaN (Bokeh breaks a line at NaN), so
    that they take a legend entry like any curve."""
    parts = []
    for seg in lines:
        parts.extend([np.asarray(seg, dtype=float), np.full((1, 2), np.nan)])
    xy = np.concatenate(parts) if parts else np.full((1, 2), np.nan)
    return hv.Curve((xy[:, 0], xy[:, 1]), "x", "y", label=label)


def _field_overlay(data, color=MODEL_COLOR):
    img = _density_image(data)
    model = lines_curve(contour_lines(data["xs"], data["ys"], data["model"]), "model U_θ(t) (solid)").opts(
        color=color, line_width=1.5, apply_ranges=False)
    exact = lines_curve(contour_lines(data["xs"], data["ys"], data["exact"]), "exact U(t) (dashed)").opts(
        color=EXACT_COLOR, line_dash="dashed", line_width=1.2, apply_ranges=False)
    return img * model * exact


class FieldView:
    """Collocation points over the model (solid) and exact (dashed) energy contours."""

    def __init__(self, title: str = "points X_t over energy contours", width=None, height=340,
                 fontscale=1.0, color: str | None = None):
        """``color``: the run's colour for its points and model contours (a compared run); None
        keeps the live tab's colours."""
        ensure_backend()
        self.color = color
        self.field_pipe = Pipe(data=empty_field())
        self.points_pipe = Pipe(data=np.zeros((0, 2)))
        field = hv.DynamicMap(lambda data: _field_overlay(data, color or MODEL_COLOR), streams=[self.field_pipe])
        points = hv.DynamicMap(lambda data: hv.Points(data, kdims=["x", "y"], label="points X_t"),
                               streams=[self.points_pipe])
        self.plot = (field * points).opts(
            hv.opts.Image(cmap="Greys" if color else "Blues", alpha=0.4 if color else 0.55, colorbar=False,
                          framewise=True, tools=[], clim=(0, 1)),
            hv.opts.Points(color=color or POINT_COLOR, size=3, alpha=0.6, apply_ranges=False),
            hv.opts.Overlay(title=title, legend_position="top_left", framewise=True, toolbar="above",
                            **_size(width, height, fontscale)),
        )

    def show_field(self, f: Field | None):
        self.field_pipe.send(field_data(f))

    def show_points(self, points: np.ndarray | None, proj=(0, 1)):
        if points is None or len(points) == 0:
            self.points_pipe.send(np.zeros((0, 2)))
            return
        points = np.asarray(points, dtype=float)
        if points.ndim == 1:
            points = points[:, None]
        x = points[:, proj[0]]
        y = points[:, proj[1]] if points.shape[1] > 1 else np.zeros_like(x)
        self.points_pipe.send(np.column_stack([x, y]))


#: Colour of the full N×N NTK spectrum (behind the sketch's n eigenvalues).
FULL_SPECTRUM_COLOR = "#7f7f7f"


def spectrum_ylim(eig, reg, full=None) -> tuple[float, float]:
    """Log-axis limits that hold the positive eigenvalues *and* λ (an HLine does not widen
    HoloViews' range): from two decades below λ (the part of the spectrum λ regularizes away)
    or the smallest eigenvalue, whichever is higher, but never below 1e-12 of the largest."""
    vals = [np.asarray(v, dtype=float) for v in (eig, full) if v is not None]
    vals = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in vals]) if vals else np.zeros(0)
    if vals.size == 0:
        return (1e-3, 1e3) if not (reg and reg > 0) else (reg / 10, reg * 10)
    top = float(vals.max())
    low = max(float(vals.min()), top * 1e-12)
    if reg and reg > 0 and math.isfinite(reg):
        low = max(low, reg / 100) if low < reg else reg / 100
        top = max(top, reg)
    return (low / 3, top * 3)


def _spectrum_element(data):
    eig = np.asarray(data["eig"], dtype=float)
    eig = np.where(np.isfinite(eig) & (eig > 0), eig, np.nan)
    idx = np.arange(1, len(eig) + 1)
    full = data.get("full")
    if full is not None:
        full = np.asarray(full, dtype=float)
        full = np.where(np.isfinite(full) & (full > 0), full, np.nan)
    else:
        full = np.array([np.nan])
    back = hv.Curve((np.arange(1, len(full) + 1), full), "index", "eigenvalue",
                    label="full NTK JJᵀ (N×N)").opts(color=FULL_SPECTRUM_COLOR, line_width=3, alpha=0.6)
    curve = hv.Curve((idx, eig), "index", "eigenvalue",
                     label="sketch Gram ΩᵀKΩ (n×n)").opts(color=LIVE_COLOR)
    rank = hv.VLine(float(data["rank"]) if data["rank"] else np.nan, label="sketch rank n")
    reg = float(data["reg"]) if data["reg"] and data["reg"] > 0 else np.nan
    lam = hv.HLine(reg, label="λ")
    ylim = spectrum_ylim(eig, reg, None if np.isnan(full).all() else full)
    xmax = max(len(eig), len(full), int(data["rank"] or 0)) * 1.05 + 1
    # dimension ranges (not plot options): they hold inside the DynamicMap's framewise overlay
    back, curve = (c.redim.range(eigenvalue=ylim, index=(0.5, xmax)) for c in (back, curve))
    return (back * curve * rank * lam).relabel(
        f"rank n = {data['rank']} · λ = {reg:.2g}" if math.isfinite(reg) else f"rank n = {data['rank']} · λ = 0")


def _pinned_spectra(data):
    curves = {}
    for pin in data:
        eig = np.asarray(pin["eig"], dtype=float)
        eig = np.where(np.isfinite(eig) & (eig > 0), eig, np.nan)
        curves[pin["label"]] = _run_curve(pin, (np.arange(1, len(eig) + 1), eig), "index", "eigenvalue")
    return hv.NdOverlay(curves or {"(none)": _nan_curve("index", "eigenvalue")}, kdims=["pinned"])


def _run_curve(run: dict, data, x, y) -> hv.Curve:
    """The curve of one pinned or compared run in its own colour; its legend is the run key shown
    beside the plots (one legend for every plot, so they cannot disagree)."""
    return hv.Curve(data, x, y).opts(color=run.get("color") or PALETTE[0], show_legend=False)


def _nan_curve(x, y):
    # an NdOverlay in a DynamicMap must never be empty: an invisible curve without a legend entry
    return hv.Curve((np.array([np.nan]), np.array([np.nan])), x, y).opts(show_legend=False)


class SpectrumView:
    """NTK (Gram) eigenvalues on a log scale with the sketch rank and λ marked."""

    def __init__(self, width=None, height=340, fontscale=1.0):
        ensure_backend()
        self.full = None
        self.pipe = Pipe(data={"eig": np.array([1.0]), "rank": 0, "reg": 0.0})
        self.pinned_pipe = Pipe(data=[])
        pinned = hv.DynamicMap(_pinned_spectra, streams=[self.pinned_pipe])
        live = hv.DynamicMap(_spectrum_element, streams=[self.pipe])
        self.plot = (pinned * live).opts(
            hv.opts.Curve(logy=True, line_width=2, framewise=True, tools=["hover"]),
            hv.opts.VLine(color="#d62728", line_dash="dashed", line_width=2),
            hv.opts.HLine(color="#2ca02c", line_dash="dotted", line_width=2),
            hv.opts.NdOverlay(legend_position="top_right"),
            hv.opts.Overlay(title="NTK spectrum", logy=True, framewise=True,
                            legend_position="top_right", **_size(width, height, fontscale)),
        )

    def show(self, snap):
        if snap is None:
            return
        eig = np.asarray(getattr(snap, "gram_eigenvalues", np.array([1.0])), dtype=float)
        if eig.size == 0:
            eig = np.array([np.nan])
        self.pipe.send({"eig": eig, "rank": int(getattr(snap, "sketch_rank", 0) or 0),
                        "reg": float(getattr(snap, "reg", 0.0) or 0.0), "full": self.full})

    def show_full(self, eig):
        """The full N×N NTK eigenvalues drawn behind the sketch's (None: none known)."""
        self.full = None if eig is None else np.asarray(eig, dtype=float)
        data = dict(self.pipe.data or {})
        if "eig" in data:
            data["full"] = self.full
            self.pipe.send(data)


EMPTY_WEIGHTS = {"weights": (np.array([-1.0, 1.0]), np.array([0.0]))}


def _weights_element(data):
    data = data or EMPTY_WEIGHTS
    hists = {}
    for name, (edges, density) in data.items():
        hists[name] = hv.Histogram((edges, density), kdims=["weight"], vdims=["density"])
    return hv.NdOverlay(hists, kdims=["layer"])


class WeightsView:
    """Histograms of the weights of each layer."""

    def __init__(self, width=None, height=220, fontscale=1.0):
        ensure_backend()
        self.pipe = Pipe(data=EMPTY_WEIGHTS)
        self.plot = hv.DynamicMap(_weights_element, streams=[self.pipe]).opts(
            hv.opts.Histogram(alpha=0.45, line_alpha=0.8, framewise=True),
            hv.opts.NdOverlay(title="weights per layer", framewise=True, legend_position="top_right",
                              **_size(width, height, fontscale)),
        )

    def show(self, snap):
        if snap is None:
            return
        data = getattr(snap, "layer_histograms", None)  # a recorded frame keeps only the histograms
        if data is None:
            data = weight_histograms(getattr(snap, "layer_weights", None))
        self.pipe.send(data or EMPTY_WEIGHTS)


def _empty_diag() -> pd.DataFrame:
    return pd.DataFrame({k: np.zeros(0) for k in ("t",) + DIAG_KEYS})


def _pinned_diag(key):
    def element(data):
        curves = {pin["label"]: _run_curve(pin, (pin["diag"]["t"], _clean(pin["diag"][key], key)), "t", key)
                  for pin in data}
        return hv.NdOverlay(curves or {"(none)": _nan_curve("t", key)}, kdims=["pinned"])
    return element


def _clean(v, key):
    v = np.asarray(v, dtype=float)
    if key in ("dt", "residual", "energy_error"):
        v = np.where(v > 0, v, np.nan)
    return v


class DiagnosticsView:
    """dt, residual, rejected steps and energy error over t: the live run (a Buffer, append
    only), pinned runs (overlaid) and a marker at the replayed time."""

    def __init__(self, width=None, height=220, fontscale=1.0):
        ensure_backend()
        self.buffer = Buffer(_empty_diag(), length=1_000_000, index=False)
        self.pinned_pipe = Pipe(data=[])
        self.marker_pipe = Pipe(data=np.nan)
        self.rows = 0
        plots = []
        for key in DIAG_KEYS:
            logy = key != "rejected"
            live = hv.DynamicMap(
                lambda data, key=key: hv.Curve(
                    (data["t"].to_numpy(), _clean(data[key].to_numpy(), key)), "t", key,
                    label="live").opts(color=LIVE_COLOR),
                streams=[self.buffer])
            pinned = hv.DynamicMap(_pinned_diag(key), streams=[self.pinned_pipe])
            marker = hv.DynamicMap(lambda data: hv.VLine(data), streams=[self.marker_pipe])
            plots.append((pinned * live * marker).opts(
                hv.opts.Curve(logy=logy, framewise=True, line_width=1.8, tools=["hover"]),
                hv.opts.VLine(color="#999999", line_dash="dotted"),
                hv.opts.NdOverlay(show_legend=key == "residual"),
                hv.opts.Overlay(title=DIAG_LABELS[key], logy=logy, framewise=True,
                                show_legend=key == "residual", legend_position="bottom_right",
                                **_size(width, height, fontscale)),
            ))
        self.plots = plots  # one per diagnostic, in the order of DIAG_KEYS

    def reset(self, diag: dict | None = None):
        self.buffer.clear()
        self.rows = 0
        if diag:
            self.append(diag)

    def append(self, diag: dict):
        """Send the rows of ``diag`` (arrays over accepted steps) not sent yet."""
        n = len(diag["t"])
        if n < self.rows:
            self.reset()
        if n == self.rows:
            return
        rows = pd.DataFrame({k: np.asarray(diag[k][self.rows:n], dtype=float) for k in ("t",) + DIAG_KEYS})
        self.rows = n
        self.buffer.send(rows)

    def mark(self, t: float | None):
        self.marker_pipe.send(np.nan if t is None else float(t))


class SamplesView:
    """Weighted samples of a finished run (the sampling API of mne_core)."""

    def __init__(self, width=None, height=400, fontscale=1.0):
        ensure_backend()
        self.pipe = Pipe(data={"x": np.zeros(0), "y": np.zeros(0), "w": np.zeros(0)})
        self.plot = hv.DynamicMap(
            lambda data: hv.Points((data["x"], data["y"], data["w"]), ["x", "y"], "weight"),
            streams=[self.pipe]).opts(
            hv.opts.Points(color="weight", cmap="viridis", size=3, colorbar=True,
                           title="samples coloured by importance weight", framewise=True, tools=["hover"],
                           **_size(width, height, fontscale)))

    def show(self, samples, log_weights, proj=(0, 1)):
        s = np.asarray(samples, dtype=float)
        if s.ndim == 1:
            s = s[:, None]
        lw = np.asarray(log_weights, dtype=float)
        w = np.exp(lw - np.nanmax(lw)) if lw.size else lw
        w = w / np.nansum(w) * len(w) if w.size else w
        x = s[:, proj[0]]
        y = s[:, proj[1]] if s.shape[1] > 1 else np.zeros_like(x)
        self.pipe.send({"x": x, "y": y, "w": w})


def _conditional_element(data):
    if not data or data.get("z") is None:
        return (hv.Histogram((np.array([0.0, 1.0]), np.array([np.nan])), kdims=["z"], vdims=["density"])
                * hv.Curve((np.array([np.nan]), np.array([np.nan])), "z", "density"))
    hist = hv.Histogram((data["edges"], data["density"]), kdims=[data["label"]], vdims=["density"],
                        label="weighted samples").opts(color="#1f77b4", alpha=0.5)
    exact = data.get("exact")
    xs = data["grid"] if exact is not None else np.array([np.nan])
    curve = hv.Curve((xs, exact if exact is not None else np.array([np.nan])), data["label"], "density",
                     label="exact π(z | y*)" if exact is not None else "exact (unknown)").opts(
        color="#111111", line_dash="dashed", line_width=2)
    return (hist * curve).relabel(data.get("title", ""))


class ConditionalView:
    """The conditional density of one free coordinate z given y = y*: the importance-weighted
    histogram of the conditional samples and, when the engine knows it, the exact density."""

    BINS = 60

    def __init__(self, width=None, height=400, fontscale=1.0):
        ensure_backend()
        self.pipe = Pipe(data={})
        self.plot = hv.DynamicMap(_conditional_element, streams=[self.pipe]).opts(
            hv.opts.Overlay(title="conditional density", framewise=True, legend_position="top_right",
                            **_size(width, height, fontscale)),
            hv.opts.Histogram(framewise=True), hv.opts.Curve(framewise=True))

    @staticmethod
    def histogram(z, log_weights, bins: int = BINS):
        """``(edges, density)``: the self-normalized importance-weighted histogram of z."""
        z = np.asarray(z, dtype=float)
        lw = np.asarray(log_weights, dtype=float)
        ok = np.isfinite(z) & np.isfinite(lw)
        z, lw = z[ok], lw[ok]
        w = np.exp(lw - lw.max())
        lo, hi = np.quantile(z, [0.0005, 0.9995])
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        density, edges = np.histogram(z, bins=bins, range=(lo, hi), weights=w, density=True)
        return edges, density

    def show(self, z, log_weights, label: str, title: str, grid=None, exact=None):
        edges, density = self.histogram(z, log_weights)
        self.pipe.send({"z": z, "edges": edges, "density": density, "label": label, "title": title,
                        "grid": grid, "exact": exact})
