"""Take a recorded run home: a standalone HTML replay, an animated GIF, and the run directory.

Pure functions of a :class:`mne_core.Run` (call them where the run lives: the session's worker
thread, or a script).  Nothing here is physics: the frames are the run's recorded points, and
the contours come from the engine's ``run.energy`` and the target's energies through
:mod:`app.fields`.

- :func:`replay_frames` — the frames of the animation (points and contour lines per recorded step);
- :func:`html_replay` — one self-contained HTML page (Bokeh, inline JS, no server, no network)
  with a play button and a time slider;
- :func:`gif_replay` — an animated GIF of the particle cloud over the contours (Pillow only);
- :func:`run_zip` — a zip of what ``Run.save`` writes, which ``mne_core.load_run`` opens once
  unzipped.
"""
from __future__ import annotations

import io
import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.fields import clip_proj, field_at, has_exact_evolution, initial_field

#: Most frames an export holds (recorded steps beyond it are thinned evenly, first and last kept).
MAX_FRAMES = 300
#: Milliseconds per frame when playing.
FRAME_MS = 80
#: GIF size in pixels.
GIF_SIZE = (480, 480)
#: Colours: points, model contours (solid), exact contours (dashed).
POINT_COLOR = "#1f4e99"
MODEL_COLOR = "#d95f02"
EXACT_COLOR = "#444444"


class ExportError(ValueError):
    """The run cannot be exported (e.g. nothing recorded yet); the message says why."""


@dataclass
class Frames:
    """The animation of one run on a 2-D slice: per frame its time, the points (x, y) and the
    model / exact contour lines (lists of (n, 2) arrays)."""

    times: np.ndarray
    points: list
    model_lines: list
    exact_lines: list
    extent: tuple
    proj: tuple
    title: str
    status: str


def frame_indices(n: int, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """Indices of the recorded steps that become frames: all of them up to ``max_frames``, else
    an even thinning that keeps the first and the last."""
    if n <= 0:
        return np.zeros(0, dtype=int)
    if n <= max_frames:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max_frames)).astype(int))


def replay_frames(run, proj=(0, 1), max_frames: int = MAX_FRAMES, contours: bool = True) -> Frames:
    """The frames of ``run`` on coordinates ``proj``: its recorded points at every (thinned) step,
    and the contour lines of the model energy U_θ(t) and, when the target knows it, the exact
    U_t on the fixed display grid of the live tab."""
    from app.plots import contour_lines

    times = np.asarray(run.times, dtype=float)
    if times.size == 0:
        raise ExportError("the run has no recorded steps yet")
    std = run.target.standardization      # a standardized run records y; frames are drawn in x
    target = run.target if std is None else std.base
    dim = int(target.dim)
    proj = clip_proj(proj, dim)
    first, grid = initial_field(target, proj)
    exact_known = has_exact_evolution(target)
    idx = frame_indices(times.size, max_frames)
    all_points = run.points
    points, model_lines, exact_lines = [], [], []
    for k in idx:
        x = np.asarray(all_points[k], dtype=float)
        x = x if std is None else std.to_original(x)
        xy = np.stack([x[:, proj[0]], x[:, proj[1]] if dim > 1 else np.zeros(len(x))], axis=1)
        points.append(xy)
        if contours:
            f = field_at(run, target, grid, first, float(times[k]), exact_known)
            model_lines.append(contour_lines(f.xs, f.ys, f.model))
            exact_lines.append(contour_lines(f.xs, f.ys, f.exact))
        else:
            model_lines.append([])
            exact_lines.append([])
    name = getattr(target, "name", "") or str(run.config.target.get("name", run.config.target.get("kind", "")))
    title = f"MNE run · {name} · N = {run.config.n_points} · seed {run.config.seed}"
    return Frames(times[idx], points, model_lines, exact_lines, tuple(first.extent), proj, title,
                  str(getattr(run.status, "value", run.status)))


# ------------------------------------------------------------------------------------- HTML
_PLAY_JS = """
const n = slider.end + 1;
if (window.__mne_timer) {
  clearInterval(window.__mne_timer); window.__mne_timer = null; button.label = "▶ Play"; return;
}
if (slider.value >= n - 1) { slider.value = 0; }
button.label = "❚❚ Pause";
window.__mne_timer = setInterval(() => {
  if (slider.value >= n - 1) {
    clearInterval(window.__mne_timer); window.__mne_timer = null; button.label = "▶ Play"; return;
  }
  slider.value = slider.value + 1;
}, ms);
"""

_SHOW_JS = """
const i = Math.max(0, Math.min(frames.t.length - 1, Math.round(slider.value)));
points.data = {x: frames.x[i], y: frames.y[i]};
model.data = {xs: frames.mxs[i], ys: frames.mys[i]};
exact.data = {xs: frames.exs[i], ys: frames.eys[i]};
label.text = "t = " + frames.t[i].toFixed(3) + "  ·  frame " + (i + 1) + " / " + frames.t.length;
"""


