"""Importance weights and what is estimated from them (design note §5.3).

For samples x_i from a proposal with exact density q and an unnormalized target π̃ = e^{−U_0}:

    log w_i = −U_0(x_i) − log q(x_i)                       (importance_weights)
    ESS = (Σ w)² / Σ w²                                     (effective_sample_size; BlackJAX's)
    log Ẑ = log( (1/M) Σ w_i ),   s.e. = std(w) / (√M · mean(w))      (log_z_estimate)
    k̂ = Pareto shape of the largest weights (PSIS, Vehtari et al.; ArviZ's ``psislw``)

The delta-method standard error of log Ẑ is only meaningful when the weights have a finite
variance; k̂ > 0.7 says the variance is (practically) infinite and the error bar cannot be
trusted (:func:`weight_diagnostics` turns that into a status).

Resampling (systematic, BlackJAX's; in order along the first principal axis to fewer points:
:func:`ordered_resample`) and independent Metropolis–Hastings with q as the proposal
(exact, since q is known) turn a weighted set into an unweighted one.
"""
from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc.ess import ess as _blackjax_ess
from blackjax.smc.resampling import systematic as _blackjax_systematic

from .status import Reason

#: PSIS thresholds (Vehtari et al. 2024): below 0.5 the IS estimate converges at the CLT rate;
#: up to 0.7 it is usable with care; above it the variance is effectively infinite.
PARETO_K_GOOD = 0.5
PARETO_K_BAD = 0.7
#: ESS below this fraction of the sample size is reported as a warning; below MIN_ESS samples
#: the estimate has collapsed.
LOW_ESS_FRACTION = 0.02
#: Weights this flat carry no tail for k̂ to measure: ESS fraction ≥ FLAT_ESS_FRACTION and the
#: largest weight ≤ FLAT_MAX_RATIO × the mean.  Their k̂ is a fit to noise (values of 0.6–2.3 were
#: measured at ESS 99.7 %) and is reported, not used for the verdict.
FLAT_ESS_FRACTION = 0.9
FLAT_MAX_RATIO = 2.0
MIN_ESS = 20.0


def importance_weights(log_target, log_q) -> np.ndarray:
    """log w = log π̃(x) − log q(x) = −U_0(x) − log q(x); non-finite values become −inf (w = 0)."""
    lw = np.asarray(log_target, np.float64) - np.asarray(log_q, np.float64)
    return np.where(np.isfinite(lw), lw, -np.inf)


def normalized_weights(log_w) -> np.ndarray:
    """w / Σ w from log weights (−inf → 0); all zeros if every weight is zero."""
    lw = np.asarray(log_w, np.float64)
    if not np.isfinite(lw).any():
        return np.zeros_like(lw)
    w = np.exp(lw - np.max(lw[np.isfinite(lw)]))
    w[~np.isfinite(lw)] = 0.0
    return w / w.sum()


def effective_sample_size(log_w) -> float:
    """Kish ESS = (Σw)²/Σw² of the (unnormalized) log weights (BlackJAX); 0 if every weight is 0."""
    lw = np.asarray(log_w, np.float64)
    if lw.size == 0 or not np.isfinite(lw).any():
        return 0.0
    return float(_blackjax_ess(jnp.asarray(np.where(np.isfinite(lw), lw, -np.inf))))


def log_z_estimate(log_w) -> tuple[float, float]:
    """(log Ẑ, standard error): log Ẑ = logmeanexp(log w), s.e. = std(w)/(√M · mean(w)), ddof=1."""
    lw = np.asarray(log_w, np.float64)
    M = lw.size
    if M == 0 or not np.isfinite(lw).any():
        return -math.inf, math.inf
    mx = np.max(lw[np.isfinite(lw)])
    w = np.where(np.isfinite(lw), np.exp(lw - mx), 0.0)
    mean = w.mean()
    log_z = float(mx + math.log(mean))
    se = float(np.std(w, ddof=1) / (math.sqrt(M) * mean)) if M > 1 else math.inf
    return log_z, se


def pareto_k(log_w) -> float:
    """Pareto-smoothed importance sampling shape k̂ of the weight tail (ArviZ ``psislw``);
    inf when fewer than two weights are finite."""
    lw = np.asarray(log_w, np.float64)
    good = lw[np.isfinite(lw)]
    if good.size < 2:
        return math.inf
    if np.ptp(good) == 0:
        return -math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from arviz import psislw
        _, k = psislw(good - good.max())
    return float(np.asarray(k))


