"""A recorded MNE run: θ(t) on the integrator's accepted steps, evaluable at any t.

Between recorded times t_k < t < t_{k+1} the parameters are the cubic Hermite
interpolant of (θ_k, θ̇_k) and (θ_{k+1}, θ̇_{k+1}) (θ̇ = the MNE parameter velocity), so

    U(t, x) = U_{θ(t)}(x),     score(t, x) = ∇ log ρ_t(x) = −∇_x U_{θ(t)}(x)

are available on all of [0, T] to fourth order in the step size.  A directory written by
:meth:`Run.save` holds ``config.json`` (reproduces the run), ``trajectory.npz``,
``diagnostics.json`` and ``summary.json``; :func:`load_run` reads it back.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .config import EvolveConfig
from .network import FlatEnergy, init_energy_network
from .targets import Target, target_from_spec

FORMAT_VERSION = 1


@functools.lru_cache(maxsize=32)
def shared_network(dim: int, width: int, depth: int, activation: str, dtype_name: str) -> FlatEnergy:
    """One FlatEnergy per architecture and process, so compiled functions keyed on it are reused."""
    net, _ = init_energy_network(dim, width, depth, activation, dtype=jnp.dtype(dtype_name))
    return net


def network_for(config: EvolveConfig, dim: int) -> FlatEnergy:
    return shared_network(dim, config.width, config.depth, config.activation, config.precision)


def hermite_theta(times, thetas, theta_dots, t, n=None):
    """Cubic Hermite interpolation of θ(t) from (t_k, θ_k, θ̇_k), k < n; jittable.

    On [t_k, t_{k+1}] with h = t_{k+1} − t_k and s = (t − t_k)/h:
    θ(t) = h00(s) θ_k + h10(s) h θ̇_k + h01(s) θ_{k+1} + h11(s) h θ̇_{k+1}.
    ``t`` is clipped to [t_0, t_{n−1}].  ``n`` (may be traced; default all rows) allows padded
    arrays: rows ≥ n are ignored, so runs with different step counts share one compilation.
    """
    times = jnp.asarray(times)
    n = times.shape[0] if n is None else n
    t = jnp.clip(t, times[0], times[n - 1])
    k = jnp.clip(jnp.searchsorted(times, t, side="right") - 1, 0, jnp.maximum(n - 2, 0))
    k1 = jnp.minimum(k + 1, times.shape[0] - 1)
    h = times[k1] - times[k]
    safe_h = jnp.where(h > 0, h, 1.0)
    s = jnp.where(h > 0, (t - times[k]) / safe_h, 0.0)
    h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
    h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
    return h00 * thetas[k] + h10 * h * theta_dots[k] + h01 * thetas[k1] + h11 * h * theta_dots[k1]


@functools.lru_cache(maxsize=32)
def _run_fns(net: FlatEnergy):
    """Jitted U_θ(x) and −∇_x U_θ(x) over batches, once per network structure."""
    energy = jax.jit(lambda th, xs: net.energies(th, xs))
    score = jax.jit(lambda th, xs: -jax.vmap(jax.grad(net.energy, argnums=1), (None, 0))(th, xs))
    return energy, score


class Run:
    """Everything recorded of one evolution (see module doc)."""

    def __init__(self, config: EvolveConfig, target: Target | None = None, net: FlatEnergy | None = None):
        self.config = config
        self.target = target if target is not None else target_from_spec(config.target)
        self.net = net if net is not None else network_for(config, self.target.dim)
        self._t: list[float] = []
        self._theta: list[np.ndarray] = []
        self._theta_dot: list[np.ndarray] = []
        self._points: list[np.ndarray] = []
        self._diag: dict[str, list] = {k: [] for k in ("t", "dt", "residual", "num_rejected", "energy_error", "reg")}
        self.status = "running"
        self.fit_info: dict = {}
        self.wall_seconds: float | None = None
        self.reg_escalations: list = []
        self._jit_energy, self._jit_score = _run_fns(self.net)
        self._cache = None

    # -------------------------------------------------------------- recording
    def append(self, t, theta, theta_dot, points, **diag):
        self._t.append(float(t))
        self._theta.append(np.asarray(theta))
        self._theta_dot.append(np.asarray(theta_dot))
        self._points.append(np.asarray(points))
        for k in self._diag:
            v = diag.get(k, t if k == "t" else None)
            self._diag[k].append(np.nan if v is None else float(v))
        self._cache = None

    # -------------------------------------------------------------- views
    @property
    def times(self) -> np.ndarray:
        return np.asarray(self._t)

    @property
    def thetas(self) -> np.ndarray:
        return np.stack(self._theta) if self._theta else np.zeros((0, self.net.num_params))

    @property
    def theta_dots(self) -> np.ndarray:
        return np.stack(self._theta_dot) if self._theta_dot else np.zeros((0, self.net.num_params))

    @property
    def points(self) -> np.ndarray:
        return np.stack(self._points) if self._points else np.zeros((0, 0, self.target.dim))

    @property
    def diagnostics(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self._diag.items()}

    @property
    def T(self) -> float:
        return float(self._t[-1]) if self._t else 0.0

    def theta(self, t: float) -> np.ndarray:
        """θ(t) by cubic Hermite interpolation on the recorded steps."""
        if not self._t:
            raise ValueError("the run has no recorded state yet")
        if self._cache is None:
            self._cache = (self.times, self.thetas, self.theta_dots)
        return np.asarray(hermite_theta(*self._cache, float(t)))

    def _check_x(self, x):
        x = np.asarray(x)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.target.dim:
            raise ValueError(f"x must have shape (M, {self.target.dim}), got {np.shape(x)}")
        return jnp.asarray(x, self.thetas.dtype)

    def energy(self, t: float, x) -> np.ndarray:
        """U(t, x) = U_{θ(t)}(x) for x of shape (M, d) → (M,)  (unnormalized; −log ρ_t up to a constant)."""
        return np.asarray(self._jit_energy(jnp.asarray(self.theta(t)), self._check_x(x)))

    def score(self, t: float, x) -> np.ndarray:
        """∇_x log ρ_t(x) = −∇_x U_{θ(t)}(x) for x of shape (M, d) → (M, d)."""
        return np.asarray(self._jit_score(jnp.asarray(self.theta(t)), self._check_x(x)))

    def summary(self) -> dict:
        d = self.diagnostics
        err = d["energy_error"]
        return {
            "status": self.status,
            "target": self.target.name,
            "dim": self.target.dim,
            "T_reached": self.T,
            "T": self.config.T,
            "num_accepted_steps": int(len(self._t) - 1) if self._t else 0,
            "num_rejected_steps": int(d["num_rejected"][-1]) if len(d["num_rejected"]) else 0,
            "max_residual": float(np.nanmax(d["residual"])) if len(d["residual"]) else None,
            "max_energy_error": float(np.nanmax(err)) if len(err) and np.isfinite(err).any() else None,
            "energy_error_at_T": float(err[-1]) if len(err) and np.isfinite(err[-1]) else None,
            "num_params": self.net.num_params,
            "n_points": self.config.n_points,
            "fit": self.fit_info,
            "reg_escalations": self.reg_escalations,
            "wall_seconds": self.wall_seconds,
        }

    # -------------------------------------------------------------- persistence
    def save(self, directory) -> Path:
        """Write config.json, trajectory.npz, diagnostics.json and summary.json to ``directory``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(self.config.to_json())
        np.savez_compressed(out / "trajectory.npz", times=self.times, thetas=self.thetas,
                            theta_dots=self.theta_dots, points=self.points)
        diag = {k: [None if not np.isfinite(v) else v for v in vals] for k, vals in self.diagnostics.items()}
        (out / "diagnostics.json").write_text(json.dumps(diag))
        summ = dict(self.summary(), format_version=FORMAT_VERSION)
        (out / "summary.json").write_text(json.dumps(summ, indent=2, default=_json_default))
        return out


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o)}")


