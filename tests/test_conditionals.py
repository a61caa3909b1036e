"""Tests of mne_core.conditionals: conditions, conditional samples and marginals against the
closed-form Gaussian and mixture answers (design note §6)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import mne_core as mc
from conftest import LOG2PI, cov_of, exact_energy_at


def test_parse_condition_errors():
    assert mc.parse_condition("0=1.5, 2=-1") == {0: 1.5, 2: -1.0}
    for bad in ("0=1.5,foo", "a=1", "0=x", "0=1,0=2", "1=nan"):
        with pytest.raises(mc.SamplingError):
            mc.parse_condition(bad)


def test_conditional_exact_energy_gives_exact_conditional_density():
    """Partial diffusion (x1, x2 diffuse; x0 = y* held): the z-flow of the exact evolved energy
    from N(0, I) at large T gives the closed-form Gaussian conditional density."""
    d = 3
    tgt = mc.named_target("gaussian", d)
    mean = np.array([1.0, -0.5, 0.0])
    C = cov_of(d)
    mask = np.array([0.0, 1.0, 1.0])
    y = 0.7
    T = 12.0
    z = np.random.default_rng(0).standard_normal((300, 2))
    x_T = np.column_stack([np.full(300, y), z])
    lq_T = -0.5 * (z * z).sum(1) - LOG2PI
    fl = mc.reverse_flow(exact_energy_at(tgt, mask.astype(bool)), x_T, lq_T, T, mask=mask, rtol=1e-9, atol=1e-11)
    assert np.all(fl.x[:, 0] == y)
    mu = mean[1:] + C[1:, :1] @ np.linalg.solve(C[:1, :1], [y - mean[0]])
    Sc = C[1:, 1:] - C[1:, :1] @ np.linalg.solve(C[:1, :1], C[:1, 1:])
    r = fl.x[:, 1:] - mu
    exact = -0.5 * np.einsum("ni,ij,nj->n", r, np.linalg.inv(Sc), r) - 0.5 * np.log(np.linalg.det(Sc)) - LOG2PI
    np.testing.assert_allclose(fl.log_q, exact, atol=1e-4)


def test_conditional_gaussian(cond_gauss_run):
    run = cond_gauss_run
    C = cov_of(2)
    y = 1.6
    res = mc.sample(run, 4000, seed=0, condition={0: y})
    assert np.all(res.samples[:, 0] == y)
    mu = -0.5 + C[1, 0] / C[0, 0] * (y - 1.0)
    var = C[1, 1] - C[1, 0] ** 2 / C[0, 0]
    w = np.exp(res.log_weights - res.log_weights.max())
    w /= w.sum()
    m = w @ res.samples[:, 1]
    v = w @ (res.samples[:, 1] - m) ** 2
    assert m == pytest.approx(mu, abs=0.05) and v == pytest.approx(var, rel=0.1)
    # conditional normalizer: log ∫ e^{−U_0(y*, z)} dz = log π_Y(y*) + log Z, closed form
    exact = -0.5 * (y - 1.0) ** 2 / C[0, 0] - 0.5 * math.log(2 * math.pi * C[0, 0])
    assert res.log_z_exact == pytest.approx(exact, abs=1e-10)
    assert abs(res.log_z - exact) < max(4 * res.log_z_stderr, 0.02), res.summary()
    assert res.ess_fraction > 0.3


def test_marginal_energy_gaussian(cond_gauss_run):
    run = cond_gauss_run
    C = cov_of(2)
    ys = np.linspace(1.0 - 1.5 * math.sqrt(C[0, 0]), 1.0 + 1.5 * math.sqrt(C[0, 0]), 9)[:, None]
    exact = 0.5 * (ys[:, 0] - 1.0) ** 2 / C[0, 0] + 0.5 * math.log(2 * math.pi * C[0, 0])  # −log π_Y, log Z = 0
    # the network's energy constant is free (the initial fit is up to a constant): compare centred
    for n_z, tol in ((256, 0.1), (0, 0.15)):
        u = mc.marginal_energy(run, ys, n_z=n_z)
        assert u.shape == (9,)
        r = u - exact
        assert np.abs(r - r.mean()).max() < tol, (n_z, r - r.mean())
    # the exact marginal oracle itself
    np.testing.assert_allclose(-mc.exact_marginal_log_density(run.target, ys, [0]), exact, atol=1e-10)
    with pytest.raises(mc.SamplingError):
        mc.marginal_energy(run, np.zeros((3, 2)))


def test_conditional_mixture(cond_mix_run):
    """two-modes | x1 = 0.3: x0 is bimodal with masses 0.3 / 0.7 (isotropic components)."""
    run = cond_mix_run
    res = mc.sample(run, 4000, seed=0, condition={1: 0.3})
    w = np.exp(res.log_weights - res.log_weights.max())
    w /= w.sum()
    assert w @ (res.samples[:, 0] > 0) == pytest.approx(0.7, abs=0.03)
    np.testing.assert_allclose(res.mode_masses, [0.3, 0.7], atol=0.03)
    exact = -0.5 * 0.3**2 / 0.5 - 0.5 * math.log(2 * math.pi * 0.5)
    assert res.log_z_exact == pytest.approx(exact, abs=1e-10)
    assert abs(res.log_z - exact) < max(4 * res.log_z_stderr, 0.03), res.summary()
    u = mc.marginal_energy(run, np.array([[-0.5], [0.0], [0.8]]))
    ex = 0.5 * np.array([-0.5, 0.0, 0.8]) ** 2 / 0.5
    np.testing.assert_allclose(u - u.mean(), ex - ex.mean(), atol=0.05)


def test_condition_validation(gauss_run, cond_gauss_run):
    with pytest.raises(mc.SamplingError, match="partial diffusion"):
        mc.sample(gauss_run, 100, condition={0: 1.0})
    with pytest.raises(mc.SamplingError, match="out of range"):
        mc.sample(cond_gauss_run, 100, condition={5: 1.0})
    with pytest.raises(mc.SamplingError, match="diffuse"):
        mc.sample(cond_gauss_run, 100, condition={1: 1.0})
    with pytest.raises(mc.SamplingError, match="condition"):
        mc.sample(cond_gauss_run, 100)
    with pytest.raises(mc.SamplingError, match="all 2"):
        mc.sample(cond_gauss_run, 100, condition={0: 1.0, 1: 0.0})


def test_exact_conditional_density_of_a_gaussian():
    """π(z | y*) by quadrature = the closed-form Gaussian conditional N(μ_z + Σ_zy/Σ_yy (y* − μ_y),
    Σ_zz − Σ_zy²/Σ_yy); None when two coordinates are free."""
    mean, cov = np.array([1.0, -0.5]), np.array([[1.5, 0.6], [0.6, 0.8]])
    tgt = mc.target_from_spec({"kind": "gaussian_mixture", "weights": [1.0], "means": [mean.tolist()],
                               "covariances": [cov.tolist()]})
    y = 2.0
    m = mean[1] + cov[1, 0] / cov[0, 0] * (y - mean[0])
    v = cov[1, 1] - cov[1, 0] ** 2 / cov[0, 0]
    z = np.linspace(-4, 3, 57)
    got = mc.exact_conditional_density(tgt, {0: y}, z)
    want = np.exp(-0.5 * (z - m) ** 2 / v) / math.sqrt(2 * math.pi * v)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)
    assert mc.exact_conditional_density(mc.named_target("gaussian", 3), {0: 0.0}, z) is None
