"""Tests of mne_core.flow: the reverse probability flow and its exact log density, with the exact
OU-evolved energies of Gaussian mixtures (design note §6) and with trained runs."""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mne_core as mc
from conftest import LOG2PI, exact_energy_at


def test_hermite_matches_run(gauss_run):
    """The jittable θ(t) on padded arrays (shared compilations) equals Run.theta."""
    run = gauss_run
    n = len(run.times)
    L = 1 << (n - 1).bit_length()
    times = np.concatenate([run.times, run.times[-1] + 1.0 + np.arange(L - n)])
    thetas = np.concatenate([run.thetas, np.repeat(run.thetas[-1:], L - n, 0)])
    dots = np.concatenate([run.theta_dots, np.zeros((L - n, run.thetas.shape[1]))])
    f = jax.jit(lambda t: mc.hermite_theta(jnp.asarray(times), jnp.asarray(thetas), jnp.asarray(dots), t, n))
    for t in np.concatenate([run.times[:3], np.linspace(0, run.T, 17), [run.T]]):
        np.testing.assert_allclose(np.asarray(f(t)), run.theta(t), rtol=1e-12, atol=1e-12)


def test_forward_and_reverse_local_derivatives_agree(gauss_run):
    """The flow's forward-over-forward derivatives equal the evolution's forward-over-reverse ones."""
    th = jnp.asarray(gauss_run.thetas[5])
    e = lambda x: gauss_run.net.energy(th, x)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((50, 2)))
    m = jnp.asarray([0.0, 1.0])
    fwd = mc.local_derivatives(e, x, m, method="forward")
    ref = mc.local_derivatives(e, x, m)
    np.testing.assert_allclose(fwd.value, ref.value, atol=1e-12)
    np.testing.assert_allclose(fwd.grad, ref.grad, atol=1e-12)
    np.testing.assert_allclose(fwd.laplacian, ref.laplacian, atol=1e-12)


# --------------------------------------------------------------------------- exact-energy flows


@pytest.mark.parametrize("name", ["gaussian", "two-modes"])
def test_reverse_flow_exact_energy_recovers_target_density(name):
    """With the EXACT U_t and x_T ~ ρ_T exactly, log q_0(x_0) must equal log π(x_0): this pins
    the sign of the divergence term (a flipped sign is off by O(1))."""
    tgt = mc.named_target(name)
    T = 2.5
    x_T = tgt.evolved_sampler(jax.random.PRNGKey(0), T, 300)
    lq_T = jax.vmap(lambda x: tgt.evolved_log_density(T, x))(x_T)
    fl = mc.reverse_flow(exact_energy_at(tgt), x_T, lq_T, T, rtol=1e-9, atol=1e-11)
    assert fl.ok
    log_pi = -np.asarray(tgt.energies(fl.x))  # log Z = 0
    np.testing.assert_allclose(fl.log_q, log_pi, atol=2e-6)
    # and x_0 is distributed as π: compare the first two moments with exact samples
    ref = np.asarray(tgt.sampler(jax.random.PRNGKey(1), 20000))
    assert np.abs(fl.x.mean(0) - ref.mean(0)).max() < 0.35


def test_reverse_flow_from_reference_gaussian_exact_weights():
    """From q_T = N(0, I) at large T with the exact energy: q_0 ≈ π, log w ≈ 0, ESS ≈ M."""
    tgt = mc.named_target("gaussian")
    T = 10.0
    z = np.random.default_rng(0).standard_normal((400, 2))
    lq_T = -0.5 * (z * z).sum(1) - LOG2PI
    fl = mc.reverse_flow(exact_energy_at(tgt), z, lq_T, T, rtol=1e-9, atol=1e-11)
    lw = mc.importance_weights(-np.asarray(tgt.energies(fl.x)), fl.log_q)
    assert np.abs(lw).max() < 1e-3
    assert mc.effective_sample_size(lw) > 399.9


# --------------------------------------------------------------------------- trained-run flows


def test_run_flow_log_density_matches_jacobian_determinant(gauss_run):
    """log q_0(x_0) = log q_T(x_T) − log|det ∂x_0/∂x_T| with the trained network and the Hermite
    θ(t): the change of variables is exact whatever the fit quality (finite differences)."""
    run = gauss_run
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((6, 2))
    h = 1e-5
    pts = [xs]
    for j in range(2):
        e = np.zeros(2)
        e[j] = h
        pts += [xs + e, xs - e]
    X = np.concatenate(pts)
    lq = -0.5 * (X * X).sum(1) - LOG2PI
    fl = mc.run_flow(run, X, lq, rtol=1e-11, atol=1e-12, knots=True)
    assert fl.ok
    n = len(xs)
    x0 = fl.x[:n]
    J = np.stack([(fl.x[n * (1 + 2 * j): n * (2 + 2 * j)] - fl.x[n * (2 + 2 * j): n * (3 + 2 * j)]) / (2 * h)
                  for j in range(2)], axis=2)
    logdet = np.log(np.abs(np.linalg.det(J)))
    np.testing.assert_allclose(fl.log_q[:n], lq[:n] - logdet, atol=1e-5)
    assert np.abs(x0 - xs).max() > 0.1  # the map is not trivial
    # default (no knots) tolerance: within ~1e-3 of the precise value
    fd = mc.run_flow(run, xs, lq[:n])
    np.testing.assert_allclose(fd.log_q, fl.log_q[:n], atol=2e-3)
