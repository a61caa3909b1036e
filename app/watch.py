"""The class's page, ``/watch``: one large particle cloud that follows the lecturer's run, light
enough that a whole class can open it at the same moment.

Why a page of its own: the full explorer builds about eight HoloViews plots per session, ≈ 1.5 s
of the Bokeh server's single document thread each, so thirty students opening it at once wait
about a minute (``benchmarks/app_load.py``).  This page is one plain Bokeh scatter plot and three
lines of text (≈ 30 ms to build), and it computes nothing: it shows

* the run of the session that shares it — a page opened with ``?broadcast=1`` publishes its
  main run's frames to :data:`CHANNEL` while it is open — or, when no page shares,
* the server's recording of the default preset, played in a loop (what the explorer shows first).

Every session reads the same frames (one copy per server); each redraws at most
``1000 / TICK_MS`` times a second and only when its frame changed.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time

import numpy as np
import panel as pn

__all__ = ["Frame", "Channel", "CHANNEL", "WatchPage", "watch_document", "watch_application", "TICK_MS"]

#: Milliseconds between two looks at the shared frame.
TICK_MS = int(os.environ.get("MNE_WATCH_TICK_MS", 150))
#: A recording plays in at most this many seconds, then holds its last frame HOLD_S and restarts.
PLAY_S = 8.0
HOLD_S = 3.0
#: Font size (px) of the page's status line: readable from the back of a lecture hall.
STATUS_PX = 22


@dataclasses.dataclass(frozen=True)
class Frame:
    """What the class sees at one instant: the 2-D points and the lines above them."""

    points: np.ndarray          # (N, 2) projected collocation points
    status: str                 # "t = 0.84 · steps 12 · rejected 0 · dt 0.031"
    phase: str                  # "running · ≈ 12 s left", "✓ done in 17.0 s", …
    label: str                  # the preset or target shown
    extent: tuple | None        # (x0, x1, y0, y1) of the display grid, when known
    state: str = "running"      # the lane state (done | warning | failed | running | …)


class Channel:
    """The frames one sharing session publishes; read by every ``/watch`` session.

    One owner at a time: a page that starts sharing takes the channel over; when it closes (or
    stops sharing) the channel is empty again and the watchers fall back to the recording."""

    def __init__(self):
        self._lock = threading.Lock()
        self._owner = None
        self._frame: Frame | None = None
        self.version = 0

    def publish(self, owner, frame: Frame) -> None:
        with self._lock:
            self._owner, self._frame = owner, frame
            self.version += 1

    def release(self, owner) -> None:
        """``owner`` stops sharing (nothing happens if another page shares now)."""
        with self._lock:
            if self._owner is owner:
                self._owner, self._frame = None, None
                self.version += 1

    def latest(self) -> tuple[int, Frame | None]:
        with self._lock:
            return self.version, self._frame

    @property
    def sharing(self) -> bool:
        with self._lock:
            return self._frame is not None


#: The server's channel (one per process).
CHANNEL = Channel()


def lane_frame(lane) -> Frame | None:
    """The frame of a dashboard lane's latest snapshot (None before its first one)."""
    from app.status import format_status, phase_text

    snap = lane.latest
    points = getattr(snap, "points", None) if snap is not None else getattr(lane, "preview_points", None)
    if points is None:
        return None
    extent = getattr(lane, "extent", None)
    return Frame(points=_project(points, getattr(lane, "proj", (0, 1))), status=format_status(snap),
                 phase=phase_text(lane), label=str(lane.label or ""), extent=None if extent is None else tuple(extent),
                 state=str(lane.state))


def _project(points, proj) -> np.ndarray:
    """(N, 2) float32: the displayed coordinates ``proj`` of (N, d) points (1-D: y = 0)."""
    points = np.asarray(points, dtype=np.float32)
    if points.ndim == 2 and points.shape[1] > 1:
        proj = tuple(proj) if proj and max(proj) < points.shape[1] else (0, 1)
        return points[:, list(proj)]
    return np.column_stack([points.ravel(), np.zeros(points.size, np.float32)])


def default_recording():
    """The server's recording of the default preset (the shipped one unless rebuilt), or None."""
    from app.recordings import lookup, recording_key
    from app.settings import Settings

    s = Settings()
    return lookup(recording_key(s.to_config(), (s.proj_x, s.proj_y)))


def recording_frame(rec, elapsed: float) -> tuple[int, Frame]:
    """Frame index and frame of recording ``rec`` ``elapsed`` seconds after its loop began (it plays
    in ≤ PLAY_S, holds the last frame HOLD_S, and starts again)."""
    from app.status import BADGES, format_status

    n = len(rec.snapshots)
    per_frame = min(0.1, PLAY_S / max(1, n))
    period = per_frame * n + HOLD_S
    k = min(n - 1, int((elapsed % period) / per_frame))
    snap = rec.snapshots[k]
    pts = _project(snap.points, rec.proj)
    last = k == n - 1
    phase = (BADGES.get(rec.state, rec.state) if last else "playing") + " · recorded run"
    extent = tuple(rec.fields[0].extent) if rec.fields else None
    return k, Frame(points=pts, status=format_status(snap), phase=phase, label=rec.label, extent=extent,
                    state=rec.state if last else "running")


