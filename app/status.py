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


def phase_text(lane) -> str:
    """One line on what the lane is doing (with the reason once it ended badly)."""
    wall = (lane.latest.wall_time if lane.latest is not None else 0.0) or 0.0
    if lane.state == "preparing":
        stage = f"{lane.stage} {100 * lane.stage_fraction:.0f} %" if lane.stage else "compiling"
        return f"preparing… ({stage}): data-free start"
    if lane.state == "running":
        return "paused" if lane.paused and lane.steps_allowed == 0 else "running"
    if lane.state == "done":
        return f"✓ done in {wall:.1f} s"
    if lane.state == "warning":
        return f"⚠ finished with a warning after {wall:.1f} s: {lane.message}"
    if lane.state == "failed":
        return f"✗ failed: {lane.message}"
    return lane.state