def _round(a, digits=4):
    return np.round(np.asarray(a, dtype=float), digits).tolist()


def _lines_xy(lines):
    return [_round(seg[:, 0]) for seg in lines], [_round(seg[:, 1]) for seg in lines]


def html_replay(run, proj=(0, 1), max_frames: int = MAX_FRAMES, frames: Frames | None = None) -> str:
    """A standalone HTML page (Bokeh with its JavaScript inline) that replays the particle cloud
    over the contours: ▶ Play and a time slider, with no server and no network access."""
    from bokeh.embed import file_html
    from bokeh.layouts import column, row
    from bokeh.models import Button, ColumnDataSource, CustomJS, Div, Legend, LegendItem, Range1d, Slider
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    fr = frames or replay_frames(run, proj, max_frames)
    n = len(fr.times)
    mxs, mys, exs, eys = [], [], [], []
    for m, e in zip(fr.model_lines, fr.exact_lines):
        a, b = _lines_xy(m)
        mxs.append(a), mys.append(b)
        a, b = _lines_xy(e)
        exs.append(a), eys.append(b)
    data = {"t": _round(fr.times, 6), "x": [_round(p[:, 0]) for p in fr.points],
            "y": [_round(p[:, 1]) for p in fr.points], "mxs": mxs, "mys": mys, "exs": exs, "eys": eys}
    x0, x1, y0, y1 = fr.extent
    fig = figure(width=560, height=520, title=fr.title, x_range=Range1d(x0, x1), y_range=Range1d(y0, y1),
                 match_aspect=True, toolbar_location="right", tools="pan,wheel_zoom,reset,save")
    fig.xaxis.axis_label = f"x{fr.proj[0]}"
    fig.yaxis.axis_label = f"x{fr.proj[1]}"
    exact = ColumnDataSource({"xs": exs[0], "ys": eys[0]}, name="exact_lines")
    model = ColumnDataSource({"xs": mxs[0], "ys": mys[0]}, name="model_lines")
    points = ColumnDataSource({"x": data["x"][0], "y": data["y"][0]}, name="points")
    r_exact = fig.multi_line("xs", "ys", source=exact, line_color=EXACT_COLOR, line_dash="dashed", line_width=1.2)
    r_model = fig.multi_line("xs", "ys", source=model, line_color=MODEL_COLOR, line_width=1.6)
    r_pts = fig.scatter("x", "y", source=points, size=4, color=POINT_COLOR, alpha=0.7)
    fig.add_layout(Legend(items=[LegendItem(label="points X_t", renderers=[r_pts]),
                                 LegendItem(label="model U_θ(t) (solid)", renderers=[r_model]),
                                 LegendItem(label="exact U_t (dashed)", renderers=[r_exact])],
                          location="top_left", background_fill_alpha=0.7))
    label = Div(text=f"t = {fr.times[0]:.3f}  ·  frame 1 / {n}", name="time_label",
                styles={"font-size": "16px", "font-weight": "bold"})
    slider = Slider(start=0, end=max(n - 1, 1), value=0, step=1, title="frame", name="frame", width=400,
                    disabled=n < 2)
    button = Button(label="▶ Play", name="play", button_type="primary", width=110, disabled=n < 2)
    args = dict(slider=slider, points=points, model=model, exact=exact, label=label, frames=data)
    slider.js_on_change("value", CustomJS(args=args, code=_SHOW_JS))
    button.js_on_event("button_click", CustomJS(args=dict(slider=slider, button=button, ms=FRAME_MS),
                                                code=_PLAY_JS))
    note = Div(text=(f"Recorded MNE run (status: {fr.status}); {n} frames from t = {fr.times[0]:.3g} to "
                     f"{fr.times[-1]:.3g}. Points: the collocation points X_t; solid: the model energy U_θ(t); "
                     "dashed: the exact U_t where known. Made by MNE Explorer; no server needed."),
               width=560, styles={"font-size": "13px"})
    layout = column(fig, row(button, slider), label, note)
    return file_html(layout, INLINE, title=fr.title)


# -------------------------------------------------------------------------------------- GIF
def _hex(c):
    c = c.lstrip("#")
    return tuple(int(c[i:i + 2], 16) for i in (0, 2, 4))


