"""Sequential Monte Carlo along the learned MNE path: bias removal that cannot collapse.

Annealed flow transport (Arbel, Matthews & Doucet 2021; CRAFT, Matthews et al. 2022) with the
MNE probability flow as the transport and the learned energies as the intermediate targets.

Checkpoints T = t_K > … > t_1 > t_0 = 0 (t_K = min(T, PATH_START_UNSURE) on a run that did not
end ok: its model is worst late) and unnormalized targets

    γ_K = N(0, I)  (normalized),    γ_k = exp(−U_θ(t_k))  (0 ≤ k < K),

then an adaptive tempering bridge γ_β = exp(−(1 − β) U_θ(0) − β U_0), β: 0 → 1, to the
**exact** target energy U_0.  Particles start as x ~ N(0, I) and, between checkpoints, move by
the reverse probability flow Φ_k: x ↦ x′ from t_{k+1} to t_k, which also gives the exact log
Jacobian log|det ∂x′/∂x| = −Δ log q (:func:`mne_core.flow.run_flow`).  The incremental weight

    log w_k(x) = log γ_k(x′) + log|det ∂x′/∂x| − log γ_{k+1}(x)

is exact whatever the network error; the bridge's is −Δβ (U_0 − U_θ(0))(x).

Two transports: ``flow`` (above; the log-Jacobian costs d Hessian-vector products per particle
and step) and ``mcmc`` — annealed importance sampling along the learned path: the particles stay
and each transition γ_{k+1} → γ_k is itself an adaptive tempering γ_{k+1}^{1−β} γ_k^β with
increments −Δβ (U_θ(t_k) − U_θ(t_{k+1}))(x), Δβ the largest step whose conditional ESS
(:func:`conditional_ess`) stays above ``tempering_cess`` = 0.9 (gradients only; the path cannot
collapse, it only takes more steps where the model is poor).  ``auto`` uses the flow for d ≤ 8 when the run ended ok, annealing otherwise.  When the ESS drops
below ``ess_threshold`` the particles are resampled (systematic, BlackJAX), and after every
step they take ``mcmc_steps`` MALA moves (BlackJAX's kernel; 4× as many on a run that did not end
ok) invariant for the current γ, with
a step size adapted toward 57 % acceptance.  Because the model is only used as a proposal and
the final target is exact, log Ẑ = Σ_epochs log mean w is a consistent estimate of log Z.

**Error bar.**  The M particles run as R independent groups (own weights and resampling); Ẑ is
the mean of the group estimates Ẑ_r and its standard error is the between-group one,

    log Ẑ = log mean_r Ẑ_r,     s.e.(log Ẑ) = std_r(Ẑ_r) / (√R · mean_r Ẑ_r),

the SMC estimator's own variance (no delta method on one weight set).  The final weighted
sample set gives particle i of group r the weight Ẑ_r W_ri (W normalized within the group).

The verdict fails the estimate when a group's particle system degenerated (ESS of a few
particles at some stage), the final ESS is below a few samples, or one group carries the
estimate — the groups' own ESS (Σ_r Ẑ_r)² / Σ_r Ẑ_r² below ``GROUP_ESS_FAIL``: the Ẑ_r are then
heavy-tailed (most groups low, a rare one huge) and the between-group error bar, which saturates
at 1, means nothing.  It warns on low ESS, poor MCMC acceptance, a group ESS below R/2, a run
that did not end ok, or a log Z that disagrees with the data-free start's independent tempering
estimate by more than ``DISAGREE_WARN`` (by more than ``DISAGREE_FAIL`` it fails, and so it does when
the groups are uneven too on a run that did not end ok: :func:`estimate_checks`).  The
tolerance does not widen with the standard error: a wide error bar is no evidence of agreement.  [reconstructed: the MNE paper does not describe this sampler]
"""
from __future__ import annotations

import functools
import math
import time

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from scipy.special import logsumexp as sp_logsumexp

from .conditionals import check_run_for_condition, normalize_condition
from .diagnostics import exact_references, target_energy_error
from .flow import LOG_2PI, SamplingError, run_flow, run_mask
from .result import SampleResult, judge
from .status import Reason, Status
from .structure import radial_to_x
from .weights import effective_sample_size, ordered_resample, systematic_resample

