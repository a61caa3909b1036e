"""The MNE evolution: data-free start, then joint adaptive integration of (θ, X).

    y = (θ, X),   θ̇ = parameter_velocity(J(θ, X), f(θ, X)),   Ẋ = v(θ, X)

with f = A_t[U_θ](X) from the operator (OU energy equation by default) and v its
probability-flow velocity.  :class:`Evolution` is a pure-Python driver over compiled
pieces: ``prepare()`` builds the start, ``steps()`` yields one :class:`Snapshot` per
integrator step attempt, and ``run`` holds everything recorded so far as a
:class:`~mne_core.run.Run`, also after a failure.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from .config import EvolveConfig
from .initialize import broaden, centred_rms, fit_energy, tempered_points
from .integrate import Stepper, make_controller
from .network import FlatEnergy, init_energy_network
from .operators import OUEnergy, local_derivatives
from .run import Run, _run_fns, shared_network
from .solvers import jacobian, make_sketch, parameter_velocity
from .targets import Target, target_from_spec


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One integrator step attempt, as plain numpy/python values (safe to hand to a UI)."""

    t: float
    dt: float
    step: int
    num_accepted: int
    num_rejected: int
    accepted: bool
    residual: float
    points: np.ndarray
    gram_eigenvalues: np.ndarray
    reg: float
    sketch_rank: int
    layer_weights: dict
    energy_error: float | None
    status: str
    wall_time: float


class EvolutionError(RuntimeError):
    """The evolution could not start or continue; the message says why."""


def mne_rhs(net: FlatEnergy, operator, mode: str, t, theta, x, sketch, reg, spectrum: bool = False):
    """The MNE right-hand side at one state: (θ̇, Ẋ, SolveInfo).

    f = A_t[U_θ](X) from exact local derivatives, J = ∂U_θ(X)/∂θ, θ̇ = parameter_velocity(J, f),
    Ẋ = the operator's point velocity.
    """
    der = local_derivatives(functools.partial(net.energy, theta), x, operator.mask)
    f = operator.rhs(x, der, t)
    J = jacobian(net.energy, theta, x)
    theta_dot, info = parameter_velocity(mode, J, f, reg, sketch, spectrum=spectrum)
    return theta_dot, operator.point_velocity(x, der, t), info


def mne_vector_field(net: FlatEnergy, operator, mode: str) -> Callable:
    """vf(t, (θ, X), (sketch, reg_rel)) -> (θ̇, Ẋ), the ODE right-hand side for diffrax."""
    def vf(t, y, args):
        theta_dot, x_dot, _ = mne_rhs(net, operator, mode, t, *y, *args)
        return theta_dot, x_dot
    return vf


def mne_diagnostics(net: FlatEnergy, operator, mode: str, spectrum: bool) -> Callable:
    """diag(t, (θ, X), (sketch, reg)) -> (θ̇, SolveInfo), jitted; ``spectrum`` adds the Gram eigenvalues."""
    def diag(t, y, args):
        theta_dot, _, info = mne_rhs(net, operator, mode, t, *y, *args, spectrum=spectrum)
        return theta_dot, info
    return jax.jit(diag)


@functools.lru_cache(maxsize=16)
def _compiled(dim, width, depth, activation, mask, mode, integrator, dtype_name):
    """Network, stepper and diagnostics for one shape class, built once per process so that a
    new run with the same shapes reuses the compiled functions (the JIT cache keys on them)."""
    net = shared_network(dim, width, depth, activation, dtype_name)
    op = OUEnergy(mask)
    stepper = Stepper(mne_vector_field(net, op, mode), integrator)
    return (net, op, stepper, mne_diagnostics(net, op, mode, False),
            mne_diagnostics(net, op, mode, True), _run_fns(net)[0])


