"""Tests of mne_core.smc: SMC along the learned path against exact answers, conditionals, and the
verdict (a wrong answer must never end ok)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mne_core as mc
from conftest import SMALL, cov_of
from mne_core.smc import checkpoint_times, estimate_checks, group_checks, pool_groups


def test_checkpoint_times():
    t = checkpoint_times(4.0, 16)
    assert t[0] == 0.0 and t[-1] == pytest.approx(4.0) and len(t) == 17
    assert np.all(np.diff(t) > 0)
    assert np.all(np.diff(np.diff(t[1:])) > 0)  # geometric: denser near t = 0
    assert list(checkpoint_times(2.0, 1)) == [0.0, 2.0]
    with pytest.raises(mc.SamplingError):
        checkpoint_times(1.0, 0)


@pytest.mark.parametrize("transport", ["flow", "mcmc"])
def test_smc_gaussian_log_z_and_moments(gauss_run, transport):
    res = mc.sample(gauss_run, 2000, seed=0, method="smc", smc_options={"transport": transport})
    s = res.summary()
    assert res.method == "smc" and s["status"] in ("ok", "warning"), s
    assert s["log_z_exact"] == 0.0
    assert abs(res.log_z) < max(4 * res.log_z_stderr, 0.03), s
    w = np.exp(res.log_weights - res.log_weights.max())
    w /= w.sum()
    np.testing.assert_allclose(w @ res.samples, [1.0, -0.5], atol=0.08)
    np.testing.assert_allclose(np.cov(res.samples.T, aweights=w), cov_of(2), atol=0.12)
    info = s["smc"]
    assert info["groups"] * info["particles_per_group"] == 2000
    assert info["groups"] == (20 if transport == "flow" else 10)   # flow: ≥ 100 particles a group, up to 40
    assert len(info["path"]) == len(info["checkpoints"]) - 1 and info["transport"] == transport
    # log weights follow the IS convention: logmeanexp = log Ẑ
    lw = res.log_weights
    assert np.log(np.mean(np.exp(lw - lw.max()))) + lw.max() == pytest.approx(res.log_z, abs=1e-9)
    # resampled output: equal weights, samples from the particle set
    rs = mc.sample(gauss_run, 2000, seed=0, method="smc", resample=True)
    assert np.allclose(rs.log_weights, rs.log_z)


def test_smc_system_larger_than_the_samples_asked_for(gauss_run):
    """With more particles than samples the estimates are the system's and the samples returned are
    drawn from it in order: equal log weights log Ẑ, each point a particle of the system."""
    res = mc.sample(gauss_run, 500, seed=0, method="smc", smc_options={"particles": 2000})
    s = res.summary()
    assert res.samples.shape == (500, 2) and res.raw_samples.shape == (2000, 2) and res.resampled
    assert s["n_samples"] == 500 and s["smc"]["particles"] == 2000 and s["status"] in ("ok", "warning"), s
    assert np.allclose(res.log_weights, res.log_z) and abs(res.log_z) < max(4 * res.log_z_stderr, 0.03), s
    assert np.all(np.isin(res.samples[:, 0], res.raw_samples[:, 0]))
    w = np.exp(res.raw_log_weights - res.raw_log_weights.max())
    np.testing.assert_allclose(res.samples.mean(0), (w / w.sum()) @ res.raw_samples, atol=0.08)
    # the 500 asked for ran first (10 groups of 50), the rest as a second batch of groups of 100
    b = s["smc"]["batches"]
    assert [x["particles"] for x in b] == [500, 1500] and [x["groups"] for x in b] == [10, 15] and s["smc"]["grown"]
    assert s["smc"]["groups"] == 25 and len(s["smc"]["log_z_groups"]) == 25
    # each group's weights sum to its own estimate Ẑ_r (pooled: the mean of the Ẑ_r)
    lzg = np.asarray(s["smc"]["log_z_groups"])
    sizes = np.repeat([50, 100], [10, 15])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    lw = res.raw_log_weights
    group_sums = [np.log(np.sum(np.exp(lw[a:a + n] - res.log_z))) for a, n in zip(starts, sizes)]
    np.testing.assert_allclose(np.asarray(group_sums) - np.log(2000 / 25), lzg - res.log_z, atol=1e-9)


def test_smc_growth_stops_at_the_work_budget(gauss_run):
    """A first batch whose work already fills the budget is the whole system: nothing more runs."""
    res = mc.sample(gauss_run, 500, seed=0, method="smc", smc_options={"particles": 2000, "work_budget": 1000})
    info = res.summary()["smc"]
    assert info["particles"] == 500 and not info["grown"] and len(info["batches"]) == 1
    assert info["batches"][0]["moves_per_particle"] > 2      # 500 particles × > 2 moves > 1000
    assert res.samples.shape == (500, 2) and not res.resampled


def test_smc_particles_rule():
    from mne_core.smc import MIN_PARTICLES, MIN_PARTICLES_DIM, smc_particles
    assert smc_particles(4000, MIN_PARTICLES_DIM) == 4000                  # low d: what was asked for
    assert smc_particles(4000, MIN_PARTICLES_DIM + 1) == MIN_PARTICLES      # above: at least the floor
    assert smc_particles(10 * MIN_PARTICLES, 32) == 10 * MIN_PARTICLES      # never fewer than the samples
    assert smc_particles(4000, 32, particles=1000) == 4000 and smc_particles(400, 32, particles=1000) == 1000


def test_smc_path_start(gauss_run):
    """The path may start below T (N(0, I) standing in for the model there): still right, and the
    default starts it at T on a run that ended ok, at PATH_START_UNSURE below a longer T otherwise."""
    from mne_core.smc import PATH_START_UNSURE, default_path_start
    res = mc.sample(gauss_run, 1000, seed=0, method="smc", smc_options={"path_start": 1.0})
    s = res.summary()
    assert s["smc"]["path_start"] == 1.0 == s["smc"]["checkpoints"][-1] and s["status"] in ("ok", "warning"), s
    assert abs(res.log_z) < max(4 * res.log_z_stderr, 0.03), s
    w = np.exp(res.log_weights - res.log_weights.max())
    np.testing.assert_allclose((w / w.sum()) @ res.samples, [1.0, -0.5], atol=0.1)
    assert mc.sample(gauss_run, 200, seed=0, method="smc").summary()["smc"]["path_start"] == gauss_run.T
    for bad in (0.0, gauss_run.T + 1.0):
        with pytest.raises(mc.SamplingError, match="path_start"):
            mc.sample(gauss_run, 200, seed=0, method="smc", smc_options={"path_start": bad})
    assert default_path_start(4.0, True) == 4.0 and default_path_start(4.0, False) == PATH_START_UNSURE
    assert default_path_start(1.0, False) == 1.0


def test_ordered_resample_keeps_the_mode_counts():
    """Resampled in order along the first principal axis, a mode separated along it gets within ±1
    of n times its weight on every draw; plain systematic resampling in the points' random order
    spreads like a binomial (the check fails for it)."""
    from mne_core.weights import ordered_resample, systematic_resample
    rng = np.random.default_rng(0)
    n_pts, n = 4000, 1000
    lab = rng.random(n_pts) < 0.3
    x = np.where(lab[:, None], [-5.0, 1.0], [5.0, -1.0]) + rng.normal(size=(n_pts, 2))
    lw = rng.normal(0, 1.0, n_pts)
    w = np.exp(lw - lw.max())
    expected = n * w[lab].sum() / w.sum()
    dev_ord, dev_sys = [], []
    for k in range(50):
        key = jax.random.PRNGKey(k)
        dev_ord.append(lab[ordered_resample(key, x, lw, n)].sum() - expected)
        dev_sys.append(lab[np.asarray(systematic_resample(key, lw, n))].sum() - expected)
    assert np.max(np.abs(dev_ord)) <= 1.0
    assert np.max(np.abs(dev_sys)) > 3.0


def test_smc_conditional_gaussian(cond_gauss_run):
    C = cov_of(2)
    y = 1.6
    res = mc.sample(cond_gauss_run, 2000, seed=0, method="smc", condition={0: y})
    assert np.all(res.samples[:, 0] == y)
    w = np.exp(res.log_weights - res.log_weights.max())
    w /= w.sum()
    mu = -0.5 + C[1, 0] / C[0, 0] * (y - 1.0)
    var = C[1, 1] - C[1, 0] ** 2 / C[0, 0]
    m = w @ res.samples[:, 1]
    assert m == pytest.approx(mu, abs=0.06) and w @ (res.samples[:, 1] - m) ** 2 == pytest.approx(var, rel=0.15)
    exact = -0.5 * (y - 1.0) ** 2 / C[0, 0] - 0.5 * math.log(2 * math.pi * C[0, 0])
    assert abs(res.log_z - exact) < max(4 * res.log_z_stderr, 0.03), res.summary()


@pytest.fixture(scope="module")
def crude_run():
    """A deliberately poor model: separated modes (±4, variance 0.3, weights 0.2/0.8) with almost
    no initial fit and a short, small evolution — the one-shot weights must collapse."""
    spec = {"kind": "gaussian_mixture", "weights": [0.2, 0.8], "means": [[-4.0, 0.0], [4.0, 0.0]],
            "covariances": [[[0.3, 0.0], [0.0, 0.3]], [[0.3, 0.0], [0.0, 0.3]]]}
    cfg = mc.EvolveConfig(target=spec, **{**SMALL, "fit_steps": 5, "gn_steps": 0, "T": 1.0})
    return mc.evolve(cfg, reg_retries=0, point_retries=0)


@pytest.mark.parametrize("method", ["is", "smc"])
def test_a_wrong_answer_never_ends_ok(crude_run, method):
    res = mc.sample(crude_run, 2000, seed=0, method=method)
    s = res.summary()
    err = abs(res.log_z - res.log_z_exact) if math.isfinite(res.log_z) else math.inf
    if s["status"] == "ok":
        # an ok answer must be right within its own error bar
        assert err <= 5 * res.log_z_stderr + 0.05, s
        assert s["mode_mass_max_error"] <= 0.05, s
    if s["status"] == "failed":
        assert s["log_z"] is None and s["log_z_stderr"] is None and s["log_z_withheld"] is not None
        assert "mode_masses" not in s and s["mode_masses_withheld"] is not None, s
    else:   # an answer given has error bars on its masses too
        assert len(s["mode_masses_stderr"]) == 2, s
    if method == "is":
        # the crude model puts almost no mass where the target is: IS cannot be ok
        assert s["status"] != "ok", s


def test_pool_groups_is_the_mean_of_the_group_estimates():
    rng = np.random.default_rng(0)
    g = rng.normal(-0.3, 0.2, 10)
    log_z, se, gess = pool_groups(g)
    z = np.exp(g)
    assert log_z == pytest.approx(math.log(z.mean()), abs=1e-12)
    assert se == pytest.approx(np.std(z, ddof=1) / (math.sqrt(10) * z.mean()), rel=1e-12)
    assert gess == pytest.approx(z.sum() ** 2 / (z * z).sum(), rel=1e-12)
    assert 9.0 < gess <= 10.0
    assert pool_groups([-np.inf] * 3)[0] == -math.inf


def test_one_group_carrying_the_estimate_fails_and_uneven_groups_warn():
    """The group estimates of a measured failure (8-component mixture, d = 16, a run that ended
    warning): nine groups near −1, one at +6.4.  log Ẑ came out +4.08 with s.e. 0.99 (the
    saturated value) and used to end ok; the truth is 0."""
    measured = [-0.49, -0.32, -1.0, -1.14, -0.76, -1.31, 6.37, 0.5, -1.45, -1.06]
    log_z, se, gess = pool_groups(measured)
    assert log_z == pytest.approx(4.08, abs=0.01) and se == pytest.approx(0.99, abs=0.01) and gess < 1.1
    failures, warnings = group_checks(measured)
    assert failures and "carries" in failures[0][1] and not warnings
    failures, warnings = group_checks([0.0] * 7 + [2.5] * 3)           # uneven (group ESS 4.2): a warning
    assert not failures and warnings
    assert group_checks(list(np.random.default_rng(1).normal(0, 0.1, 10))) == ([], [])
    assert group_checks([0.0, -0.01]) == ([], [])                     # too few groups to judge the spread
    for broken in ([0.0, np.inf, 0.0, 0.0], [0.0, np.nan] + [0.0] * 8):
        failures, _ = group_checks(broken)
        assert failures and "not finite" in failures[0][1]
    assert group_checks([0.0, -np.inf, 0.0, 0.0, 0.1]) == ([], [])  # a dead group is Ẑ_r = 0


def test_an_estimate_that_disagrees_fails_when_its_groups_and_its_run_also_warn():
    """Disagreeing with the tempering estimate by 0.5–5 warns; with uneven groups on a run that did
    not end ok too (how funnel-10's −2.06 ± 0.39 against an exact 0 looked) it fails; beyond 5 it
    always fails."""
    from mne_core.status import Reason

    uneven = [g - 4.0 for g in [0.0] * 7 + [2.5] * 3]            # group ESS 4.2 of 10
    even = list(np.random.default_rng(1).normal(-2.0, 0.1, 10))
    lz = pool_groups(uneven)[0]
    assert 1.0 < -lz < 5.0
    reasons = lambda checks: [r for r, _ in checks]               # noqa: E731
    f, w = estimate_checks(uneven, 0.0, run_ok=False)
    assert reasons(f) == [Reason.ESTIMATES_DISAGREE] and reasons(w) == [Reason.LOW_ESS]
    f, w = estimate_checks(uneven, 0.0, run_ok=True)              # the run's own verdict was ok: a warning
    assert not f and set(reasons(w)) == {Reason.LOW_ESS, Reason.ESTIMATES_DISAGREE}
    f, w = estimate_checks(even, 0.0, run_ok=False)               # the groups agree: a warning
    assert not f and reasons(w) == [Reason.ESTIMATES_DISAGREE]
    assert estimate_checks(uneven, lz + 0.4, run_ok=False) == group_checks(uneven)   # agreement within 0.5
    assert estimate_checks(uneven, None, run_ok=False) == group_checks(uneven)       # nothing to compare with
    f, _ = estimate_checks(even, 4.0, run_ok=True)                # a factor > e^5 apart: always a failure
    assert reasons(f) == [Reason.ESTIMATES_DISAGREE]


def test_smc_on_a_run_that_ended_warning_is_not_ok(gauss_run):
    """A run that did not end ok carries a warning into every sampler, SMC included."""
    import copy

    run = copy.copy(gauss_run)
    run.set_verdict(mc.Verdict(mc.Status.WARNING, ((mc.Reason.ERROR_GROWTH, "test: the model is poor"),)))
    res = mc.sample(run, 400, seed=0, method="smc")
    s = res.summary()
    assert s["status"] == "warning" and "run_not_ok" in [r["reason"] for r in s["reasons"]], s
    # and its path is further from the exact one, so the MALA moves per stage are 4× as many
    from mne_core.smc import MCMC_STEPS, MCMC_STEPS_UNSURE

    assert res.smc_info["mcmc_steps"] == MCMC_STEPS_UNSURE > MCMC_STEPS
    assert mc.sample(gauss_run, 400, seed=0, method="smc").smc_info["mcmc_steps"] == MCMC_STEPS
    assert mc.sample(run, 400, seed=0, method="smc", smc_options={"mcmc_steps": 3}).smc_info["mcmc_steps"] == 3


def test_conditional_ess_and_the_tempering_step():
    """CESS = (Σ W e^{−Δβδ})² / Σ W e^{−2Δβδ}: 1 for Δβ = 0 or constant δ, the direct sum under
    uneven weights, and the step found by bisection meets its target."""
    from mne_core.smc import next_beta, conditional_ess
    rng = np.random.default_rng(0)
    logw = rng.normal(size=(3, 50))
    delta = rng.normal(size=(3, 50)) * 4
    assert conditional_ess(logw, delta, 0.0) == pytest.approx(1.0)
    assert conditional_ess(logw, np.full((3, 50), 2.5), 0.7) == pytest.approx(1.0)
    W = np.exp(logw - logw.max(1, keepdims=True))
    W /= W.sum(1, keepdims=True)
    inc = np.exp(-0.3 * delta)
    direct = np.mean((W * inc).sum(1) ** 2 / (W * inc * inc).sum(1))
    assert conditional_ess(logw, delta, 0.3) == pytest.approx(direct, rel=1e-6)
    db = next_beta(logw, delta, 0.0, 0.9)
    assert 0 < db < 1 and conditional_ess(logw, delta, db) == pytest.approx(0.9, abs=1e-4)
    assert next_beta(logw, 1e-6 * delta, 0.25, 0.9) == pytest.approx(0.75)   # the rest of the way in one step


def test_radial_moves_reach_the_funnels_neck():
    """With the rotation-aware network the SMC's MALA moves run on (x0, log|x_G|) and keep e^{−U_0}
    invariant: from N(0, I) they spread x0 to the funnel's exact std 3 and into the neck (x0 < −6),
    which MALA on x does not (one step size cannot fit a cone of width e^{x0/2})."""
    from mne_core.smc import path_kernels

    tgt = mc.named_target("funnel", 6)
    x = jax.random.normal(jax.random.PRNGKey(0), (2000, 6))
    out = {}
    for name, radial in (("radial", ((0,), (1, 2, 3, 4, 5))), ("mlp", None)):
        net, th = mc.init_energy_network(6, 8, 2, "silu", radial=radial, dtype=jnp.float64)
        _, _, sweep = path_kernels(net, tgt.energy, 8, 6, None)
        y, ls = x, jnp.asarray(np.log(0.1))
        for i in range(40):
            y, ls, acc = sweep(jax.random.PRNGKey(i + 1), y, ls, th, th, 0.0, 1.0, 1.0)
        out[name] = np.asarray(y)[:, 0]
    assert abs(out["radial"].std() - 3.0) < 0.3 and out["radial"].min() < -6.0, (out["radial"].std(), out["radial"].min())
    assert out["mlp"].min() > out["radial"].min() + 1.0, (out["mlp"].min(), out["radial"].min())
