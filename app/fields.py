"""The display grid: energies of a target and of a run on a fixed 2-D slice, for the contour
plots (no threads, no widgets).

:func:`initial_field` gives the first frame (the target's U₀ on fixed axes, cached per target
and projection); :func:`field_at` the model and exact energies at a later time.  Nothing here
is physics: every energy comes from the engine's target or run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

#: Grid resolution of the contour plots.
GRID = 64
#: Contour levels, relative to the minimum of the energy on the grid.
LEVELS = (0.25, 1.0, 2.0, 3.5, 5.0, 7.0, 9.5)
#: Most (target, projection) first frames kept per process.
CACHE_SIZE = 64


@dataclass
class Field:
    """Energies on the display grid at one time (model and exact; either may be None)."""

    t: float
    xs: np.ndarray
    ys: np.ndarray
    model: np.ndarray | None
    exact: np.ndarray | None
    extent: tuple

    def with_extent(self, extent: tuple) -> "Field":
        """The same field drawn on other (e.g. shared) axes."""
        return Field(self.t, self.xs, self.ys, self.model, self.exact, tuple(extent))


_CACHE: dict = {}


def _key(target, proj):
    try:
        return (json.dumps(target.spec, sort_keys=True, default=str), tuple(proj))
    except Exception:
        return None


def initial_field(target, proj=(0, 1)) -> tuple[Field, np.ndarray]:
    """The target's energy U_0 on the fixed display grid, and the grid points (cached per
    target and projection, so a new session shows its first frame at once)."""
    dim = int(target.dim)
    proj = clip_proj(proj, dim)
    key = _key(target, proj)
    if key is not None and key in _CACHE:
        return _CACHE[key]
    extent = _extent(target, dim, proj)
    grid, xs, ys = grid_points(extent, dim, proj)
    exact = _safe(lambda: np.asarray(target.energies(grid), dtype=float))
    out = (Field(0.0, xs, ys, None, _reshape(exact, xs, ys), extent), grid)
    if key is not None and len(_CACHE) < CACHE_SIZE:
        _CACHE[key] = out
    return out


def cached_initial_field(target, proj=(0, 1)) -> Field | None:
    """The first frame if it is already cached (never computes): for a page that must not wait."""
    proj = clip_proj(proj, int(target.dim))
    hit = _CACHE.get(_key(target, proj))
    return None if hit is None else hit[0]


def field_at(run, target, grid: np.ndarray, like: Field, t: float, has_exact: bool) -> Field:
    """Model (``run.energy``) and exact energies on ``grid`` (the target's original coordinates) at
    time ``t``, on the axes of ``like``."""
    xs, ys = like.xs, like.ys
    if getattr(target, "standardization", None) is not None:
        target = target.standardization.base       # the exact contours are drawn in x
    std = getattr(getattr(run, "target", None), "standardization", None)
    at = grid if std is None else std.to_standard(grid)    # a standardized run's model lives in y
    model = _safe(lambda: np.asarray(run.energy(float(t), at), dtype=float))
    if std is not None and t > 0:
        exact = None        # the run follows the OU process in y, not the one in x
    elif t == 0:
        exact = _safe(lambda: np.asarray(target.energies(grid), dtype=float))
    elif has_exact:
        exact = _safe(lambda: evolved_energies(target, float(t), grid))
    else:
        exact = None
    return Field(float(t), xs, ys, _reshape(model, xs, ys), _reshape(exact, xs, ys), like.extent)


def has_exact_evolution(target) -> bool:
    """Whether the target knows its exact evolved energy U_t (then dashed contours follow t)."""
    return bool(getattr(target, "has_exact", False)) and (
        hasattr(target, "evolved_energies") or hasattr(target, "evolved_log_densities"))


def evolved_energies(target, t, xs):
    """Exact U_t on a batch, through the target's batched oracle (up to a constant)."""
    if hasattr(target, "evolved_energies"):
        return np.asarray(target.evolved_energies(t, xs), dtype=float)
    return -np.asarray(target.evolved_log_densities(t, xs, None), dtype=float)


def shared_extent(extents) -> tuple | None:
    """The union of several (x0, x1, y0, y1) boxes: fixed axes shared by side-by-side plots."""
    extents = [e for e in extents if e]
    if not extents:
        return None
    return (min(e[0] for e in extents), max(e[1] for e in extents),
            min(e[2] for e in extents), max(e[3] for e in extents))


def clip_proj(proj, dim):
    """A valid pair of displayed coordinates for dimension ``dim``."""
    if dim < 2:
        return (0, 0)
    a, b = (min(int(p), dim - 1) for p in proj)
    if a == b:
        b = (a + 1) % dim
    return (a, b)


def grid_points(extent, dim, proj, n=GRID):
    """The n×n grid over ``extent`` in coordinates ``proj`` (others 0): (points, xs, ys)."""
    x0, x1, y0, y1 = extent
    xs = np.linspace(x0, x1, n)
    ys = np.linspace(y0, y1, n)
    X, Y = np.meshgrid(xs, ys)
    pts = np.zeros((n * n, dim))
    pts[:, proj[0]] = X.ravel()
    if dim > 1:
        pts[:, proj[1]] = Y.ravel()
    return pts, xs, ys


def _safe(fn):
    try:
        return fn()
    except Exception:
        return None


def _reshape(values, xs, ys):
    if values is None:
        return None
    values = np.asarray(values, dtype=float).reshape(len(ys), len(xs))
    return values if np.isfinite(values).any() else None


def _extent(target, dim, proj, half=10.0, threshold=11.0):
    """Fixed axes: the box where the target's density exceeds e^{-threshold} of its peak (in
    the displayed slice), widened to hold the OU equilibrium N(0, I)."""
    pts, xs, ys = grid_points((-half, half, -half, half), dim, proj, n=81)
    e = _safe(lambda: np.asarray(target.energies(pts), dtype=float))
    lo, hi = -3.5, 3.5
    box = [lo, hi, lo, hi]
    if e is not None and np.isfinite(e).any():
        e = e.reshape(len(ys), len(xs))
        inside = np.isfinite(e) & (e - np.nanmin(e) < threshold)
        if inside.any():
            cols = xs[inside.any(axis=0)]
            rows = ys[inside.any(axis=1)]
            box = [min(lo, cols.min()), max(hi, cols.max()), min(lo, rows.min()), max(hi, rows.max())]
    pad_x, pad_y = 0.05 * (box[1] - box[0]), 0.05 * (box[3] - box[2])
    return (float(box[0] - pad_x), float(box[1] + pad_x), float(box[2] - pad_y), float(box[3] + pad_y))