#: Defaults of :func:`smc_sample` (documented there).
CHECKPOINTS = 16
MCMC_STEPS = 8
#: MALA moves per stage when the run did not end ``ok``: its learned path is further from the exact
#: one, so the moves must do more of the transport (blind mixtures, ``benchmarks/blind_mixtures.py
#: --seed 2``, the two runs that ended ``warning``: log Ẑ −0.095 ± 0.042 → +0.015 ± 0.019 (d = 16,
#: 5 components) and +0.069 ± 0.074 → +0.006 ± 0.071 (d = 20), sampling 22 → 70 s and 36 → 136 s).
MCMC_STEPS_UNSURE = 32
#: On a run that did not end ``ok`` the SMC path starts at t = min(T, PATH_START_UNSURE): the
#: particles go from N(0, I) straight to the model at the first checkpoint below it and skip the
#: late segment, where such a run's model is worst (its energy error grows with t) and where the
#: groups' estimates drew apart.  At t = 2 the OU process has contracted the target's means by
#: e^{−2} ≈ 0.14 and its covariances to within 2 % of I, so N(0, I) is close to ρ_t whatever the
#: model says.  Blind mixture d = 16, 5 components (seed 4, run ``warning``, energy error 2.1 at
#: t = 2.4 rising to 3.8 at T): the spread of the groups' log Ẑ_r rose from 0.03 to 0.36 between
#: t = 3.4 and 2.0 and stayed there; starting at 2: spread 0.06, log Ẑ +0.11 ± 0.14 → +0.038 ±
#: 0.022 with 4000 particles, in 1248 instead of 2144 moves a particle.
PATH_START_UNSURE = 2.0
GROUPS = 10
#: Groups for the flow transport (at most, ≥ 100 particles each): there the particles are rarely
#: resampled, so the estimate is the same for any grouping and more groups only make its
#: between-group error bar reliable (blind mixture d = 8, five SMC seeds: with 10 groups the bar
#: read 0.004–0.015 against errors up to 0.019; with 40 groups 0.010 every time).
FLOW_GROUPS = 40
#: Particles of the SMC system at least above MIN_PARTICLES_DIM dimensions, whatever the number of
#: samples asked for (fewer are then drawn from it, :func:`~mne_core.weights.ordered_resample`).
#: The estimates' noise is the system's: a d = 32 two-mode mixture (blind, seed 4, case 4; SMC
#: seeds 0–3) had mode-mass standard errors 0.012–0.015 and errors up to 0.024 with 4000
#: particles, 0.004–0.007 and ≤ 0.007 with 16 000 (log Ẑ errors up to 0.042 against 0.016), at
#: 11–16 s against 45–50 s.  In d ≤ 4 the learned path is accurate enough that a few thousand
#: particles give errors of 10⁻³ (the separated modes: ``benchmarks/separated.py``).  Where the path
#: is expensive (a d = 20 mixture, blind seed 4 case 3: 272 s for 4000 particles, 900 s not enough
#: for 16 000 in one system) the work budget below stops the growth.
MIN_PARTICLES = 16_000
MIN_PARTICLES_DIM = 4
#: Work budget of the SMC system in particle-moves (particles × MALA moves each, a deterministic
#: measure of its cost, so a seed gives the same system on every machine).  The first batch is the
#: n_samples particles asked for; the system then grows by more groups of the same size, up to
#: MIN_PARTICLES, as long as its total work stays within the budget.  One particle-move (a MALA
#: step of a width-128 network) costs 2–3 µs on 2 CPU cores for d = 16–64 on the mixtures
#: (``benchmarks/smc_moves.py``; 10–14 µs before the mixture energy became one matrix product), so
#: the budget is one to two minutes there; targets with a costly U_0 or network take longer.  A blind d = 16 mixture with 5 components whose run ended ``warning`` made 1280 moves
#: a particle (54 s for 4000 particles): the system grew to 16 000 (144 s more; log Ẑ +0.008 ±
#: 0.011, mode-mass error 0.012, against +0.010 ± 0.026 with 4000).  A d = 20 one (blind seed 4,
#: case 3) took 272 s for 4000 particles and stays at about that size.
SMC_WORK_BUDGET = 32_000_000
#: Particles per group of the second batch at least (a first batch of few samples has small groups).
MIN_GROW_GROUP = 100
ESS_THRESHOLD = 0.5
TEMPERING_CESS = 0.9
BRIDGE_MAX_STAGES = 400
#: Above this dimension the default transport is annealing (gradients only): the flow's exact
#: log-Jacobian costs d Hessian-vector products per particle and step.
FLOW_MAX_DIM = 8
#: SMC log Ẑ and the data-free start's tempering estimate further apart than this: warning …
DISAGREE_WARN = 0.5
#: … and further apart than this: failed.
DISAGREE_FAIL = 5.0
#: The groups' ESS (Σ Ẑ_r)² / Σ Ẑ_r² below this: one group carries the estimate (failed).
GROUP_ESS_FAIL = 2.0
#: A group whose ESS fell below this many particles at some stage has degenerated.
DEGENERATE_ESS = 3.0
#: Stage ESS fraction and MCMC acceptance below which the result gets a warning.
LOW_STAGE_ESS = 0.05
LOW_ACCEPTANCE = 0.15


def smc_particles(n_samples: int, dim: int, particles: int | None = None) -> int:
    """Particles of the SMC system planned for ``n_samples`` samples in ``dim`` dimensions:
    ``particles`` if given, else max(n_samples, MIN_PARTICLES) above MIN_PARTICLES_DIM and
    n_samples otherwise — never fewer than n_samples.  Beyond n_samples they run as a second
    batch as far as the work budget allows (:data:`SMC_WORK_BUDGET`, :func:`smc_sample`)."""
    if particles is not None:
        return max(int(n_samples), int(particles))
    return max(int(n_samples), MIN_PARTICLES) if int(dim) > MIN_PARTICLES_DIM else int(n_samples)


def default_path_start(T: float, run_ok: bool) -> float:
    """Where the SMC path starts (its model replaced by N(0, I)): T on a run that ended ok,
    min(T, PATH_START_UNSURE) on one that did not."""
    return float(T) if run_ok else min(float(T), PATH_START_UNSURE)


