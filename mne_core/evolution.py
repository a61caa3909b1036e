"""The MNE evolution: data-free start, then joint adaptive integration of (θ, X).

    y = (θ, X),   θ̇ = parameter_velocity(J(θ, X), f(θ, X)),   Ẋ = v(θ, X)

with f = A_t[U_θ](X) from the operator (OU energy equation by default) and v its
probability-flow velocity.  Above d = 4 (``refresh``) the points are also refreshed every
REFRESH_INTERVAL in t by a few MALA steps on the model's own density e^{−U_θ(t)}
(:func:`refresh_fn`), and the integrator restarts from (θ, X′): the flow alone carries them
wherever the model errs, and they drift away from ρ_t.  :class:`Evolution` is a pure-Python driver over compiled
pieces: ``prepare()`` builds the start (or reuses a :class:`Start` from ``data_free_start()``
of an earlier run with the same :func:`~mne_core.config.start_key`), ``steps()`` yields one :class:`Snapshot` per
integrator step attempt, and ``run`` holds everything recorded so far as a
:class:`~mne_core.run.Run`, also after a failure.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from .config import (GAP_HEADROOM, SCORE_FIT_WEIGHT, ConfigError, EvolveConfig, check_resources, diffusion_mask,
                     score_fit_active, start_key)
from .diagnostics import centred_rms, energy_error_fn, target_energy_error
from .energy_checks import check_energy
from .initialize import BROAD_POWER, broaden, fit_energy, mala_sweep, tempered_points
from .integrate import Clock, StepState, Stepper, make_controller
from .network import FlatEnergy, init_energy_network
from .operators import OUEnergy, local_derivatives
from .run import Run, network_shape, run_functions, shared_network
from .runtime import ensure_x64
from .ntk import velocity
from .solvers import Sketch, make_sketch
from .status import Reason, Status, Verdict, verdict
from .structure import from_radial, log_sphere_area, radial_energy, resolve_config
from .targets import Target, standardized_target, target_from_spec

#: A finished run whose ρ_t-weighted energy error ends above this many times its starting
#: value (and above ERROR_FLOOR) ends ``warning``: the evolution lost accuracy.
ERROR_GROWTH_FACTOR = 10.0
#: Where the exact evolution is known, a ρ_t-weighted energy error above this (and above 100×
#: its start) means the model has blown up — the log density is wrong by O(e) where the mass
#: is — and the run stops ``failed`` (``ENERGY_DIVERGED``) instead of grinding on to max_steps.
DIVERGED_ERROR = 2.0
ERROR_FLOOR = 0.05
#: A finished run whose ρ_t-weighted energy error (where the exact evolution is known) exceeds
#: this at any time, or whose initial fit is off by more than this on held-out start points
#: (every target), ends ``warning`` whatever its growth: a log-density error of RMS σ costs
#: one-shot importance weights about a factor e^{−σ²} of their ESS (σ = 1: 63 % lost), so the
#: model is not the density it claims to be.  (Funnel-10 starts at 9.8·10³, measured.)
ENERGY_ERROR_LIMIT = 1.0
#: The initial fit also sees WIDE_FIT_FRACTION·N/2 "wide" points — the data-free tempering's
#: particles at β ≈ WIDE_FIT_POWER (π^WIDE_FIT_POWER by MALA for init='exact'; fit only, not
#: collocation points) through a one-sided penalty (``initialize.fit_energy``: U_θ may not lie
#: more than WIDE_MARGIN below U_0 there): without them the network's value between well-separated
#: modes is an unconstrained extrapolation, often far *below* U_0 — a spurious well that the
#: evolution deepens.
#: Only for d ≤ WIDE_FIT_MAX_DIM: in high d, π^0.1 lives in a far shell (U − U_min ≈ 5d) whose
#: energies would dominate the fit's loss; the d = 16 / 32 results were measured without it.
WIDE_FIT_FRACTION = 0.5
WIDE_FIT_POWER = 0.1
WIDE_FIT_MAX_DIM = 4
#: standardize='auto': the OU process relaxes to N(0, I), and the network U_θ = ½|x|² + NN_θ
#: (NN growing at most linearly) cannot cancel the confinement over a target that spreads far
#: beyond unit scale — a two-mode mixture with modes at ±30 and std 10 (d = 8) fits to a held-out
#: error of 16.9, starts at an energy error of 7.8 that grows past 100 by t = 0.36 while the step
#: size crawls (measured; benchmarks/blind_mixtures.py --only 6 --extra=--standardize=off compares).
#: So when the initial fit is off by more than ENERGY_ERROR_LIMIT on held-out points, the fit is
#: repeated in y = (x − mean) / std of the start points (``targets.standardized_target``; the same
#: energy values) and the better of the two is kept (that mixture: 0.0027, run ``ok``).  Not when
#: the start points are already near standard (every |mean| ≤ STANDARD_SHIFT and std within a
#: factor STANDARD_SCALE of 1): the refit would change nothing.  A run that fits well never
#: changes coordinates.
STANDARD_SHIFT = 0.5
STANDARD_SCALE = 1.5
#: A fit under the limit is not enough where the start points are FAR from standard (some
#: |mean| > FAR_SHIFT, or a std beyond a factor FAR_SCALE): a mixture shifted by 50 along every
#: axis (d = 6) fits to 0.96 and its run and SMC then fail (blind_mixtures.py case 8, measured);
#: such a target is evolved in y whenever the fit there is within the limit.  The factor 5 leaves
#: the tested targets where they were (separated modes at (±5, 0): x0 mean 3, std 4.0).
FAR_SHIFT = 5.0
FAR_SCALE = 5.0
#: The same for the equation residual: its RMS |Jθ̇ − f| / √N against the start's (at least 10⁻³ of
#: the start's RMS f), when the relative residual |Jθ̇ − f| / |f| also exceeds RESIDUAL_LIMIT.
RESIDUAL_GROWTH_FACTOR = 100.0
RESIDUAL_LIMIT = 0.1
#: At T the sampler starts from N(0, I); if the model energy there differs from |x|²/2 by more
#: than this centred RMS on the collocation points, T was too small (the one-shot weights lose
#: about a factor exp(−gap²) of their ESS).
REFERENCE_GAP = 0.5


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One integrator step attempt, as plain numpy/python values (safe to hand to a UI); ``points``
    in the target's original coordinates, also for a run that evolves in standardized ones."""

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
    status: Status
    wall_time: float
    message: str = ""


