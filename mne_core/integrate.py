"""Adaptive integration of the joint state y = (θ, X) with diffrax, one step at a time.

The MNE vector field

    θ̇ = parameter_velocity(J(θ, X), f(θ, X)),    Ẋ = point_velocity(θ, X)

is integrated with an explicit Runge–Kutta method of diffrax (Tsit5 by default, Dopri5,
Dopri8) under diffrax's PID step-size controller.  Instead of one opaque
``diffeqsolve`` call the driver exposes diffrax's own ``solver.step`` /
``controller.adapt_step_size`` pair as a jitted single-step function, so a caller (CLI
progress bar, dashboard worker thread) sees every accepted and rejected step and can
stop at any time; everything accepted so far is kept.

rtol, atol and the regularization are *traced* arrays: changing them never recompiles.

The integrator's clock is t itself or, for targets whose fine scales relax fast at the start
(the funnel's neck: a conditional variance v₀ ≈ e^{-9} relaxes on the time scale v₀, so an
explicit method needs dt ≲ v₀ while t ≲ v₀), the log clock τ = log(t + ε):

    dy/dτ = (t + ε) · f(t, y),    t = e^τ − ε,

an exact change of variables under which the stiffness t·λ(t) ~ t / (v₀ + 2t) stays O(1), so
the step in τ stays O(0.1–1) from t = 0 to T (:class:`Clock`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

#: ε of the log clock τ = log(t + ε): below the smallest relaxation time a target is expected to have.
LOG_CLOCK_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class Clock:
    """The integrator's time variable: ``'linear'`` (τ = t) or ``'log'`` (τ = log(t + ε))."""

    kind: str = "linear"
    eps: float = LOG_CLOCK_EPS

    def __post_init__(self):
        if self.kind not in ("linear", "log"):
            raise ValueError(f"unknown clock {self.kind!r}; choose 'linear' or 'log'")

    def tau(self, t):
        """τ(t)."""
        return t if self.kind == "linear" else jnp.log(t + self.eps)

    def time(self, tau):
        """t(τ) (≥ 0)."""
        return tau if self.kind == "linear" else jnp.maximum(jnp.exp(tau) - self.eps, 0.0)

    def field(self, vector_field: Callable) -> Callable:
        """The vector field in τ: vf(t, y, args) for the linear clock, (t + ε)·vf(t(τ), y, args) for the log."""
        if self.kind == "linear":
            return vector_field
        eps = self.eps

        def vf_tau(tau, y, args):
            scale = jnp.exp(tau)
            return jax.tree_util.tree_map(lambda v: scale * v, vector_field(scale - eps, y, args))
        return vf_tau


INTEGRATORS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8}


class StepState(NamedTuple):
    """Integrator state between steps (all JAX values)."""

    tprev: jax.Array
    tnext: jax.Array
    y: Any
    solver_state: Any
    controller_state: Any
    made_jump: Any


class StepResult(NamedTuple):
    state: StepState
    accepted: jax.Array   # bool: the attempted step [tprev, tnext] was kept
    t_attempt: jax.Array  # start of the attempted step
    dt_attempt: jax.Array  # its size
    finite: jax.Array      # bool: the candidate state was finite


def make_controller(rtol, atol, dtype=jnp.float64, pcoeff=0.4, icoeff=0.3, dcoeff=0.0):
    """diffrax.PIDController with rtol/atol as arrays (traced under jit, no recompiles).

    Default coefficients are the PI controller of Hairer & Wanner (β₁ = 0.3, β₂ = 0.4 in
    diffrax's convention): fewer rejected steps than a plain I-controller on this problem."""
    return diffrax.PIDController(rtol=jnp.asarray(rtol, dtype), atol=jnp.asarray(atol, dtype),
                                 pcoeff=pcoeff, icoeff=icoeff, dcoeff=dcoeff)


@dataclasses.dataclass(frozen=True, eq=False)
class Stepper:
    """A compiled single-step driver for ``vector_field(t, y, args)`` with a diffrax RK solver.

    ``init`` returns the first :class:`StepState`; ``step`` attempts one step and returns a
    :class:`StepResult`.  Both are jitted once per Stepper (cache the Stepper per shape).
    """

    vector_field: Callable
    integrator: str = "tsit5"

    def __post_init__(self):
        if self.integrator not in INTEGRATORS:
            raise ValueError(f"unknown integrator {self.integrator!r}; choose one of {sorted(INTEGRATORS)}")
        object.__setattr__(self, "solver", INTEGRATORS[self.integrator]())
        object.__setattr__(self, "term", diffrax.ODETerm(self.vector_field))
        object.__setattr__(self, "_init", eqx.filter_jit(self._init_impl))
        object.__setattr__(self, "_step", eqx.filter_jit(self._step_impl))

    def _init_impl(self, t0, t1, y0, args, controller, dt0):
        error_order = self.solver.error_order(self.term)
        tnext, cstate = controller.init(self.term, t0, t1, y0, dt0, args, self.solver.func, error_order)
        tnext = jnp.minimum(tnext, t1)
        sstate = self.solver.init(self.term, t0, tnext, y0, args)
        return StepState(jnp.asarray(t0, tnext.dtype), tnext, y0, sstate, cstate, jnp.asarray(False))

    def init(self, t0, t1, y0, args, controller, dt0=None) -> StepState:
        return self._init(t0, t1, y0, args, controller, dt0)

    def _step_impl(self, st: StepState, args, controller, t1):
        y1, y_err, _, sstate, _ = self.solver.step(self.term, st.tprev, st.tnext, st.y, args,
                                                   st.solver_state, st.made_jump)
        finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(y1)]))
        y_err = jax.tree_util.tree_map(lambda e: jnp.where(jnp.isfinite(e), e, jnp.inf), y_err)
        keep, tprev, tnext, made_jump, cstate, _ = controller.adapt_step_size(
            st.tprev, st.tnext, st.y, y1, args, y_err, self.solver.error_order(self.term),
            st.controller_state)
        keep = keep & finite
        tprev = jnp.where(keep, jnp.minimum(tprev, t1), st.tprev)
        tnext = jnp.where(keep, tnext, jnp.minimum(tnext, st.tnext))
        tnext = jnp.minimum(tnext, t1)
        sel = lambda a, b: jax.tree_util.tree_map(lambda u, v: jnp.where(keep, u, v), a, b)
        new = StepState(tprev, tnext, sel(y1, st.y), sel(sstate, st.solver_state), cstate,
                        jnp.where(keep, made_jump, st.made_jump))
        return StepResult(new, keep, st.tprev, st.tnext - st.tprev, finite)

    def step(self, state: StepState, args, controller, t1) -> StepResult:
        return self._step(state, args, controller, jnp.asarray(t1, state.tprev.dtype))
