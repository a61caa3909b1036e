"""Diagnostics against exact answers: where accuracy is lost (design note §6).

    centred_rms(r) = sqrt(mean((r − mean r)²))          (energies are compared up to a constant)
    energy error at t = centred_rms(U_θ(t)(x) − U_t(x)),  x ~ ρ_t exact      (energy_error_fn)
    mode masses m_k = Σ_i w̄_i [x_i nearest to mode k]                       (mode_masses)
    their standard error (delta method for a ratio of sums; w̄ normalized weights)
        one importance-sampling set:  s.e.(m_k)² = Σ_i w̄_i² ([x_i in cell k] − m_k)²
        R independent particle groups with group weights W_r = Σ_{i∈r} w̄_i and masses m_{k,r}:
                                      s.e.(m_k)² = R/(R−1) Σ_r W_r² (m_{k,r} − m_k)²   (mode_mass_stderr)

The energy error needs exact samples of ρ_t and the exact U_t: Gaussian mixtures have both at
every t; targets with only exact samples of π (funnel, many-well) have it at t = 0
(:func:`target_energy_error`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .conditionals import exact_marginal_log_density
from .weights import normalized_weights


def centred_rms(r):
    """sqrt(mean((r − mean r)²)): the RMS of an energy difference up to its additive constant."""
    return jnp.sqrt(jnp.mean((r - jnp.mean(r)) ** 2))


@functools.lru_cache(maxsize=32)
def energy_error_fn(target, mask, net, dtype_name: str, n: int = 2000):
    """Jitted ``err(t, θ, key)``: ρ_t-weighted centred RMS of U_θ − U_t on ``n`` exact samples of
    ρ_t (common random numbers over t through ``key``); None if the target's OU evolution is
    not known exactly."""
    if target.evolved_sampler is None or target.evolved_log_density is None:
        return None
    m = None if mask is None else jnp.asarray(mask)

    @jax.jit
    def err(t, theta, key):
        xs = jnp.asarray(target.evolved_sampler(key, t, n, m), dtype_name)
        exact = -target.evolved_log_densities(t, xs, m)
        return centred_rms(net.energies(theta, xs) - exact)
    return err


def target_energy_error(run, n: int = 2000, seed: int = 0) -> float | None:
    """Centred RMS of U_θ(0) − U_0 on ``n`` exact samples of π (None without an exact sampler):
    the error of the model energy where the target's mass is, which bounds the importance weights'
    spread (ESS ≈ exp(−σ²) for a Gaussian log-weight error of spread σ)."""
    tgt = run.target
    if tgt.sampler is None:
        return None
    xs = np.asarray(tgt.sampler(jax.random.PRNGKey(seed), n))
    return float(centred_rms(jnp.asarray(run.energy(0.0, xs) - np.asarray(tgt.energies(jnp.asarray(xs))))))


def mode_labels(x, modes, coords=None) -> np.ndarray:
    """Index of the nearest mode of every point (Euclidean; on ``coords`` only when given)."""
    x = np.asarray(x)
    modes = np.asarray(modes)
    if coords is not None:
        x, modes = x[:, coords], modes[:, coords]
    d2 = ((x[:, None, :] - modes[None, :, :]) ** 2).sum(-1)
    return np.argmin(d2, axis=1)


def mode_masses(x, log_w, modes, coords=None) -> np.ndarray:
    """Weighted mass of the nearest-mode cells (Euclidean; on ``coords`` only when given)."""
    return np.bincount(mode_labels(x, modes, coords), weights=normalized_weights(log_w), minlength=len(modes))


def mode_mass_stderr(labels, log_w, n_modes: int, groups=1) -> np.ndarray:
    """Standard error of the weighted mode masses from the points' mode ``labels`` and log weights.

    ``groups = 1`` (one importance-sampling set): the delta method for the self-normalized
    estimate, s.e.(m_k)² = Σ_i w̄_i² ([label_i = k] − m_k)².  ``groups = R``: the points are R
    independent particle groups of equal size in order (or ``groups`` is every point's group index:
    groups of any sizes) — an SMC system; within a group resampling makes the
    particles dependent, so only the spread between groups counts — and s.e.(m_k)² =
    R/(R−1) Σ_r W_r² (m_{k,r} − m_k)² with W_r the group's share of the total weight.  Like any
    weighted error bar it means what it says only while the weights are healthy (the verdict)."""
    w = normalized_weights(log_w)
    onehot = np.asarray(labels)[:, None] == np.arange(int(n_modes))[None, :]
    m = w @ onehot
    if np.ndim(groups) == 0:
        R = int(groups)
        if R <= 1:
            return np.sqrt(np.sum(w[:, None] ** 2 * (onehot - m[None, :]) ** 2, axis=0))
        gid = np.repeat(np.arange(R), len(w) // R)
    else:   # each point's group index (groups of any sizes)
        gid = np.asarray(groups, dtype=np.int64)
        R = int(gid.max()) + 1
    W = np.bincount(gid, weights=w, minlength=R)
    m_r = np.stack([np.bincount(gid, weights=w * onehot[:, k], minlength=R) for k in range(onehot.shape[1])], 1)
    m_r = m_r / np.where(W > 0, W, 1.0)[:, None]
    return np.sqrt(R / (R - 1) * np.sum(W[:, None] ** 2 * (m_r - m[None, :]) ** 2, axis=0))


def label_masses(labels, log_w, n_modes: int, groups=1):
    """(weighted masses, their standard error (:func:`mode_mass_stderr`), unweighted masses) of
    the ``n_modes`` cells from the points' mode ``labels`` and log weights."""
    return (np.bincount(labels, weights=normalized_weights(log_w), minlength=n_modes),
            mode_mass_stderr(labels, log_w, n_modes, groups), np.bincount(labels, minlength=n_modes) / len(labels))


def exact_references(target, x, log_w, condition=None, fixed=(), free=(), groups=1):
    """What a weighted sample set (x, log_w) is compared with, where the target knows it:
    ``log_z_exact`` (log Z, or log π_Y(y*) + log Z for z | y = y*), the weighted and unweighted
    nearest-mode masses (on the free coordinates under a condition) with the weighted masses'
    standard error (``groups``: see :func:`mode_mass_stderr`) and the exact masses."""
    out = {"log_z_exact": None, "mode_masses": None, "mode_masses_stderr": None, "raw_mode_masses": None,
           "mode_masses_exact": None}
    if target.log_z is not None:
        if condition is None:
            out["log_z_exact"] = float(target.log_z)
        else:
            lp = exact_marginal_log_density(target, np.array([[condition[int(i)] for i in fixed]]), list(fixed))
            if lp is not None:
                out["log_z_exact"] = float(lp[0] + target.log_z)
    if target.modes is not None:
        coords = None if condition is None else np.asarray(free)
        out["mode_masses"], out["mode_masses_stderr"], out["raw_mode_masses"] = label_masses(
            mode_labels(x, target.modes, coords), log_w, len(target.modes), groups)
        if condition is None and target.mode_weights is not None:
            out["mode_masses_exact"] = np.asarray(target.mode_weights, float)
    return out


__all__ = ["centred_rms", "energy_error_fn", "target_energy_error", "mode_labels", "mode_masses", "mode_mass_stderr", "label_masses",
           "exact_references"]
