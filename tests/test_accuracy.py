"""Accuracy at default settings, data-free, against the exact OU solution (slow)."""
import jax
import numpy as np
import pytest

import mne_core as mc

pytestmark = pytest.mark.slow


def weighted_error(run, t, n=4000, seed=123):
    tgt = run.target
    xs = np.asarray(tgt.evolved_sampler(jax.random.PRNGKey(seed), t, n))
    r = run.energy(t, xs) + np.asarray(tgt.evolved_log_densities(t, xs))
    return float(np.sqrt(np.mean((r - r.mean()) ** 2)))


@pytest.fixture(scope="session")
def default_run():
    """The default run (two-modes, T = 4, data-free start), evolved once for the two tests below
    (one xdist group, so one worker evolves it; session scope, because the worker may run tests of
    other modules between them)."""
    return mc.evolve(mc.EvolveConfig())


@pytest.mark.xdist_group("two_modes_default")
def test_two_modes_default_settings_error_below_0p01(default_run):
    run = default_run
    assert run.status == mc.Status.OK, run.message
    # independent samples, including times between recorded steps
    ts = np.linspace(0.0, 4.0, 17)
    errs = [weighted_error(run, t) for t in ts]
    assert max(errs) <= 0.01, dict(zip(ts.round(2), np.round(errs, 4)))
    assert np.nanmax(run.diagnostics["energy_error"]) <= 0.01


@pytest.mark.xdist_group("two_modes_default")
def test_two_modes_default_settings_sampling_accuracy(default_run):
    run = default_run
    assert run.status == mc.Status.OK, run.summary()
    res = mc.sample(run, 10000, seed=0)
    assert abs(res.log_z - 0.0) <= 0.02, res.summary()
    assert np.abs(res.mode_masses - np.array([0.3, 0.7])).max() <= 0.01, res.summary()
    assert res.ess_fraction >= 0.5, res.summary()
    # the masses' error bars (IS, and SMC's between-group one) cover the exact nearest-mode cell masses
    # (10⁶ exact samples: ±0.0005)
    tgt = run.target
    cell = mc.mode_masses(np.asarray(tgt.sampler(jax.random.PRNGKey(7), 1_000_000)), np.zeros(1_000_000), tgt.modes)
    smc = mc.sample(run, 4000, seed=0, method="smc")
    for r in (res, smc):
        s = r.summary()
        assert s["status"] != "failed" and len(s["mode_masses_stderr"]) == 2, s
        se = np.asarray(r.mode_masses_stderr)
        assert np.all(se > 0) and np.all(np.abs(r.mode_masses - cell) <= 4 * se + 0.0015), (cell, s)


@pytest.mark.parametrize("seed", [0])
def test_unseen_full_covariance_mixture_T3(seed):
    """A three-mode mixture with rotated anisotropic covariances, never tuned for."""
    rng = np.random.default_rng(2024 + seed)
    K = 3
    means = rng.uniform(-3, 3, size=(K, 2))
    covs = []
    for _ in range(K):
        a = rng.uniform(0, np.pi)
        R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        covs.append((R @ np.diag(rng.uniform(0.3, 1.2, 2)) @ R.T).tolist())
    w = rng.dirichlet(np.ones(K) * 3)
    spec = {"kind": "gaussian_mixture", "weights": w.tolist(), "means": means.tolist(), "covariances": covs}
    evo = mc.Evolution(mc.EvolveConfig(target=spec, T=3.0, seed=seed))
    evo.run_to_end(spectrum_every=50)
    assert evo.status == mc.Status.OK, evo.message
    errs = [weighted_error(evo.run, t) for t in (0.0, 0.5, 1.0, 2.0, 3.0)]
    assert max(errs) <= 0.05, errs