def standard_moments(x) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate mean and standard deviation (floored at 1e-6) of points ``x`` (M, d): the
    shift and scale of standardized coordinates y = (x − mean) / std."""
    x = np.asarray(x, np.float64)
    return x.mean(0), np.maximum(x.std(0), 1e-6)


def beyond(shift, scale, max_shift: float, max_factor: float) -> bool:
    """Whether some |shift_i| exceeds ``max_shift`` or some scale_i lies beyond a factor
    ``max_factor`` of 1."""
    return bool(np.max(np.abs(shift)) > max_shift or np.max(np.abs(np.log(scale))) > np.log(max_factor))


class EvolutionError(RuntimeError):
    """The evolution could not start (bad start, target not finite); the message says why.
    A failure *during* the integration is not an exception: it is ``Status.FAILED`` with a
    :class:`~mne_core.status.Reason` on the last Snapshot and on the Run."""


@dataclasses.dataclass(frozen=True, eq=False)
class Start:
    """The data-free start of a run: what :meth:`Evolution.data_free_start` computes before the
    sketch, reusable by any run whose config has the same :func:`~mne_core.config.start_key`
    (``key``), e.g. one that changes only rtol, reg, T, the solver or the sketch.

    ``theta`` is the fitted θ₀ with its constant pinned, ``x0`` the N collocation points at t = 0,
    ``start_points`` the first N points of π shown by a UI while the fit runs (original coordinates),
    ``target`` the standardized target when the start changed coordinates, ``fit_info`` the
    fit's report (as in ``Run.fit_info``), ``sketch_key`` / ``err_key`` the random keys of the
    sketch and of the energy-error samples (both from the seed)."""

    theta: Any
    x0: Any
    start_points: np.ndarray
    fit_info: dict
    sketch_key: Any
    err_key: Any
    key: str
    target: Target | None = None   # the standardized target the start was made in (None: the original)


@dataclasses.dataclass
class EvolutionState:
    """Everything the stepping loop needs, created by :meth:`Evolution.prepare`."""

    step_state: StepState
    sketch: Sketch
    args: tuple
    controller: Any
    err_key: Any
    attempts: int = 0
    accepted: int = 0
    rejected: int = 0
    t0_wall: float = 0.0
    last: Snapshot | None = None
    last_eigenvalues: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    refreshes: int = 0
    next_refresh: float = 0.0
    refresh_log_step: Any = None
    refresh_acceptance: list = dataclasses.field(default_factory=list)


#: ``refresh = on``: every REFRESH_INTERVAL in t the collocation points take REFRESH_STEPS MALA steps
#: on the model's own density (:func:`refresh_fn`).  Measured (blind mixture seed 4, case 5: d = 16,
#: 5 components; default settings otherwise): without refresh the points, moved only by the model's
#: probability flow, drifted outward (mean radius 5.9 at T, exact ρ_T 3.95 for the π half) and the
#: energy error on exact samples grew 0.40 → 3.8 (run ``warning``; IS ESS 0.05 %, IS log Ẑ −16);
#: with it the error fell 0.40 → 0.008, the run ended ``ok`` in the same 48 s, IS ESS 30 %, IS log Ẑ
#: +0.002, SMC +0.003 ± 0.025 (was +0.038 ± 0.022).
REFRESH_INTERVAL = 0.25
REFRESH_STEPS = 10


def refresh_active(refresh: str, dim: int, partial: bool = False) -> bool:
    """Whether a run refreshes its collocation points: ``on``, ``off``, or ``auto`` = above d = 4 and
    with every coordinate diffusing (d ≤ 4 is accurate without, and its results are kept as they
    were; a partial-diffusion run is not measured with it)."""
    return refresh == "on" or (refresh == "auto" and int(dim) > 4 and not partial)


@functools.lru_cache(maxsize=16)
def refresh_fn(net: FlatEnergy, n_steps: int) -> Callable:
    """refresh(key, θ, X, log_steps) -> (X′, log_steps′, acceptance): ``n_steps`` MALA steps on
    e^{−U_θ} for the first ⌈N/2⌉ points and on e^{−β U_θ} (β = BROAD_POWER) for the rest, each
    half with its own adaptive step (:func:`mne_core.initialize.mala_sweep`)."""
    def vg(theta, power):
        def f(xs):
            u, g = jax.vmap(jax.value_and_grad(lambda z: power * net.energy(theta, z)))(xs)
            bad = ~(jnp.isfinite(u) & jnp.all(jnp.isfinite(g), -1))
            return jnp.where(bad, jnp.inf, u), jnp.where(bad[:, None], 0.0, g)
        return f

    def refresh(key, theta, x, log_steps):
        n1 = (x.shape[0] + 1) // 2
        k1, k2 = jax.random.split(key)
        x1, l1, a1 = mala_sweep(k1, x[:n1], vg(theta, 1.0), log_steps[0], n_steps)
        x2, l2, a2 = mala_sweep(k2, x[n1:], vg(theta, BROAD_POWER), log_steps[1], n_steps)
        return jnp.concatenate([x1, x2]), jnp.stack([l1, l2]), jnp.stack([a1, a2])
    return jax.jit(refresh)


def residual_growth(residual, rhs_rms) -> str | None:
    """Why the equation residual counts as grown, or None.

    Judged on the absolute residual a(t) = r(t)·RMS f(t) (r = |Jθ̇ − f| / |f|): the rate at which the
    model departs from the equation, in energy per unit time.  The relative r alone also grows when
    the run is right: near equilibrium f → 0 while the regularized solve's floor stays (blind mixture
    d = 32 with refreshed points: r 4·10⁻⁴ → 0.10 while the energy error fell 0.44 → 0.012).  Warns when
    max a > RESIDUAL_GROWTH_FACTOR · max(a(0), 10⁻³ RMS f(0)) and max r > RESIDUAL_LIMIT; a run recorded
    without RMS f (saved before it existed) is judged on r alone."""
    r = np.asarray(residual, float)
    f = np.asarray(rhs_rms, float) if rhs_rms is not None and len(rhs_rms) == len(r) else np.full(r.shape, np.nan)
    ok = np.isfinite(r)
    if ok.sum() < 2 or r[ok].max() <= RESIDUAL_LIMIT:
        return None
    if np.all(np.isfinite(f[ok])):
        a = r[ok] * f[ok]
        if a.max() > RESIDUAL_GROWTH_FACTOR * max(a[0], 1e-3 * f[ok][0]):
            return (f"RMS |Jθ̇ − f| {a[0]:.3g} at t = 0, max {a.max():.3g}; relative {r[ok][0]:.3g} at t = 0, "
                    f"max {r[ok].max():.3g}")
        return None
    if r[ok].max() > RESIDUAL_GROWTH_FACTOR * max(r[ok][0], 1e-3):
        return f"{r[ok][0]:.3g} at t = 0, max {r[ok].max():.3g}"
    return None


def resolve_clock(clock: str, radial) -> str:
    """The integrator's clock for ``clock = auto``: log for the rotation-aware network (its targets have
    fine scales that relax fast at t = 0), linear otherwise."""
    if clock != "auto":
        return clock
    return "log" if radial is not None else "linear"


def mne_rhs(net: FlatEnergy, operator, mode: str, t, theta, x, sketch, reg, spectrum: bool = False,
            gram: str = "default"):
    """The MNE right-hand side at one state: (θ̇, Ẋ, SolveInfo).

    f = A_t[U_θ](X) from exact local derivatives, θ̇ = the solver ``mode``'s velocity for J θ̇ ≈ f
    with J = ∂U_θ(X)/∂θ (built, or avoided by the structured NTK: ``gram``, see
    :func:`mne_core.ntk.choose_gram`), Ẋ = the operator's point velocity.
    """
    der = local_derivatives(functools.partial(net.energy, theta), x, operator.mask, colours=net.colours)
    f = operator.rhs(x, der, t)
    theta_dot, info = velocity(mode, net, theta, x, f, reg, sketch, spectrum=spectrum, method=gram)
    info = info._replace(rhs_rms=jnp.sqrt(jnp.mean(f * f)))
    return theta_dot, operator.point_velocity(x, der, t), info


def mne_vector_field(net: FlatEnergy, operator, mode: str, gram: str = "default") -> Callable:
    """vf(t, (θ, X), (sketch, reg_rel)) -> (θ̇, Ẋ), the ODE right-hand side for diffrax."""
    def vf(t, y, args):
        theta_dot, x_dot, _ = mne_rhs(net, operator, mode, t, *y, *args, gram=gram)
        return theta_dot, x_dot
    return vf


def mne_diagnostics(net: FlatEnergy, operator, mode: str, spectrum: bool, gram: str = "default") -> Callable:
    """diag(t, (θ, X), (sketch, reg)) -> (θ̇, SolveInfo), jitted; ``spectrum`` adds the Gram eigenvalues."""
    def diag(t, y, args):
        theta_dot, _, info = mne_rhs(net, operator, mode, t, *y, *args, spectrum=spectrum, gram=gram)
        return theta_dot, info
    return jax.jit(diag)


@functools.lru_cache(maxsize=16)
def compiled_pieces(dim, width, depth, activation, mask, mode, integrator, dtype_name, blocks=None, radial=None,
                    clock="linear", mixture=False):
    """Network, stepper and diagnostics for one shape class, built once per process so that a
    new run with the same shapes reuses the compiled functions (the JIT cache keys on them).
    The stepper integrates in the ``clock``'s time variable (:class:`~mne_core.integrate.Clock`)."""
    net = shared_network(dim, width, depth, activation, dtype_name, blocks, radial, mixture)
    op = OUEnergy(mask)
    stepper = Stepper(Clock(clock).field(mne_vector_field(net, op, mode)), integrator)
    return (net, op, stepper, mne_diagnostics(net, op, mode, False),
            mne_diagnostics(net, op, mode, True), run_functions(net)[0])