def _dashed(draw, pts, fill, width=1, on=6.0, off=4.0):
    """A dashed polyline (PIL has none)."""
    phase, drawing = 0.0, True
    for (xa, ya), (xb, yb) in zip(pts[:-1], pts[1:]):
        seg = float(np.hypot(xb - xa, yb - ya))
        pos = 0.0
        while pos < seg:
            left = (on if drawing else off) - phase
            step = min(left, seg - pos)
            if drawing and seg > 0:
                s0, s1 = pos / seg, (pos + step) / seg
                draw.line([(xa + s0 * (xb - xa), ya + s0 * (yb - ya)), (xa + s1 * (xb - xa), ya + s1 * (yb - ya))],
                          fill=fill, width=width)
            pos += step
            phase += step
            if phase >= (on if drawing else off) - 1e-9:
                phase, drawing = 0.0, not drawing


def gif_replay(run, proj=(0, 1), max_frames: int = MAX_FRAMES, frames: Frames | None = None,
               size=GIF_SIZE, frame_ms: int = FRAME_MS) -> bytes:
    """An animated GIF (one frame per recorded step, thinned beyond ``max_frames``) of the particle
    cloud over the model (solid) and exact (dashed) contours, with the time on every frame."""
    from PIL import Image, ImageDraw, ImageFont

    fr = frames or replay_frames(run, proj, max_frames)
    W, H = size
    pad = 28
    x0, x1, y0, y1 = fr.extent
    sx = (W - 2 * pad) / (x1 - x0)
    sy = (H - 2 * pad) / (y1 - y0)
    s = min(sx, sy)
    ox = pad + 0.5 * ((W - 2 * pad) - s * (x1 - x0))
    oy = pad + 0.5 * ((H - 2 * pad) - s * (y1 - y0))

    def to_px(xy):
        xy = np.asarray(xy, dtype=float)
        return np.stack([ox + (xy[:, 0] - x0) * s, H - (oy + (xy[:, 1] - y0) * s)], axis=1)

    try:
        font = ImageFont.load_default(size=15)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    images = []
    point_rgb, model_rgb, exact_rgb = _hex(POINT_COLOR), _hex(MODEL_COLOR), _hex(EXACT_COLOR)
    for k, t in enumerate(fr.times):
        img = Image.new("RGB", (W, H), "white")
        draw = ImageDraw.Draw(img)
        draw.rectangle([ox, H - oy - s * (y1 - y0), ox + s * (x1 - x0), H - oy], outline=(150, 150, 150))
        for seg in fr.exact_lines[k]:
            _dashed(draw, [tuple(p) for p in to_px(seg)], exact_rgb)
        for seg in fr.model_lines[k]:
            draw.line([tuple(p) for p in to_px(seg)], fill=model_rgb, width=2)
        pts = fr.points[k]
        pts = pts[np.all(np.isfinite(pts), axis=1)]
        for px, py in to_px(pts):
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=point_rgb)
        draw.text((pad, 6), f"t = {t:.3f}   frame {k + 1}/{len(fr.times)}", fill=(0, 0, 0), font=font)
        draw.text((pad, H - 22), "solid: model energy   dashed: exact energy", fill=(60, 60, 60), font=font)
        images.append(img.convert("P", palette=Image.ADAPTIVE, colors=64))
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0,
                   optimize=False, disposal=1)
    return buf.getvalue()


# ------------------------------------------------------------------------------ run directory
def run_zip(run, name: str = "mne-run") -> bytes:
    """The run directory (``Run.save``: config.json, trajectory.npz, diagnostics.json,
    summary.json) as a zip whose entries sit in folder ``name``/; ``mne_core.load_run`` opens
    that folder once unzipped."""
    if len(run.times) == 0:
        raise ExportError("the run has no recorded steps yet")
    name = "".join(c for c in str(name) if c.isalnum() or c in "-_.") or "mne-run"
    with tempfile.TemporaryDirectory(prefix="mne-export-") as tmp:
        directory = run.save(Path(tmp) / name)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for path in sorted(Path(directory).rglob("*")):
                if path.is_file():
                    z.write(path, arcname=f"{name}/{path.relative_to(directory).as_posix()}")
    return buf.getvalue()


def export_name(run) -> str:
    """A file-name stem for the run's exports, e.g. ``mne-two-modes-seed0``."""
    spec = run.config.target
    spec = spec.get("base", spec) if spec.get("kind") == "standardized" else spec
    what = spec.get("name") or spec.get("kind", "run")
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in f"mne-{what}-seed{run.config.seed}")


def frames_summary(frames: Frames) -> str:
    """One JSON line describing the frames (for logs and tests)."""
    return json.dumps({"frames": len(frames.times), "t0": float(frames.times[0]), "t1": float(frames.times[-1]),
                       "extent": list(frames.extent), "proj": list(frames.proj)})


__all__ = ["ExportError", "Frames", "MAX_FRAMES", "frame_indices", "replay_frames", "html_replay", "gif_replay",
           "run_zip", "export_name", "frames_summary"]
