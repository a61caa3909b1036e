"""Starting without data: initial collocation points and the initial fit U_θ(0) ≈ U_0.

Only a formula for the target energy U_0 = −log π̃ is known.

1. :func:`tempered_points` — sequential Monte Carlo along the geometric path

       E_β(x) = (1 − β) |x|²/(2s²) + β U_0(x),     β: 0 → 1,

   from N(0, s²I): each stage picks the next β by bisection so that the effective sample
   size of the incremental weights  w_i = exp(−Δβ (U_0(x_i) − |x_i|²/(2s²)))  is half the
   particle count, resamples systematically, and moves the particles with MALA (step
   size adapted toward 57 % acceptance).  The particles at β = 1 approximate π; a copy
   moved by MALA on U_0/2 ("temperature 2", π^{1/2}) covers the tails, where the fit
   must also be accurate for the energy error under ρ_t to be small.
2. :func:`fit_energy` — least squares up to an additive constant,

       min_θ  mean_i (r_i − r̄)²,   r_i = U_θ(x_i) − U_0(x_i),

   first with Adam (optax, cosine-decayed learning rate), then Levenberg–Marquardt
   Gauss–Newton steps that use the same NTK solve as the evolution:
   δθ = J̃ᵀ (J̃J̃ᵀ + μ·tr/M · I)^{-1} r̃  with row-centred J̃, r̃ (the constant is free).
   The fit error on held-out points is reported: it enters the importance weights.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from blackjax.smc.ess import ess as blackjax_ess

from .config import WIDE_HEADROOM
from .diagnostics import centred_rms
from .solvers import jacobian
from .weights import systematic_resample


def _safe_energy(energy: Callable) -> Callable:
    """Energy with non-finite values mapped to +inf (zero density), batched."""
    def f(xs):
        u = jax.vmap(energy)(xs)
        return jnp.where(jnp.isfinite(u), u, jnp.inf)
    return f


def _value_and_grad(energy: Callable) -> Callable:
    def f(xs):
        u, g = jax.vmap(jax.value_and_grad(energy))(xs)
        bad = ~(jnp.isfinite(u) & jnp.all(jnp.isfinite(g), -1))
        return jnp.where(bad, jnp.inf, u), jnp.where(bad[:, None], 0.0, g)
    return f


def mala_sweep(key, x, energy_vg: Callable, log_step, n_steps: int, target_accept=0.574):
    """``n_steps`` MALA steps for all particles; the scalar step h = exp(log_step) adapts
    toward ``target_accept`` (Robbins–Monro on log h).  Proposal x' = x − h∇E + √(2h) ξ.
    Returns (x, log_step, mean acceptance)."""
    def body(carry, k):
        x, u, g, ls = carry
        h = jnp.exp(ls)
        xi = jax.random.normal(k, x.shape, x.dtype)
        y = x - h * g + jnp.sqrt(2 * h) * xi
        uy, gy = energy_vg(y)
        fwd = jnp.sum((y - x + h * g) ** 2, -1) / (4 * h)
        bwd = jnp.sum((x - y + h * gy) ** 2, -1) / (4 * h)
        log_a = -(uy - u) - bwd + fwd
        log_a = jnp.where(jnp.isfinite(log_a), log_a, -jnp.inf)
        acc = jnp.log(jax.random.uniform(jax.random.fold_in(k, 1), u.shape, x.dtype)) < log_a
        x = jnp.where(acc[:, None], y, x)
        u = jnp.where(acc, uy, u)
        g = jnp.where(acc[:, None], gy, g)
        rate = jnp.mean(acc.astype(x.dtype))
        ls = jnp.clip(ls + 0.5 * (rate - target_accept), -12.0, 2.0)
        return (x, u, g, ls), rate

    u, g = energy_vg(x)
    (x, u, g, log_step), rates = jax.lax.scan(body, (x, u, g, log_step), jax.random.split(key, n_steps))
    return x, log_step, jnp.mean(rates)


class PointsInfo(NamedTuple):
    betas: np.ndarray        # tempering schedule
    acceptance: np.ndarray   # MALA acceptance per stage
    log_z_estimate: float    # SMC estimate of log ∫e^{-U_0} (an independent cross-check of log Ẑ)
    x_wide: Any = None       # particles of the last stage with β ≤ wide_beta, else the first (cover gaps between modes)


@functools.lru_cache(maxsize=32)
def _tempering_fns(energy: Callable, s2: float, mala_steps: int):
    """Compiled pieces of :func:`tempered_points`, built once per (energy, s², steps) so that
    a new run on the same target does not recompile."""
    base = lambda x: 0.5 * jnp.sum(x * x) / s2
    u_safe = _safe_energy(energy)
    b_batch = jax.vmap(base)

    @jax.jit
    def incr(x):
        d = u_safe(x) - b_batch(x)
        return jnp.where(jnp.isfinite(d), d, jnp.inf).astype(x.dtype)   # a float64 energy on float32 points

    @jax.jit
    def next_beta(delta_e, beta):
        n = delta_e.shape[0]

        def ess_at(db):
            return blackjax_ess(-db * delta_e)
        lo, hi = jnp.zeros((), delta_e.dtype), 1.0 - beta
        ok_all = ess_at(hi) >= 0.5 * n

        def bis(_, lh):
            lo, hi = lh
            mid = 0.5 * (lo + hi)
            good = ess_at(mid) >= 0.5 * n
            return jnp.where(good, mid, lo), jnp.where(good, hi, mid)
        lo, hi = jax.lax.fori_loop(0, 50, bis, (lo, hi))
        return jnp.where(ok_all, 1.0 - beta, jnp.maximum(lo, 1e-6))

    vg_u = _value_and_grad(energy)

    @functools.partial(jax.jit, static_argnums=4)
    def move(key, x, beta, ls, temper):
        def vg(y):
            u, g = vg_u(y)
            ub = 0.5 * jnp.sum(y * y, -1) / s2
            e = temper * ((1 - beta) * ub + beta * u)
            de = temper * ((1 - beta) * y / s2 + beta * g)
            return e.astype(y.dtype), de.astype(y.dtype)   # float32 points keep float32 moves
        return mala_sweep(key, x, vg, ls, mala_steps)

    return incr, next_beta, move


INIT_SCALE = 3.0  # s: the tempering path starts at N(0, s² I)
BROAD_POWER = 0.5  # the broad half of the start points samples π^BROAD_POWER (temperature 1/BROAD_POWER)


def tempered_points(key, energy: Callable, dim: int, n: int, mala_steps: int = 30,
                    init_scale: float = INIT_SCALE, max_stages: int = 200, dtype=jnp.float64,
                    progress: Callable | None = None, wide_beta: float = 0.1):
    """Data-free approximate samples of π ∝ e^{−U_0} by tempered SMC with MALA moves.

    Returns (x_target (n, d), x_broad (n, d), PointsInfo): ``x_broad`` are samples of
    π^{1/2} ∝ e^{−U_0/2}, started from x_target; ``PointsInfo.x_wide`` the particles of the
    last stage with β ≤ ``wide_beta``, or of the first stage if it went beyond (∝ N(0, s²I)^{1−β} π^β: they fill the space between
    well-separated modes, which MALA from π's samples would not reach).
    """
    s2 = float(init_scale) ** 2
    incr, next_beta, move = _tempering_fns(energy, s2, int(mala_steps))
    key, k0 = jax.random.split(key)
    x = jnp.sqrt(s2) * jax.random.normal(k0, (n, dim), dtype)
    beta = jnp.zeros((), dtype)
    ls = jnp.asarray(np.log(0.1 * s2), dtype)
    betas, accs, log_z = [0.0], [], 0.5 * dim * np.log(2 * np.pi * s2)
    x_wide = None
    for stage in range(max_stages):
        de = incr(x)
        db = next_beta(de, beta)
        log_w = -db * de
        log_z += float(jax.scipy.special.logsumexp(log_w) - np.log(n))
        key, kr, km = jax.random.split(key, 3)
        x = x[systematic_resample(kr, log_w, n)]
        beta = jnp.minimum(beta + db, 1.0)
        x, ls, acc = move(km, x, beta, ls, 1.0)
        betas.append(float(beta))
        accs.append(float(acc))
        if x_wide is None or float(beta) <= wide_beta:   # the last stage with β ≤ wide_beta (else the first)
            x_wide = x
        if progress is not None:
            progress("tempering", float(beta))
        if float(beta) >= 1.0:
            break
    else:
        raise RuntimeError(f"tempering did not reach β = 1 in {max_stages} stages (β = {float(beta):.3g}); "
                           "the energy may be improper or extremely peaked")
    key, k1, k2 = jax.random.split(key, 3)
    x, ls, acc = move(k1, x, beta, ls, 1.0)                 # extra decorrelation at β = 1
    x_broad, _, _ = move(k2, x, beta, ls - float(np.log(BROAD_POWER)), BROAD_POWER)  # keep ls's dtype
    if not bool(jnp.all(jnp.isfinite(x))):
        raise RuntimeError("data-free start produced non-finite points; check the energy")
    return x, x_broad, PointsInfo(np.array(betas), np.array(accs), float(log_z), x_wide)


def broaden(key, energy: Callable, x, mala_steps: int = 30, power: float | None = None):
    """Move samples of π by MALA on power·U_0 (π^power, temperature 1/power; default
    :data:`BROAD_POWER`) to cover the tails; the same compiled move as the last stage of
    :func:`tempered_points`."""
    power = BROAD_POWER if power is None else float(power)
    move = _tempering_fns(energy, INIT_SCALE ** 2, int(mala_steps))[2]  # s² is unused at β = 1
    out, _, _ = move(key, x, jnp.ones((), x.dtype), jnp.asarray(np.log(0.1 / power), x.dtype), power)
    return out


class FitInfo(NamedTuple):
    train_rms: float      # centred RMS residual on the fit points
    heldout_rms: float    # centred RMS residual on held-out points (same distribution)
    adam_loss: np.ndarray  # loss history (every 50 Adam steps)
    gn_rms: np.ndarray     # RMS after each Gauss–Newton step
    wide_repaired: bool = False  # a second stage lifted a spurious well at the wide points


@functools.lru_cache(maxsize=32)
def _fit_fns(energies: Callable, energy: Callable, adam_steps: int, learning_rate: float,
             score_weight: float = 0.0):
    """Compiled pieces of :func:`fit_energy`, built once per network and schedule (the data
    are arguments, so a new run with the same shapes does not recompile)."""
    model_scores = jax.vmap(jax.grad(energy, argnums=1), (None, 0))

    def loss(th, x, u, xw, uw, g):
        r = energies(th, x) - u
        c = jnp.mean(r)
        # one-sided: only a model energy *below* U_0 − margin at a wide point (a spurious well,
        # up to the fitted constant c) costs; above U_0 it does not matter where π has no mass
        below = jax.nn.relu(wide_deficit(energies, th, c, xw, uw, WIDE_MARGIN))
        out = jnp.mean((r - c) ** 2) + jnp.sum(below ** 2) / max(xw.shape[0], 1)
        if score_weight > 0:     # Sobolev term: the gradients ∇U_θ − ∇U_0 at the fit points
            out = out + score_weight * jnp.mean(jnp.sum((model_scores(th, x) - g) ** 2, axis=-1))
        return out

    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, max(adam_steps, 1), 0.01))

    @jax.jit
    def chunk(th, st, x, u, xw, uw, gs):
        def body(c, _):
            th, st = c
            l, g = jax.value_and_grad(loss)(th, x, u, xw, uw, gs)
            upd, st = opt.update(g, st, th)
            return (optax.apply_updates(th, upd), st), l
        (th, st), ls = jax.lax.scan(body, (th, st), None, length=50)
        return th, st, ls[-1]

    @jax.jit
    def gn_step(th, mu, x, u, xw, uw):
        J = jacobian(energy, th, x)
        Jm = jnp.mean(J, 0)
        J = J - Jm
        r = energies(th, x) - u
        c = jnp.mean(r)
        r = r - c
        # the active one-sided rows of the wide points (see ``loss``) join the least squares
        h = wide_deficit(energies, th, c, xw, uw, WIDE_MARGIN)
        active = (h > 0).astype(J.dtype)
        Jw = -(jacobian(energy, th, xw) - Jm) * active[:, None]
        scale = jnp.sqrt(x.shape[0] / max(xw.shape[0], 1))   # rows weighted as in ``loss``
        J = jnp.concatenate([J, scale * Jw])
        r = jnp.concatenate([r, scale * jax.nn.relu(h)])
        K = J @ J.T
        lam = mu * jnp.trace(K) / K.shape[0]
        cho = jax.scipy.linalg.cho_factor(K + lam * jnp.eye(K.shape[0], dtype=K.dtype), lower=True)
        return th - J.T @ jax.scipy.linalg.cho_solve(cho, r)

    return opt, chunk, gn_step, jax.jit(loss)


#: The Gauss–Newton steps use at most this many of the fit points (an evenly strided subset):
#: their M×M Gram costs O(M² p), while Adam's cost is linear in the points, so more fit points
#: improve generalization (Adam) without making the refinement quadratic.
GN_MAX_POINTS = 1024


#: A wide point's model energy may sit this far below U_0 (after the fitted constant) for free…
WIDE_MARGIN = 1.0
#: …and need not rise above median(U_0 on the fit points) + WIDE_HEADROOM (imported from
#: :mod:`mne_core.config`: the default of the ``wide_headroom`` setting, raised by
#: :func:`mne_core.evolve`'s retry).
#: The one-sided stage runs only when the plain fit dips more than this below that cap somewhere.
WIDE_TRIGGER = 2.0


def fit_energy(energies: Callable, energy: Callable, theta, x_fit, u_fit, x_val, u_val,
               adam_steps: int = 1500, gn_steps: int = 30, learning_rate: float = 3e-3,
               progress: Callable | None = None, gn_max_points: int = GN_MAX_POINTS,
               x_wide=None, u_wide=None, wide_headroom: float = WIDE_HEADROOM, g_fit=None,
               score_weight: float = 0.0):
    """Fit U_θ to U_0 up to a constant: Adam then Levenberg–Marquardt (see module doc).

    Loss: mean (r − r̄)² over the fit points, r = U_θ − U_0, r̄ its mean (the free constant),
    plus, over optional *wide* points (far tails, between modes), the one-sided
    mean max(0, min(U_0, L) − WIDE_MARGIN − (U_θ − r̄))², L = median U_0 + ``wide_headroom``: the
    model may lie above U_0 there but not more than the margin below it, up to the level L
    beyond which it carries no mass (no spurious wells where π has none).  With ``score_weight``
    λ > 0 and ``g_fit`` = ∇U_0 at the fit points, the Sobolev term λ · mean |∇U_θ − ∇U_0|² joins the
    loss (d numbers a point instead of one: in high d the values alone are interpolated, not
    generalized — see :data:`mne_core.config.SCORE_FIT_DIM`).  Gauss–Newton steps still solve for the
    values only but are accepted on the whole loss.  The plain fit runs
    first; the one-sided stage (Adam + Gauss–Newton again, from there) only when
    :func:`wide_violation` exceeds ``WIDE_TRIGGER`` — benign targets keep the plain fit exactly.

    energies(θ, xs) -> (M,), energy(θ, x) -> scalar.  Returns (θ, FitInfo).  Adam uses every fit
    point; Gauss–Newton an evenly strided subset of at most ``gn_max_points`` (the loss it
    accepts steps on is still the full fit loss).  Gauss–Newton stops early after three steps
    without a 1 % improvement of the RMS.
    """
    score_weight = float(score_weight) if g_fit is not None else 0.0
    opt, chunk, gn_step, loss_j = _fit_fns(energies, energy, int(adam_steps), float(learning_rate), score_weight)
    gs = jnp.zeros((0,), x_fit.dtype) if score_weight == 0 else jnp.asarray(g_fit, x_fit.dtype)
    if x_wide is not None:  # the floor min(U_0, L) once, from all fit points
        u_wide = wide_floor(u_fit, u_wide, wide_headroom)
    no_wide = (x_fit[:0], u_fit[:0])
    theta, cur, hist, gn_hist = _fit_stage(opt, chunk, gn_step, loss_j, theta, x_fit, u_fit, *no_wide, gs,
                                           adam_steps, gn_steps, gn_max_points, progress)
    repaired = False
    if x_wide is not None and x_wide.shape[0] > 0 and wide_violation(energies, theta, x_fit, u_fit,
                                                                    x_wide, u_wide) > WIDE_TRIGGER:
        # a spurious well where π has no mass: refit from here with the one-sided rows
        theta, cur, hist2, gn2 = _fit_stage(opt, chunk, gn_step, loss_j, theta, x_fit, u_fit, x_wide, u_wide, gs,
                                            adam_steps, gn_steps, gn_max_points, progress)
        hist, gn_hist, repaired = np.concatenate([hist, hist2]), np.concatenate([gn_hist, gn2]), True
    heldout = float(centred_rms(energies(theta, x_val) - u_val))
    # the train RMS is of the values (the loss also holds the wide and, with λ > 0, the score terms)
    train = float(np.sqrt(cur)) if score_weight == 0 else float(centred_rms(energies(theta, x_fit) - u_fit))
    return theta, FitInfo(train, heldout, np.array(hist), np.array(gn_hist), repaired)


def wide_floor(u_fit, u_wide, headroom: float = WIDE_HEADROOM):
    """min(U_0, L) at the wide points, L = median(U_0 on the fit points) + ``headroom``: the level
    the model may not dip below there (``fit_energy``)."""
    return jnp.minimum(u_wide, jnp.median(u_fit) + headroom)


def wide_violation(energies: Callable, theta, x_fit, u_fit, x_wide, floor) -> float:
    """Largest max(0, floor − (U_θ − r̄)) over the wide points, ``floor`` = :func:`wide_floor`
    (``fit_energy``'s notation): how far below U_0 (capped at L) the model dips where π has no mass."""
    c = jnp.mean(energies(theta, x_fit) - u_fit)
    return float(jnp.max(jnp.maximum(wide_deficit(energies, theta, c, x_wide, floor, 0.0), 0.0)))


def wide_deficit(energies: Callable, theta, c, x_wide, floor, margin: float):
    """floor − margin − (U_θ − c) at the wide points, floor = min(U_0, L) (:func:`wide_floor`), c the
    fitted constant: positive where the model dips into a spurious well."""
    return floor - margin - (energies(theta, x_wide) - c)


def _fit_stage(opt, chunk, gn_step, loss_j, theta, x_fit, u_fit, x_wide, u_wide, gs, adam_steps, gn_steps,
               gn_max_points, progress):
    """Adam then Levenberg–Marquardt on ``fit_energy``'s loss: (θ, loss, Adam history, GN history)."""
    hist = []
    if adam_steps > 0:
        state = opt.init(theta)
        for i in range(0, adam_steps, 50):
            theta, state, l = chunk(theta, state, x_fit, u_fit, x_wide, u_wide, gs)
            hist.append(float(l))
            if progress is not None:
                progress("fit (Adam)", min(1.0, (i + 50) / adam_steps))

    mu, cur = 1e-3, float(loss_j(theta, x_fit, u_fit, x_wide, u_wide, gs))
    gn_hist = []
    stalls = 0
    stride = max(1, -(-x_fit.shape[0] // int(gn_max_points)))
    x_gn, u_gn = x_fit[::stride], u_fit[::stride]
    stride_w = max(1, -(-x_wide.shape[0] // max(1, int(gn_max_points) // 4)))
    xw_gn, uw_gn = x_wide[::stride_w], u_wide[::stride_w]
    for i in range(gn_steps):
        cand = gn_step(theta, mu, x_gn, u_gn, xw_gn, uw_gn)
        lc = float(loss_j(cand, x_fit, u_fit, x_wide, u_wide, gs))
        if np.isfinite(lc) and lc < cur:
            stalls = stalls + 1 if lc > 0.98 * cur else 0
            theta, cur, mu = cand, lc, max(mu / 3.0, 1e-12)
        else:
            stalls += 1
            mu = min(mu * 10.0, 1e6)
        gn_hist.append(np.sqrt(cur))
        if progress is not None:
            progress("fit (Gauss–Newton)", (i + 1) / gn_steps)
        if stalls >= 3:  # converged: three steps without a 1 % (in RMS) improvement
            break
    return theta, cur, np.array(hist), np.array(gn_hist)