class Evolution:
    """Driver of one MNE run (see module doc).  Construction validates the configuration
    (auto sizes resolved for the target's dimension, resources checked) and builds the
    target, raising ConfigError / TargetSpecError / ExpressionError / EvolutionError;
    ``prepare`` and ``steps`` do the work.  ``status`` is a :class:`Status`; after a failure
    ``reason`` and ``message`` say why."""

    def __init__(self, config: EvolveConfig, target: Target | None = None):
        self.target = target if target is not None else target_from_spec(config.target)
        self.base_target = self.target   # the caller's coordinates (self.target may become standardized)
        d = self.target.dim
        try:
            config = resolve_config(config, self.target)
        except ValueError as e:
            raise EvolutionError(str(e)) from None
        self.config = config
        try:
            mask = diffusion_mask(config.diffuse, d)
        except ConfigError as e:
            raise EvolutionError(str(e)) from None
        if config.init == "exact" and self.target.sampler is None:
            raise EvolutionError(f"init='exact' needs exact samples, which target {self.target.name!r} does not have")
        try:
            self._network_shape = width, blocks, radial, mixture = network_shape(config, self.target)
        except ValueError as e:
            raise EvolutionError(str(e)) from None
        check_resources(config, d, blocks, radial, mixture)
        self.clock = Clock(resolve_clock(config.clock, radial))
        if config.precision == "float64":
            ensure_x64()
        self.dtype = jnp.float64 if config.precision == "float64" else jnp.float32
        (self.net, self.operator, self._stepper, self._diag, self._diag_spec,
         self._energies) = compiled_pieces(d, width, config.depth, config.activation, mask,
                                     config.solver, config.integrator, jnp.dtype(self.dtype).name, blocks, radial,
                                     self.clock.kind, mixture)
        self.status = Status.READY
        self.reason: Reason | None = None
        self.message = ""
        self.start_points: np.ndarray | None = None
        self.last_start: Start | None = None  # the start prepare() used
        self.run: Run | None = None
        self.state: EvolutionState | None = None
        self._stop_requested = False
        #: t between refreshes of the collocation points (0 = never; config.refresh) and MALA steps of each
        self.refresh_every = REFRESH_INTERVAL if refresh_active(config.refresh, d, config.diffuse is not None) else 0.0
        self.refresh_steps = REFRESH_STEPS

    # ------------------------------------------------------------------ start
    def data_free_start(self, progress: Callable | None = None) -> Start:
        """The data-free start: collocation points from the target alone (tempered SMC + MALA, or
        exact samples for ``init='exact'``) and the initial fit U_θ(0) ≈ U₀ with its constant
        pinned.  Everything :meth:`prepare` does before the sketch; ``progress(stage, fraction)``
        sees the stages.  Raises EvolutionError when the start cannot be made."""
        cfg, tgt = self.config, self.target
        t_start = time.perf_counter()
        check_energy(tgt, error=EvolutionError)  # non-normalizable / exploding energies, < 0.5 s, cached
        key = jax.random.PRNGKey(cfg.seed)
        k_pts, k_val, k_sk, k_err = jax.random.split(key, 4)
        n_fit = max(cfg.fit_points, cfg.n_points)
        n_half = (n_fit + 1) // 2
        n_val = max(256, n_fit // 4)
        radial = self._network_shape[2]
        if cfg.init == "mala" and radial is not None:
            # a rotation-invariant U_0: temper in the reduced coordinates (x_R, log|x_G|), where the
            # funnel's neck is a straight ridge, and draw the directions of x_G uniformly
            try:
                z_pi, z_broad, pinfo = tempered_points(k_pts, radial_energy(tgt.energy, tgt.dim, *radial),
                                                       len(radial[0]) + 1, n_half + n_val // 2,
                                                       mala_steps=cfg.mala_steps, dtype=self.dtype,
                                                       progress=progress, wide_beta=WIDE_FIT_POWER)
            except RuntimeError as e:
                raise EvolutionError(f"data-free start failed: {e}") from e
            kd = jax.random.split(jax.random.fold_in(k_pts, 7), 3)
            x_pi = from_radial(kd[0], z_pi, tgt.dim, *radial)
            x_broad = from_radial(kd[1], z_broad, tgt.dim, *radial)
            pinfo = pinfo._replace(log_z_estimate=pinfo.log_z_estimate + log_sphere_area(len(radial[1])))
            if pinfo.x_wide is not None:
                pinfo = pinfo._replace(x_wide=from_radial(kd[2], pinfo.x_wide, tgt.dim, *radial))
        elif cfg.init == "mala":
            try:
                x_pi, x_broad, pinfo = tempered_points(k_pts, tgt.energy, tgt.dim, n_half + n_val // 2,
                                                       mala_steps=cfg.mala_steps, dtype=self.dtype,
                                                       progress=progress, wide_beta=WIDE_FIT_POWER)
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
        x_wide = u_wide = None
        if WIDE_FIT_FRACTION > 0 and tgt.dim <= WIDE_FIT_MAX_DIM:
            n_wide = int(WIDE_FIT_FRACTION * n_half)
            if pinfo is not None and pinfo.x_wide is not None:   # a tempering stage at β ≈ WIDE_FIT_POWER
                x_wide = pinfo.x_wide[:n_wide]
            else:
                x_wide = broaden(jax.random.fold_in(k_val, 1), tgt.energy, x_pi[:n_wide], max(cfg.mala_steps, 1),
                                 power=WIDE_FIT_POWER)
        t_points = time.perf_counter() - t_start
        u_fit, u_val = tgt.energies(x_fit), tgt.energies(x_val)
        if x_wide is not None:
            u_wide = tgt.energies(x_wide)
            keep = np.isfinite(np.asarray(u_wide))      # a wide point may leave a bounded support
            x_wide, u_wide = x_wide[keep], u_wide[keep]
        if not (np.all(np.isfinite(np.asarray(u_fit))) and np.all(np.isfinite(np.asarray(u_val)))):
            raise EvolutionError("the target energy is not finite at some start points")
        width, blocks, radial, mixture = self._network_shape
        _, theta0 = init_energy_network(tgt.dim, width, cfg.depth, cfg.activation, dtype=self.dtype,
                                        seed=cfg.seed, blocks=blocks, radial=radial, mixture=mixture)
        scores = score_fit_active(cfg.fit_scores, tgt.dim, blocks is None and radial is None)
        score_weight = SCORE_FIT_WEIGHT if scores else 0.0
        scores_of = jax.jit(jax.vmap(jax.grad(tgt.energy))) if scores else None
        g_fit = scores_of(x_fit) if scores else None
        if scores and not np.all(np.isfinite(np.asarray(g_fit))):
            score_weight, g_fit = 0.0, None           # a non-finite ∇U_0: fit the values only
        theta, finfo = fit_energy(self.net.energies, self.net.energy, theta0, x_fit, u_fit, x_val, u_val,
                                  adam_steps=cfg.fit_steps, gn_steps=cfg.gn_steps, progress=progress,
                                  x_wide=x_wide, u_wide=u_wide, wide_headroom=cfg.wide_headroom,
                                  g_fit=g_fit, score_weight=score_weight)
        std_target, plain_rms = None, finfo.heldout_rms
        shift, scale = standard_moments(x_pi)
        far = beyond(shift, scale, FAR_SHIFT, FAR_SCALE)        # implies beyond the STANDARD_* bounds
        # not for the rotation-aware network: a per-coordinate scale would break the rotation invariance
        if (cfg.standardize == "auto" and tgt.standardization is None and radial is None
                and beyond(shift, scale, STANDARD_SHIFT, STANDARD_SCALE)
                and (far or not finfo.heldout_rms <= ENERGY_ERROR_LIMIT)):
            to_y = lambda x: None if x is None else (x - shift) / scale     # noqa: E731
            if progress is not None:
                progress("fit (standardized)", 0.0)
            # in y = (x − shift)/scale: ∇_y U_0 = scale ⊙ ∇_x U_0
            theta_y, finfo_y = fit_energy(self.net.energies, self.net.energy, theta0, to_y(x_fit), u_fit,
                                          to_y(x_val), u_val, adam_steps=cfg.fit_steps, gn_steps=cfg.gn_steps,
                                          progress=progress, x_wide=to_y(x_wide), u_wide=u_wide,
                                          wide_headroom=cfg.wide_headroom,
                                          g_fit=None if g_fit is None else g_fit * scale, score_weight=score_weight)
            # the same energies, so the errors compare; far from standard, y is kept unless worse than both
            if finfo_y.heldout_rms < finfo.heldout_rms or (far and finfo_y.heldout_rms <= ENERGY_ERROR_LIMIT):
                std_target = standardized_target(tgt, shift, scale)
                tgt, theta, finfo = std_target, theta_y, finfo_y
                x_fit, x_pi, x_br, x_pi_val = to_y(x_fit), to_y(x_pi), to_y(x_br), to_y(x_pi_val)
        # The fit is up to a constant; pin it so that U_θ(0) ≈ U_0 itself.  The OU energy
        # equation preserves it, so U_θ(t) ≈ −log ρ_t − log Z for all t (design note §3).
        theta = self.net.shift_constant(theta, jnp.mean(u_fit - self._energies(theta, x_fit)))
        n_p = cfg.n_points
        x0 = jnp.concatenate([x_pi[: (n_p + 1) // 2], x_br[: n_p // 2]])
        if x0.shape[0] < n_p:
            raise EvolutionError("not enough start points")
        fit_info = {"train_rms": finfo.train_rms, "heldout_rms": finfo.heldout_rms,
                    "wide_repaired": bool(finfo.wide_repaired),
                    "score_weight": float(score_weight),
                    "init": cfg.init,
                    "tempering_stages": None if pinfo is None else int(len(pinfo.betas) - 1),
                    "mean_acceptance": None if pinfo is None else float(np.mean(pinfo.acceptance)),
                    # log Z of the run's target: in standardized coordinates log Z − Σ log scale
                    "tempering_log_z": None if pinfo is None else float(pinfo.log_z_estimate) - (
                        0.0 if std_target is None else std_target.standardization.log_det()),
                    "heldout_rms_target": float(centred_rms(self._energies(theta, x_pi_val)
                                                            - tgt.energies(x_pi_val))),
                    "standardized": std_target is not None,
                    "heldout_rms_original_coordinates": plain_rms,
                    "points_seconds": t_points,
                    "seconds": time.perf_counter() - t_start}
        return Start(theta=theta, x0=x0, start_points=self.start_points, fit_info=fit_info, sketch_key=k_sk,
                     err_key=k_err, key=start_key(cfg), target=std_target)

    def prepare(self, progress: Callable | None = None, *, start: Start | None = None) -> Snapshot:
        """Data-free start (:meth:`data_free_start`, or the given ``start`` of an earlier run with the
        same :func:`~mne_core.config.start_key`), then the sketch, the step-size controller, the
        stepper and the Run with its t = 0 snapshot.  Raises EvolutionError if ``start`` was made
        for other start settings."""
        cfg, tgt = self.config, self.target
        t_start = time.perf_counter()
        reused = start is not None
        if start is None:
            start = self.data_free_start(progress)
        elif start.key != start_key(cfg):
            raise EvolutionError("this start was made for other start settings (target, seed, network, N or "
                                 "fit); it cannot be reused for this run")
        else:
            self.start_points = start.start_points
        self.last_start = start
        if start.target is not None:     # the start changed coordinates: the run evolves there
            self.target = start.target
            self.config = cfg = cfg.replace(target=start.target.spec)
        tgt = self.target
        n_p = cfg.n_points
        theta = jnp.asarray(start.theta, self.dtype)
        x0 = jnp.asarray(start.x0, self.dtype)
        sketch = make_sketch(start.sketch_key, n_p, cfg.sketch_rank, cfg.sketch_kind, self.dtype)
        args = (sketch, jnp.asarray(cfg.reg, self.dtype))
        controller = make_controller(cfg.rtol, cfg.atol, self.dtype)
        clk = self.clock
        step_state = self._stepper.init(clk.tau(jnp.asarray(0.0, self.dtype)), clk.tau(jnp.asarray(cfg.T, self.dtype)),
                                        (theta, x0), args, controller,
                                        # diffrax's first-step heuristic probes e^{τ₀ + h} far ahead
                                        # (overflow → dt₀ = 0): start the log clock at dτ = 0.05
                                        None if clk.kind == "linear" else jnp.asarray(0.05, self.dtype))
        self.state = EvolutionState(step_state, sketch, args, controller, start.err_key,
                                    t0_wall=time.perf_counter())
        self.state.refresh_log_step = jnp.log(jnp.asarray([0.05, 0.05 / BROAD_POWER], self.dtype))
        self.state.next_refresh = self.refresh_every
        self.run = Run(cfg, tgt, self.net)
        self.run.fit_info = dict(start.fit_info)
        self.run.fit_info["seconds"] = time.perf_counter() - t_start
        if reused:
            self.run.fit_info["start_reused"] = True
        self.status = Status.PREPARED
        snap = self._record(0.0, 0.0, True)
        return snap

    def request_stop(self) -> None:
        """Ask a running ``steps()`` loop to end after the current step with ``interrupted``
        (thread-safe: a flag read between steps)."""
        self._stop_requested = True

    # ------------------------------------------------------------------ stepping
    def steps(self, spectrum_every: int = 1) -> Iterator[Snapshot]:
        """Yield a :class:`Snapshot` per step attempt until T, failure, or the caller stops.

        On failure (non-finite state, step-size collapse, too many steps) ``status`` becomes
        ``Status.FAILED`` with a ``reason``, a last snapshot with that status is yielded, and
        ``run`` keeps everything accepted before it.  Reaching T ends ``ok`` or ``warning``
        (:meth:`finish`).  A stop request (or KeyboardInterrupt raised inside the loop) ends
        ``interrupted``, keeping every accepted step.
        """
        if self.state is None:
            self.prepare()
        st = self.state
        cfg = self.config
        T = cfg.T
        clk = self.clock
        T_tau = float(clk.tau(T))
        t_of = lambda tau: float(clk.time(tau))  # noqa: E731
        # step-collapse thresholds are on the clock's steps: dt relative to max(T, 1), or dτ
        span = max(T, 1.0) if clk.kind == "linear" else 1.0
        self.status = Status.RUNNING
        n_fail = n_tiny = 0
        try:
            while True:
                if self._stop_requested:
                    yield self._end(Status.INTERRUPTED, Reason.INTERRUPTED, f"at t = {self.run.T:.4g}")
                    return
                ss = st.step_state
                if float(ss.tprev) >= T_tau - 1e-12 * abs(T_tau) or t_of(ss.tprev) >= T * (1 - 1e-12):
                    self.finish()
                    return
                if st.attempts >= cfg.max_steps:
                    yield self._end(Status.FAILED, Reason.MAX_STEPS,
                                    f"max_steps = {cfg.max_steps}, t = {t_of(ss.tprev):.4g}")
                    return
                res = self._stepper.step(ss, st.args, st.controller, T_tau)
                st.attempts += 1
                accepted = bool(res.accepted)
                st.step_state = res.state
                if accepted:
                    n_fail = 0
                    st.accepted += 1
                    spec = (st.accepted % max(1, spectrum_every)) == 0
                    t_new = t_of(res.state.tprev)
                    if self.refresh_every > 0 and t_new >= st.next_refresh and t_new < T * (1 - 1e-9):
                        self._refresh_points(t_new)
                    snap = self._record(t_new, t_new - t_of(res.t_attempt), spec)
                    yield snap
                    if snap.status == Status.FAILED:
                        return
                    e0 = self.run.diagnostics["energy_error"][0] if st.accepted > 1 else None
                    if (snap.energy_error is not None and e0 is not None and np.isfinite(e0)
                            and snap.energy_error > max(DIVERGED_ERROR, 100 * e0)):
                        yield self._end(Status.FAILED, Reason.ENERGY_DIVERGED,
                                        f"energy error {snap.energy_error:.3g} at t = {snap.t:.4g} "
                                        f"(started at {e0:.3g})")
                        return
                else:
                    st.rejected += 1
                    n_fail += 1
                    dtau_new = float(res.state.tnext - res.state.tprev)
                    if not bool(res.finite) and n_fail >= 12 or dtau_new < 1e-9 * span or n_fail >= 60:
                        reason = Reason.NONFINITE_STATE if not bool(res.finite) else Reason.STEP_COLLAPSE
                        dt_new = t_of(res.state.tnext) - t_of(res.state.tprev)
                        yield self._end(Status.FAILED, reason, f"t = {t_of(res.t_attempt):.4g}, dt = {dt_new:.2e}")
                        return
                    yield self._snapshot_rejected(t_of(res.t_attempt + res.dt_attempt) - t_of(res.t_attempt))
                # A run whose steps keep shrinking is heading for a singularity (the network energy
                # develops a cliff that the collocation points cannot resolve): stop it with a reason.
                tiny = float(res.state.tnext - res.state.tprev) < 1e-6 * span
                n_tiny = n_tiny + 1 if tiny else 0
                if n_tiny >= 25:
                    yield self._end(Status.FAILED, Reason.STEP_COLLAPSE,
                                    f"below {1e-6 * span:.1e} ({'dt' if clk.kind == 'linear' else 'dτ'}) at "
                                    f"t = {t_of(res.state.tprev):.4g}; try a "
                                    "larger reg, more collocation points or width, or a smaller T")
                    return
        except KeyboardInterrupt:
            self._end(Status.INTERRUPTED, Reason.INTERRUPTED, f"at t = {self.run.T:.4g}")
            raise

    def finish(self) -> Verdict:
        """Judge a run that reached T: ``ok``, or ``warning`` with the reasons (energy error or
        residual far above their start, T too small, escalated reg)."""
        d = self.run.diagnostics
        warnings = []
        err = d["energy_error"][np.isfinite(d["energy_error"])]
        if err.size >= 2 and err.max() > max(ERROR_GROWTH_FACTOR * err[0], ERROR_FLOOR):
            warnings.append((Reason.ERROR_GROWTH, f"{err[0]:.3g} at t = 0, max {err.max():.3g}"))
        elif err.size and err.max() > ENERGY_ERROR_LIMIT:
            k = int(np.argmax(np.where(np.isfinite(d["energy_error"]), d["energy_error"], -np.inf)))
            warnings.append((Reason.ENERGY_ERROR_LARGE, f"RMS {err.max():.3g} at t = {d['t'][k]:.3g} "
                             f"(limit {ENERGY_ERROR_LIMIT:g})"))
        if not err.size and self.target.sampler is not None:
            # no exact evolution to compare with (a standardized funnel, say), but exact samples of
            # π: the model at t = 0 against U_0 itself, where the target's mass is
            err0 = target_energy_error(self.run)
            self.run.fit_info["energy_error_exact_samples"] = err0
            if err0 is not None and not err0 <= ENERGY_ERROR_LIMIT:
                warnings.append((Reason.ENERGY_ERROR_LARGE, f"RMS {err0:.3g} at t = 0 on exact samples of π "
                                 f"(limit {ENERGY_ERROR_LIMIT:g})"))
        fit_err = self.run.fit_info.get("heldout_rms")
        if fit_err is not None and np.isfinite(fit_err) and fit_err > ENERGY_ERROR_LIMIT:
            warnings.append((Reason.FIT_INACCURATE, f"held-out RMS {fit_err:.3g} (limit {ENERGY_ERROR_LIMIT:g})"))
        growth = residual_growth(d["residual"], d["rhs_rms"])
        if growth is not None:
            warnings.append((Reason.RESIDUAL_GROWTH, growth))
        if self.config.diffuse is None:
            theta, x = self.state.step_state.y
            gap = float(centred_rms(self._energies(theta, x) - 0.5 * jnp.sum(x * x, -1)))
            self.run.fit_info["reference_gap"] = gap
            if gap > REFERENCE_GAP:
                warnings.append((Reason.T_TOO_SMALL, f"at T = {self.config.T:g} the model energy differs from "
                                 f"|x|²/2 by RMS {gap:.2g} > {REFERENCE_GAP}"))
        v = verdict(warnings=warnings)
        self.status, self.reason, self.message = v.status, (v.reasons[0][0] if v.reasons else None), v.message
        self.run.set_verdict(v)
        return v

    def run_to_end(self, callback: Callable | None = None, spectrum_every: int = 1) -> Run:
        """Prepare if needed and integrate to T; ``callback(snapshot)`` sees every attempt."""
        if self.state is None:
            snap = self.prepare()
            if callback:
                callback(snap)
        for snap in self.steps(spectrum_every):
            if callback:
                callback(snap)
        return self.run

    # ------------------------------------------------------------------ internals
    def _end(self, status: Status, reason: Reason, detail: str) -> Snapshot:
        v = Verdict(status, ((reason, detail),))
        self.status, self.reason, self.message = status, reason, v.message
        self.run.set_verdict(v)
        st = self.state
        return dataclasses.replace(st.last, status=status, message=self.message, accepted=False,
                                   step=st.attempts, num_rejected=st.rejected,
                                   wall_time=time.perf_counter() - st.t0_wall)

    def _snapshot_rejected(self, dt) -> Snapshot:
        st = self.state
        return dataclasses.replace(st.last, dt=dt, accepted=False, step=st.attempts,
                                   num_rejected=st.rejected, status=self.status,
                                   wall_time=time.perf_counter() - st.t0_wall)

    def _record(self, t: float, dt: float, spectrum: bool) -> Snapshot:
        st = self.state
        y = st.step_state.y
        diag = self._diag_spec if spectrum else self._diag
        theta_dot, info = diag(jnp.asarray(t, self.dtype), y, st.args)
        theta, x = y
        err = self._energy_error(t, theta)
        if spectrum:
            st.last_eigenvalues = np.asarray(info.gram_eigenvalues)
        residual = float(info.residual)
        self.run.append(t, np.asarray(theta), np.asarray(theta_dot), np.asarray(x),
                        dt=dt, residual=residual, num_rejected=st.rejected, energy_error=err,
                        reg=float(info.reg), rhs_rms=float(info.rhs_rms))
        snap = Snapshot(t=t, dt=dt, step=st.attempts, num_accepted=st.accepted,
                        num_rejected=st.rejected, accepted=True, residual=residual,
                        points=self._original(np.asarray(x)), gram_eigenvalues=st.last_eigenvalues,
                        reg=float(info.reg),
                        sketch_rank=int(st.sketch.rank), layer_weights=self.net.layer_weights(theta),
                        energy_error=err, status=self.status, wall_time=time.perf_counter() - st.t0_wall)
        st.last = snap
        if not (np.isfinite(residual) and np.all(np.isfinite(np.asarray(theta_dot)))):
            return self._end(Status.FAILED, Reason.NONFINITE_VELOCITY, f"t = {t:.4g}")
        return snap

    def _refresh_points(self, t: float) -> None:
        """Move the collocation points by MALA on the model's own density at t: the first half
        (the start's samples of π) on e^{−U_θ(t)}, the broad half on e^{−β U_θ(t)}, β = BROAD_POWER;
        then restart the integrator at (θ, X′) with the current step."""
        st = self.state
        ss = st.step_state
        theta, x = ss.y
        fn = refresh_fn(self.net, int(self.refresh_steps))
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(self.config.seed), 7919), st.refreshes)
        x_new, st.refresh_log_step, acc = fn(key, theta, x, st.refresh_log_step)
        st.refreshes += 1
        st.refresh_acceptance.append(np.asarray(acc))
        st.next_refresh = (np.floor(t / self.refresh_every) + 1) * self.refresh_every   # the grid k·interval
        self.run.point_refreshes = {"count": st.refreshes, "interval": self.refresh_every,
                                    "mala_steps": int(self.refresh_steps),
                                    "acceptance": np.mean(st.refresh_acceptance, 0).round(3).tolist()}
        st.step_state = self._stepper.init(ss.tprev, jnp.asarray(self.clock.tau(self.config.T), ss.tprev.dtype),
                                           (theta, x_new), st.args, st.controller, ss.tnext - ss.tprev)

    def _original(self, x: np.ndarray) -> np.ndarray:
        """Collocation points in the target's original coordinates (a standardized run evolves in y)."""
        std = self.target.standardization
        return x if std is None else std.to_original(x)

    def _energy_error(self, t: float, theta) -> float | None:
        """ρ_t-weighted RMS of U_θ − U_t up to a constant, on 2000 exact samples of ρ_t
        (common random numbers over t), when the target's OU evolution is known exactly."""
        fn = energy_error_fn(self.target, self.operator.mask, self.net, jnp.dtype(self.dtype).name)
        if fn is None:
            return None
        return float(fn(jnp.asarray(t, self.dtype), theta, self.state.err_key))


#: The singular-failure retry of :func:`evolve` multiplies the collocation points by this…
POINT_REFINEMENT = 4
#: …up to this many points (d ≤ 4: N = 512 → 2048, about 4× the evolution time; the d > 4
#: default N = 1024 → 2048: 4096 points would exceed the 10-minute budget of two cores).
#: Measured (2026-12-02, `benchmarks/highdim.py` mix8-d8): at N = 1024 the run blew up at
#: t = 3.3 (energy error 25) and SMC along it gave +0.251 ± 0.167 (`warning`); at N = 2048 it
#: reached T (68 s; `warning`, reference gap 0.61) and SMC gave +0.012 ± 0.034, masses 0.0097.
MAX_REFINED_POINTS = 2048

#: GAP_HEADROOM (40, defined in :mod:`mne_core.config`): when a run whose initial fit needed the
#: one-sided wide stage (separated modes) still blows up after the point refinement, it is
#: repeated (at the caller's N) with the wide stage's level raised from median U_0 +
#: ``wide_headroom`` to median U_0 + GAP_HEADROOM.  Measured (separated modes
#: (±5, 0), seed 4): with the level at +20 the fit sat 14 below U_0 at the midpoint — e^−27,
#: no mass at t = 0 — but no collocation point constrains that region while the modes approach,
#: and when mass arrives (t ≈ 0.7) the model there is a well 5–16 too deep and the run blows up;
#: at +40 (≈ the float64 resolution of density ratios, e^−36, beyond which the far tails stay
#: free) it ends ok.  Not the default: at +40 five of the other seven seeds needed the 4×
#: refinement (≈ 4× slower) and one ended ``warning``, against two refinements at +20.

#: Failures that a larger regularization can cure (the NTK's poorly resolved directions drive them).
SINGULAR_REASONS = (Reason.STEP_COLLAPSE, Reason.NONFINITE_STATE, Reason.NONFINITE_VELOCITY)
#: Failures that more collocation points can cure (an under-resolved region blows up: fast, or
#: slowly by ever smaller steps until max_steps).
REFINE_REASONS = SINGULAR_REASONS + (Reason.ENERGY_DIVERGED, Reason.MAX_STEPS)


def evolve(config: EvolveConfig, target: Target | None = None, *, progress: Callable | None = None,
           reg_retries: int = 2, point_retries: int = 1, spectrum_every: int = 10, should_stop: Callable[[], bool] | None = None,
           on_evolution: Callable | None = None) -> Run:
    """Prepare and integrate one run to T; returns the :class:`Run`, also on failure.

    Retry policy: if the evolution becomes singular (step-size collapse or a non-finite
    state), blows up (where the exact evolution is known: energy error > ``DIVERGED_ERROR``) or
    grinds to ``max_steps``, the usual cause is a region of low point density — between well-separated modes,
    say — where the network is only extrapolated and the −|∇U|² term of the equation deepens a
    spurious well until it blows up.  So the run is first repeated with ``POINT_REFINEMENT``× the
    collocation points (and fit points), capped at :data:`MAX_REFINED_POINTS` (so the d > 4
    default 1024 doubles), at most ``point_retries`` times; the refined run is judged on its own diagnostics and
    ``point_refinements`` lists the attempts.  A run whose initial fit needed the one-sided wide
    stage (separated modes) is then repeated once at the caller's N with that stage's level raised
    to median U_0 + :data:`GAP_HEADROOM` (no spurious well between the modes that the evolution
    could fill later); it is listed there too.  Only then, and only for a singular failure, is it
    repeated with a 10× larger relative regularization, at most ``reg_retries`` times: a larger λ damps the poorly resolved
    NTK directions that drive the blow-up, at a cost in accuracy.  The run's config holds the N
    and λ finally used, ``reg_escalations`` lists those attempts, and a run that needed one ends
    ``warning`` at best.

    ``progress(stage, fraction, snapshot_or_None)`` is called during the start (stage names
    of the data-free start) and once per step attempt (stage ``"evolve"``).  ``should_stop()``
    is polled between steps; when it returns True the run ends ``interrupted``.
    ``on_evolution(evo)`` sees each :class:`Evolution` as it is created (a caller that catches
    KeyboardInterrupt finds the interrupted run in ``evo.run``).
    """
    t0 = time.perf_counter()
    escalations, refinements = [], []
    original = config
    while True:
        evo = Evolution(config, target)
        target = evo.base_target        # a retry decides the coordinates afresh
        if on_evolution is not None:
            on_evolution(evo)
        prep = None if progress is None else (lambda stage, frac: progress(stage, frac, None))
        evo.prepare(prep)
        for snap in evo.steps(spectrum_every=spectrum_every):
            if progress is not None:
                progress("evolve", snap.t / evo.config.T, snap)
            if should_stop is not None and should_stop():
                evo.request_stop()
        if evo.status != Status.FAILED or evo.reason not in REFINE_REASONS:
            break
        attempt = {"n_points": evo.config.n_points, "reg": evo.config.reg, "wide_headroom": evo.config.wide_headroom,
                   "status": evo.status.value,
                   "reason": evo.reason.name.lower(), "message": evo.message,
                   "t_failed": float(evo.run.diagnostics["t"][-1]) if len(evo.run.diagnostics["t"]) else 0.0}
        n_more = min(evo.config.n_points * POINT_REFINEMENT, MAX_REFINED_POINTS)
        if len(refinements) < point_retries and n_more > evo.config.n_points:
            refinements.append(attempt)
            # from the caller's config: auto sizes (fit points, sketch rank) follow the new N
            fit = None if config.fit_points is None else max(config.fit_points, n_more)
            config = config.replace(n_points=n_more, fit_points=fit)
            continue
        if evo.run.fit_info.get("wide_repaired") and evo.config.wide_headroom < GAP_HEADROOM:  # once: it stays raised
            refinements.append(attempt)
            config = original.replace(wide_headroom=GAP_HEADROOM)
            continue
        if evo.reason not in SINGULAR_REASONS or len(escalations) >= reg_retries or evo.config.reg * 10 >= 1:
            break
        escalations.append(attempt)
        config = evo.config.replace(reg=evo.config.reg * 10, target=original.target)
    run = evo.run
    run.wall_seconds = time.perf_counter() - t0
    run.reg_escalations = escalations
    run.point_refinements = refinements
    if escalations and run.status == Status.OK:
        run.set_verdict(verdict(warnings=[(Reason.REG_ESCALATED, f"reg = {evo.config.reg:g} after "
                                           f"{len(escalations)} singular attempt(s)")]))
    elif escalations and run.status == Status.WARNING:
        run.set_verdict(verdict(warnings=list(run.verdict.reasons)
                                + [(Reason.REG_ESCALATED, f"reg = {evo.config.reg:g}")]))
    return run


__all__ = ["Evolution", "EvolutionError", "EvolutionState", "Start", "Snapshot", "evolve", "mne_rhs", "mne_vector_field",
           "standard_moments", "STANDARD_SHIFT", "STANDARD_SCALE", "FAR_SHIFT", "FAR_SCALE",
           "mne_diagnostics", "SINGULAR_REASONS", "REFINE_REASONS", "GAP_HEADROOM", "refresh_fn", "refresh_active",
           "residual_growth", "REFRESH_INTERVAL", "REFRESH_STEPS"]