class Evolution:
    """Driver of one MNE run (see module doc).  Construction validates the configuration
    and builds the target (raising ConfigError / TargetSpecError / ExpressionError);
    ``prepare`` and ``steps`` do the work."""

    def __init__(self, config: EvolveConfig, target: Target | None = None):
        self.config = config
        self.target = target if target is not None else target_from_spec(config.target)
        d = self.target.dim
        if config.diffuse is not None:
            bad = [i for i in config.diffuse if not 0 <= i < d]
            if bad or not config.diffuse:
                raise EvolutionError(f"diffuse must list coordinates in [0, {d}), got {list(config.diffuse)}")
        if config.init == "exact" and self.target.sampler is None:
            raise EvolutionError(f"init='exact' needs exact samples, which target {self.target.name!r} does not have")
        est = 8 * config.n_points * (config.width * (config.width + d + 2) + 1) * max(1, config.depth) * 3
        if est > 6e9:
            raise EvolutionError(f"n_points × network size needs about {est / 1e9:.0f} GB for the Jacobian; "
                                 "reduce n_points or width")
        self.dtype = jnp.float64 if config.precision == "float64" else jnp.float32
        if self.dtype == jnp.float64 and not jax.config.jax_enable_x64:
            raise EvolutionError("precision float64 needs jax_enable_x64 (import mne_core first, or set JAX_ENABLE_X64=1)")
        mask = None if config.diffuse is None else tuple(1.0 if i in config.diffuse else 0.0 for i in range(d))
        (self.net, self.operator, self._stepper, self._diag, self._diag_spec,
         self._energies) = _compiled(d, config.width, config.depth, config.activation, mask,
                                     config.solver, config.integrator, jnp.dtype(self.dtype).name)
        self.status = "ready"
        self.start_points: np.ndarray | None = None
        self.run: Run | None = None
        self._state = None

    # ------------------------------------------------------------------ start
    def prepare(self, progress: Callable | None = None) -> Snapshot:
        """Data-free start: collocation points, initial fit, first diagnostics."""
        cfg, tgt = self.config, self.target
        t_start = time.perf_counter()
        key = jax.random.PRNGKey(cfg.seed)
        k_pts, k_val, k_sk, k_err = jax.random.split(key, 4)
        n_fit = max(cfg.fit_points, cfg.n_points)
        n_half = (n_fit + 1) // 2
        n_val = max(256, n_fit // 4)
        if cfg.init == "mala":
            try:
                x_pi, x_broad, pinfo = tempered_points(k_pts, tgt.energy, tgt.dim, n_half + n_val // 2,
                                                       mala_steps=cfg.mala_steps, dtype=self.dtype,
                                                       progress=progress)
            except RuntimeError as e:  # tempering could not reach β = 1, or non-finite points
                raise EvolutionError(f"data-free start failed: {e}") from e
        else:  # labelled diagnostic: exact target samples
            x_pi = jnp.asarray(tgt.sampler(k_pts, n_half + n_val // 2), self.dtype)
            x_broad = broaden(k_val, tgt.energy, x_pi, max(cfg.mala_steps, 1))
            pinfo = None
        self.start_points = np.asarray(x_pi[: cfg.n_points])  # for a UI to show before the fit ends
        if progress is not None:
            progress("fit (Adam)", 0.0)
        x_pi, x_pi_val = x_pi[:n_half], x_pi[n_half:]
        x_br, x_br_val = x_broad[:n_half], x_broad[n_half:]
        x_fit = jnp.concatenate([x_pi, x_br])
        x_val = jnp.concatenate([x_pi_val, x_br_val])
        t_points = time.perf_counter() - t_start
        u_fit, u_val = tgt.energies(x_fit), tgt.energies(x_val)
        if not (np.all(np.isfinite(np.asarray(u_fit))) and np.all(np.isfinite(np.asarray(u_val)))):
            raise EvolutionError("the target energy is not finite at some start points")
        _, theta0 = init_energy_network(tgt.dim, cfg.width, cfg.depth, cfg.activation, dtype=self.dtype,
                                        seed=cfg.seed)
        theta, finfo = fit_energy(self.net.energies, self.net.energy, theta0, x_fit, u_fit, x_val, u_val,
                                  adam_steps=cfg.fit_steps, gn_steps=cfg.gn_steps, progress=progress)
        # The fit is up to a constant; pin it so that U_θ(0) ≈ U_0 itself.  The OU energy
        # equation preserves it, so U_θ(t) ≈ −log ρ_t − log Z for all t (design note §3).
        theta = self.net.shift_constant(theta, jnp.mean(u_fit - self._energies(theta, x_fit)))
        n_p = cfg.n_points
        x0 = jnp.concatenate([x_pi[: (n_p + 1) // 2], x_br[: n_p // 2]])
        if x0.shape[0] < n_p:
            raise EvolutionError("not enough start points")
        self._sketch = make_sketch(k_sk, n_p, cfg.sketch_rank, cfg.sketch_kind, self.dtype)
        self._args = (self._sketch, jnp.asarray(cfg.reg, self.dtype))
        self._controller = make_controller(cfg.rtol, cfg.atol, self.dtype)
        y0 = (theta, x0)
        self._state = self._stepper.init(jnp.asarray(0.0, self.dtype), jnp.asarray(cfg.T, self.dtype),
                                         y0, self._args, self._controller)
        self._err_key = k_err
        self.run = Run(cfg, tgt, self.net)
        self.run.fit_info = {"train_rms": finfo.train_rms, "heldout_rms": finfo.heldout_rms,
                             "init": cfg.init,
                             "tempering_stages": None if pinfo is None else int(len(pinfo.betas) - 1),
                             "mean_acceptance": None if pinfo is None else float(np.mean(pinfo.acceptance)),
                             "heldout_rms_target": float(centred_rms(self._energies(theta, x_pi_val)
                                                                     - tgt.energies(x_pi_val))),
                             "points_seconds": t_points,
                             "seconds": time.perf_counter() - t_start}
        self._counts = [0, 0, 0]  # attempts, accepted, rejected
        self._t0_wall = time.perf_counter()
        snap = self._record(0.0, 0.0, True)
        self.status = "prepared"
        return snap

    # ------------------------------------------------------------------ stepping
    def steps(self, spectrum_every: int = 1) -> Iterator[Snapshot]:
        """Yield a :class:`Snapshot` per step attempt until T, failure, or the caller stops.

        On failure (non-finite state, step-size collapse, too many steps) ``status`` becomes
        ``"failed: <reason>"``, a last snapshot with that status is yielded, and ``run``
        keeps everything accepted before it.
        """
        if self._state is None:
            self.prepare()
        cfg = self.config
        T = cfg.T
        self.status = "running"
        n_fail = n_tiny = 0
        while True:
            st = self._state
            if float(st.tprev) >= T * (1 - 1e-12):
                self.status = "done"
                self.run.status = "done"
                return
            if self._counts[0] >= cfg.max_steps:
                yield self._fail(f"reached max_steps = {cfg.max_steps} at t = {float(st.tprev):.4g}")
                return
            res = self._stepper.step(st, self._args, self._controller, T)
            self._counts[0] += 1
            accepted = bool(res.accepted)
            self._state = res.state
            if accepted:
                n_fail = 0
                self._counts[1] += 1
                spec = (self._counts[1] % max(1, spectrum_every)) == 0
                snap = self._record(float(res.state.tprev), float(res.dt_attempt), spec)
                if snap.status.startswith("failed"):
                    yield snap
                    return
                yield snap
            else:
                self._counts[2] += 1
                n_fail += 1
                dt_new = float(res.state.tnext - res.state.tprev)
                if not bool(res.finite) and n_fail >= 12 or dt_new < 1e-9 * max(T, 1.0) or n_fail >= 60:
                    why = "the state became non-finite (NaN/inf)" if not bool(res.finite) else "the step size collapsed"
                    yield self._fail(f"{why} at t = {float(res.t_attempt):.4g} (dt = {dt_new:.2e})")
                    return
                yield self._snapshot_rejected(float(res.t_attempt), float(res.dt_attempt))
            # A run whose steps keep shrinking is heading for a singularity (the network energy
            # develops a cliff that the collocation points cannot resolve): stop it with a reason.
            tiny = float(res.state.tnext - res.state.tprev) < 1e-6 * max(T, 1.0)
            n_tiny = n_tiny + 1 if tiny else 0
            if n_tiny >= 25:
                yield self._fail(f"the step size collapsed below {1e-6 * max(T, 1.0):.1e} at t = "
                                 f"{float(res.state.tprev):.4g}: the evolution is becoming singular "
                                 "(try a larger reg, more collocation points or width, or a smaller T)")
                return

    def run_to_end(self, callback: Callable | None = None, spectrum_every: int = 1) -> Run:
        """Prepare if needed and integrate to T; ``callback(snapshot)`` sees every attempt."""
        if self._state is None:
            snap = self.prepare()
            if callback:
                callback(snap)
        for snap in self.steps(spectrum_every):
            if callback:
                callback(snap)
        return self.run

    # ------------------------------------------------------------------ internals
    def _fail(self, reason: str) -> Snapshot:
        self.status = f"failed: {reason}"
        self.run.status = self.status
        last = self._last
        return dataclasses.replace(last, status=self.status, accepted=False,
                                   step=self._counts[0], num_rejected=self._counts[2],
                                   wall_time=time.perf_counter() - self._t0_wall)

    def _snapshot_rejected(self, t, dt) -> Snapshot:
        return dataclasses.replace(self._last, dt=dt, accepted=False, step=self._counts[0],
                                   num_rejected=self._counts[2], status=self.status,
                                   wall_time=time.perf_counter() - self._t0_wall)

    def _record(self, t: float, dt: float, spectrum: bool) -> Snapshot:
        st = self._state
        y = st.y
        diag = self._diag_spec if spectrum else self._diag
        theta_dot, info = diag(st.tprev, y, self._args)
        theta, x = y
        err = self._energy_error(t, theta)
        eig = np.asarray(info.gram_eigenvalues) if spectrum else getattr(self, "_last_eig", np.zeros(0))
        self._last_eig = eig
        residual = float(info.residual)
        self.run.append(t, np.asarray(theta), np.asarray(theta_dot), np.asarray(x),
                        dt=dt, residual=residual, num_rejected=self._counts[2], energy_error=err,
                        reg=float(info.reg))
        status = self.status if self.status != "prepared" else "prepared"
        snap = Snapshot(t=t, dt=dt, step=self._counts[0], num_accepted=self._counts[1],
                        num_rejected=self._counts[2], accepted=True, residual=residual,
                        points=np.asarray(x), gram_eigenvalues=eig, reg=float(info.reg),
                        sketch_rank=int(self._sketch.rank), layer_weights=self.net.layer_weights(theta),
                        energy_error=err, status=status, wall_time=time.perf_counter() - self._t0_wall)
        self._last = snap
        if not (np.isfinite(residual) and np.all(np.isfinite(np.asarray(theta_dot)))):
            return self._fail(f"the parameter velocity is not finite at t = {t:.4g}")
        return snap

    def _energy_error(self, t: float, theta) -> float | None:
        """ρ_t-weighted RMS of U_θ − U_t up to a constant, on 2000 exact samples of ρ_t
        (common random numbers over t), when the target's OU evolution is known exactly."""
        fn = _error_fn(self.target, self.operator.mask, self.net, jnp.dtype(self.dtype).name)
        if fn is None:
            return None
        return float(fn(jnp.asarray(t, self.dtype), theta, self._err_key))


@functools.lru_cache(maxsize=32)
def _error_fn(target: Target, mask, net: FlatEnergy, dtype_name: str):
    if target.evolved_sampler is None or target.evolved_log_density is None:
        return None
    m = None if mask is None else jnp.asarray(mask)

    @jax.jit
    def err(t, theta, key):
        xs = jnp.asarray(target.evolved_sampler(key, t, 2000, m), dtype_name)
        exact = -target.evolved_log_densities(t, xs, m)
        r = net.energies(theta, xs) - exact
        return jnp.sqrt(jnp.mean((r - jnp.mean(r)) ** 2))
    return err


__all__ = ["Evolution", "EvolutionError", "Snapshot", "mne_rhs", "mne_vector_field", "mne_diagnostics"]
