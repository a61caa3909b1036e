"""Target distributions π ∝ e^{-U_0} and their exact oracles under the OU process.

A :class:`Target` bundles the energy ``U_0(x) = -log π̃(x)`` of a point ``x`` of shape
``(d,)`` (JAX-traceable: ``jit``/``grad``/``vmap``/``hessian``) with whatever is known
exactly about it: ``log Z = log ∫ e^{-U_0}``, exact samples, and — for Gaussian mixtures —
the exact density of the Ornstein–Uhlenbeck process

    dX = -X dt + √2 dW,        X_0 ~ π,

at every time t (design note §6).  For ``π = Σ_k w_k N(m_k, S_k)``

    ρ_t = Σ_k w_k N(m_k(t), S_k(t)),   m_k(t) = e^{-t} m_k,   S_k(t) = e^{-2t} S_k + (1 - e^{-2t}) I.

Partial diffusion (design note §3): with a boolean ``mask`` (True = the coordinate
diffuses, ``z``; False = held fixed, ``y``) and ``D = diag(1 on y, e^{-t} on z)``

    m_k(t) = D m_k,   S_k(t) = D S_k D + diag(0 on y, 1 - e^{-2t} on z).

For any target with exact samples, exact samples of ρ_t follow from the OU transition
``X_t = D X_0 + √(1 - e^{-2t}) ξ`` on the diffusing coordinates (``ξ ~ N(0, I)``), so
every target with a ``sampler`` also gets an ``evolved_sampler``.

Targets are built from JSON-able specs (:func:`target_from_spec`), from named presets
(:func:`named_target`), from safe user expressions (:func:`target_from_expression`, see
:mod:`mne_core.expressions`), or for the command line by :func:`resolve_target`.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
import json
import math
import os
import pathlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp
import scipy.linalg
from scipy import integrate

from .expressions import ExpressionError, parse_expression
from .runtime import ensure_x64

__all__ = [
    "MAX_DIM",
    "MAX_COMPONENTS",
    "NAMED_TARGETS",
    "TargetSpecError",
    "ExpressionTargetError",
    "Target",
    "gaussian_mixture",
    "named_target",
    "target_from_spec",
    "target_from_json",
    "target_from_expression",
    "resolve_target",
    "Standardization",
    "standardized_target",
    "original_target",
]

MAX_DIM = 64
"""Largest accepted dimension d of a target."""

MAX_COMPONENTS = 64
"""Largest accepted number K of Gaussian-mixture components."""

_LOG_2PI = math.log(2.0 * math.pi)
_SYMMETRY_RTOL = 1e-8
_WEIGHT_SUM_TOL = 1e-12


class TargetSpecError(ValueError):
    """A target spec (or CLI target argument) is invalid; the message names the bad field."""


class ExpressionTargetError(TargetSpecError, ExpressionError):
    """An energy expression in a target spec is malformed.

    Both a :class:`TargetSpecError` and an :class:`~mne_core.expressions.ExpressionError`
    (so ``position`` and ``token`` are available for highlighting the text).
    """


# --------------------------------------------------------------------------- Target


@dataclasses.dataclass(frozen=True, eq=False)
class Target:
    """A target distribution π ∝ e^{-U_0} on R^d with its exact oracles.

    Attributes:
        name: short identifier.
        dim: d.
        energy: ``U_0(x) = -log π̃(x)`` for ``x`` of shape ``(d,)``, a scalar; JAX-traceable.
        spec: JSON-able spec; ``target_from_spec(spec)`` rebuilds the target.
        log_z: ``log ∫ e^{-U_0(x)} dx`` (``None`` if unknown).
        sampler: ``sampler(key, n) -> (n, d)`` exact samples of π, or ``None``.
        evolved_log_density: ``(t, x, mask=None) -> log ρ_t(x)``, the *normalized* density
            of the OU process at time t started from π; ``mask`` (shape ``(d,)``, bool or
            0/1, True = diffuses) selects partial diffusion.  ``None`` if unknown.
        evolved_sampler: ``(key, t, n, mask=None) -> (n, d)`` exact samples of ρ_t, or ``None``.
        modes: ``(K, d)`` mode centres (mixtures, multi-well targets), or ``None``.
        mode_weights: ``(K,)`` exact probability masses of the modes, or ``None``.
        description: one line for the UI.
        standardization: for a target in standardized coordinates (:func:`standardized_target`),
            the map back to the original ones; ``None`` otherwise.

    Hashable by identity, so it can be a static argument of ``jax.jit``.
    """

    name: str
    dim: int
    energy: Callable
    spec: dict
    log_z: float | None = None
    sampler: Callable | None = None
    evolved_log_density: Callable | None = None
    evolved_sampler: Callable | None = None
    modes: np.ndarray | None = None
    mode_weights: np.ndarray | None = None
    description: str = ""
    standardization: "Standardization | None" = None

    def __post_init__(self):
        ensure_x64()  # the exact oracles (log Z, evolved densities) are float64

    @property
    def has_exact(self) -> bool:
        """True when the OU-evolved density ρ_t is known exactly."""
        return self.evolved_log_density is not None

    @functools.cached_property
    def _energies_fn(self):
        return jax.jit(jax.vmap(self.energy))

    def energies(self, xs):
        """``U_0`` at each row of ``xs`` (shape ``(M, d)``), shape ``(M,)`` (jitted vmap)."""
        xs = jnp.asarray(xs)
        if xs.ndim != 2 or xs.shape[1] != self.dim:
            raise ValueError(f"energies expects points of shape (M, {self.dim}), got {xs.shape}")
        return self._energies_fn(xs)

    def evolved_energy(self, t, x, mask=None):
        """Exact evolved energy ``U_t(x) = -log ρ_t(x) - log Z``, equal to ``U_0`` at t = 0.

        This is the solution of ``∂_t U = -d + x·∇U + ΔU - |∇U|²`` (restricted to the
        diffusing coordinates under ``mask``) that starts at ``U_0``, i.e. the same additive
        constant as the unnormalized ``energy``.
        """
        if self.evolved_log_density is None:
            raise ValueError(f"target {self.name!r} has no exact evolved density")
        if self.log_z is None:
            raise ValueError(f"target {self.name!r} has no known log Z")
        return -self.evolved_log_density(t, x, mask) - self.log_z

    @functools.cached_property
    def _evolved_fn(self):
        def f(t, xs, mask):
            return jax.vmap(lambda x: self.evolved_log_density(t, x, mask))(xs)
        return jax.jit(f)

    def evolved_log_densities(self, t, xs, mask=None):
        """``log ρ_t`` at each row of ``xs`` (M, d) → (M,), jitted (t is traced: no recompiles)."""
        if self.evolved_log_density is None:
            raise ValueError(f"target {self.name!r} has no exact evolved density")
        xs = jnp.asarray(xs)
        if xs.ndim != 2 or xs.shape[1] != self.dim:
            raise ValueError(f"expects points of shape (M, {self.dim}), got {xs.shape}")
        m = None if mask is None else jnp.asarray(mask, xs.dtype)
        return self._evolved_fn(jnp.asarray(t, xs.dtype), xs, m)

    def evolved_energies(self, t, xs, mask=None):
        """Batched :meth:`evolved_energy`: ``−log ρ_t(x) − log Z`` at each row of ``xs``."""
        if self.log_z is None:
            raise ValueError(f"target {self.name!r} has no known log Z")
        return -self.evolved_log_densities(t, xs, mask) - self.log_z

    def __repr__(self) -> str:
        return f"Target(name={self.name!r}, dim={self.dim}, has_exact={self.has_exact})"


# --------------------------------------------------------------------------- helpers


def _float_dtype():
    return jnp.result_type(float)


def _diffusion_mask(mask, d: int):
    """Boolean diffusion mask of shape ``(d,)``; ``None`` means every coordinate diffuses."""
    if mask is None:
        return jnp.ones((d,), dtype=bool)
    m = jnp.asarray(mask)
    if m.shape != (d,):
        raise ValueError(f"mask must have shape ({d},), got {m.shape}")
    return m.astype(bool)


def _ou_factors(t, mask, d: int, dtype):
    """``(decay, added)``: ``decay = diag(D)`` (e^{-t} on z, 1 on y); ``added`` = 1 - e^{-2t} on z, 0 on y."""
    z = _diffusion_mask(mask, d)
    t = jnp.asarray(t, dtype=dtype)
    decay = jnp.where(z, jnp.exp(-t), jnp.ones((), dtype))
    added = jnp.where(z, -jnp.expm1(-2.0 * t), jnp.zeros((), dtype))
    return decay, added


def _ou_evolved_sampler(sampler: Callable, d: int) -> Callable:
    """Exact samples of ρ_t from exact samples of π: ``X_t = D X_0 + √(1 - e^{-2t}) ξ`` on z."""

    def evolved_sampler(key, t, n, mask=None):
        k0, k1 = jax.random.split(key)
        x0 = sampler(k0, n)
        decay, added = _ou_factors(t, mask, d, x0.dtype)
        return x0 * decay + jnp.sqrt(added) * jax.random.normal(k1, x0.shape, x0.dtype)

    return evolved_sampler


def _jitted_target(**fields) -> Target:
    """``Target(**fields)`` with its callables wrapped in ``jax.jit`` (``n`` static)."""
    for key, static in (("energy", ()), ("sampler", (1,)), ("evolved_log_density", ()),
                        ("evolved_sampler", (2,))):
        f = fields.get(key)
        if f is not None:
            fields[key] = jax.jit(f, static_argnums=static)
    return Target(**fields)


def _frozen(a):
    if a is None:
        return None
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def _log_z_1d(V: Callable[[float], float], lo: float, hi: float, points) -> float:
    """``log ∫_lo^hi e^{-V(s)} ds`` by adaptive Gauss–Kronrod (scipy ``quad``), rel. tol 1e-13."""
    vmin = float(np.min(V(np.linspace(lo, hi, 20001))))
    val, _ = integrate.quad(lambda s: math.exp(-(V(s) - vmin)), lo, hi, points=points,
                            limit=500, epsabs=0.0, epsrel=1e-13)
    return math.log(val) - vmin


def _inverse_cdf_table(V: Callable, lo: float, hi: float, n: int = 100_001):
    """Grid ``(cdf, s)`` of the density ∝ e^{-V} on [lo, hi] (trapezoid CDF, strictly increasing).

    ``jnp.interp(u, cdf, s)`` with ``u ~ U(0, 1)`` then samples the piecewise-linear-CDF
    approximation, whose error is O(h²) with h = (hi - lo)/(n - 1) (~1e-8 here).
    """
    s = np.linspace(lo, hi, n)
    v = V(s)
    p = np.exp(-(v - v.min()))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(s))])
    cdf /= cdf[-1]
    cdf, idx = np.unique(cdf, return_index=True)  # drop flat (underflowed) tails
    return jnp.asarray(cdf), jnp.asarray(s[idx])


def _sample_inverse_cdf(key, shape, table):
    cdf, s = table
    u = jax.random.uniform(key, shape, dtype=cdf.dtype)
    return jnp.interp(u, cdf, s)


# --------------------------------------------------------------------------- one latent coordinate

#: Gauss–Hermite rule (probabilists', weights normalized to sum 1) for the small-t quadrature.
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(64)
_GH_LOG_WEIGHTS = np.log(_GH_WEIGHTS / _GH_WEIGHTS.sum())
#: The grid quadrature is used once the OU kernel is this many grid spacings wide in s.
KERNEL_GRID_SPACINGS = 10.0


def kernel_log_integral(a, decay, added, log_f, grid):
    """``log ∫ f(s) N(a; decay·s, added) ds`` for a scalar ``a`` (``log_f`` vectorized over s).

    This is the OU transition of one coordinate that starts at s (decay = e^{−t}, added =
    1 − e^{−2t}; decay = 1, added = 0 when the coordinate is held).  Two quadratures, switched by
    the kernel's width in s, w = √added / decay:

    - w ≥ 10 h (h the spacing of the uniform ``grid``, which must cover f's mass): the rectangle
      rule Σ_k h f(s_k) N(a; decay s_k, added) — spectrally accurate for a smooth, decayed f;
    - otherwise Gauss–Hermite in u = (a − decay·s)/√added:
      (1/decay) Σ_j w_j f((a − √added u_j)/decay), exact at t = 0 (f(a) itself).
    """
    h = float(grid[1] - grid[0])
    grid = jnp.asarray(grid, jnp.result_type(a))
    sd = jnp.sqrt(added)
    safe = jnp.maximum(added, 1e-300)
    on_grid = logsumexp(log_f(grid) - 0.5 * (a - decay * grid) ** 2 / safe - 0.5 * jnp.log(2 * jnp.pi * safe)) \
        + jnp.log(h)
    by_gh = logsumexp(jnp.asarray(_GH_LOG_WEIGHTS) + log_f((a - sd * jnp.asarray(_GH_NODES)) / decay)) \
        - jnp.log(decay)
    return jnp.where(sd >= KERNEL_GRID_SPACINGS * h * decay, on_grid, by_gh)


def _check_dim(dim, what: str, lo: int = 1) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TargetSpecError(f"{what} must be an integer, got {dim!r}")
    dim = int(dim)
    if dim < lo:
        raise TargetSpecError(f"{what} must be at least {lo}, got {dim}")
    if dim > MAX_DIM:
        raise TargetSpecError(f"{what} must be at most {MAX_DIM}, got {dim}")
    return dim


# --------------------------------------------------------------------------- Gaussian mixtures


def _nested_numbers(value, field: str, ndim: int):
    """Validate a rectangular nested list of finite numbers of depth ``ndim``; return ndarray."""

    def walk(v, path, level):
        if level == ndim:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TargetSpecError(f"{path} must be a number, got {_short(v)}")
            f = float(v)
            if not math.isfinite(f):
                raise TargetSpecError(f"{path} must be finite, got {f}")
            return f
        if isinstance(v, np.ndarray):
            v = v.tolist()
        if not isinstance(v, (list, tuple)):
            raise TargetSpecError(
                f"{path} must be a list ({ndim - level}-level nested list of numbers), got {_short(v)}")
        if len(v) == 0:
            raise TargetSpecError(f"{path} must not be empty")
        out = [walk(u, f"{path}[{i}]", level + 1) for i, u in enumerate(v)]
        if level + 1 < ndim:
            first = len(out[0])
            for i, row in enumerate(out):
                if len(row) != first:
                    raise TargetSpecError(
                        f"{path}[{i}] has {len(row)} entries but {path}[0] has {first}")
        return out

    return np.array(walk(value, field, 0), dtype=np.float64)


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _validate_mixture(weights, means, covariances):
    """Check a mixture's arrays; return ``(w, m, S, note)`` with normalized weights."""
    w = _nested_numbers(weights, "weights", 1)
    m = _nested_numbers(means, "means", 2)
    S = _nested_numbers(covariances, "covariances", 3)
    K = w.shape[0]
    if K > MAX_COMPONENTS:
        raise TargetSpecError(f"weights has {K} entries; at most {MAX_COMPONENTS} components are allowed")
    if m.shape[0] != K:
        raise TargetSpecError(f"means has {m.shape[0]} rows but weights has {K} entries")
    if S.shape[0] != K:
        raise TargetSpecError(f"covariances has {S.shape[0]} matrices but weights has {K} entries")
    d = m.shape[1]
    if d > MAX_DIM:
        raise TargetSpecError(f"means have dimension {d}; at most {MAX_DIM} is allowed")
    if S.shape[1:] != (d, d):
        raise TargetSpecError(
            f"covariances[0] is {S.shape[1]}×{S.shape[2]} but means have dimension {d} "
            f"(expected {d}×{d})")
    for k in range(K):
        if w[k] < 0:
            raise TargetSpecError(f"weights[{k}] = {w[k]} is negative")
    total = float(w.sum())
    if total <= 0:
        raise TargetSpecError("weights are all zero; at least one must be positive")
    note = ""
    if abs(total - 1.0) > _WEIGHT_SUM_TOL:
        note = f"weights normalized (they summed to {total:.6g})"
    w = w / total
    for k in range(K):
        Sk = S[k]
        asym = float(np.max(np.abs(Sk - Sk.T)))
        scale = float(np.max(np.abs(Sk)))
        if asym > _SYMMETRY_RTOL * scale:
            raise TargetSpecError(
                f"covariances[{k}] is not symmetric (max |S - Sᵀ| = {asym:.3g}, "
                f"relative tolerance {_SYMMETRY_RTOL:g})")
        Sk = 0.5 * (Sk + Sk.T)
        S[k] = Sk
        eig_min = float(np.linalg.eigvalsh(Sk)[0])
        ok = eig_min > 0
        if ok:
            try:
                np.linalg.cholesky(Sk)
            except np.linalg.LinAlgError:
                ok = False
        if not ok:
            raise TargetSpecError(
                f"covariances[{k}] is not positive definite (smallest eigenvalue {eig_min:.3g})")
    return w, m, S, note


def _mixture_log_density_fn(w: np.ndarray, m: np.ndarray, S: np.ndarray) -> Callable:
    """``x -> log Σ_k w_k N(x; m_k, S_k)`` via fixed Cholesky factors and logsumexp."""
    d = m.shape[1]
    L = np.linalg.cholesky(S)
    half_logdet = np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum(-1)
    with np.errstate(divide="ignore"):
        log_w = np.log(w)
    const = log_w - half_logdet - 0.5 * d * _LOG_2PI
    # L_k⁻¹ once (a triangular solve against I): r_k = L_k⁻¹ (x − m_k) is then a matrix product,
    # which XLA batches over particles; a triangular solve per particle and component was ~8× slower
    # on CPU (d = 64, 8 components: 8.4 µs → see benchmarks/results/engine.md)
    L_inv = np.stack([scipy.linalg.solve_triangular(Lk, np.eye(d), lower=True) for Lk in L])
    A = L_inv.reshape(-1, d)                                   # (K·d, d): all components in one product
    b = np.einsum("kij,kj->ki", L_inv, m).reshape(-1)          # L_k⁻¹ m_k, stacked

    def log_density(x):
        x = jnp.asarray(x)
        r = (A @ x - b).reshape(-1, d)
        return logsumexp(const - 0.5 * jnp.sum(r * r, axis=-1))

    return log_density


def _mixture_evolved_log_density_fn(w, m, S) -> Callable:
    """``(t, x, mask) -> log Σ_k w_k N(x; D m_k, D S_k D + diag(added))`` (module docstring)."""
    d = m.shape[1]
    with np.errstate(divide="ignore"):
        log_w = np.log(w)

    def evolved_log_density(t, x, mask=None):
        x = jnp.asarray(x)
        dtype = jnp.result_type(x.dtype, _float_dtype())
        x = x.astype(dtype)
        if x.shape != (d,):
            raise ValueError(f"evolved_log_density expects x of shape ({d},), got {x.shape}")
        decay, added = _ou_factors(t, mask, d, dtype)
        m_t = m * decay
        S_t = S * decay[:, None] * decay[None, :] + jnp.diag(added)
        L_t = jnp.linalg.cholesky(S_t)
        half_logdet = jnp.sum(jnp.log(jnp.diagonal(L_t, axis1=-2, axis2=-1)), axis=-1)
        r = jax.vmap(lambda Lk, rk: solve_triangular(Lk, rk, lower=True))(L_t, x - m_t)
        return logsumexp(log_w - half_logdet - 0.5 * d * _LOG_2PI - 0.5 * jnp.sum(r * r, axis=-1))

    return evolved_log_density


def _mixture_sampler_fn(w, m, S) -> Callable:
    L = np.linalg.cholesky(S)
    with np.errstate(divide="ignore"):
        log_w = np.log(w)
    d = m.shape[1]

    def sampler(key, n):
        kc, kz = jax.random.split(key)
        comp = jax.random.categorical(kc, jnp.asarray(log_w), shape=(n,))
        z = jax.random.normal(kz, (n, d), dtype=_float_dtype())
        return jnp.asarray(m)[comp] + jnp.einsum("nij,nj->ni", jnp.asarray(L)[comp], z)

    return sampler


def gaussian_mixture(weights, means, covariances, name: str = "gaussian-mixture", *,
                     description: str | None = None, spec: dict | None = None) -> Target:
    """Gaussian mixture ``π = Σ_k w_k N(m_k, S_k)`` with full covariances and all oracles.

    The energy is the normalized negative log density ``U_0 = -log π`` (so ``log_z = 0``),
    evaluated with Cholesky factors and logsumexp.  Exact samples, the exact OU-evolved
    density and samples (module docstring) and ``modes = means``, ``mode_weights = w``.

    Args:
        weights: K non-negative numbers, not all zero (normalized to sum 1 if they don't).
        means: K×d nested list / array.
        covariances: K×d×d symmetric positive-definite matrices.
        name, description: labels; ``spec`` overrides the default gaussian_mixture spec.

    Raises:
        TargetSpecError: naming the offending field (shape, finiteness, sign, symmetry, PD).
    """
    w, m, S, note = _validate_mixture(weights, means, covariances)
    K, d = m.shape
    if spec is None:
        spec = {
            "kind": "gaussian_mixture",
            "name": name,
            "weights": _nested_numbers(weights, "weights", 1).tolist(),
            "means": m.tolist(),
            "covariances": S.tolist(),
        }
        if description is not None:
            spec["description"] = description
    if description is None:
        description = f"{d}-D Gaussian mixture with {K} component{'s' if K != 1 else ''}"
        if note:
            description += f"; {note}"
    sampler = _mixture_sampler_fn(w, m, S)
    log_density = _mixture_log_density_fn(w, m, S)
    return _jitted_target(
        name=name,
        dim=d,
        energy=lambda x: -log_density(x),
        spec=spec,
        log_z=0.0,
        sampler=sampler,
        evolved_log_density=_mixture_evolved_log_density_fn(w, m, S),
        evolved_sampler=_ou_evolved_sampler(sampler, d),
        modes=_frozen(m),
        mode_weights=_frozen(w),
        description=description,
    )


# --------------------------------------------------------------------------- standardized coordinates

@dataclasses.dataclass(frozen=True, eq=False)
class Standardization:
    """The affine map ``x = shift + scale ⊙ y`` between standardized coordinates y (where a run
    evolves) and the original coordinates x of ``base`` (where the user reads samples).

    ``log_det(coords)`` = Σ_{i ∈ coords} log scale_i, the log-Jacobian |∂x/∂y| over the given
    coordinates (all by default): a density over those coordinates picks up −log_det, an
    integral over them (Z) +log_det."""

    base: Target
    shift: np.ndarray
    scale: np.ndarray

    def to_original(self, y):
        return self.shift + self.scale * np.asarray(y)

    def to_standard(self, x):
        return (np.asarray(x) - self.shift) / self.scale

    def log_det(self, coords=None) -> float:
        s = self.scale if coords is None else self.scale[np.asarray(coords, dtype=int)]
        return float(np.sum(np.log(s)))


def standardized_target(base: Target, shift, scale) -> Target:
    """``base`` in standardized coordinates y = (x − shift) / scale (per coordinate, scale > 0):

        U_y(y) = U_0(shift + scale ⊙ y),     log Z_y = log Z − Σ_i log scale_i,

    the same energy values (so a model fitted in y has the same energy error), exact samples
    mapped from ``base``'s, the exact OU-evolved density in y where it stays a closed form (a
    Gaussian mixture is again one: means (m_k − shift)/scale, covariances S_k / (scale scaleᵀ);
    other targets: none, so the run has no exact energy error), modes mapped, mode weights kept.
    The OU process then runs in y, whose equilibrium N(0, I) matches the target's spread — see
    :mod:`mne_core.evolution` (``standardize``) for when a run uses this.
    Spec: ``{"kind": "standardized", "base": base.spec, "shift": [...], "scale": [...]}``."""
    d = base.dim
    shift = _nested_numbers(shift, "shift", 1)
    scale = _nested_numbers(scale, "scale", 1)
    if shift.shape != (d,) or scale.shape != (d,):
        raise TargetSpecError(f"shift and scale must have {d} entries each, got {shift.size} and {scale.size}")
    if not (np.all(np.isfinite(shift)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise TargetSpecError("shift must be finite and scale finite and positive")
    if base.standardization is not None:
        raise TargetSpecError("a standardized target cannot be standardized again")
    st = Standardization(base, _frozen(shift), _frozen(scale))
    sh, sc = jnp.asarray(shift), jnp.asarray(scale)
    log_det = st.log_det()
    spec = {"kind": "standardized", "base": base.spec, "shift": shift.tolist(), "scale": scale.tolist()}
    evolved = None
    if base.spec.get("kind") == "gaussian_mixture":
        w, m, S, _ = _validate_mixture(base.spec["weights"], base.spec["means"], base.spec["covariances"])
        evolved = _mixture_evolved_log_density_fn(w, (m - shift) / scale, S / np.outer(scale, scale))
    sampler = None
    if base.sampler is not None:
        base_sampler = base.sampler

        def sampler(key, n):
            return (base_sampler(key, n) - sh) / sc
    modes = None if base.modes is None else _frozen((np.asarray(base.modes) - shift) / scale)
    return _jitted_target(
        name=base.name, dim=d, energy=lambda y: base.energy(sh + sc * y), spec=spec,
        log_z=None if base.log_z is None else float(base.log_z) - log_det,
        sampler=sampler, evolved_log_density=evolved,
        evolved_sampler=None if sampler is None else _ou_evolved_sampler(sampler, d),
        modes=modes, mode_weights=base.mode_weights,
        description=f"{base.description} (standardized coordinates)", standardization=st)


def original_target(target: Target) -> Target:
    """The target in the user's coordinates: ``target`` itself, or the base of a standardized one."""
    return target if target.standardization is None else target.standardization.base


# --------------------------------------------------------------------------- named targets

NAMED_TARGETS = ("two-modes", "ring", "banana", "double-well", "funnel", "many-well", "gaussian")
"""Names accepted by :func:`named_target`."""

# name -> (default dim, fixed dim?)
_NAMED_DIMS = {
    "two-modes": (2, True),
    "ring": (2, True),
    "banana": (2, True),
    "double-well": (2, True),
    "funnel": (10, False),
    "many-well": (8, False),
    "gaussian": (2, False),
}


def _named_spec(name, d):
    return {"kind": "named", "name": name, "dim": d}


def _two_modes(d):
    return gaussian_mixture(
        [0.3, 0.7], [[-2.5, 0.0], [2.5, 0.0]], [0.5 * np.eye(2)] * 2, name="two-modes",
        spec=_named_spec("two-modes", d),
        description="2-D Gaussian mixture: modes at (−2.5, 0) and (2.5, 0), cov 0.5·I, "
                    "weights 0.3 / 0.7")


def _ring(d):
    angles = 2.0 * np.pi * np.arange(8) / 8
    means = 3.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return gaussian_mixture(
        np.full(8, 1.0 / 8), means, [0.2 * np.eye(2)] * 8, name="ring",
        spec=_named_spec("ring", d),
        description="2-D ring: 8 equal Gaussians on a circle of radius 3, cov 0.2·I")


def _gaussian(d):
    mean = np.zeros(d)
    mean[0] = 1.0
    if d > 1:
        mean[1] = -0.5
    eig = np.geomspace(0.5, 2.0, d) if d > 1 else np.array([0.5])
    Q = np.eye(d)
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    for i in range(d - 1):  # Givens rotations by π/6 in the planes (i, i+1)
        G = np.eye(d)
        G[i, i], G[i, i + 1], G[i + 1, i], G[i + 1, i + 1] = c, -s, s, c
        Q = G @ Q
    cov = Q @ np.diag(eig) @ Q.T
    cov = 0.5 * (cov + cov.T)
    return gaussian_mixture(
        [1.0], [mean], [cov], name="gaussian", spec=_named_spec("gaussian", d),
        description=f"{d}-D anisotropic Gaussian: mean (1, −0.5, 0, …), rotated covariance "
                    f"with eigenvalues 0.5…2")


_BANANA_SIGMA = 2.0
_BANANA_B = 0.25


def _banana(d):
    sig, b = _BANANA_SIGMA, _BANANA_B
    log_norm = math.log(2.0 * math.pi * sig)  # N(0, σ²) × N(·, 1) normalizer

    def energy(x):
        """U = x0²/(2σ²) + ½(x1 − b(x0² − σ²))² + log(2πσ),  σ = 2, b = 0.25 (normalized)."""
        x0, x1 = x[0], x[1]
        return x0 ** 2 / (2 * sig ** 2) + 0.5 * (x1 - b * (x0 ** 2 - sig ** 2)) ** 2 + log_norm

    def sampler(key, n):
        k0, k1 = jax.random.split(key)
        x0 = sig * jax.random.normal(k0, (n,), _float_dtype())
        x1 = b * (x0 ** 2 - sig ** 2) + jax.random.normal(k1, (n,), _float_dtype())
        return jnp.stack([x0, x1], axis=1)

    return _jitted_target(
        name="banana", dim=2, energy=energy, spec=_named_spec("banana", d), log_z=0.0,
        sampler=sampler, evolved_sampler=_ou_evolved_sampler(sampler, 2),
        description="2-D banana (twisted Gaussian): x0 ~ N(0, 2²), x1 | x0 ~ N(0.25(x0² − 4), 1)")


def _dw_V(s):
    return 2.0 * (s * s - 1.0) ** 2


def _double_well(d):
    log_z = _log_z_1d(_dw_V, -6.0, 6.0, [-1.0, 0.0, 1.0]) + 0.5 * _LOG_2PI
    table = _inverse_cdf_table(_dw_V, -4.0, 4.0)

    def energy(x):
        """U = 2(x0² − 1)² + ½x1² (unnormalized)."""
        return 2.0 * (x[0] ** 2 - 1.0) ** 2 + 0.5 * x[1] ** 2

    def sampler(key, n):
        k0, k1 = jax.random.split(key)
        x0 = _sample_inverse_cdf(k0, (n,), table)
        x1 = jax.random.normal(k1, (n,), _float_dtype())
        return jnp.stack([x0, x1], axis=1)

    return _jitted_target(
        name="double-well", dim=2, energy=energy, spec=_named_spec("double-well", d),
        log_z=log_z, sampler=sampler, evolved_sampler=_ou_evolved_sampler(sampler, 2),
        modes=_frozen([[-1.0, 0.0], [1.0, 0.0]]), mode_weights=_frozen([0.5, 0.5]),
        description="2-D double well U = 2(x0² − 1)² + ½x1²: modes at (±1, 0), equal mass")


_FUNNEL_SIGMA = 3.0


def _funnel(d):
    sig = _FUNNEL_SIGMA
    c0 = 0.5 * math.log(2.0 * math.pi * sig ** 2)

    def energy(x):
        """U = x0²/(2σ²) + ½log(2πσ²) + Σ_{i≥1} [½x_i² e^{−x0} + ½x0 + ½log 2π],  σ = 3."""
        x0, rest = x[0], x[1:]
        return (x0 ** 2 / (2 * sig ** 2) + c0
                + 0.5 * jnp.exp(-x0) * jnp.sum(rest ** 2) + (d - 1) * 0.5 * (x0 + _LOG_2PI))

    grid = np.linspace(-6.0 * sig, 6.0 * sig, 1201)

    def evolved_log_density(t, x, mask=None):
        """log ρ_t(x) = log ∫ N(s; 0, σ²) N(x0; e^{−t}s, 1 − e^{−2t}) Π_{i≥1} N(x_i; 0, e^{−2t}e^s + 1 − e^{−2t}) ds:
        given the starting x0 = s the other coordinates stay independent Gaussians."""
        x = jnp.asarray(x)
        decay, added = _ou_factors(t, mask, d, x.dtype)
        rest, dr, ar = x[1:], decay[1:], added[1:]

        def log_f(s):
            s = jnp.asarray(s)[..., None]
            var = dr ** 2 * jnp.exp(s) + ar
            cond = -0.5 * jnp.sum(rest ** 2 / var + jnp.log(2 * jnp.pi * var), axis=-1)
            return cond - 0.5 * s[..., 0] ** 2 / sig ** 2 - c0
        return kernel_log_integral(x[0], decay[0], added[0], log_f, grid)

    def sampler(key, n):
        k0, k1 = jax.random.split(key)
        x0 = sig * jax.random.normal(k0, (n, 1), _float_dtype())
        rest = jnp.exp(0.5 * x0) * jax.random.normal(k1, (n, d - 1), _float_dtype())
        return jnp.concatenate([x0, rest], axis=1)

    return _jitted_target(
        name="funnel", dim=d, energy=energy, spec=_named_spec("funnel", d), log_z=0.0,
        sampler=sampler, evolved_sampler=_ou_evolved_sampler(sampler, d),
        evolved_log_density=evolved_log_density,
        description=f"{d}-D Neal's funnel: x0 ~ N(0, 3²), x_i | x0 ~ N(0, e^x0) for i ≥ 1")


def _mw_V(s):
    return s ** 4 - 6.0 * s ** 2 - 0.5 * s


def _many_well(d):
    if d % 2:
        raise TargetSpecError(f"many-well needs an even dim, got {d}")
    pairs = d // 2
    lo, hi = -8.0, 8.0
    crit = np.sort(np.roots([4.0, 0.0, -12.0, -0.5]).real)  # V'(s) = 4s³ − 12s − 0.5
    s_left, s_barrier, s_right = (float(c) for c in crit)
    log_z1 = _log_z_1d(_mw_V, lo, hi, [s_left, s_barrier, s_right])
    log_z = pairs * (log_z1 + 0.5 * _LOG_2PI)
    table = _inverse_cdf_table(_mw_V, -5.5, 5.5)

    modes = weights = None
    if d <= 8:
        vmin = float(_mw_V(s_right))
        mass_r, _ = integrate.quad(lambda s: math.exp(-(_mw_V(s) - vmin)), s_barrier, hi,
                                   points=[s_right], limit=500, epsabs=0.0, epsrel=1e-13)
        p_right = mass_r / math.exp(log_z1 + vmin)
        p = {s_left: 1.0 - p_right, s_right: p_right}
        modes, weights = [], []
        for combo in itertools.product((s_left, s_right), repeat=pairs):
            centre = np.zeros(d)
            centre[0::2] = combo
            modes.append(centre)
            weights.append(math.prod(p[c] for c in combo))

    def energy(x):
        """U = Σ_i [x_{2i}⁴ − 6x_{2i}² − 0.5x_{2i} + ½x_{2i+1}²] (unnormalized)."""
        a, b = x[0::2], x[1::2]
        return jnp.sum(a ** 4 - 6.0 * a ** 2 - 0.5 * a + 0.5 * b ** 2)

    grid = np.linspace(-4.0, 4.0, 401)   # e^{−V} < e^{−60} of its peak beyond |s| = 3.5

    def evolved_log_density(t, x, mask=None):
        """log ρ_t = Σ_pairs [log ∫ p(s) N(a; e^{−t}s, 1 − e^{−2t}) ds + log N(b; 0, 1)], p = e^{−V}/z₁:
        the pairs evolve independently and b ~ N(0, 1) is stationary; one 1-D quadrature per a."""
        x = jnp.asarray(x)
        decay, added = _ou_factors(t, mask, d, x.dtype)
        log_p = lambda s: -_mw_V(s) - log_z1  # noqa: E731
        wells = jax.vmap(lambda a, dc, ad: kernel_log_integral(a, dc, ad, log_p, grid))(
            x[0::2], decay[0::2], added[0::2])
        b = x[1::2]
        return jnp.sum(wells) - 0.5 * jnp.sum(b * b) - 0.5 * pairs * _LOG_2PI

    def sampler(key, n):
        k0, k1 = jax.random.split(key)
        a = _sample_inverse_cdf(k0, (n, pairs), table)
        b = jax.random.normal(k1, (n, pairs), _float_dtype())
        return jnp.stack([a, b], axis=2).reshape(n, d)

    return _jitted_target(
        name="many-well", dim=d, energy=energy, spec=_named_spec("many-well", d), log_z=log_z,
        sampler=sampler, evolved_sampler=_ou_evolved_sampler(sampler, d),
        evolved_log_density=evolved_log_density,
        modes=_frozen(modes), mode_weights=_frozen(weights),
        description=f"{d}-D ManyWell: {pairs} double-well pairs x⁴ − 6x² − 0.5x + ½y², "
                    f"2^{pairs} = {2 ** pairs} modes")


_BUILDERS = {
    "two-modes": _two_modes,
    "ring": _ring,
    "banana": _banana,
    "double-well": _double_well,
    "funnel": _funnel,
    "many-well": _many_well,
    "gaussian": _gaussian,
}


def _unknown_name_message(name, alternative: str = "") -> str:
    msg = f"unknown target {name!r} (valid names: {', '.join(NAMED_TARGETS)}{alternative})"
    close = difflib.get_close_matches(str(name), NAMED_TARGETS, n=1)
    if close:
        msg += f"; did you mean {close[0]!r}?"
    return msg


def named_target(name: str, dim: int | None = None) -> Target:
    """One of :data:`NAMED_TARGETS`, with optional dimension (funnel, many-well, gaussian).

    - ``two-modes``: 0.3 N((−2.5, 0), 0.5 I) + 0.7 N((2.5, 0), 0.5 I).
    - ``ring``: 8 equal-weight N(m_k, 0.2 I), m_k on the circle of radius 3.
    - ``banana``: x0 ~ N(0, 2²), x1 | x0 ~ N(0.25(x0² − 4), 1) (normalized).
    - ``double-well``: U = 2(x0² − 1)² + ½x1²; log Z by quadrature.
    - ``funnel``: x0 ~ N(0, 3²), x_i | x0 ~ N(0, e^{x0}) (default d = 10, normalized).
    - ``many-well``: Σ pairs x⁴ − 6x² − 0.5x + ½y² (default d = 8, even); log Z by quadrature;
      the 2^{d/2} modes with exact masses when d ≤ 8.
    - ``gaussian``: mean (1, −0.5, 0, …), rotated covariance, eigenvalues 0.5…2 (default d = 2).

    Raises:
        TargetSpecError: unknown name (the valid ones are listed) or an unsupported dim.
    """
    if not isinstance(name, str) or name not in _BUILDERS:
        raise TargetSpecError(_unknown_name_message(name))
    default, fixed = _NAMED_DIMS[name]
    if dim is None:
        d = default
    else:
        d = _check_dim(dim, "dim", lo=1)
        if fixed and d != default:
            raise TargetSpecError(f"target {name!r} is {default}-dimensional; got dim={d}")
        if name in ("funnel", "many-well") and d < 2:
            raise TargetSpecError(f"target {name!r} needs dim ≥ 2, got {d}")
        if name == "many-well" and d % 2:
            raise TargetSpecError(f"target 'many-well' needs an even dim, got {d}")
    return _named_cached(name, d)


@functools.lru_cache(maxsize=64)
def _named_cached(name: str, d: int) -> Target:
    return _BUILDERS[name](d)


# --------------------------------------------------------------------------- expressions


def target_from_expression(text: str, dim: int, name: str | None = None) -> Target:
    """Target with the user energy ``text`` in x0 … x{dim-1} (see :mod:`mne_core.expressions`).

    ``log_z``, samplers and the evolved density are unknown (``None``).  At construction the
    energy is evaluated at x = 0 and at 8 fixed random points; if it is not finite at any of
    them a :class:`TargetSpecError` is raised.  Parse errors raise
    :class:`ExpressionTargetError` (a TargetSpecError and an ExpressionError).
    """
    d = _check_dim(dim, "dim", lo=1)
    if name is not None and not isinstance(name, str):
        raise TargetSpecError(f"name must be a string, got {_short(name)}")
    try:
        expr = parse_expression(text, d)
    except ExpressionError as err:
        raise ExpressionTargetError(str(err), err.position, err.token) from err

    probes = np.concatenate([np.zeros((1, d)),
                             np.random.default_rng(0).normal(size=(8, d))], axis=0)
    values = np.asarray(jax.jit(jax.vmap(expr.energy))(jnp.asarray(probes)))
    if not np.isfinite(values).any():
        raise TargetSpecError(
            f"energy is not finite at x = 0 (U = {values[0]}) nor at 8 random points "
            f"(values {', '.join(f'{v:g}' for v in values[1:4])}, …)")

    spec = {"kind": "energy", "expression": text, "dim": d}
    if name is not None:
        spec["name"] = name
    shown = text if len(text) <= 80 else text[:77] + "..."
    return _jitted_target(name=name or "energy", dim=d, energy=expr.energy, spec=spec,
                  description=f"{d}-D user energy U(x) = {shown}")


# --------------------------------------------------------------------------- specs

_SPEC_KEYS = {
    "named": ({"kind", "name"}, {"dim"}),
    "standardized": ({"kind", "base", "shift", "scale"}, set()),
    "gaussian_mixture": ({"kind", "weights", "means", "covariances"}, {"name", "description"}),
    "energy": ({"kind", "expression", "dim"}, {"name"}),
}


def target_from_spec(spec: dict) -> Target:
    """Build a target from a JSON-able spec.

    Accepted forms::

        {"kind": "named", "name": "two-modes", "dim": 2}                  # dim optional
        {"kind": "gaussian_mixture", "weights": [...], "means": [[...]],
         "covariances": [[[...]]], "name": "..."}                          # name optional
        {"kind": "energy", "expression": "x0**2/2 + x1**2/2", "dim": 2}

    Raises:
        TargetSpecError: naming the bad field (ExpressionTargetError for a bad expression).
    """
    if not isinstance(spec, dict):
        raise TargetSpecError(f"target spec must be a JSON object (dict), got {type(spec).__name__}")
    if "kind" not in spec:
        raise TargetSpecError(f"target spec is missing 'kind' (one of: {', '.join(_SPEC_KEYS)})")
    kind = spec["kind"]
    if not isinstance(kind, str) or kind not in _SPEC_KEYS:
        raise TargetSpecError(f"unknown target kind {_short(kind)} (valid kinds: {', '.join(_SPEC_KEYS)})")
    required, optional = _SPEC_KEYS[kind]
    missing = sorted(required - set(spec))
    if missing:
        raise TargetSpecError(f"{kind} target spec is missing {', '.join(repr(k) for k in missing)}")
    unknown = sorted(set(map(str, spec)) - required - optional)
    if unknown:
        raise TargetSpecError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(repr(k) for k in unknown)} in "
            f"{kind} target spec (allowed: {', '.join(sorted(required | optional))})")

    if kind == "named":
        return named_target(spec["name"], spec.get("dim"))
    if kind == "standardized":
        return standardized_target(target_from_spec(spec["base"]), spec["shift"], spec["scale"])
    if kind == "energy":
        return target_from_expression(spec["expression"], spec["dim"], spec.get("name"))
    name = spec.get("name", "gaussian-mixture")
    if not isinstance(name, str):
        raise TargetSpecError(f"name must be a string, got {_short(name)}")
    description = spec.get("description")
    if description is not None and not isinstance(description, str):
        raise TargetSpecError(f"description must be a string, got {_short(description)}")
    return gaussian_mixture(spec["weights"], spec["means"], spec["covariances"], name=name,
                            description=description)


def target_from_json(text_or_path) -> Target:
    """Build a target from JSON text or from the path of a ``.json`` file holding a spec.

    A ``str`` whose first non-blank character is ``{`` is JSON text; any other ``str`` or a
    ``os.PathLike`` is a path.  Invalid JSON raises :class:`TargetSpecError` with line and column.
    """
    if isinstance(text_or_path, os.PathLike) or (
            isinstance(text_or_path, str) and not text_or_path.lstrip().startswith(("{", "["))):
        path = os.fspath(text_or_path)
        if not os.path.isfile(path):
            raise TargetSpecError(f"target file not found: {path}")
        try:
            text = pathlib.Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise TargetSpecError(f"cannot read target file {path}: {err}") from err
        source = path
    elif isinstance(text_or_path, str):
        text, source = text_or_path, "target spec"
    else:
        raise TargetSpecError(f"expected JSON text or a path, got {type(text_or_path).__name__}")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise TargetSpecError(
            f"invalid JSON in {source}: {err.msg} at line {err.lineno}, column {err.colno}") from err
    return target_from_spec(spec)


def resolve_target(target: str | None = None, energy: str | None = None,
                   dim: int | None = None) -> Target:
    """Target for the command line: a named target or ``.json`` spec path, or an energy + dim.

    Raises:
        TargetSpecError: both or neither of ``target``/``energy`` given, unknown name (the valid
            names are listed), missing file, ``dim`` missing with ``energy``, or a ``dim`` that
            contradicts the spec file.
    """
    if target is not None and energy is not None:
        raise TargetSpecError("give either a target (name or .json file) or an energy expression, not both")
    if target is None and energy is None:
        raise TargetSpecError(
            f"no target given: name one of {', '.join(NAMED_TARGETS)}, give the path of a .json "
            f"spec file, or an energy expression with its dim")
    if energy is not None:
        if dim is None:
            raise TargetSpecError("dim is required with an energy expression (e.g. --dim 2)")
        return target_from_expression(energy, dim)
    if not isinstance(target, (str, os.PathLike)):
        raise TargetSpecError(f"target must be a name or a path, got {type(target).__name__}")
    target = os.fspath(target)
    if target in _BUILDERS:
        return named_target(target, dim)
    if target.lower().endswith(".json") or "/" in target or os.sep in target or os.path.exists(target):
        if not os.path.isfile(target):
            raise TargetSpecError(f"target file not found: {target}")
        result = target_from_json(pathlib.Path(target))
        if dim is not None and int(dim) != result.dim:
            raise TargetSpecError(f"dim={dim} contradicts the {result.dim}-D target in {target}")
        return result
    raise TargetSpecError(_unknown_name_message(target, "; or the path of a .json spec file"))