def checkpoint_times(T: float, K: int = CHECKPOINTS, t_min: float = 0.02) -> np.ndarray:
    """t_0 = 0 < t_1 < … < t_K = T: geometric from t_min (the density changes fastest near 0)."""
    if K < 1:
        raise SamplingError(f"checkpoints must be at least 1, got {K}")
    if K == 1:
        return np.array([0.0, float(T)])
    return np.concatenate([[0.0], np.geomspace(min(t_min, T / K), T, K)])


@functools.lru_cache(maxsize=32)
def path_kernels(net, target_energy, n_steps: int, d: int, mask_key: tuple | None):
    """Jitted pieces for one network and target: energies, the MALA sweeps, the bridge step."""
    mask = None if mask_key is None else jnp.asarray(mask_key)
    mala = blackjax.mala.build_kernel()

    m = jnp.ones((d,)) if mask is None else mask
    # moves in (x_R, log|x_G|) for the rotation-aware network with all coordinates free
    radial = getattr(net, "radial", None) if mask is None else None

    def model_energy(theta, x):
        return net.energy(theta, x)

    def pair_energy(theta_a, theta_b, ga, gb, x):
        """(E_a, E_b): E_a = ga·½|x|²_m + (1 − ga)·U_θa(x),  E_b = gb·U_0(x) + (1 − gb)·U_θb(x)
        (ga, gb ∈ {0, 1}: the Gaussian reference and the exact target are path ends)."""
        def exact(x):
            u0 = target_energy(x)
            return jnp.where(jnp.isfinite(u0), u0, jnp.inf).astype(x.dtype)

        e_a = ga * 0.5 * jnp.sum(m * x * x) + (1.0 - ga) * net.energy(theta_a, x)
        # a real branch (gb is never batched): along the path the target's energy is not evaluated
        e_b = jax.lax.cond(gb > 0, exact, lambda x: net.energy(theta_b, x).astype(x.dtype), x)
        return e_a, e_b

    def path_energy(theta_a, theta_b, ga, gb, beta, x):
        e_a, e_b = pair_energy(theta_a, theta_b, ga, gb, x)
        return jnp.where(beta >= 1.0, e_b, (1.0 - beta) * e_a + beta * e_b)

    def sweep(key, x, log_step, energy_fn):
        """``n_steps`` MALA steps of every particle on exp(−energy_fn(x)) (BlackJAX's kernel);
        the shared step size adapts toward 57 % acceptance (Robbins–Monro on its log).  Fixed
        coordinates (partial diffusion, conditioning) are held at their values: the density
        sees only the free ones, and the returned positions keep the fixed ones."""
        if radial is not None:
            return radial_sweep(key, x, log_step, energy_fn)
        x_fixed = x

        def logdensity(y, xf):
            z = y if mask is None else jnp.where(mask > 0, y, xf)
            v = -energy_fn(z)
            return jnp.where(jnp.isfinite(v), v, -jnp.inf)

        pos, log_step, rate = mala_scan(key, x, x_fixed, log_step, logdensity)
        pos = pos if mask is None else jnp.where(mask > 0, pos, x_fixed)
        return pos, log_step, rate

    def radial_sweep(key, x, log_step, energy_fn):
        """The MALA sweep for a rotation-invariant path (the rotation-aware network and a target whose
        U_0 is invariant under rotations of x_G): MALA on z = (x_R, ρ = log|x_G|) with density
        e^{−E(x(z, u)) + kρ}, each particle's direction u = x_G/|x_G| held (every γ along the path leaves
        it uniform), so the kernel leaves e^{−E(x)} invariant.  The funnel's neck is a ridge in z and
        a width-e^{x0/2} cone in x, which MALA with one step size cannot enter."""
        rest, group = radial
        k = len(group)
        r = jnp.linalg.norm(x[:, jnp.asarray(group)], axis=1)
        z = jnp.concatenate([x[:, jnp.asarray(rest)], jnp.log(r)[:, None]], axis=1)
        u = x[:, jnp.asarray(group)] / r[:, None]

        def logdensity(zz, ui):
            v = -energy_fn(radial_to_x(zz, ui, d, rest, group)) + k * zz[-1]
            return jnp.where(jnp.isfinite(v), v, -jnp.inf)

        z, log_step, rate = mala_scan(key, z, u, log_step, logdensity)
        return radial_to_x(z, u, d, rest, group), log_step, rate

    def mala_scan(key, positions, aux, log_step, logdensity):
        """``n_steps`` MALA steps of every particle on exp(logdensity(position, its aux)) (BlackJAX's
        kernel), one shared step size adapted toward 57 % acceptance (Robbins–Monro on its log).
        Returns (positions, log step, mean acceptance)."""
        states = jax.vmap(lambda p, a: blackjax.mala.init(p, functools.partial(_swap, logdensity, a)))(positions, aux)

        def body(carry, k):
            states, ls = carry
            keys = jax.random.split(k, positions.shape[0])
            step = jnp.exp(ls)
            states, info = jax.vmap(lambda kk, st, a: mala(kk, st, functools.partial(_swap, logdensity, a), step))(
                keys, states, aux)
            rate = jnp.mean(jnp.where(jnp.isfinite(info.acceptance_rate), info.acceptance_rate, 0.0))
            ls = jnp.clip(ls + 0.6 * (rate - 0.574), -14.0, 3.0)
            return (states, ls), rate

        (states, log_step), rates = jax.lax.scan(body, (states, log_step), jax.random.split(key, n_steps))
        return states.position, log_step, jnp.mean(rates)

    @jax.jit
    def path_sweep(key, x, log_step, theta_a, theta_b, ga, gb, beta):
        return sweep(key, x, log_step, functools.partial(path_energy, theta_a, theta_b, ga, gb, beta))

    pair_energies = jax.jit(jax.vmap(pair_energy, (None, None, None, None, 0)))
    energies = jax.jit(jax.vmap(model_energy, (None, 0)))

    return energies, pair_energies, path_sweep