def load_run(directory) -> Run:
    """Read a run written by :meth:`Run.save` (raises FileNotFoundError/ValueError with the reason)."""
    d = Path(directory)
    for name in ("config.json", "trajectory.npz"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d} is not a saved MNE run: {name} is missing")
    config = EvolveConfig.from_dict(json.loads((d / "config.json").read_text()))
    run = Run(config)
    with np.load(d / "trajectory.npz") as z:
        times, thetas, theta_dots, points = z["times"], z["thetas"], z["theta_dots"], z["points"]
    if thetas.shape[1:] != (run.net.num_params,):
        raise ValueError(f"{d}: trajectory has {thetas.shape[1:]} parameters, the config's network has {run.net.num_params}")
    diag = json.loads((d / "diagnostics.json").read_text()) if (d / "diagnostics.json").is_file() else {}
    for i, t in enumerate(times):
        extra = {k: (diag[k][i] if k in diag and i < len(diag[k]) else None) for k in run._diag if k != "t"}
        run.append(t, thetas[i], theta_dots[i], points[i], **extra)
    if (d / "summary.json").is_file():
        s = json.loads((d / "summary.json").read_text())
        run.status = s.get("status", "done")
        run.fit_info = s.get("fit", {}) or {}
        run.wall_seconds = s.get("wall_seconds")
    else:
        run.status = "done"
    return run
