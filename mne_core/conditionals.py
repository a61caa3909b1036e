"""Conditionals and marginals from a run evolved with partial diffusion (design note §3, §5.4).

**Conditionals.**  A run evolved with partial diffusion of z (``diffuse`` = the z indices) keeps
y fixed, so the reverse z-flow with y held at y* samples z | y = y*: q is the exact conditional
model density and the weights against U_0(y*, z) give
log Ẑ = log ∫ e^{−U_0(y*, z)} dz = log π_Y(y*) + log Z.

**Marginals.**  Under partial diffusion the y-marginal never changes, and at T the z-part is
≈ N(0, I) independent of y, so U_T(y, z) ≈ |z|²/2 + (d_z/2) log 2π − log π_Y(y) − log Z and

    U_Y(y) = −log ∫ e^{−U_T(y, z)} dz = −log π_Y(y) − log Z   (exact identity at any T),

estimated by :func:`marginal_energy` with N(0, I) importance sampling over z (or the one-point
value U_T(y, 0) − (d_z/2) log 2π with ``n_z=0``).  The engine pins the additive constant of the
initial fit (U_θ(0) ≈ U_0 itself), so this holds with absolute values up to the fit and
evolution error; the conditional sampler's log Ẑ(y*) = log π_Y(y*) + log Z is the
bias-corrected alternative.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from .flow import LOG_2PI, SamplingError, run_mask

_T_INF = 40.0  # e^{-40} ~ 4e-18: the OU-evolved density at this time is the t → ∞ limit in float64




def parse_condition(text: str | None) -> dict[int, float] | None:
    """'0=1.5,2=-1' → {0: 1.5, 2: -1.0} (SamplingError on malformed input)."""
    if text is None:
        return None
    cond: dict[int, float] = {}
    parts = [p.strip() for p in str(text).split(",")]
    for p in parts:
        if "=" not in p:
            raise SamplingError(f"--condition must look like '0=1.5,2=-1' (index=value pairs); "
                                f"could not parse {p!r} in {text!r}")
        a, b = (s.strip() for s in p.split("=", 1))
        try:
            i = int(a)
        except ValueError:
            raise SamplingError(f"--condition: coordinate index must be an integer, got {a!r} in {text!r}") from None
        try:
            v = float(b)
        except ValueError:
            raise SamplingError(f"--condition: value must be a number, got {b!r} in {text!r}") from None
        if not math.isfinite(v):
            raise SamplingError(f"--condition: value for coordinate {i} must be finite, got {b!r}")
        if i in cond:
            raise SamplingError(f"--condition: coordinate {i} is given twice in {text!r}")
        cond[i] = v
    return cond


def normalize_condition(condition, d: int) -> dict[int, float] | None:
    if condition is None:
        return None
    if isinstance(condition, str):
        condition = parse_condition(condition)
    try:
        cond = {int(k): float(v) for k, v in dict(condition).items()}
    except (TypeError, ValueError) as e:
        raise SamplingError(f"condition must map coordinate indices to numbers, got {condition!r}") from e
    if not cond:
        raise SamplingError("condition is empty")
    bad = [i for i in cond if not 0 <= i < d]
    if bad:
        raise SamplingError(f"condition index {bad[0]} is out of range for a {d}-D target (valid: 0…{d - 1})")
    if len(cond) >= d:
        raise SamplingError(f"condition fixes all {d} coordinates; leave at least one to sample")
    for i, v in cond.items():
        if not math.isfinite(v):
            raise SamplingError(f"condition value for coordinate {i} must be finite, got {v}")
    return dict(sorted(cond.items()))


def check_run_for_condition(run, cond):
    """The conditioned coordinates must be exactly the ones the run held fixed."""
    d = run.target.dim
    diffuse = run.config.diffuse
    if cond is None:
        if diffuse is not None and sorted(diffuse) != list(range(d)):
            fixed = [i for i in range(d) if i not in diffuse]
            raise SamplingError(
                f"the run was evolved with partial diffusion (diffuse={list(diffuse)}), so it can only "
                f"sample conditionally: give a condition on the fixed coordinates {fixed} "
                f"(e.g. --condition \"{','.join(f'{i}=0' for i in fixed)}\")")
        return
    want = tuple(i for i in range(d) if i not in cond)
    if diffuse is None or tuple(sorted(diffuse)) != want:
        have = "all coordinates" if diffuse is None else f"diffuse={list(diffuse)}"
        raise SamplingError(
            f"conditioning on coordinates {sorted(cond)} needs a run evolved with partial diffusion "
            f"of the other coordinates (diffuse={list(want)}), but this run has {have}; "
            f"evolve with --diffuse {','.join(map(str, want))} (or use `sample` without --run and "
            f"with --condition, which sets it automatically)")




def exact_marginal_log_density(target, y, fixed) -> np.ndarray | None:
    """Exact log π_Y(y) (normalized) of the coordinates ``fixed`` when the target's OU evolution
    is known: under partial diffusion of the others, ρ_t(y, z) → π_Y(y) N(z; 0, I), so
    log π_Y(y) = log ρ_∞(y, 0) + (d_z/2) log 2π.  ``y``: (M, len(fixed)).  None if unknown."""
    if target.evolved_log_density is None:
        return None
    d = target.dim
    fixed = list(fixed)
    y = np.atleast_2d(np.asarray(y, np.float64))
    mask = np.array([i not in fixed for i in range(d)])
    d_z = int(mask.sum())
    x = np.zeros((y.shape[0], d))
    x[:, fixed] = y
    f = jax.jit(jax.vmap(lambda xi: target.evolved_log_density(_T_INF, xi, jnp.asarray(mask))))
    return np.asarray(f(jnp.asarray(x))) + 0.5 * d_z * LOG_2PI


def exact_conditional_density(target, condition, z, n_quad: int = 4001) -> np.ndarray | None:
    """The exact conditional density of the one free coordinate on the points ``z``:

        π(z | y = y*) = e^{−U₀(y*, z)} / ∫ e^{−U₀(y*, z')} dz',

    the normalizer by the trapezoid rule on ``n_quad`` points over a range that starts at
    [−12, 12] ∪ [min z, max z] and doubles (up to 5 times) until the density at both ends is below
    1e-12 of its peak.  None when more than one coordinate is free or U₀ is not finite there."""
    d = target.dim
    cond = normalize_condition(condition, d)
    free = [i for i in range(d) if cond is None or i not in cond]
    if cond is None or len(free) != 1:
        return None
    z = np.asarray(z, np.float64).ravel()

    def energies(values):
        x = np.zeros((values.size, d))
        for i, v in cond.items():
            x[:, i] = v
        x[:, free[0]] = values
        return np.asarray(target.energies(jnp.asarray(x)), np.float64)

    lo, hi = min(-12.0, float(z.min(initial=0.0))), max(12.0, float(z.max(initial=0.0)))
    for _ in range(6):
        grid = np.linspace(lo, hi, n_quad)
        u = energies(grid)
        if not np.isfinite(u).any():
            return None
        u_min = np.nanmin(u)
        dens = np.exp(-(u - u_min))
        if np.nan_to_num(dens[0]) < 1e-12 and np.nan_to_num(dens[-1]) < 1e-12:
            break
        mid, half = 0.5 * (lo + hi), hi - lo
        lo, hi = mid - half, mid + half
    norm = np.trapezoid(np.nan_to_num(dens), grid) if hasattr(np, "trapezoid") else np.trapz(np.nan_to_num(dens), grid)
    if not (np.isfinite(norm) and norm > 0):
        return None
    return np.exp(-(energies(z) - u_min)) / norm


def marginal_energy(run, y, n_z: int = 256, seed: int = 0, t: float | None = None) -> np.ndarray:
    """Marginal energy U_Y(y) = −log π_Y(y) − log Z (up to the model error) of the fixed
    (non-diffused) coordinates.

    From the evolved energy at time T (default: the run's final time):
    U_Y(y) = −log ∫ e^{−U_T(y, z)} dz, estimated by importance sampling with z ~ N(0, I)
    (``n_z`` draws, common to all y); ``n_z=0`` gives the one-point value
    U_T(y, 0) − (d_z/2) log 2π.  ``y``: (M, d_y) or (d_y,) → (M,), in the target's original
    coordinates also for a standardized run (x = shift + scale ⊙ y': y is mapped in, and the
    integral over the free coordinates picks up Σ_free log scale).
    """
    std = run.target.standardization
    if std is not None:
        m = run_mask(run)
        fixed_, free_ = np.flatnonzero(m == 0), np.flatnonzero(m == 1)
        y_std = (np.atleast_2d(np.asarray(y, np.float64)) - std.shift[fixed_]) / std.scale[fixed_]
        return _marginal_energy(run, y_std, n_z, seed, t) - std.log_det(free_)
    return _marginal_energy(run, y, n_z, seed, t)


def _marginal_energy(run, y, n_z, seed, t) -> np.ndarray:
    d = run.target.dim
    mask = run_mask(run)
    fixed = [i for i in range(d) if mask[i] == 0]
    free = [i for i in range(d) if mask[i] == 1]
    if not fixed:
        raise SamplingError("marginal_energy needs a run evolved with partial diffusion (--diffuse)")
    y = np.atleast_2d(np.asarray(y, np.float64))
    if y.shape[1] != len(fixed):
        raise SamplingError(f"y must have {len(fixed)} columns (coordinates {fixed}), got shape {y.shape}")
    t = run.T if t is None else float(t)
    d_z = len(free)
    if n_z == 0:
        x = np.zeros((y.shape[0], d))
        x[:, fixed] = y
        return run.energy(t, x) - 0.5 * d_z * LOG_2PI
    z = np.random.default_rng(seed).standard_normal((n_z, d_z))
    log_n = -0.5 * (z * z).sum(1) - 0.5 * d_z * LOG_2PI
    x = np.zeros((y.shape[0], n_z, d))
    x[:, :, fixed] = y[:, None, :]
    x[:, :, free] = z[None]
    u = run.energy(t, x.reshape(-1, d)).reshape(y.shape[0], n_z)
    lw = -u - log_n[None, :]
    return -np.asarray(logsumexp(jnp.asarray(lw), axis=1) - math.log(n_z))


__all__ = ["parse_condition", "normalize_condition", "check_run_for_condition", "exact_marginal_log_density",
           "exact_conditional_density",
           "marginal_energy"]