def _swap(logdensity, xf, y):
    return logdensity(y, xf)


def _group_ess(logw):
    """ESS of each group's weights (R, m) → (R,)."""
    w = jax.nn.softmax(jnp.asarray(logw), axis=1)
    return np.asarray(1.0 / jnp.sum(w * w, axis=1))


def conditional_ess(logw, delta, db):
    """Mean over groups of the conditional ESS fraction of the increments exp(−Δβ·δ) (Zhou,
    Johansen & Aston 2016):  CESS = (Σ_i W_i e^{−Δβ δ_i})² / Σ_i W_i e^{−2Δβ δ_i} ∈ (0, 1],
    W the current normalized weights of a group (logw, delta: (R, m)).  NumPy on the host: the
    bisection in :func:`next_beta` calls it 40 times a tempering step."""
    logw = np.asarray(logw, np.float64)
    delta = np.asarray(delta, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        lw = logw - sp_logsumexp(logw, axis=1, keepdims=True)
        a = sp_logsumexp(lw - db * delta, axis=1)
        b = sp_logsumexp(lw - 2.0 * db * delta, axis=1)
        return float(np.mean(np.exp(np.where(np.isfinite(b), 2.0 * a - b, -np.inf))))


def next_beta(logw, delta, beta, target_cess):
    """Largest Δβ ≤ 1 − β whose mean conditional ESS fraction is ≥ target_cess (bisection)."""
    logw = np.asarray(logw, np.float64)
    logw = logw - sp_logsumexp(logw, axis=1, keepdims=True)     # normalize once, not at every bisection step

    def ess_at(db):
        return conditional_ess(logw, delta, db)
    hi = 1.0 - beta
    if ess_at(hi) >= target_cess:
        return hi
    lo = 0.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if ess_at(mid) >= target_cess:
            lo = mid
        else:
            hi = mid
    return max(lo, 1e-7)


def pool_groups(log_z_groups) -> tuple[float, float, float]:
    """(log Ẑ, s.e., group ESS) of R independent group estimates log Ẑ_r:

        log Ẑ = log mean_r Ẑ_r,   s.e. = std_r(Ẑ_r) / (√R mean_r Ẑ_r),   ESS_g = (Σ Ẑ_r)² / Σ Ẑ_r²

    (non-finite groups count as Ẑ_r = 0; the s.e. saturates at 1 when one group carries Ẑ)."""
    g = np.asarray(log_z_groups, dtype=np.float64)
    finite = np.isfinite(g)
    if not finite.any():
        return -math.inf, math.inf, 0.0
    mx = np.max(g[finite])
    zr = np.where(finite, np.exp(np.where(finite, g, mx) - mx), 0.0)
    R = len(g)
    log_z = float(mx + math.log(zr.mean()))
    se = float(np.std(zr, ddof=1) / (math.sqrt(R) * zr.mean())) if R > 1 else math.inf
    return log_z, se, float(np.sum(zr) ** 2 / np.sum(zr * zr))


def group_checks(log_z_groups) -> tuple[list, list]:
    """(failures, warnings) from the spread of the group estimates: a NaN or +∞ group fails; with
    R ≥ 4 groups, one group carrying Ẑ (group ESS < GROUP_ESS_FAIL) fails — the Ẑ_r are
    heavy-tailed and the error bar means nothing — and a group ESS below R/2 warns.  (With fewer
    groups their spread says too little to judge; a dead group, −∞, counts as Ẑ_r = 0.)"""
    g = np.asarray(log_z_groups, dtype=np.float64)
    R = len(g)
    bad = int(np.sum(np.isnan(g) | (g == np.inf)))
    if bad:
        return [(Reason.SMC_DEGENERATE, f"{bad} of the {R} particle groups' estimates are not finite")], []
    log_z, _, group_ess = pool_groups(g)
    if R < 4 or not math.isfinite(log_z):
        return [], []
    top = float(np.exp(np.max(g) - log_z) / R)  # the largest group's share of Σ Ẑ_r (g has no NaN, +∞)
    if group_ess < GROUP_ESS_FAIL:
        return [(Reason.SMC_DEGENERATE, f"one of the {R} independent particle groups carries {100 * top:.0f} % of "
                                        f"Ẑ (group ESS {group_ess:.1f}): the error bar does not hold")], []
    if group_ess < R / 2:
        return [], [(Reason.LOW_ESS, f"the {R} particle groups' estimates are uneven (group ESS {group_ess:.1f}): "
                                     "the error bar is uncertain")]
    return [], []


def estimate_checks(log_z_groups, log_z_reference: float | None, run_ok: bool) -> tuple[list, list]:
    """(failures, warnings) of the pooled estimate: :func:`group_checks`, then its agreement with
    an independent estimate ``log_z_reference`` (the data-free start's tempering; None: not checked).

    Apart by more than DISAGREE_WARN: a warning; by more than DISAGREE_FAIL — two independent
    estimates a factor > e^5 apart, one of them grossly wrong and nothing says which — a failure.
    Also a failure: apart by more than DISAGREE_WARN while the groups' estimates are uneven
    (group ESS < R/2) on a run that did not end ok.  Each of the three is a warning alone;
    together they are how a wrong estimate looked (funnel-10 on a drifted path: log Ẑ −2.06 ± 0.39
    against an exact 0, tempering −0.02, group ESS 4.3 of 10, run ``warning``), and its error bar
    cannot be stood behind."""
    failures, warnings = group_checks(log_z_groups)
    log_z = pool_groups(log_z_groups)[0]
    if log_z_reference is None or not math.isfinite(log_z) or abs(log_z - log_z_reference) <= DISAGREE_WARN:
        return failures, warnings
    gap = abs(log_z - log_z_reference)
    uneven = any(r == Reason.LOW_ESS for r, _ in warnings)
    detail = f"SMC log Ẑ = {log_z:.3f}, data-free tempering {log_z_reference:.3f}"
    if gap > DISAGREE_FAIL:
        failures.append((Reason.ESTIMATES_DISAGREE, detail))
    elif uneven and not run_ok:
        failures.append((Reason.ESTIMATES_DISAGREE, detail + "; with uneven groups on a run that did not end ok, "
                                                             "the estimate cannot be trusted"))
    else:
        warnings.append((Reason.ESTIMATES_DISAGREE, detail))
    return failures, warnings


def smc_sample(run, n_samples: int = 10000, seed: int = 0, condition=None, resample: bool = False,
               checkpoints: int | None = None, mcmc_steps: int | None = None, groups: int | None = None,
               path_start: float | None = None,
               particles: int | None = None,
               ess_threshold: float = ESS_THRESHOLD, tempering_cess: float = TEMPERING_CESS,
               rtol: float = 1e-6, atol: float = 1e-8,
               max_steps: int = 16384, bridge_max_stages: int = BRIDGE_MAX_STAGES, transport: str = "auto",
               work_budget: float = SMC_WORK_BUDGET, progress=None):
    """SMC along the path of ``run`` (see module doc); returns a :class:`~mne_core.sampling.SampleResult`
    with ``method="smc"`` and per-stage diagnostics in ``smc_info``.

    The system: a first batch of ``n_samples`` particles in ``groups`` independent groups
    (rounded down to a multiple; default GROUPS, for the flow transport up to FLOW_GROUPS with
    ≥ 100 particles each), then — if that batch did not degenerate — a second batch of more groups
    (of the same size, at least MIN_GROW_GROUP) up to ``particles`` in all (default
    :func:`smc_particles`) as far as the total work, particles × MALA moves each, stays within
    ``work_budget`` (the first batch's moves per particle measure it; ``smc_info["batches"]``).
    The groups of both batches are independent estimates and are pooled.
    log Ẑ, its error bar, the ESS and the mode masses are the system's;
    when it holds more particles than ``n_samples``, the samples returned are ``n_samples`` of
    them, resampled in order along the first principal axis (equal log weights log Ẑ;
    ``raw_samples`` / ``raw_log_weights`` are the whole weighted system), as with ``resample``;
    ``checkpoints`` K flow segments between ``path_start`` (the time whose model is replaced by
    N(0, I); default T for a run that ended ok, min(T, PATH_START_UNSURE) otherwise) and 0;
    ``mcmc_steps`` MALA moves per stage (default MCMC_STEPS for a
    run that ended ok, MCMC_STEPS_UNSURE otherwise); resampling when a
    group's ESS < ``ess_threshold``·m; tempering steps Δβ with conditional ESS ``tempering_cess``
    (0.9: against Δβ chosen by the accumulated ESS ≥ 0.5, the group log Ẑ spread fell from
    0.37 to 0.16–0.20 on a 5-component d = 16 mixture and from 0.11 to 0.08 on a d = 20 one, at
    1.3–2× the time; 0.97 or more MALA steps gave no further gain).  ``condition`` works as in
    :func:`mne_core.sample` (the chains then move only the free coordinates).  ``transport``: ``"flow"`` moves the
    particles between checkpoints by the reverse probability flow (exact log-Jacobian, d
    Hessian-vector products per particle and step); ``"mcmc"`` leaves them in place (annealed
    importance sampling along the learned path, gradients only — cheaper in high d, needs more
    checkpoints); ``"auto"``: flow for d ≤ FLOW_MAX_DIM, else mcmc.  ``checkpoints`` default:
    CHECKPOINTS (flow) or 2·CHECKPOINTS (mcmc).
    """
    if transport == "auto":
        # the flow's one-shot transition weights need an accurate model; a run that did not end
        # ok (energy error grew, singular steps) is annealed instead, which adapts to it
        transport = "flow" if run.target.dim <= FLOW_MAX_DIM and Status(run.status) == Status.OK else "mcmc"
    if transport not in ("flow", "mcmc"):
        raise SamplingError(f"transport must be 'flow', 'mcmc' or 'auto', got {transport!r}")
    if checkpoints is None:
        checkpoints = CHECKPOINTS if transport == "flow" else 2 * CHECKPOINTS
    if mcmc_steps is None:
        mcmc_steps = MCMC_STEPS if Status(run.status) == Status.OK else MCMC_STEPS_UNSURE
    t_start = time.perf_counter()
    tgt, net = run.target, run.net
    d = tgt.dim
    n_out = int(n_samples)
    n_particles = smc_particles(n_out, d, particles)
    # the first batch is the n_out asked for; the rest of the system runs as a second batch of
    # groups (of the same size, at least MIN_GROW_GROUP particles) within the work budget
    if groups is None:
        groups = GROUPS if transport != "flow" else max(GROUPS, min(FLOW_GROUPS, n_out // 100))
    R1 = max(1, int(groups))
    m = n_out // R1
    if m < 2:
        raise SamplingError(f"n_samples = {n_out} is too small for {R1} groups "
                            "(need ≥ 2 particles per group)")
    cond = normalize_condition(condition, d)
    check_run_for_condition(run, cond)
    mask = run_mask(run)
    free = np.flatnonzero(mask == 1)
    fixed = np.flatnonzero(mask == 0)
    d_free = len(free)
    mask_key = None if len(fixed) == 0 else tuple(float(v) for v in mask)
    energies, pair_energies, path_sweep = path_kernels(net, tgt.energy, int(mcmc_steps), d, mask_key)
    dtype = run.thetas.dtype
    c_gauss = 0.5 * d_free * LOG_2PI                  # γ_K = N(0, I) on the free coordinates, normalized
    if path_start is None:
        path_start = default_path_start(run.T, Status(run.status) == Status.OK)
    if not 0.0 < float(path_start) <= run.T:
        raise SamplingError(f"path_start must be in (0, T = {run.T:g}], got {path_start}")
    times = checkpoint_times(float(path_start), int(checkpoints))
    n_stage_total = len(times) - 1
    one, zero = jnp.asarray(1.0, dtype), jnp.asarray(0.0, dtype)

    def system(key, R, m, label):
        """R independent groups of m particles along the path and the bridge (module doc)."""
        t_sys = time.perf_counter()
        M = R * m
        key, k0 = jax.random.split(key)
        z = np.asarray(jax.random.normal(k0, (M, d_free), dtype))
        x = np.zeros((M, d), dtype)
        x[:, free] = z
        if cond is not None:
            x[:, fixed] = np.array([cond[int(i)] for i in fixed])
        log_z_groups = np.zeros(R)
        st = {"x": x, "logw": np.zeros((R, m)), "log_step": jnp.asarray(math.log(0.5 / max(d_free, 1) ** (1 / 3)), dtype),
              "key": key, "min_ess": float(m), "flow_steps": 0, "flow_seconds": 0.0, "sweeps": 0}
        stages = []

        def group_log_z(logw):
            """log Ẑ_r of every group so far: the resampled epochs plus log mean of the current weights."""
            return log_z_groups + np.asarray(logsumexp(jnp.asarray(logw), axis=1)) - math.log(m)

        def resample_if_needed(info):
            ess = _group_ess(st["logw"])
            info["ess"] = float(np.mean(ess) / m)
            info["ess_min"] = min(info.get("ess_min", 1.0), float(np.min(ess) / m))
            st["min_ess"] = min(st["min_ess"], float(np.min(ess)))
            if np.any(ess < ess_threshold * m):
                st["key"], kr = jax.random.split(st["key"])
                keys = jax.random.split(kr, R)
                idx = np.asarray(jax.vmap(lambda k, lw: systematic_resample(k, lw, m))(keys, jnp.asarray(st["logw"])))
                log_z_groups[:] += np.asarray(logsumexp(jnp.asarray(st["logw"]), axis=1)) - math.log(m)
                st["x"] = np.take_along_axis(st["x"].reshape(R, m, d), idx[:, :, None], axis=1).reshape(M, d)
                st["logw"] = np.zeros((R, m))
                info["resampled"] = info.get("resampled", 0) + 1

        def move(theta_a, theta_b, ga, gb, beta, info):
            st["key"], km = jax.random.split(st["key"])
            x_j, st["log_step"], acc = path_sweep(km, jnp.asarray(st["x"]), st["log_step"], theta_a, theta_b, ga, gb,
                                                  jnp.asarray(beta, dtype))
            st["x"] = np.asarray(x_j)
            st["sweeps"] += 1
            info["acceptance"] = min(info.get("acceptance", 1.0), float(acc))

        def anneal(theta_a, ga, theta_b, gb, c_a, info):
            """Adaptive tempering from γ_a = exp(−E_a − c_a) to γ_b = exp(−E_b) (see pair_energy):
            each step takes the largest Δβ with mean conditional ESS ≥ tempering_cess, adds
            −Δβ (E_b − E_a − c_a) to the log weights, resamples when needed and moves by MALA on the
            intermediate energy.  Returns True when β reached 1."""
            beta, n_sub = 0.0, 0
            while beta < 1.0 and n_sub < int(bridge_max_stages):
                e_a, e_b = pair_energies(theta_a, theta_b, ga, gb, jnp.asarray(st["x"]))
                delta = (np.asarray(e_b, np.float64) - np.asarray(e_a, np.float64) - c_a).reshape(R, m)
                delta = np.where(np.isfinite(delta), delta, np.inf)     # a non-finite energy: zero density
                # the step size sees a huge finite value instead: a group whose every particle dies
                # then has a uniform increment (conditional ESS 1) rather than 0/0, and cannot stall β
                db = next_beta(st["logw"], np.where(np.isfinite(delta), delta, 1e300), beta, tempering_cess)
                with np.errstate(invalid="ignore"):
                    lw = st["logw"] - db * delta
                st["logw"] = np.where(np.isfinite(lw), lw, -np.inf)
                beta = min(1.0, beta + db)
                resample_if_needed(info)
                move(theta_a, theta_b, ga, gb, beta, info)
                n_sub += 1
            info["substeps"] = n_sub
            return beta >= 1.0

        # ---------------------------------------------------------------- along the learned path
        theta_prev = None                                  # None: the Gaussian reference γ_K
        for j, k in enumerate(range(len(times) - 2, -1, -1)):
            t_hi, t_lo = float(times[k + 1]), float(times[k])
            theta = jnp.asarray(run.theta(t_lo))
            info = {"t": t_lo}
            if transport == "flow":
                x_old = st["x"]
                log_gamma_prev = (-0.5 * np.sum(mask * x_old * x_old, 1) - c_gauss if theta_prev is None
                                  else -np.asarray(energies(theta_prev, jnp.asarray(x_old))))
                tf = time.perf_counter()
                fl = run_flow(run, x_old, np.zeros(M), mask, rtol=rtol, atol=atol, max_steps=max_steps, T=t_hi, t_end=t_lo)
                st["flow_seconds"] += time.perf_counter() - tf
                if not fl.ok:
                    raise SamplingError(fl.message + f" between t = {t_hi:.3g} and {t_lo:.3g}; try a larger max_steps "
                                        "or rtol")
                st["flow_steps"] += fl.num_steps
                # run_flow integrates d log q along the flow: log q(x′) = log q(x) − log|det ∂x′/∂x|,
                # so log|det ∂x′/∂x| = −Δ log q = −fl.log_q (started from 0).
                inc = -np.asarray(energies(theta, jnp.asarray(fl.x))) - fl.log_q - log_gamma_prev
                st["x"] = np.asarray(fl.x)
                st["logw"] = st["logw"] + np.where(np.isfinite(inc), inc, -np.inf).reshape(R, m)
                resample_if_needed(info)
                move(theta, theta, zero, zero, 1.0, info)
                ok = True
            else:  # annealing: the particles stay, the target moves from γ_{k+1} to γ_k adaptively
                ok = anneal(theta if theta_prev is None else theta_prev, one if theta_prev is None else zero,
                            theta, zero, c_gauss if theta_prev is None else 0.0, info)
            info["group_log_z_std"] = float(np.std(group_log_z(st["logw"])))
            stages.append(info)
            theta_prev = theta
            if progress is not None:
                progress(label, (j + 1) / (n_stage_total + 1), None)
            if not ok:
                break

        # ---------------------------------------------------------------- bridge to the exact energy
        bridge = {"t": 0.0, "to": "exact U_0"}
        theta0 = jnp.asarray(run.theta(0.0))
        bridge_done = ok and anneal(theta0, zero, theta0, one, 0.0, bridge)
        if progress is not None:
            progress(label, 1.0, None)
        return {"x": st["x"], "logw": st["logw"], "log_z_groups": group_log_z(st["logw"]), "stages": stages,
                "bridge": bridge, "bridge_done": bridge_done, "min_ess": st["min_ess"], "groups": R,
                "flow_steps": st["flow_steps"], "flow_seconds": st["flow_seconds"],
                "moves": st["sweeps"] * int(mcmc_steps), "seconds": time.perf_counter() - t_sys, "m": m}

    key = jax.random.PRNGKey(int(seed))
    batches = [system(key, R1, m, "smc path")]
    first = batches[0]
    m2 = max(m, MIN_GROW_GROUP)
    R2 = -(-(n_particles - R1 * m) // m2)         # ceil: groups of m2 that complete the system …
    # … as many as the work budget leaves room for, after a first batch that did not degenerate
    R2 = min(R2, max(0, int((work_budget - R1 * m * first["moves"]) // (m2 * max(first["moves"], 1)))))
    grow = R2 > 0 and first["bridge_done"] and first["min_ess"] >= DEGENERATE_ESS
    if grow:
        batches.append(system(jax.random.fold_in(key, 1), R2, m2, "smc path, more particles"))
    key = jax.random.split(key)[0]      # the stream the output resampling used before batches (same results)
    x = np.concatenate([bt["x"] for bt in batches])
    log_z_groups = np.concatenate([bt["log_z_groups"] for bt in batches])
    R, M = len(log_z_groups), len(x)
    group_of = np.repeat(np.arange(R), np.concatenate([np.full(bt["groups"], bt["m"]) for bt in batches]))
    stages, bridge = first["stages"], first["bridge"]
    bridge_done = all(bt["bridge_done"] for bt in batches)
    min_stage_ess = min(bt["min_ess"] for bt in batches)
    flow_steps = sum(bt["flow_steps"] for bt in batches)
    flow_seconds = sum(bt["flow_seconds"] for bt in batches)

    # ---------------------------------------------------------------- estimates
    log_z, log_z_se, group_ess = pool_groups(log_z_groups)
    # particle i of group r carries Ẑ_r W_ri (W normalized within the group)
    lw_global = np.concatenate([(bt["log_z_groups"][:, None] + bt["logw"]
                                 - np.asarray(logsumexp(jnp.asarray(bt["logw"]), axis=1))[:, None]).reshape(-1)
                                for bt in batches])
    lw_global = np.where(np.isfinite(lw_global), lw_global, -np.inf)
    # scale so that logmeanexp(lw_global) = log Ẑ (the convention of the IS sampler's log weights)
    lw_global = lw_global - np.asarray(logsumexp(jnp.asarray(lw_global))) + math.log(M) + log_z \
        if math.isfinite(log_z) else lw_global
    ess = effective_sample_size(lw_global)
    samples, lw_out, resampled = x, lw_global, False
    if (resample or M > n_out) and math.isfinite(log_z):
        key, kres = jax.random.split(key)
        n_keep = min(n_out, M)
        samples, lw_out, resampled = x[ordered_resample(kres, x, lw_global, n_keep)], np.full(n_keep, log_z), True
    elif M > n_out:   # no finite estimate to resample by: the first n_samples particles as they are
        samples, lw_out = x[:n_out], lw_global[:n_out]

    # ---------------------------------------------------------------- verdict
    failures, warnings = [], []
    if not bridge_done:
        failures.append((Reason.SMC_DEGENERATE, f"the tempering did not reach the exact energy within "
                                                f"{bridge_max_stages} steps of a stage"))
    worst = min(batches, key=lambda bt: bt["min_ess"] / bt["m"])
    if worst["min_ess"] < DEGENERATE_ESS:
        failures.append((Reason.SMC_DEGENERATE, f"a group's ESS fell to {worst['min_ess']:.1f} of {worst['m']} particles"))
    elif worst["min_ess"] < LOW_STAGE_ESS * worst["m"]:
        warnings.append((Reason.LOW_ESS, f"a stage's ESS fell to {100 * worst['min_ess'] / worst['m']:.1f} % of a group"))
    accs = [s["acceptance"] for bt in batches for s in bt["stages"] + [bt["bridge"]] if "acceptance" in s]
    if accs and min(accs) < LOW_ACCEPTANCE:
        warnings.append((Reason.SMC_DEGENERATE, f"MALA acceptance fell to {min(accs):.2f}"))
    lz_tempering = None if cond is not None else (run.fit_info or {}).get("tempering_log_z")
    gf, gw = estimate_checks(log_z_groups, lz_tempering, Status(run.status) == Status.OK)
    failures += gf
    warnings += gw
    v, wd = judge(lw_global, run.status, failures, warnings, one_shot=False)

    ref = exact_references(tgt, x, lw_global, cond, fixed, free, groups=group_of)
    smc_info = {"transport": transport, "particles": M, "groups": R, "particles_per_group": m, "checkpoints": [float(t) for t in times],
                "mcmc_steps": int(mcmc_steps), "path": stages, "bridge_stages": bridge.get("substeps", 0),
                "bridge": bridge, "min_stage_ess": float(min_stage_ess), "group_ess": float(group_ess),
                "log_z_groups": [float(a) for a in log_z_groups], "path_start": float(times[-1]),
                "batches": [{"particles": int(bt["x"].shape[0]), "groups": int(bt["groups"]),
                             "moves_per_particle": int(bt["moves"]), "seconds": float(bt["seconds"])} for bt in batches],
                "grown": bool(grow), "particles_planned": int(max(n_particles, R1 * m))}
    return SampleResult(
        samples=samples, log_weights=lw_out, raw_samples=x, raw_log_weights=lw_global, log_q=None,
        log_z=log_z, log_z_stderr=log_z_se, ess=ess, ess_fraction=ess / M, imh_samples=None,
        imh_acceptance=None, wall_seconds=time.perf_counter() - t_start, flow_seconds=flow_seconds,
        verdict=v, method="smc", pareto_k=wd["pareto_k"], mode_masses=ref["mode_masses"],
        mode_masses_stderr=ref["mode_masses_stderr"], raw_mode_masses=ref["raw_mode_masses"], mode_masses_exact=ref["mode_masses_exact"],
        log_z_exact=ref["log_z_exact"], condition=cond, num_steps=flow_steps,
        n_nonfinite=int((~np.isfinite(lw_global)).sum()), run_status=Status(run.status).value,
        resampled=resampled, smc_info=smc_info,
        model_energy_error=target_energy_error(run) if cond is None and tgt.sampler is not None else None)


__all__ = ["smc_sample", "path_kernels", "pool_groups", "group_checks", "estimate_checks", "checkpoint_times", "conditional_ess", "next_beta", "CHECKPOINTS",
           "MIN_PARTICLES", "MIN_PARTICLES_DIM", "SMC_WORK_BUDGET", "smc_particles", "MCMC_STEPS", "MCMC_STEPS_UNSURE", "PATH_START_UNSURE", "default_path_start", "GROUPS", "ESS_THRESHOLD", "TEMPERING_CESS"]