def weight_diagnostics(log_w, pareto: bool = True) -> dict:
    """ESS, its fraction, Pareto k̂, the number of non-finite weights, and the (Reason, detail)
    failures and warnings they imply:

    * ESS < MIN_ESS samples or k̂ > PARETO_K_BAD: the estimate has collapsed — failed;
    * ESS fraction < LOW_ESS_FRACTION or k̂ > PARETO_K_GOOD: warning;
    * k̂ is not used when the weights are flat (ESS fraction ≥ FLAT_ESS_FRACTION and
      max w ≤ FLAT_MAX_RATIO · mean w): there is no tail to fit (``pareto_k_informative`` False).

    ``pareto=False`` skips k̂ (the weights of an SMC particle system after resampling are not
    one-shot importance weights; its error bar comes from independent groups instead)."""
    lw = np.asarray(log_w, np.float64)
    M = lw.size
    ess = effective_sample_size(lw)
    k = pareto_k(lw) if pareto else None
    n_bad = int((~np.isfinite(lw)).sum())
    failures, warns = [], []
    if ess < MIN_ESS:
        failures.append((Reason.WEIGHTS_COLLAPSED, f"ESS = {ess:.1f} of {M} samples"))
    elif ess / max(M, 1) < LOW_ESS_FRACTION:
        warns.append((Reason.LOW_ESS, f"ESS = {ess:.0f} of {M} ({100 * ess / M:.2g} %)"))
    flat = False
    if M and np.isfinite(lw).any():
        w = np.exp(lw[np.isfinite(lw)] - np.nanmax(lw[np.isfinite(lw)]))
        flat = ess / M >= FLAT_ESS_FRACTION and w.max() <= FLAT_MAX_RATIO * w.mean()
    if k is None or flat:
        pass
    elif k > PARETO_K_BAD:
        failures.append((Reason.PARETO_K, f"k̂ = {k:.2f} > {PARETO_K_BAD}"))
    elif k > PARETO_K_GOOD:
        warns.append((Reason.PARETO_K, f"k̂ = {k:.2f} > {PARETO_K_GOOD}"))
    if n_bad:
        warns.append((Reason.NONFINITE_WEIGHTS, f"{n_bad} of {M}"))
    return {"ess": ess, "ess_fraction": ess / max(M, 1), "pareto_k": k, "n_nonfinite": n_bad,
            "pareto_k_informative": k is not None and not flat, "failures": failures, "warnings": warns}


def systematic_resample(key, log_w, n: int | None = None):
    """Indices of a systematic resample of size n (default M), BlackJAX's
    ``smc.resampling.systematic``: i_k = F⁻¹((k + u)/n), u ~ U[0, 1); jittable.  Each index i
    appears ⌊n w_i⌋ or ⌈n w_i⌉ times (w normalized)."""
    lw = jnp.asarray(log_w)
    n = lw.shape[0] if n is None else int(n)
    return _blackjax_systematic(key, jax.nn.softmax(jnp.where(jnp.isfinite(lw), lw, -jnp.inf)), n)


def ordered_resample(key, x, log_w, n: int):
    """Indices of a systematic resample of size ``n`` taken in the order of the points along the
    weighted first principal axis v of (x, w) (the 1-D case of Hilbert-ordered resampling, Gerber,
    Chopin & Whiteley 2019): with s_i = (x_i − x̄_w)·v sorted, i_k = F⁻¹((k + u)/n) on the sorted
    cumulative weights.  Each point still appears ⌊n w_i⌋ or ⌈n w_i⌉ times, and the points of any
    interval of s (a mode separated along v) are drawn within ±1 of n times their weight."""
    x = np.asarray(x, np.float64)
    w = normalized_weights(log_w)
    mean = w @ x
    xc = x - mean
    cov = (xc * w[:, None]).T @ xc
    v = np.linalg.eigh(cov)[1][:, -1] if x.shape[1] > 1 else np.ones(1)
    order = np.argsort(xc @ v, kind="stable")
    idx = np.asarray(systematic_resample(key, np.asarray(log_w, np.float64)[order], n))
    return order[idx]


def independent_mh(key, log_w, n_steps: int | None = None, start: int = 0):
    """Independent Metropolis–Hastings with the flow proposal q (exact: q is known).

    The proposals are the samples themselves, taken in order; a move from x to x' is accepted
    with probability min(1, w(x')/w(x)).  Returns (indices (n_steps,), acceptance rate); the
    chain starts at sample ``start`` and visits proposals start+1, start+2, … (cyclically).
    """
    lw = np.asarray(log_w, np.float64)
    M = lw.size
    n_steps = M if n_steps is None else int(n_steps)
    log_u = np.log(np.asarray(jax.random.uniform(key, (n_steps,), jnp.float64)))
    idx = np.empty(n_steps, np.int64)
    cur = int(start)
    idx[0] = cur
    acc = 0
    for k in range(1, n_steps):
        prop = (start + k) % M
        if log_u[k] < lw[prop] - lw[cur] or (not np.isfinite(lw[cur]) and np.isfinite(lw[prop])):
            cur = prop
            acc += 1
        idx[k] = cur
    return idx, (acc / (n_steps - 1) if n_steps > 1 else 1.0)


__all__ = ["importance_weights", "normalized_weights", "effective_sample_size", "log_z_estimate", "pareto_k",
           "weight_diagnostics", "systematic_resample", "ordered_resample", "independent_mh", "PARETO_K_GOOD", "PARETO_K_BAD",
           "LOW_ESS_FRACTION", "MIN_ESS"]
