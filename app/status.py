"""What the page says about a run: the status line, the phase text and the colour of its bar
(UI-free; a lane state comes from :mod:`app.worker`, which maps the engine's ``Status``).

A run that finished inaccurate (engine status ``warning``) is amber with its reason, never
green; a failed one red.
"""
from __future__ import annotations

import math

#: Progress-bar colour of each lane state (Panel's Progress.bar_color names).
BAR_COLORS = {"done": "success", "warning": "warning", "failed": "danger", "preparing": "secondary",
              "queued": "secondary", "running": "primary", "stopped": "secondary"}
#: Short marks for each finished state (colour is never the only signal).
BADGES = {"done": "✓ done", "warning": "⚠ warning", "failed": "✗ failed"}


def format_status(snap) -> str:
    """The status line: ``t = 1.23 · steps 45 · rejected 3 · dt 0.021``."""
    if snap is None:
        return "t = 0.00 · steps 0 · rejected 0 · dt 0.000"
    dt = float(snap.dt) if snap.dt is not None and math.isfinite(float(snap.dt)) else 0.0
    dt_text = f"{dt:.3f}" if dt >= 1e-3 or dt == 0 else f"{dt:.1e}"
    return (f"t = {float(snap.t):.2f} · steps {int(snap.num_accepted)} · "
            f"rejected {int(snap.num_rejected)} · dt {dt_text}")


def bar_color(lane) -> str:
    return BAR_COLORS.get(lane.state, "primary")


def lane_badge(lane) -> str:
    """``✓ done``, ``⚠ warning: <reason>``, ``✗ failed: <reason>`` or the plain state."""
    badge = BADGES.get(lane.state, lane.state)
    return f"{badge}: {lane.message}" if lane.state in ("warning", "failed") and lane.message else badge


#: Accepted steps the time-left estimate looks back over (the step size changes along a run).
TIME_LEFT_WINDOW = 8


def time_left(lane) -> float | None:
    """Seconds until the run reaches T, extrapolating the pace (model time per wall second) of
    its last ``TIME_LEFT_WINDOW`` accepted steps: ``(T − t) · Δwall / Δt``.  None before three
    accepted steps or when the pace is unknown."""
    history = list(getattr(lane, "history", ()) or ())
    if len(history) < 3:
        return None
    a, b = history[max(0, len(history) - 1 - TIME_LEFT_WINDOW)], history[-1]
    dt, dwall = float(b.t) - float(a.t), float(b.wall_time) - float(a.wall_time)
    if not (dt > 0 and dwall >= 0 and math.isfinite(dwall)):
        return None
    return max(0.0, (float(lane.T) - float(b.t)) * dwall / dt)


def format_left(seconds: float) -> str:
    """``≈ 12 s left``, ``≈ 3 min left``."""
    if seconds < 1:
        return "< 1 s left"
    if seconds < 90:
        return f"≈ {seconds:.0f} s left"
    return f"≈ {seconds / 60:.0f} min left"


def recorded_note(lane) -> str:
    """`` · recorded run (shipped …)``: what a played recording is, and how to recompute it."""
    rec = getattr(lane, "recording", None)
    if rec is None:
        return ""
    origin = "shipped with the app" if rec.source == "shipped" else "computed earlier on this server"
    return (f"This is a recorded run of these exact settings ({origin}): the same seed gives the same run. "
            "Press ▶ Run to compute it live.")


def phase_text(lane) -> str:
    """One line on what the lane is doing (with the reason once it ended badly)."""
    text = _phase(lane)
    return text + " · recorded" if getattr(lane, "recording", None) is not None else text


def _phase(lane) -> str:
    wall = (lane.latest.wall_time if lane.latest is not None else 0.0) or 0.0
    if lane.state == "preparing":
        stage = f"{lane.stage} {100 * lane.stage_fraction:.0f} %" if lane.stage else "compiling"
        return f"preparing… ({stage}): data-free start"
    if lane.state == "running":
        if lane.paused and lane.steps_allowed == 0:
            return "paused"
        if getattr(lane, "recording", None) is not None:
            return "playing"
        left = time_left(lane)
        return "running" if left is None else f"running · {format_left(left)}"
    if lane.state == "done":
        return f"✓ done in {wall:.1f} s"
    if lane.state == "warning":
        return f"⚠ finished with a warning after {wall:.1f} s: {lane.message}"
    if lane.state == "failed":
        return f"✗ failed: {lane.message}"
    return lane.state
