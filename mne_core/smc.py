"""Sequential Monte Carlo along the learned MNE path: bias removal that cannot collapse.

Annealed flow transport (Arbel, Matthews & Doucet 2021; CRAFT, Matthews et al. 2022) with the
MNE probability flow as the transport and the learned energies as the intermediate targets.

Checkpoints T = t_K > … > t_1 > t_0 = 0 and unnormalized targets

    γ_K = N(0, I)  (normalized),    γ_k = exp(−U_θ(t_k))  (0 ≤ k < K),

then an adaptive tempering bridge γ_β = exp(−(1 − β) U_θ(0) − β U_0), β: 0 → 1, to the
**exact** target energy U_0.  Particles start as x ~ N(0, I) and, between checkpoints, move by
the reverse probability flow Φ_k: x ↦ x′ from t_{k+1} to t_k, which also gives the exact log
Jacobian log|det ∂x′/∂x| = −Δ log q (:func:`mne_core.flow.run_flow`).  The incremental weight

    log w_k(x) = log γ_k(x′) + log|det ∂x′/∂x| − log γ_{k+1}(x)

is exact whatever the network error; the bridge's is −Δβ (U_0 − U_θ(0))(x).  When the ESS
drops below ``ess_threshold`` the particles are resampled (systematic, BlackJAX), and at every
stage they take ``mcmc_steps`` MALA moves (BlackJAX's kernel) invariant for the current γ, with
a step size adapted toward 57 % acceptance.  Because the model is only used as a proposal and
the final target is exact, log Ẑ = Σ_epochs log mean w is a consistent estimate of log Z.

**Error bar.**  The M particles run as R independent groups (own weights and resampling); Ẑ is
the mean of the group estimates Ẑ_r and its standard error is the between-group one,

    log Ẑ = log mean_r Ẑ_r,     s.e.(log Ẑ) = std_r(Ẑ_r) / (√R · mean_r Ẑ_r),

the SMC estimator's own variance (no delta method on one weight set).  The final weighted
sample set gives particle i of group r the weight Ẑ_r W_ri (W normalized within the group).

The verdict fails the estimate when a group's particle system degenerated (ESS of a few
particles at some stage) or the final ESS is below a few samples; it warns on low ESS, poor
MCMC acceptance, or a log Z that disagrees with the data-free start's independent tempering
estimate.  [reconstructed: the MNE paper does not describe this sampler]
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

from .conditionals import check_run_for_condition, exact_marginal_log_density, normalize_condition
from .diagnostics import mode_masses, target_energy_error
from .flow import LOG_2PI, SamplingError, run_flow, run_mask
from .result import SampleResult, judge
from .status import Reason, Status
from .weights import effective_sample_size, systematic_resample

#: Defaults of :func:`smc_sample` (documented there).
CHECKPOINTS = 16
MCMC_STEPS = 8
GROUPS = 10
ESS_THRESHOLD = 0.5
BRIDGE_MAX_STAGES = 400
#: Above this dimension the default transport is annealing (gradients only): the flow's exact
#: log-Jacobian costs d Hessian-vector products per particle and step.
FLOW_MAX_DIM = 8
#: A group whose ESS fell below this many particles at some stage has degenerated.
DEGENERATE_ESS = 3.0
#: Stage ESS fraction and MCMC acceptance below which the result gets a warning.
LOW_STAGE_ESS = 0.05
LOW_ACCEPTANCE = 0.15


def checkpoint_times(T: float, K: int = CHECKPOINTS, t_min: float = 0.02) -> np.ndarray:
    """t_0 = 0 < t_1 < … < t_K = T: geometric from t_min (the density changes fastest near 0)."""
    if K < 1:
        raise SamplingError(f"checkpoints must be at least 1, got {K}")
    if K == 1:
        return np.array([0.0, float(T)])
    return np.concatenate([[0.0], np.geomspace(min(t_min, T / K), T, K)])


@functools.lru_cache(maxsize=32)
def _kernels(net, target_energy, n_steps: int, d: int, mask_key: tuple | None):
    """Jitted pieces for one network and target: energies, the MALA sweeps, the bridge step."""
    mask = None if mask_key is None else jnp.asarray(mask_key)
    mala = blackjax.mala.build_kernel()

    def model_energy(theta, x):
        return net.energy(theta, x)

    def bridge_energy(theta, beta, x):
        u0 = target_energy(x)
        u0 = jnp.where(jnp.isfinite(u0), u0, jnp.inf)
        return (1.0 - beta) * net.energy(theta, x) + beta * u0

    def sweep(key, x, log_step, energy_fn):
        """``n_steps`` MALA steps of every particle on exp(−energy_fn(x)) (BlackJAX's kernel);
        the shared step size adapts toward 57 % acceptance (Robbins–Monro on its log).  Fixed
        coordinates (partial diffusion, conditioning) are held at their values: the density
        sees only the free ones, and the returned positions keep the fixed ones."""
        x_fixed = x

        def logdensity(y, xf):
            z = y if mask is None else jnp.where(mask > 0, y, xf)
            v = -energy_fn(z)
            return jnp.where(jnp.isfinite(v), v, -jnp.inf)

        states = jax.vmap(lambda xi: blackjax.mala.init(xi, functools.partial(_swap, logdensity, xi)))(x)

        def body(carry, k):
            states, ls = carry
            keys = jax.random.split(k, x.shape[0])
            step = jnp.exp(ls)
            states, info = jax.vmap(lambda kk, st, xf: mala(kk, st, functools.partial(_swap, logdensity, xf), step))(
                keys, states, x_fixed)
            rate = jnp.mean(jnp.where(jnp.isfinite(info.acceptance_rate), info.acceptance_rate, 0.0))
            ls = jnp.clip(ls + 0.6 * (rate - 0.574), -14.0, 3.0)
            return (states, ls), rate

        (states, log_step), rates = jax.lax.scan(body, (states, log_step), jax.random.split(key, n_steps))
        pos = states.position if mask is None else jnp.where(mask > 0, states.position, x_fixed)
        return pos, log_step, jnp.mean(rates)

    @jax.jit
    def model_sweep(key, x, log_step, theta):
        return sweep(key, x, log_step, functools.partial(model_energy, theta))

    @jax.jit
    def bridge_sweep(key, x, log_step, theta, beta):
        return sweep(key, x, log_step, functools.partial(bridge_energy, theta, beta))

    energies = jax.jit(jax.vmap(model_energy, (None, 0)))

    @jax.jit
    def target_energies(x):
        u = jax.vmap(target_energy)(x)
        return jnp.where(jnp.isfinite(u), u, jnp.inf)

    return energies, target_energies, model_sweep, bridge_sweep


def _swap(logdensity, xf, y):
    return logdensity(y, xf)


def _group_ess(logw):
    """ESS of each group's weights (R, m) → (R,)."""
    w = jax.nn.softmax(jnp.asarray(logw), axis=1)
    return np.asarray(1.0 / jnp.sum(w * w, axis=1))


def _next_beta(logw, delta, beta, target_ess):
    """Largest Δβ ≤ 1 − β with the mean group ESS of logw − Δβ·delta ≥ target_ess (bisection)."""
    def ess_at(db):
        return float(np.mean(_group_ess(logw - db * delta)))
    hi = 1.0 - beta
    if ess_at(hi) >= target_ess:
        return hi
    lo = 0.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if ess_at(mid) >= target_ess:
            lo = mid
        else:
            hi = mid
    return max(lo, 1e-7)


def smc_sample(run, n_samples: int = 10000, seed: int = 0, condition=None, resample: bool = False,
               checkpoints: int | None = None, mcmc_steps: int = MCMC_STEPS, groups: int = GROUPS,
               ess_threshold: float = ESS_THRESHOLD, rtol: float = 1e-6, atol: float = 1e-8,
               max_steps: int = 16384, bridge_max_stages: int = BRIDGE_MAX_STAGES, transport: str = "auto",
               progress=None):
    """SMC along the path of ``run`` (see module doc); returns a :class:`~mne_core.sampling.SampleResult`
    with ``method="smc"`` and per-stage diagnostics in ``smc_info``.

    ``n_samples`` particles in ``groups`` independent groups (rounded down to a multiple);
    ``checkpoints`` K flow segments; ``mcmc_steps`` MALA moves per stage; resampling when a
    group's ESS < ``ess_threshold``·m.  ``condition`` works as in :func:`mne_core.sample`
    (the chains then move only the free coordinates).  ``transport``: ``"flow"`` moves the
    particles between checkpoints by the reverse probability flow (exact log-Jacobian, d
    Hessian-vector products per particle and step); ``"mcmc"`` leaves them in place (annealed
    importance sampling along the learned path, gradients only — cheaper in high d, needs more
    checkpoints); ``"auto"``: flow for d ≤ FLOW_MAX_DIM, else mcmc.  ``checkpoints`` default:
    CHECKPOINTS (flow) or 2·CHECKPOINTS (mcmc).
    """
    if transport == "auto":
        transport = "flow" if run.target.dim <= FLOW_MAX_DIM else "mcmc"
    if transport not in ("flow", "mcmc"):
        raise SamplingError(f"transport must be 'flow', 'mcmc' or 'auto', got {transport!r}")
    if checkpoints is None:
        checkpoints = CHECKPOINTS if transport == "flow" else 2 * CHECKPOINTS
    t_start = time.perf_counter()
    tgt, net = run.target, run.net
    d = tgt.dim
    R = max(1, int(groups))
    m = int(n_samples) // R
    if m < 2:
        raise SamplingError(f"n_samples = {n_samples} is too small for {R} groups (need ≥ 2 per group)")
    M = R * m
    cond = normalize_condition(condition, d)
    check_run_for_condition(run, cond)
    mask = run_mask(run)
    free = np.flatnonzero(mask == 1)
    fixed = np.flatnonzero(mask == 0)
    d_free = len(free)
    mask_key = None if len(fixed) == 0 else tuple(float(v) for v in mask)
    energies, target_energies, model_sweep, bridge_sweep = _kernels(net, tgt.energy, int(mcmc_steps), d, mask_key)
    dtype = run.thetas.dtype
    key = jax.random.PRNGKey(int(seed))
    key, k0 = jax.random.split(key)
    z = np.asarray(jax.random.normal(k0, (M, d_free), dtype))
    x = np.zeros((M, d), dtype)
    x[:, free] = z
    if cond is not None:
        x[:, fixed] = np.array([cond[int(i)] for i in fixed])
    log_gamma_prev = -0.5 * (z * z).sum(1) - 0.5 * d_free * LOG_2PI     # γ_K = N(0, I) on the free coords
    times = checkpoint_times(run.T, int(checkpoints))
    logw = np.zeros((R, m))
    log_z_groups = np.zeros(R)
    stages = []
    min_stage_ess = float(m)
    log_step = jnp.asarray(math.log(0.5 / max(d_free, 1) ** (1 / 3)), dtype)
    flow_steps = 0
    flow_seconds = 0.0
    n_stage_total = len(times) - 1

    def resample_if_needed(x, logw, key, info):
        ess = _group_ess(logw)
        info["ess"] = float(np.mean(ess) / m)
        info["ess_min"] = float(np.min(ess) / m)
        nonlocal min_stage_ess
        min_stage_ess = min(min_stage_ess, float(np.min(ess)))
        if np.any(ess < ess_threshold * m):
            keys = jax.random.split(key, R)
            idx = np.asarray(jax.vmap(lambda k, lw: systematic_resample(k, lw, m))(keys, jnp.asarray(logw)))
            log_z_groups[:] += np.asarray(logsumexp(jnp.asarray(logw), axis=1)) - math.log(m)
            xg = x.reshape(R, m, d)
            x = np.take_along_axis(xg, idx[:, :, None], axis=1).reshape(M, d)
            logw = np.zeros((R, m))
            info["resampled"] = True
        else:
            info["resampled"] = False
        return x, logw

    # ---------------------------------------------------------------- along the learned path
    for j, k in enumerate(range(len(times) - 2, -1, -1)):
        t_hi, t_lo = float(times[k + 1]), float(times[k])
        theta = jnp.asarray(run.theta(t_lo))
        if transport == "flow":
            tf = time.perf_counter()
            fl = run_flow(run, x, np.zeros(M), mask, rtol=rtol, atol=atol, max_steps=max_steps, T=t_hi, t_end=t_lo)
            flow_seconds += time.perf_counter() - tf
            if not fl.ok:
                raise SamplingError(fl.message + f" between t = {t_hi:.3g} and {t_lo:.3g}; try a larger max_steps "
                                    "or rtol")
            flow_steps += fl.num_steps
            # run_flow integrates d log q along the flow: log q(x′) = log q(x) − log|det ∂x′/∂x|,
            # so log|det ∂x′/∂x| = −Δ log q = −fl.log_q (started from 0).
            x_new, log_det = fl.x, -fl.log_q
        else:  # annealing: the particles stay, only the target changes
            x_new, log_det = x, 0.0
        log_gamma_new = -np.asarray(energies(theta, jnp.asarray(x_new)))
        inc = log_gamma_new + log_det - log_gamma_prev
        inc = np.where(np.isfinite(inc), inc, -np.inf)
        logw = logw + inc.reshape(R, m)
        info = {"t": t_lo}
        key, kr, km = jax.random.split(key, 3)
        x, logw = resample_if_needed(np.asarray(x_new), logw, kr, info)
        x_j, log_step, acc = model_sweep(km, jnp.asarray(x), log_step, theta)
        x = np.asarray(x_j)
        info["acceptance"] = float(acc)
        stages.append(info)
        log_gamma_prev = -np.asarray(energies(theta, jnp.asarray(x)))
        if progress is not None:
            progress("smc path", (j + 1) / (n_stage_total + 1), None)

    # ---------------------------------------------------------------- bridge to the exact energy
    theta0 = jnp.asarray(run.theta(0.0))
    beta = 0.0
    bridge = []
    u_model = -log_gamma_prev
    for _ in range(int(bridge_max_stages)):
        u0 = np.asarray(target_energies(jnp.asarray(x)), np.float64)
        delta = (u0 - u_model).reshape(R, m)
        delta = np.where(np.isfinite(delta), delta, np.inf)
        db = _next_beta(logw, np.where(np.isfinite(delta), delta, 1e300), beta, ess_threshold * m)
        logw = logw - db * delta
        logw = np.where(np.isfinite(logw), logw, -np.inf)
        beta = min(1.0, beta + db)
        info = {"beta": beta}
        key, kr, km = jax.random.split(key, 3)
        x, logw = resample_if_needed(x, logw, kr, info)
        x_j, log_step, acc = bridge_sweep(km, jnp.asarray(x), log_step, theta0, jnp.asarray(beta, dtype))
        x = np.asarray(x_j)
        info["acceptance"] = float(acc)
        bridge.append(info)
        u_model = np.asarray(energies(theta0, jnp.asarray(x)))
        if progress is not None:
            progress("smc bridge", min(1.0, (n_stage_total + beta) / (n_stage_total + 1)), None)
        if beta >= 1.0:
            break
    bridge_done = beta >= 1.0

    # ---------------------------------------------------------------- estimates
    log_z_groups = log_z_groups + np.asarray(logsumexp(jnp.asarray(logw), axis=1)) - math.log(m)
    finite = np.isfinite(log_z_groups)
    if finite.any():
        mx = np.max(log_z_groups[finite])
        zr = np.where(finite, np.exp(log_z_groups - mx), 0.0)
        log_z = float(mx + math.log(zr.mean()))
        log_z_se = float(np.std(zr, ddof=1) / (math.sqrt(R) * zr.mean())) if R > 1 else math.inf
    else:
        log_z, log_z_se = -math.inf, math.inf
    log_norm = np.asarray(logsumexp(jnp.asarray(logw), axis=1))
    lw_global = (log_z_groups[:, None] + logw - log_norm[:, None]).reshape(M)
    lw_global = np.where(np.isfinite(lw_global), lw_global, -np.inf)
    # scale so that logmeanexp(lw_global) = log Ẑ (the convention of the IS sampler's log weights)
    lw_global = lw_global - np.asarray(logsumexp(jnp.asarray(lw_global))) + math.log(M) + log_z \
        if math.isfinite(log_z) else lw_global
    ess = effective_sample_size(lw_global)
    samples, lw_out = x, lw_global
    if resample:
        key, kres = jax.random.split(key)
        idx = np.asarray(systematic_resample(kres, lw_global, M))
        samples, lw_out = x[idx], np.full(M, log_z)

    # ---------------------------------------------------------------- verdict
    failures, warnings = [], []
    if not bridge_done:
        failures.append((Reason.SMC_DEGENERATE, f"the tempering bridge to the exact energy stopped at β = {beta:.3g}"))
    if min_stage_ess < DEGENERATE_ESS:
        failures.append((Reason.SMC_DEGENERATE, f"a group's ESS fell to {min_stage_ess:.1f} of {m} particles"))
    elif min_stage_ess < LOW_STAGE_ESS * m:
        warnings.append((Reason.LOW_ESS, f"a stage's ESS fell to {100 * min_stage_ess / m:.1f} % of a group"))
    accs = [s["acceptance"] for s in stages + bridge]
    if accs and min(accs) < LOW_ACCEPTANCE:
        warnings.append((Reason.SMC_DEGENERATE, f"MALA acceptance fell to {min(accs):.2f}"))
    ref = (run.fit_info or {}).get("tempering_log_z")
    if cond is None and ref is not None and math.isfinite(log_z) and abs(log_z - ref) > max(0.5, 5 * log_z_se):
        warnings.append((Reason.ESTIMATES_DISAGREE, f"SMC log Ẑ = {log_z:.3f}, data-free tempering {ref:.3f}"))
    v, wd = judge(lw_global, run.status, failures, warnings)

    log_z_exact = None
    if tgt.log_z is not None:
        if cond is None:
            log_z_exact = float(tgt.log_z)
        else:
            lp = exact_marginal_log_density(tgt, np.array([[cond[int(i)] for i in fixed]]), list(fixed))
            if lp is not None:
                log_z_exact = float(lp[0] + tgt.log_z)
    masses = raw_masses = exact_masses = None
    if tgt.modes is not None:
        coords = None if cond is None else free
        masses = mode_masses(x, lw_global, tgt.modes, coords)
        raw_masses = mode_masses(x, np.zeros(M), tgt.modes, coords)
        if cond is None and tgt.mode_weights is not None:
            exact_masses = np.asarray(tgt.mode_weights, float)
    smc_info = {"transport": transport, "groups": R, "particles_per_group": m, "checkpoints": [float(t) for t in times],
                "mcmc_steps": int(mcmc_steps), "path": stages, "bridge_stages": len(bridge),
                "bridge": bridge[-5:], "min_stage_ess": float(min_stage_ess),
                "log_z_groups": [float(a) for a in log_z_groups]}
    return SampleResult(
        samples=samples, log_weights=lw_out, raw_samples=x, raw_log_weights=lw_global, log_q=None,
        log_z=log_z, log_z_stderr=log_z_se, ess=ess, ess_fraction=ess / M, imh_samples=None,
        imh_acceptance=None, wall_seconds=time.perf_counter() - t_start, flow_seconds=flow_seconds,
        verdict=v, method="smc", pareto_k=wd["pareto_k"], mode_masses=masses, raw_mode_masses=raw_masses,
        mode_masses_exact=exact_masses, log_z_exact=log_z_exact, condition=cond, num_steps=flow_steps,
        n_nonfinite=int((~np.isfinite(lw_global)).sum()), run_status=Status(run.status).value,
        resampled=bool(resample), smc_info=smc_info,
        model_energy_error=target_energy_error(run) if cond is None and tgt.sampler is not None else None)


__all__ = ["smc_sample", "checkpoint_times", "CHECKPOINTS", "MCMC_STEPS", "GROUPS", "ESS_THRESHOLD"]
