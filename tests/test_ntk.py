"""Structured NTK (mne_core.ntk) against the J-based solvers: K, G, θ̇ and the residual in float64."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mne_core as mc
from mne_core import ntk
from mne_core.evolution import mne_rhs
from mne_core.operators import OUEnergy
from mne_core.solvers import jacobian, make_sketch, parameter_velocity

CASES = [(1, "tanh", 3, 12), (2, "silu", 2, 16), (3, "gelu", 4, 8), (2, "sin", 1, 10)]


def _random_net(depth, act, d, width, seed=0):
    """A network with every parameter random (the output layer starts at zero otherwise,
    which would make all hidden back-propagated signals vanish)."""
    net, th = mc.init_energy_network(d, width, depth, act, seed=seed)
    th = th + 0.5 * jax.random.normal(jax.random.PRNGKey(seed + 11), th.shape)
    x = 1.3 * jax.random.normal(jax.random.PRNGKey(seed + 1), (48, d))
    return net, th, x


def _rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.parametrize("depth,act,d,width", CASES)
def test_structured_ntk_equals_jjt_and_jt_product(depth, act, d, width):
    net, th, x = _random_net(depth, act, d, width, seed=depth)
    J = jacobian(net.energy, th, x)
    A, D = ntk.layer_factors(net, th, x)
    assert [a.shape[1] for a in A] == [s[0] for s in ntk.layer_sizes(net)]
    assert sum((a.shape[1] + 1) * dd.shape[1] for a, dd in zip(A, D)) == net.num_params
    assert _rel(ntk.structured_ntk(A, D), J @ J.T) < 1e-12
    w = jax.random.normal(jax.random.PRNGKey(3), (x.shape[0],))
    assert _rel(ntk.jt_product(net, th, x, w), J.T @ w) < 1e-12


@pytest.mark.parametrize("depth,act,d,width", CASES)
@pytest.mark.parametrize("kind", ["sparse", "gaussian"])
def test_structured_solves_match_jacobian_solves(depth, act, d, width, kind):
    net, th, x = _random_net(depth, act, d, width, seed=10 + depth)
    N = x.shape[0]
    J = jacobian(net.energy, th, x)
    f = jax.random.normal(jax.random.PRNGKey(4), (N,))
    sk = make_sketch(jax.random.PRNGKey(5), N, 20, kind)
    Z = sk.sketch_jacobian(J)
    assert _rel(ntk.sketch_gram(sk, ntk.ntk(net, th, x)), Z.T @ Z) < 1e-10
    for mode, reg in (("sketch", 1e-5), ("full", 1e-4)):   # κ(G + λI) ≤ 1/λ_rel: roundoff ≪ 1e-10
        a, ia = parameter_velocity(mode, J, f, reg, sk, spectrum=True)
        b, ib = ntk.solve_structured(mode, net, th, x, f, reg, sk, spectrum=True)
        assert _rel(b, a) < 1e-10, mode
        assert abs(float(ib.residual) - float(ia.residual)) < 1e-10 * max(1.0, float(ia.residual)), mode
        assert abs(float(ib.reg) - float(ia.reg)) <= 1e-12 * float(ia.reg)
        assert _rel(ib.gram_eigenvalues, ia.gram_eigenvalues) < 1e-10


@pytest.mark.parametrize("mode", ["sketch", "full"])
def test_mne_rhs_structured_equals_jacobian(mode):
    """The evolution's right-hand side (OU operator, realistic f) by both Gram paths."""
    net, th, x = _random_net(2, "silu", 2, 16, seed=7)
    sk = make_sketch(jax.random.PRNGKey(2), x.shape[0], 24)
    reg = jnp.asarray(1e-5)
    a_td, a_xd, a_info = mne_rhs(net, OUEnergy(), mode, 0.3, th, x, sk, reg, gram="jacobian")
    rhs = jax.jit(lambda th, x: mne_rhs(net, OUEnergy(), mode, 0.3, th, x, sk, reg, gram="auto"))  # the cost rule, traced
    assert ntk.choose_gram(mode, net, x.shape[0], sk.rank) == "structured"
    b_td, b_xd, b_info = rhs(th, x)
    assert _rel(b_td, a_td) < 1e-10
    np.testing.assert_allclose(np.asarray(b_xd), np.asarray(a_xd), rtol=1e-12, atol=1e-12)
    assert abs(float(b_info.residual) - float(a_info.residual)) < 1e-10


