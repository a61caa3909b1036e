"""Evolution operators  ∂_t U = A_t[U]  and the motion of the collocation points.

An operator turns the *local derivatives* of the model energy at a point — the value U,
gradient ∇U and Laplacian ΔU — into the right-hand side f = A_t[U](x) and the point
velocity ẋ.  Derivatives are exact (Laplacian = trace of the Hessian, by forward-over-
reverse), never a stochastic trace estimator: the right-hand side must be a smooth,
deterministic function of the state for adaptive stepping to work.

Implemented:

* :class:`OUEnergy` — Fokker–Planck equation of the Ornstein–Uhlenbeck process
  dX = −X dt + √2 dW, written for the energy U = −log ρ + const:

      ∂_t U = −d_m + x_m·∇_m U + Δ_m U − |∇_m U|²,     ẋ = m ⊙ (−x + ∇U),

  where m ∈ {0,1}^d masks the diffused coordinates (m = 1: full diffusion; partial
  diffusion holds the others fixed) and d_m = Σ m.  U = |x|²/2 is stationary.
* :class:`HeatEnergy` — the heat equation ∂_t ρ = κ Δρ (Brownian motion dX = √(2κ) dW)
  in energy form:  ∂_t U = κ (ΔU − |∇U|²),   ẋ = κ ∇U  (its probability flow).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class LocalDerivatives(NamedTuple):
    """U, ∇U and the (masked) Laplacian Σ_j m_j ∂²U/∂x_j² at a batch of points."""

    value: jax.Array      # (N,)
    grad: jax.Array       # (N, d)
    laplacian: jax.Array  # (N,)


def local_derivatives(energy: Callable, x: jax.Array, mask: jax.Array | None = None,
                      method: str = "reverse", colours: tuple | None = None) -> LocalDerivatives:
    """Exact U, ∇U, Δ_m U of a scalar ``energy(x)`` at points ``x`` (N, d).

    Laplacian: Δ_m U(x) = Σ_j m_j e_jᵀ ∇²U(x) e_j with d Hessian-vector products, so the cost
    is O(d) gradients per point.  ``method="reverse"``: forward-over-reverse (∇U by reverse
    mode, then a jvp of it per direction; what the evolution differentiates through).
    ``method="forward"``: forward-over-forward, one nested jvp per coordinate sharing the
    primal (∂_j U and ∂²_jj U together; the same values, ~2× cheaper on CPU for the sampler,
    which does not differentiate further).

    ``colours``: groups of coordinates with no Hessian entry between two of one group (a block
    network's, ``FlatEnergy.colours``).  Then one probe v_c = m ⊙ 1_c per group gives
    v_cᵀ ∇²U v_c = Σ_{j∈c} m_j ∂²U/∂x_j², so the Laplacian costs as many Hessian-vector products
    as there are groups (1 for a network of one-coordinate blocks) instead of d; ∇U comes from
    one reverse pass.
    """
    if method not in ("forward", "reverse"):
        raise ValueError(f"method must be 'reverse' or 'forward', got {method!r}")
    d = x.shape[-1]
    m = jnp.ones((d,), x.dtype) if mask is None else jnp.asarray(mask, x.dtype)
    basis = jnp.eye(d, dtype=x.dtype)
    if colours is not None:
        probes = jnp.asarray([[1.0 if j in c else 0.0 for j in range(d)] for c in colours], x.dtype) * m
        grad_fn = jax.grad(energy)

        def one(xi):
            val, g = jax.value_and_grad(energy)(xi)
            if method == "forward":
                curv = jax.vmap(lambda v: jax.jvp(lambda y: jax.jvp(energy, (y,), (v,))[1], (xi,), (v,))[1])(probes)
            else:
                curv = jax.vmap(lambda v: jnp.vdot(v, jax.jvp(grad_fn, (xi,), (v,))[1]))(probes)
            return val, g, jnp.sum(curv)
    elif method == "forward":
        def one(xi):
            def second(e):
                (val, g), (_, h) = jax.jvp(lambda y: jax.jvp(energy, (y,), (e,)), (xi,), (e,))
                return val, g, h
            val, g, h = jax.vmap(second)(basis)
            return val[0], g, jnp.sum(m * h)
    else:  # reverse
        grad_fn = jax.grad(energy)

        def one(xi):
            val, g = jax.value_and_grad(energy)(xi)
            hdiag = jax.vmap(lambda e: jnp.vdot(e, jax.jvp(grad_fn, (xi,), (e,))[1]))(basis)
            return val, g, jnp.sum(m * hdiag)

    val, g, lap = jax.vmap(one)(x)
    return LocalDerivatives(val, g, lap)


@dataclasses.dataclass(frozen=True)
class OUEnergy:
    """OU Fokker–Planck in energy form, with optional partial-diffusion mask (see module doc)."""

    mask: tuple | None = None  # per-coordinate 0/1; None = all coordinates diffuse

    def mask_array(self, d: int, dtype) -> jax.Array:
        return jnp.ones((d,), dtype) if self.mask is None else jnp.asarray(self.mask, dtype)

    def rhs(self, x: jax.Array, der: LocalDerivatives, t=None) -> jax.Array:
        """f(x) = −d_m + x_m·∇_m U + Δ_m U − |∇_m U|²  at each point (N,)."""
        m = self.mask_array(x.shape[-1], x.dtype)
        gm = der.grad * m
        return -jnp.sum(m) + jnp.sum(x * gm, -1) + der.laplacian - jnp.sum(gm * gm, -1)

    def point_velocity(self, x: jax.Array, der: LocalDerivatives, t=None) -> jax.Array:
        """Probability flow ẋ = m ⊙ (−x − ∇log ρ_t) = m ⊙ (−x + ∇U)."""
        m = self.mask_array(x.shape[-1], x.dtype)
        return m * (-x + der.grad)

    def divergence(self, x: jax.Array, der: LocalDerivatives, t=None) -> jax.Array:
        """∇·ẋ = −d_m + Δ_m U (for the change of variables along the flow)."""
        m = self.mask_array(x.shape[-1], x.dtype)
        return -jnp.sum(m) + der.laplacian


@dataclasses.dataclass(frozen=True)
class HeatEnergy:
    """Heat equation ∂_t ρ = κΔρ in energy form (see module doc); Gaussians stay Gaussian:
    a variance s² becomes s² + 2κt."""

    diffusivity: float = 1.0
    mask = None  # the heat operator always diffuses every coordinate

    def rhs(self, x, der: LocalDerivatives, t=None):
        """f(x) = κ (ΔU − |∇U|²)."""
        return self.diffusivity * (der.laplacian - jnp.sum(der.grad * der.grad, -1))

    def point_velocity(self, x, der: LocalDerivatives, t=None):
        """ẋ = −κ∇log ρ = κ∇U."""
        return self.diffusivity * der.grad

    def divergence(self, x, der: LocalDerivatives, t=None):
        return self.diffusivity * der.laplacian