class WatchPage(pn.viewable.Viewer):
    """One ``/watch`` session: a scatter plot and three lines of text, plain Bokeh models (no
    HoloViews, no Panel layout on the server's path: ``watch_document``), redrawn from the shared
    frame only when it changed."""

    def __init__(self, channel: Channel = CHANNEL, recording=None, theme: str = "light", **params):
        super().__init__(**params)
        from bokeh.layouts import column
        from bokeh.models import ColumnDataSource, Div
        from bokeh.plotting import figure

        self.channel = channel
        self._recording = recording if recording is not None else default_recording()
        self._t0 = time.monotonic()
        self._shown = None          # what is on screen: ("channel", version) or ("recording", id, k)
        dark = theme == "dark"
        fg, bg = ("#e8e8e8", "#1e1e1e") if dark else ("#111111", "#ffffff")
        self.source = ColumnDataSource(data={"x": np.zeros(0), "y": np.zeros(0)})
        fig = figure(sizing_mode="stretch_both", min_height=420, toolbar_location=None,
                     background_fill_color=bg, border_fill_color=bg, output_backend="webgl")
        fig.scatter("x", "y", source=self.source, size=6, fill_color="#0072B2", line_color=None, alpha=0.75)
        for axis in (fig.xaxis, fig.yaxis):
            axis.major_label_text_font_size = "16pt"
            axis.major_label_text_color = fg
            axis.axis_label_text_font_size = "16pt"
            axis.axis_label_text_color = fg
        fig.xaxis.axis_label, fig.yaxis.axis_label = "x", "y"
        self.figure = fig
        style = {"font-size": f"{STATUS_PX}px", "color": fg}
        self.title = Div(text="", styles={**style, "font-weight": "bold"}, sizing_mode="stretch_width")
        self.status = Div(text="t = 0.00 · steps 0", styles=style, sizing_mode="stretch_width")
        self.note = Div(text="", styles={"font-size": "16px", "color": fg}, sizing_mode="stretch_width")
        self.link = Div(text='<a href="./" target="_blank">open the full explorer</a>', styles={"font-size": "16px"})
        self.root = column(self.title, self.status, fig, self.note, self.link, sizing_mode="stretch_both",
                           styles={"background": bg})
        self.tick()

    def __panel__(self):  # in a notebook or ``panel serve app/watch.py``
        return pn.pane.Bokeh(self.root, sizing_mode="stretch_both")

    def current(self) -> tuple[tuple, Frame | None]:
        """The frame to show now and its identity (shared run first, else the recording)."""
        version, frame = self.channel.latest()
        if frame is not None:
            return ("channel", version), frame
        if self._recording is None:
            return ("nothing",), None
        k, frame = recording_frame(self._recording, time.monotonic() - self._t0)
        return ("recording", id(self._recording), k), frame

    def restart(self):
        """Play the recording from its first frame (when the page is first shown)."""
        self._t0 = time.monotonic()

    def tick(self) -> bool:
        """Redraw when the frame changed; True when something was drawn."""
        ident, frame = self.current()
        if ident == self._shown:
            return False
        self._shown = ident
        if frame is None:
            self.title.text = "Nothing to show yet"
            self.status.text = ""
            self.note.text = "The lecturer has not shared a run, and this server has no recording."
            self.source.data = {"x": np.zeros(0), "y": np.zeros(0)}
            return True
        if ident[0] == "channel" or ident[2] == 0:
            self._set_ranges(frame.extent)
        self.title.text = f"{_escape(frame.label)} · {_escape(frame.phase)}"
        self.status.text = _escape(frame.status)
        self.note.text = ("live: shared by the lecturer" if ident[0] == "channel" else
                          "a recorded run of the default preset (the lecturer has not shared a run)")
        self.source.data = {"x": frame.points[:, 0], "y": frame.points[:, 1]}
        return True

    def _set_ranges(self, extent):
        if not extent:
            return
        x0, x1, y0, y1 = (float(v) for v in extent)
        fr = self.figure
        if (fr.x_range.start, fr.x_range.end, fr.y_range.start, fr.y_range.end) != (x0, x1, y0, y1):
            fr.x_range.start, fr.x_range.end = x0, x1
            fr.y_range.start, fr.y_range.end = y0, y1


def watch_document(doc) -> None:
    """Bokeh application handler of ``/watch`` (``?theme=dark`` for a dark projector): the page's
    models and one periodic callback, nothing else per session."""
    theme = "light"
    try:
        args = doc.session_context.request.arguments or {}
        if args.get("theme", [b""])[0].decode() == "dark":
            theme = "dark"
    except Exception:
        pass
    page = WatchPage(theme=theme)
    doc.title = "MNE Explorer · watch"
    doc.add_root(page.root)
    page.restart()
    doc.add_periodic_callback(page.tick, TICK_MS)


def watch_application():
    """The ``/watch`` route as a plain Bokeh application (served beside the explorer)."""
    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler

    return Application(FunctionHandler(watch_document))


def _escape(text: str) -> str:
    import html

    return html.escape(str(text))


if pn.state.served:  # ``panel serve app/main.py app/watch.py``
    from mne_core.runtime import configure as _configure

    _configure()
    pn.extension()
    _page = WatchPage()
    pn.state.add_periodic_callback(_page.tick, TICK_MS)
    _page.servable(title="MNE Explorer · watch")