def test_cost_rule():
    net, _ = mc.init_energy_network(2, 64, 2, "silu")          # the default network, p = 4417
    assert net.num_params == 4417
    assert ntk.choose_gram("sketch", net, 512, 256) == "structured"    # N² c ≈ 7.0e7 < p n² ≈ 2.9e8
    assert ntk.choose_gram("sketch", net, 4096, 256) == "jacobian"     # N ≫ n: the sketch is linear in N
    assert ntk.choose_gram("full", net, 4096, 256) == "structured"     # c ≪ p
    assert ntk.choose_gram("subspace", net, 512, 256) == "jacobian"
    assert ntk.choose_gram("galerkin", net, 512, 256, "structured") == "jacobian"
    assert ntk.choose_gram("sketch", net, 512, 256, "jacobian") == "jacobian"
    cj, cs = ntk.gram_costs("sketch", net, 512, 256)
    assert cj == 4417 * 256 ** 2 + ntk.JACOBIAN_ENTRY_COST * 512 * 4417
    assert cs == 512 ** 2 * (2 + 64 + 2 + 64 + 64 + 2 + 64 + 1 + 2 + 2)
    # wide networks at N = 2048: building J dominates, structured wins (measured 0.33 s vs 1.16 s
    # on two CPU cores, 1.3 vs 1.8 ms on an H100, benchmarks/results/engine_scaling*.md) ...
    wide, _ = mc.init_energy_network(2, 224, 2, "silu")
    assert ntk.choose_gram("sketch", wide, 2048, 256) == "structured"
    # ... and at N = 8192 the N×N layer Grams lose again (5.5 vs 18 ms on the H100, p = 101 437)
    widest, _ = mc.init_energy_network(2, 316, 2, "silu")
    assert ntk.choose_gram("sketch", widest, 8192, 256) == "jacobian"
    with pytest.raises(ValueError):
        ntk.choose_gram("sketch", net, 512, 256, "bogus")


def test_full_ntk_spectrum_is_that_of_jjt_and_bounds_an_orthonormal_sketch():
    """ntk_spectrum = eig(J Jᵀ), descending, trace = ‖J‖²_F; for Ω with orthonormal columns the
    n eigenvalues of Ωᵀ K Ω interlace those of K (Cauchy): λ_i(G) ≤ λ_i(K)."""
    net, th, x = _random_net(2, "silu", 2, 16, seed=7)
    J = jacobian(net.energy, th, x)
    eig = ntk.ntk_spectrum(net, th, x)
    ref = np.linalg.eigvalsh(np.asarray(J @ J.T))[::-1]
    assert eig.shape == (x.shape[0],) and np.all(np.diff(np.asarray(eig)) <= 1e-9 * float(eig[0]))
    assert _rel(eig, ref) < 1e-10
    assert float(jnp.sum(eig)) == pytest.approx(float(jnp.sum(J * J)), rel=1e-10)
    Q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(x.shape[0], 12)))
    G = Q.T @ np.asarray(J @ J.T) @ Q
    g = np.linalg.eigvalsh(G)[::-1]
    assert np.all(g <= np.asarray(eig)[:12] * (1 + 1e-10))


def test_run_ntk_spectrum_at_a_recorded_step(gauss_run):
    run = gauss_run
    t, eig = run.ntk_spectrum(0.7)
    k = int(np.argmin(np.abs(run.times - 0.7)))
    assert t == run.times[k] and eig.shape == (run.points.shape[1],)
    J = jacobian(run.net.energy, jnp.asarray(run.thetas[k]), jnp.asarray(run.points[k]))
    np.testing.assert_allclose(eig, np.linalg.eigvalsh(np.asarray(J @ J.T))[::-1], rtol=1e-8,
                               atol=1e-10 * float(eig[0]))
