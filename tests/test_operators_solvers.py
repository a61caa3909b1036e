"""Operator identities against exact solutions, and solver-mode equivalences."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mne_core as mc
from mne_core.operators import HeatEnergy, OUEnergy, local_derivatives
from mne_core.solvers import (make_sketch, parameter_velocity, solve_full, solve_galerkin,
                              solve_sketch, solve_subspace)


def _pts(n=64, d=2, seed=0, scale=1.5):
    return scale * jax.random.normal(jax.random.PRNGKey(seed), (n, d))


def test_local_derivatives_match_autodiff_hessian():
    energy = lambda x: jnp.sum(jnp.sin(x) * x**3) + jnp.prod(jnp.cos(x))
    x = _pts(8, 3)
    der = local_derivatives(energy, x)
    lap = jax.vmap(lambda xi: jnp.trace(jax.hessian(energy)(xi)))(x)
    np.testing.assert_allclose(der.laplacian, lap, rtol=1e-10)
    np.testing.assert_allclose(der.grad, jax.vmap(jax.grad(energy))(x), rtol=1e-12)
    masked = local_derivatives(energy, x, (1.0, 0.0, 1.0))
    lapm = jax.vmap(lambda xi: jnp.diag(jax.hessian(energy)(xi))[jnp.array([0, 2])].sum())(x)
    np.testing.assert_allclose(masked.laplacian, lapm, rtol=1e-10)


@pytest.mark.parametrize("d", [1, 2, 5])
def test_ou_stationary_energy(d):
    x = _pts(32, d)
    der = local_derivatives(lambda y: 0.5 * jnp.sum(y * y), x)
    op = OUEnergy()
    np.testing.assert_allclose(op.rhs(x, der), 0.0, atol=1e-12)
    np.testing.assert_allclose(op.point_velocity(x, der), 0.0, atol=1e-12)


def _time_derivative(fn, t, x, h=1e-5):
    return (fn(t + h, x) - fn(t - h, x)) / (2 * h)


@pytest.mark.parametrize("name", ["gaussian", "two-modes", "ring"])
def test_ou_rhs_equals_exact_time_derivative(name):
    """U_t = −log ρ_t of the exact OU-evolved mixture satisfies ∂_t U = A[U]."""
    tgt = mc.named_target(name)
    x = _pts(40, tgt.dim, seed=1)
    for t in (0.1, 0.7, 2.0):
        U = lambda s, y: -tgt.evolved_log_density(s, y)
        dUdt = jax.vmap(lambda y: _time_derivative(U, t, y))(x)
        der = local_derivatives(functools.partial(U, t), x)
        np.testing.assert_allclose(OUEnergy().rhs(x, der), dUdt, rtol=1e-6, atol=1e-6)


def test_ou_partial_diffusion_rhs_matches_exact():
    tgt = mc.named_target("gaussian", 3)
    mask = (0.0, 1.0, 1.0)
    m = jnp.asarray(mask)
    x = _pts(30, 3, seed=2)
    U = lambda s, y: -tgt.evolved_log_density(s, y, m)
    for t in (0.2, 1.0):
        dUdt = jax.vmap(lambda y: _time_derivative(U, t, y))(x)
        der = local_derivatives(functools.partial(U, t), x, mask)
        np.testing.assert_allclose(OUEnergy(mask).rhs(x, der), dUdt, rtol=1e-6, atol=1e-6)
        # held coordinate does not move
        assert np.all(np.asarray(OUEnergy(mask).point_velocity(x, der))[:, 0] == 0)


def test_heat_rhs_matches_gaussian_spreading():
    """Heat equation in energy form: N(0, s²+2κt) is the exact solution."""
    kappa, s2 = 0.7, 0.4
    x = _pts(20, 2, seed=3)

    def U(t, y):
        v = s2 + 2 * kappa * t
        return 0.5 * jnp.sum(y * y) / v + jnp.log(2 * jnp.pi * v)
    for t in (0.0, 0.5):
        dUdt = jax.vmap(lambda y: _time_derivative(U, t, y))(x)
        der = local_derivatives(functools.partial(U, t), x)
        np.testing.assert_allclose(HeatEnergy(kappa).rhs(x, der), dUdt, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- solvers
def _random_problem(N=40, p=120, seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    J = jax.random.normal(k1, (N, p)) @ jnp.diag(jnp.exp(-jnp.linspace(0, 3, p)))
    f = jax.random.normal(k2, (N,))
    return J, f


def test_galerkin_equals_full_at_equal_reg():
    J, f = _random_problem()
    for reg in (1e-2, 1e-6):
        a, ia = solve_full(J, f, reg)
        b, ib = solve_galerkin(J, f, reg)
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(ia.reg, ib.reg, rtol=1e-12)


@pytest.mark.parametrize("kind", ["sparse", "gaussian"])
def test_sketch_with_full_rank_matches_full(kind):
    J, f = _random_problem()
    N = J.shape[0]
    sk = make_sketch(jax.random.PRNGKey(4), N, N, kind)
    if kind == "sparse":  # Ω is a signed permutation: identical to full at equal reg
        for reg in (1e-3, 1e-8):
            np.testing.assert_allclose(solve_sketch(J, f, reg, sk)[0], solve_full(J, f, reg)[0], rtol=1e-7, atol=1e-9)
    else:  # invertible Ω: identical in the limit λ → 0
        np.testing.assert_allclose(solve_sketch(J, f, 1e-13, sk)[0], solve_full(J, f, 1e-13)[0], rtol=1e-5, atol=1e-7)
    # the constraints are met exactly at tiny λ (p > N)
    td, info = solve_sketch(J, f, 1e-13, sk)
    assert float(info.residual) < 1e-6


def test_sketch_solution_is_least_norm_in_sketched_constraints():
    """θ̇ solves Ωᵀ J θ̇ = Ωᵀ f and lies in range(JᵀΩ) (least norm)."""
    J, f = _random_problem()
    sk = make_sketch(jax.random.PRNGKey(5), J.shape[0], 10, "sparse")
    td, _ = solve_sketch(J, f, 1e-13, sk)
    Om = sk.dense
    np.testing.assert_allclose(Om.T @ (J @ td), Om.T @ f, rtol=1e-6, atol=1e-8)
    Z = J.T @ Om
    coef, *_ = np.linalg.lstsq(np.asarray(Z), np.asarray(td), rcond=None)
    np.testing.assert_allclose(Z @ coef, td, atol=1e-8)


def test_sparse_sketch_jacobian_equals_dense_product():
    J, _ = _random_problem(N=50, p=30)
    for n in (7, 16, 50):
        sk = make_sketch(jax.random.PRNGKey(n), 50, n, "sparse")
        np.testing.assert_allclose(sk.sketch_jacobian(J), J.T @ sk.dense, rtol=1e-12)
        assert np.all(np.count_nonzero(np.asarray(sk.dense), axis=1) == 1)


def test_subspace_full_rank_is_least_squares_and_residual_monotone_in_rank():
    J, f = _random_problem(N=60, p=40)  # overdetermined: least squares
    sk = make_sketch(jax.random.PRNGKey(6), 60, 60, "gaussian")
    td, info = solve_subspace(J, f, 1e-14, sk)
    ls, *_ = np.linalg.lstsq(np.asarray(J), np.asarray(f), rcond=None)
    np.testing.assert_allclose(J @ td, J @ ls, rtol=1e-6, atol=1e-8)
    J2, f2 = _random_problem(N=60, p=200)
    res = [float(parameter_velocity("subspace", J2, f2, 1e-12, make_sketch(jax.random.PRNGKey(1), 60, n, "gaussian"))[1].residual)
           for n in (5, 20, 60)]
    assert res[0] > res[1] > res[2]


@pytest.mark.parametrize("mode", mc.SOLVER_MODES)
def test_spectrum_is_the_gram_spectrum(mode):
    J, f = _random_problem()
    sk = make_sketch(jax.random.PRNGKey(7), J.shape[0], 12, "gaussian")
    _, info = parameter_velocity(mode, J, f, 1e-6, sk, spectrum=True)
    eig = np.asarray(info.gram_eigenvalues)
    assert np.all(np.diff(eig) <= 1e-9)  # descending
    if mode in ("full", "galerkin"):
        np.testing.assert_allclose(eig, np.linalg.eigvalsh(np.asarray(J @ J.T))[::-1], rtol=1e-8, atol=1e-10)
    elif mode == "sketch":
        Z = np.asarray(J.T @ sk.dense)
        np.testing.assert_allclose(eig, np.linalg.eigvalsh(Z.T @ Z)[::-1], rtol=1e-8, atol=1e-10)
    assert eig.shape[0] == (J.shape[0] if mode in ("full", "galerkin") else 12)
