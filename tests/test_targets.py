"""Tests for mne_core.targets: energies, normalizers, exact samples and OU oracles."""
import jax

jax.config.update("jax_enable_x64", True)

import json  # noqa: E402
import math  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import integrate, stats  # noqa: E402
from scipy.special import logsumexp  # noqa: E402

from mne_core.expressions import ExpressionError  # noqa: E402
from mne_core.targets import (  # noqa: E402
    NAMED_TARGETS,
    ExpressionTargetError,
    Target,
    TargetSpecError,
    gaussian_mixture,
    named_target,
    resolve_target,
    target_from_expression,
    target_from_json,
    target_from_spec,
)

KEY = jax.random.PRNGKey(0)


def _random_mixture(K=3, d=3, seed=1):
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.2, 1.0, K)
    w /= w.sum()
    m = rng.normal(scale=2.0, size=(K, d))
    S = []
    for _ in range(K):
        A = rng.normal(size=(d, d))
        S.append(A @ A.T / d + 0.3 * np.eye(d))
    return w, m, np.array(S)


MIX = _random_mixture()


def _scipy_mixture_logpdf(x, w, m, S):
    return logsumexp([math.log(wk) + stats.multivariate_normal(mk, Sk).logpdf(x)
                      for wk, mk, Sk in zip(w, m, S)])


def _evolved_params(t, w, m, S, mask=None):
    """Independent NumPy implementation of the OU-evolved mixture parameters."""
    d = m.shape[1]
    z = np.ones(d, bool) if mask is None else np.asarray(mask, bool)
    dec = np.where(z, np.exp(-t), 1.0)
    add = np.where(z, 1.0 - np.exp(-2 * t), 0.0)
    return w, m * dec, S * np.outer(dec, dec) + np.diag(add)


def _mixture_moments(w, m, S):
    mean = (w[:, None] * m).sum(0)
    second = sum(wk * (Sk + np.outer(mk, mk)) for wk, mk, Sk in zip(w, m, S))
    return mean, second - np.outer(mean, mean)


def _assert_moments(samples, mean, cov, nse=5.0):
    """Sample mean/covariance within ``nse`` standard errors (estimated from the samples)."""
    x = np.asarray(samples)
    n = x.shape[0]
    assert np.all(np.isfinite(x))
    se_mean = x.std(0) / math.sqrt(n)
    assert np.all(np.abs(x.mean(0) - mean) <= nse * se_mean + 1e-12), (x.mean(0), mean)
    c = x - mean
    prods = c[:, :, None] * c[:, None, :]
    se_cov = prods.std(0) / math.sqrt(n)
    assert np.all(np.abs(prods.mean(0) - cov) <= nse * se_cov + 1e-12), (prods.mean(0), cov)


def _log_trapz_2d(target, x0, x1):
    X0, X1 = np.meshgrid(x0, x1, indexing="ij")
    pts = np.stack([X0.ravel(), X1.ravel()], axis=1)
    u = np.asarray(target.energies(pts)).reshape(X0.shape)
    umin = u.min()
    f = np.exp(-(u - umin))
    return math.log(integrate.trapezoid(integrate.trapezoid(f, x1, axis=1), x0)) - umin


# --------------------------------------------------------------------------- energies


@pytest.mark.parametrize("name", ["two-modes", "ring", "gaussian"])
def test_named_mixture_energy_matches_scipy(name):
    t = named_target(name)
    rng = np.random.default_rng(0)
    xs = rng.normal(scale=3.0, size=(10, t.dim))
    want = [-_scipy_mixture_logpdf(x, t.mode_weights, t.modes, _covs_of(t)) for x in xs]
    np.testing.assert_allclose(t.energies(xs), want, rtol=1e-12)


def _covs_of(t):
    """Component covariances of the named mixture targets, as documented."""
    if t.name == "two-modes":
        return np.array([0.5 * np.eye(2)] * 2)
    if t.name == "ring":
        return np.array([0.2 * np.eye(2)] * 8)
    assert t.name == "gaussian"
    return _gaussian_cov(t.dim)


def _gaussian_cov(d):
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    Q = np.eye(d)
    for i in range(d - 1):
        G = np.eye(d)
        G[i:i + 2, i:i + 2] = [[c, -s], [s, c]]
        Q = G @ Q
    return np.array([Q @ np.diag(np.geomspace(0.5, 2.0, d)) @ Q.T])


def test_named_gaussian_2d_is_as_documented():
    t = named_target("gaussian")
    np.testing.assert_allclose(t.modes, [[1.0, -0.5]])
    # minimum of the energy at the mean; Hessian = S^{-1} with eigenvalues 1/2 and 2
    H = jax.jit(jax.hessian(t.energy))(jnp.array([1.0, -0.5]))
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(H)), [0.5, 2.0], rtol=1e-12)
    assert abs(H[0, 1]) > 0.1  # anisotropic *and* rotated


def test_random_mixture_energy_matches_scipy():
    w, m, S = MIX
    t = gaussian_mixture(w, m, S)
    xs = np.random.default_rng(2).normal(scale=3.0, size=(20, 3))
    want = [-_scipy_mixture_logpdf(x, w, m, S) for x in xs]
    np.testing.assert_allclose(t.energies(xs), want, rtol=1e-12)
    assert t.log_z == 0.0 and t.has_exact
    np.testing.assert_allclose(t.mode_weights, w)


def test_funnel_and_banana_energies_are_normalized_log_densities():
    f = named_target("funnel", 5)
    x = np.array([0.7, -1.0, 0.3, 2.0, -0.4])
    want = -(stats.norm(0, 3).logpdf(x[0]) + stats.norm(0, math.exp(x[0] / 2)).logpdf(x[1:]).sum())
    np.testing.assert_allclose(f.energy(jnp.asarray(x)), want, rtol=1e-13)
    b = named_target("banana")
    x = np.array([1.3, 0.4])
    want = -(stats.norm(0, 2).logpdf(x[0]) + stats.norm(0.25 * (x[0] ** 2 - 4), 1).logpdf(x[1]))
    np.testing.assert_allclose(b.energy(jnp.asarray(x)), want, rtol=1e-13)
    assert f.log_z == 0.0 and b.log_z == 0.0


@pytest.mark.parametrize("name", NAMED_TARGETS)
def test_energies_are_traceable(name):
    t = named_target(name)
    x = jnp.asarray(np.random.default_rng(3).normal(size=t.dim) * 0.5)
    u = jax.jit(t.energy)(x)
    assert u.shape == () and np.isfinite(u)
    g = jax.jit(jax.grad(t.energy))(x)
    h = jax.jit(jax.hessian(t.energy))(x)
    assert g.shape == (t.dim,) and h.shape == (t.dim, t.dim)
    np.testing.assert_allclose(h, h.T, atol=1e-10)
    eps = 1e-6
    steps = eps * np.eye(t.dim)
    fd = (t.energies(x + steps) - t.energies(x - steps)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6)
    fd_h = (jax.vmap(jax.grad(t.energy))(x + steps) - jax.vmap(jax.grad(t.energy))(x - steps)) / (2 * eps)
    np.testing.assert_allclose(h, fd_h, rtol=1e-5, atol=1e-5)
    xs = jnp.stack([x, 2 * x])
    np.testing.assert_allclose(jax.vmap(t.energy)(xs), t.energies(xs), rtol=1e-13)
    assert isinstance(t.description, str) and t.description and "\n" not in t.description
    assert t.spec == {"kind": "named", "name": name, "dim": t.dim}


def test_named_dims():
    assert named_target("funnel").dim == 10
    assert named_target("many-well").dim == 8
    assert named_target("gaussian").dim == 2
    assert named_target("gaussian", 5).dim == 5
    assert named_target("funnel", 3).dim == 3
    assert named_target("ring", 2).dim == 2
    assert named_target("many-well", 2) is named_target("many-well", 2)  # cached
    with pytest.raises(TargetSpecError, match="2-dimensional"):
        named_target("ring", 3)
    with pytest.raises(TargetSpecError, match="even"):
        named_target("many-well", 5)
    with pytest.raises(TargetSpecError, match="at most 64"):
        named_target("gaussian", 65)
    with pytest.raises(TargetSpecError, match="two-modes, ring, banana"):
        named_target("rings")


# --------------------------------------------------------------------------- log Z


def test_log_z_two_modes_by_quadrature():
    t = named_target("two-modes")
    lz = _log_trapz_2d(t, np.linspace(-8, 8, 641), np.linspace(-5, 5, 401))
    assert abs(lz - t.log_z) < 1e-9


def test_log_z_banana_by_quadrature():
    t = named_target("banana")
    lz = _log_trapz_2d(t, np.linspace(-16, 16, 641), np.linspace(-9, 66, 751))
    assert abs(lz - t.log_z) < 1e-8


def test_log_z_double_well_by_quadrature():
    t = named_target("double-well")
    lz = _log_trapz_2d(t, np.linspace(-3.5, 3.5, 701), np.linspace(-9, 9, 361))
    assert abs(lz - t.log_z) < 1e-9
    assert t.log_z == pytest.approx(1.2631767529342817, abs=1e-12)


def test_log_z_many_well_by_quadrature():
    t2 = named_target("many-well", 2)
    lz = _log_trapz_2d(t2, np.linspace(-4.5, 4.5, 901), np.linspace(-9, 9, 361))
    assert abs(lz - t2.log_z) < 1e-9
    t8 = named_target("many-well", 8)
    assert t8.log_z == pytest.approx(4 * t2.log_z, rel=1e-13)


# --------------------------------------------------------------------------- exact samples


@pytest.mark.parametrize("name", ["two-modes", "ring", "gaussian"])
def test_mixture_samples_moments(name):
    t = named_target(name)
    cov = _covs_of(t)
    mean, C = _mixture_moments(t.mode_weights, t.modes, cov)
    _assert_moments(t.sampler(KEY, 40_000), mean, C)


def test_random_mixture_samples_moments():
    w, m, S = MIX
    t = gaussian_mixture(w, m, S)
    x = t.sampler(KEY, 40_000)
    assert x.shape == (40_000, 3)
    _assert_moments(x, *_mixture_moments(w, m, S))


def test_banana_samples_moments():
    x = named_target("banana").sampler(KEY, 40_000)
    # x0 ~ N(0, 4); x1 = b(x0² − 4) + ε: E = 0, Var = b²·2σ⁴ + 1 = 3, Cov = b E[x0³] = 0
    _assert_moments(x, np.zeros(2), np.diag([4.0, 3.0]))


def test_funnel_samples():
    x = np.asarray(named_target("funnel", 6).sampler(KEY, 40_000))
    _assert_moments(x[:, :1], np.zeros(1), np.array([[9.0]]))
    white = x[:, 1:] * np.exp(-x[:, :1] / 2)  # x_i e^{−x0/2} ~ N(0, 1), independent of x0
    _assert_moments(white, np.zeros(5), np.eye(5))


def _quad_moments(V, lo, hi, points):
    Z = integrate.quad(lambda s: math.exp(-V(s)), lo, hi, points=points, epsabs=1e-14, epsrel=1e-12)[0]
    m1 = integrate.quad(lambda s: s * math.exp(-V(s)), lo, hi, points=points, epsabs=1e-14, epsrel=1e-12)[0] / Z
    m2 = integrate.quad(lambda s: s * s * math.exp(-V(s)), lo, hi, points=points, epsabs=1e-14, epsrel=1e-12)[0] / Z
    return Z, m1, m2 - m1 * m1


def test_double_well_samples():
    V = lambda s: 2 * (s * s - 1) ** 2  # noqa: E731
    _, m1, var = _quad_moments(V, -5, 5, [-1, 0, 1])
    x = np.asarray(named_target("double-well").sampler(KEY, 40_000))
    _assert_moments(x, np.array([m1, 0.0]), np.diag([var, 1.0]))
    # distribution of x0 (inverse-CDF sampler) against the quadrature CDF
    grid = np.linspace(-5, 5, 400_001)
    cdf = integrate.cumulative_trapezoid(np.exp(-V(grid)), grid, initial=0)
    cdf /= cdf[-1]
    assert stats.kstest(x[:, 0], lambda s: np.interp(s, grid, cdf)).pvalue > 1e-3


def test_many_well_samples_and_mode_weights():
    V = lambda s: s ** 4 - 6 * s ** 2 - 0.5 * s  # noqa: E731
    crit = np.sort(np.roots([4, 0, -12, -0.5]).real)
    Z, m1, var = _quad_moments(V, -7, 7, list(crit))
    t = named_target("many-well", 4)
    x = np.asarray(t.sampler(KEY, 40_000))
    _assert_moments(x, np.array([m1, 0, m1, 0]), np.diag([var, 1.0, var, 1.0]))
    grid = np.linspace(-7, 7, 400_001)
    cdf = integrate.cumulative_trapezoid(np.exp(-V(grid)), grid, initial=0)
    cdf /= cdf[-1]
    assert stats.kstest(x[:, 2], lambda s: np.interp(s, grid, cdf)).pvalue > 1e-3
    # exact mode masses: product over pairs of the mass on each side of the barrier
    p_right = integrate.quad(lambda s: math.exp(-V(s)), crit[1], 7, points=[crit[2]],
                             epsabs=0, epsrel=1e-12)[0] / Z
    assert t.modes.shape == (4, 4) and t.mode_weights.shape == (4,)
    np.testing.assert_allclose(t.mode_weights.sum(), 1.0, rtol=1e-12)
    for centre, weight in zip(t.modes, t.mode_weights):
        right = centre[0::2] > 0
        assert np.all(np.isin(centre[0::2], crit[[0, 2]])) and np.all(centre[1::2] == 0)
        np.testing.assert_allclose(weight, np.prod(np.where(right, p_right, 1 - p_right)), rtol=1e-10)
        frac = np.mean(np.all((x[:, 0::2] > crit[1]) == right, axis=1))
        assert abs(frac - weight) < 5 * math.sqrt(weight * (1 - weight) / len(x))
    assert named_target("many-well", 8).modes.shape == (16, 8)
    big = named_target("many-well", 10)
    assert big.modes is None and big.mode_weights is None


def test_samples_reproducible_and_jittable():
    t = named_target("two-modes")
    a = t.sampler(KEY, 5)
    b = jax.jit(t.sampler, static_argnums=1)(KEY, 5)
    np.testing.assert_allclose(a, b)
    assert not np.allclose(a, t.sampler(jax.random.PRNGKey(1), 5))


# --------------------------------------------------------------------------- OU-evolved oracles


MASKS_3D = [None, np.array([True, False, True]), np.array([0, 1, 0])]


@pytest.mark.parametrize("t_", [0.0, 0.3, 1.7])
@pytest.mark.parametrize("mask", MASKS_3D, ids=["full", "mask101", "mask010"])
def test_evolved_density_matches_scipy(t_, mask):
    w, m, S = MIX
    target = gaussian_mixture(w, m, S)
    wt, mt, St = _evolved_params(t_, w, m, S, mask)
    xs = np.random.default_rng(4).normal(scale=2.0, size=(6, 3))
    got = [float(target.evolved_log_density(t_, jnp.asarray(x), mask)) for x in xs]
    want = [_scipy_mixture_logpdf(x, wt, mt, St) for x in xs]
    np.testing.assert_allclose(got, want, rtol=1e-11)


def test_evolved_energy_at_zero_is_energy():
    for target in [named_target("two-modes"), named_target("ring"), gaussian_mixture(*MIX)]:
        xs = np.random.default_rng(5).normal(scale=2.0, size=(5, target.dim))
        for x in xs:
            np.testing.assert_allclose(target.evolved_energy(0.0, x), target.energy(x), rtol=1e-12)


def _fokker_planck_sides(target, mask):
    """Jitted ``(t, x) -> (∂_t log ρ, Σ_{i∈z} (1 + x_i ∂_i log ρ + ∂_ii log ρ + (∂_i log ρ)²))``.

    The log form of ∂_t ρ = ∇_z·(zρ) + Δ_z ρ; ∂_t by a central finite difference, the x
    derivatives by JAX.
    """
    z = np.ones(target.dim) if mask is None else np.asarray(mask, float)
    f = lambda s, y: target.evolved_log_density(s, y, mask)  # noqa: E731
    h = 1e-5

    @jax.jit
    def sides(t, x):
        dt = (f(t + h, x) - f(t - h, x)) / (2 * h)
        g = jax.grad(f, argnums=1)(t, x)
        H = jax.hessian(f, argnums=1)(t, x)
        return dt, jnp.sum(z * (1.0 + x * g + jnp.diag(H) + g * g))

    return sides


@pytest.mark.parametrize("case", ["two-modes-full", "mix-full", "mix-partial", "two-modes-partial"])
def test_evolved_density_solves_fokker_planck(case):
    target = named_target("two-modes") if case.startswith("two-modes") else gaussian_mixture(*MIX)
    mask = None
    if case.endswith("partial"):
        mask = np.array([False, True]) if target.dim == 2 else np.array([True, False, True])
    sides = _fokker_planck_sides(target, mask)
    rng = np.random.default_rng(6)
    for t in [0.05, 0.4, 1.3]:
        for x in rng.normal(scale=2.0, size=(3, target.dim)):
            dt, rhs = (float(v) for v in sides(t, jnp.asarray(x)))
            assert abs(dt - rhs) < 1e-6 * (1 + abs(rhs)), (t, x, dt, rhs)


def test_evolved_density_solves_fokker_planck_can_fail():
    # a wrong time scale (t ↦ 2t) must violate the equation: the check is not vacuous
    base = named_target("two-modes")
    wrong = Target(name="wrong", dim=2, energy=base.energy, spec={}, log_z=0.0,
                   evolved_log_density=lambda t, x, mask=None: base.evolved_log_density(2 * t, x, mask))
    dt, rhs = _fokker_planck_sides(wrong, None)(0.4, jnp.array([0.5, -1.0]))
    assert abs(dt - rhs) > 1e-2


def test_evolved_density_converges_to_standard_normal():
    for target in [named_target("two-modes"), named_target("ring"), gaussian_mixture(*MIX)]:
        d = target.dim
        for x in np.random.default_rng(7).normal(size=(4, d)):
            want = stats.multivariate_normal(np.zeros(d), np.eye(d)).logpdf(x)
            np.testing.assert_allclose(target.evolved_log_density(30.0, x), want, rtol=1e-10)
            np.testing.assert_allclose(target.evolved_energy(30.0, x),
                                       0.5 * x @ x + 0.5 * d * math.log(2 * math.pi) - target.log_z,
                                       rtol=1e-10)


def test_partial_diffusion_keeps_y_marginal():
    # 3-D mixture, z = x1 diffuses: ∫ ρ_t(x0, z, x2) dz must equal π's (x0, x2) marginal
    w, m, S = MIX
    target = gaussian_mixture(w, m, S)
    mask = np.array([False, True, False])
    zs = np.linspace(-15, 15, 1501)
    logp = jax.jit(jax.vmap(target.evolved_log_density, in_axes=(None, 0, None)))
    for t in [0.5, 3.0]:
        for y in np.random.default_rng(8).normal(scale=2.0, size=(3, 2)):
            pts = np.stack([np.full_like(zs, y[0]), zs, np.full_like(zs, y[1])], axis=1)
            marg = integrate.trapezoid(np.exp(np.asarray(logp(t, pts, mask))), zs)
            want = math.exp(_scipy_mixture_logpdf(y, w, m[:, [0, 2]], S[:, [0, 2]][:, :, [0, 2]]))
            np.testing.assert_allclose(marg, want, rtol=1e-9)
    # and at large t the diffusing coordinate is N(0, 1), independent of y
    x = np.array([0.3, -0.7, 1.1])
    want = (_scipy_mixture_logpdf(x[[0, 2]], w, m[:, [0, 2]], S[:, [0, 2]][:, :, [0, 2]])
            + stats.norm.logpdf(x[1]))
    np.testing.assert_allclose(target.evolved_log_density(30.0, x, mask), want, rtol=1e-10)


QUADRATURE_CASES = {"many-well-full": ("many-well", 4, None),
                    "many-well-partial": ("many-well", 4, [False, True, True, False]),
                    "funnel-full": ("funnel", 3, None),
                    "funnel-partial": ("funnel", 3, [True, False, True])}


@pytest.mark.parametrize("case", list(QUADRATURE_CASES))
def test_many_well_and_funnel_evolved_densities_solve_fokker_planck(case):
    # their ρ_t is a 1-D quadrature over one coordinate's starting value (two rules, see
    # targets.kernel_log_integral); t = 1e-4 uses Gauss–Hermite, the others the grid
    name, d, mask = QUADRATURE_CASES[case]
    target = named_target(name, d)
    sides = _fokker_planck_sides(target, None if mask is None else np.asarray(mask))
    xs = np.asarray(target.sampler(KEY, 3))
    for t in [1e-4, 0.05, 0.4, 1.3]:
        for x in xs:
            dt, rhs = (float(v) for v in sides(t, jnp.asarray(x)))
            assert abs(dt - rhs) < 1e-5 * (1 + abs(rhs)), (t, x, dt, rhs)


def _adaptive_log_density(name, d, t, x):
    """log ρ_t(x) by scipy's adaptive quad over the starting value of the latent coordinate."""
    a, v = math.exp(-t), -math.expm1(-2 * t)
    kern = lambda y, s: -0.5 * (y - a * s) ** 2 / v - 0.5 * math.log(2 * math.pi * v)  # noqa: E731
    if name == "funnel":
        def f(s):
            var = a * a * math.exp(s) + v
            rest = sum(-0.5 * xi * xi / var - 0.5 * math.log(2 * math.pi * var) for xi in x[1:])
            return math.exp(-s * s / 18 - 0.5 * math.log(18 * math.pi) + kern(x[0], s) + rest)
        return math.log(integrate.quad(f, -30, 30, points=[x[0] / a], limit=500, epsabs=0, epsrel=1e-12)[0])
    V = lambda s: s ** 4 - 6 * s ** 2 - 0.5 * s  # noqa: E731
    log_z1 = math.log(integrate.quad(lambda s: math.exp(-V(s)), -8, 8, limit=500, epsabs=0, epsrel=1e-13)[0])
    out = 0.0
    for ai, bi in zip(x[0::2], x[1::2]):
        out += math.log(integrate.quad(lambda s: math.exp(-V(s) - log_z1 + kern(ai, s)), -8, 8,
                                       points=[ai / a], limit=500, epsabs=0, epsrel=1e-12)[0])
        out += stats.norm.logpdf(bi)
    return out


@pytest.mark.parametrize("name,d", [("many-well", 4), ("funnel", 3)])
def test_many_well_and_funnel_evolved_densities_match_adaptive_quadrature(name, d):
    target = named_target(name, d)
    for t in [0.3, 1.0, 4.0]:
        for x in np.asarray(target.evolved_sampler(KEY, t, 3)):
            got = float(target.evolved_log_density(t, jnp.asarray(x)))
            assert abs(got - _adaptive_log_density(name, d, t, x)) < 1e-8, (t, x)


@pytest.mark.parametrize("name,d", [("many-well", 4), ("funnel", 3)])
def test_many_well_and_funnel_evolved_densities_limits(name, d):
    target = named_target(name, d)
    assert target.has_exact
    for x in np.asarray(target.sampler(KEY, 4)):
        np.testing.assert_allclose(target.evolved_energy(0.0, x), target.energy(x), rtol=1e-12)
        want = stats.multivariate_normal(np.zeros(d), np.eye(d)).logpdf(x)
        np.testing.assert_allclose(target.evolved_log_density(30.0, x), want, rtol=1e-7)


def test_the_two_quadratures_agree_where_they_switch():
    from mne_core.targets import KERNEL_GRID_SPACINGS, kernel_log_integral
    grid = np.linspace(-4.0, 4.0, 401)
    h = grid[1] - grid[0]
    log_f = lambda s: -(s ** 4 - 6.0 * s ** 2 - 0.5 * s)  # noqa: E731
    t = 0.5 * math.log1p((KERNEL_GRID_SPACINGS * h) ** 2)       # √(1 − e^{−2t}) = 10 h e^{−t}
    for a in [-1.7, -0.3, 0.0, 1.2, 2.1]:
        lo = float(kernel_log_integral(a, math.exp(-t * (1 - 1e-9)), -math.expm1(-2 * t * (1 - 1e-9)), log_f, grid))
        hi = float(kernel_log_integral(a, math.exp(-t * (1 + 1e-9)), -math.expm1(-2 * t * (1 + 1e-9)), log_f, grid))
        assert abs(lo - hi) < 1e-8, (a, lo, hi)


@pytest.mark.parametrize("mask", [None, [False, True]], ids=["full", "partial"])
def test_evolved_samples_moments(mask):
    t = named_target("two-modes")
    cov = np.array([0.5 * np.eye(2)] * 2)
    mean, C = _mixture_moments(*_evolved_params(0.6, t.mode_weights, t.modes, cov, mask))
    x = t.evolved_sampler(KEY, 0.6, 40_000, mask)
    _assert_moments(x, mean, C)


def test_evolved_samples_for_non_mixture_targets():
    b = named_target("banana")
    assert not b.has_exact and b.evolved_log_density is None
    # y = x1 held fixed: its law is unchanged (mean 0, var 3); x0 diffuses: var e^{-2t}4 + 1 − e^{-2t}
    t = 0.8
    x = b.evolved_sampler(KEY, t, 40_000, jnp.array([True, False]))
    v0 = math.exp(-2 * t) * 4 + 1 - math.exp(-2 * t)
    _assert_moments(x, np.zeros(2), np.diag([v0, 3.0]))
    x = named_target("double-well").evolved_sampler(KEY, 25.0, 40_000)
    _assert_moments(x, np.zeros(2), np.eye(2))


def test_evolved_energy_requires_exact_oracle():
    with pytest.raises(ValueError, match="no exact evolved density"):
        named_target("banana").evolved_energy(0.5, jnp.zeros(2))
    with pytest.raises(ValueError, match="mask must have shape"):
        named_target("two-modes").evolved_log_density(0.5, jnp.zeros(2), [True])


# --------------------------------------------------------------------------- specs and JSON


@pytest.mark.parametrize("name", NAMED_TARGETS)
def test_named_spec_round_trip(name):
    t = named_target(name)
    again = target_from_json(json.dumps(t.spec))
    xs = np.random.default_rng(9).normal(size=(4, t.dim))
    np.testing.assert_allclose(again.energies(xs), t.energies(xs), rtol=1e-14)
    assert again.spec == t.spec and again.log_z == t.log_z


def test_mixture_and_energy_spec_round_trip(tmp_path):
    w, m, S = MIX
    spec = {"kind": "gaussian_mixture", "weights": w.tolist(), "means": m.tolist(),
            "covariances": S.tolist(), "name": "mine"}
    t = target_from_spec(spec)
    assert t.name == "mine" and t.dim == 3
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(t.spec))
    for again in [target_from_json(path), target_from_json(str(path)), resolve_target(str(path))]:
        xs = np.random.default_rng(10).normal(size=(4, 3))
        np.testing.assert_allclose(again.energies(xs), t.energies(xs), rtol=1e-14)

    e = target_from_spec({"kind": "energy", "expression": "x0**2/2 + (x1 - 1)**2", "dim": 2})
    assert e.log_z is None and e.sampler is None and not e.has_exact and e.modes is None
    again = target_from_json(json.dumps(e.spec))
    np.testing.assert_allclose(again.energy(jnp.array([1.0, 3.0])), 4.5)
    assert again.spec == {"kind": "energy", "expression": "x0**2/2 + (x1 - 1)**2", "dim": 2}


def test_weights_are_normalized_with_note():
    t = target_from_spec({"kind": "gaussian_mixture", "weights": [1, 3], "means": [[0.0], [2.0]],
                          "covariances": [[[1.0]], [[0.5]]]})
    np.testing.assert_allclose(t.mode_weights, [0.25, 0.75])
    assert "normalized" in t.description
    want = -logsumexp([math.log(0.25) + stats.norm(0, 1).logpdf(0.3),
                       math.log(0.75) + stats.norm(2, math.sqrt(0.5)).logpdf(0.3)])
    np.testing.assert_allclose(t.energy(jnp.array([0.3])), want, rtol=1e-13)
    # a tiny asymmetry (round-off) is accepted
    target_from_spec({"kind": "gaussian_mixture", "weights": [1.0], "means": [[0.0, 0.0]],
                      "covariances": [[[1.0, 0.2], [0.2 + 1e-12, 1.0]]]})


def _gm(**over):
    spec = {"kind": "gaussian_mixture", "weights": [0.5, 0.5], "means": [[0.0, 0.0], [1.0, 1.0]],
            "covariances": [np.eye(2).tolist(), np.eye(2).tolist()]}
    spec.update(over)
    return spec


BAD_SPECS = [
    ([1, 2], "must be a JSON object"),
    ({}, "missing 'kind'"),
    ({"kind": "mixture"}, "unknown target kind 'mixture'"),
    ({"kind": "named"}, "missing 'name'"),
    ({"kind": "named", "name": "nope"}, r"unknown target 'nope' \(valid names: two-modes"),
    ({"kind": "named", "name": "ring", "dim": 3}, "2-dimensional"),
    ({"kind": "named", "name": "funnel", "dim": "4"}, "dim must be an integer"),
    ({"kind": "named", "name": "funnel", "dim": True}, "dim must be an integer"),
    ({"kind": "named", "name": "funnel", "dim": 65}, "at most 64"),
    ({"kind": "named", "name": "two-modes", "extra": 1}, "unknown key 'extra'"),
    ({"kind": "gaussian_mixture", "weights": [1.0], "means": [[0.0]]}, "missing 'covariances'"),
    (_gm(weights=[0.5, "a"]), r"weights\[1\] must be a number"),
    (_gm(weights=[0.5, None]), r"weights\[1\] must be a number"),
    (_gm(weights=[0.5, True]), r"weights\[1\] must be a number"),
    (_gm(weights={"a": 1}), "weights must be a list"),
    (_gm(weights=[]), "weights must not be empty"),
    (_gm(means=[[0.0, float("nan")], [1.0, 1.0]]), r"means\[0\]\[1\] must be finite"),
    (_gm(covariances=[[[1.0, 0.0], [0.0, float("inf")]], np.eye(2).tolist()]),
     r"covariances\[0\]\[1\]\[1\] must be finite"),
    (_gm(weights=[0.2, 0.3, 0.5]), "means has 2 rows but weights has 3 entries"),
    (_gm(covariances=[np.eye(2).tolist()]), "covariances has 1 matrices but weights has 2"),
    (_gm(means=[[0.0, 0.0], [1.0]]), r"means\[1\] has 1 entries but means\[0\] has 2"),
    (_gm(covariances=[np.eye(3).tolist()] * 2), r"covariances\[0\] is 3×3 but means have dimension 2"),
    (_gm(weights=[-0.1, 1.1]), r"weights\[0\] = -0.1 is negative"),
    (_gm(weights=[0, 0.0]), "weights are all zero"),
    (_gm(covariances=[np.eye(2).tolist(), [[1.0, 0.5], [0.4, 1.0]]]), r"covariances\[1\] is not symmetric"),
    (_gm(covariances=[np.eye(2).tolist(), [[1.0, 2.0], [2.0, 1.0]]]),
     r"covariances\[1\] is not positive definite \(smallest eigenvalue -1"),
    (_gm(covariances=[np.eye(2).tolist(), np.zeros((2, 2)).tolist()]), r"covariances\[1\] is not positive definite"),
    (_gm(weights=[1.0], means=[[0.0] * 65], covariances=[np.eye(65).tolist()]), "at most 64 is allowed"),
    (_gm(weights=[1.0] * 65, means=[[0.0]] * 65, covariances=[[[1.0]]] * 65), "at most 64 components"),
    (_gm(name=3), "name must be a string"),
    (_gm(extra=1), "unknown key 'extra' in gaussian_mixture target spec"),
    ({"kind": "energy", "expression": "x0**2"}, "missing 'dim'"),
    ({"kind": "energy", "expression": "x0**2", "dim": 0}, "dim must be at least 1"),
    ({"kind": "energy", "expression": "x0**2", "dim": 100}, "at most 64"),
    ({"kind": "energy", "expression": "log(-1 - x0**2)", "dim": 1}, "energy is not finite at x = 0"),
]


@pytest.mark.parametrize("spec,match", BAD_SPECS, ids=[m for _, m in BAD_SPECS])
def test_spec_validation_errors(spec, match):
    with pytest.raises(TargetSpecError, match=match):
        target_from_spec(spec)


def test_bad_expression_in_spec_is_both_error_types():
    with pytest.raises(TargetSpecError) as info:
        target_from_spec({"kind": "energy", "expression": "x0 + __import__('os')", "dim": 2})
    err = info.value
    assert isinstance(err, ExpressionTargetError) and isinstance(err, ExpressionError)
    assert err.position == 5 and err.token == "__import__"
    assert "unexpected token '__import__' at position 5" in str(err)


def test_expression_target_probe_accepts_partially_finite_energy():
    t = target_from_expression("log(x0) + x0**2", 1, name="logx")
    assert t.name == "logx" and t.spec["name"] == "logx"
    assert np.isnan(float(t.energy(jnp.array([-1.0]))))
    assert float(t.energy(jnp.array([1.0]))) == 1.0


def test_json_errors(tmp_path):
    with pytest.raises(TargetSpecError, match=r"invalid JSON in target spec: .* at line 2, column 10"):
        target_from_json('{"kind": "named",\n "name": two-modes}')
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  \"kind\": \n}")
    with pytest.raises(TargetSpecError, match=rf"invalid JSON in {bad}: .*line 3, column 1"):
        target_from_json(bad)
    with pytest.raises(TargetSpecError, match="target file not found"):
        target_from_json(tmp_path / "missing.json")
    with pytest.raises(TargetSpecError, match="must be a JSON object"):
        target_from_json("[1, 2]")


# --------------------------------------------------------------------------- resolve_target


def test_resolve_target(tmp_path):
    assert resolve_target("ring").name == "ring"
    assert resolve_target("funnel", dim=4).dim == 4
    e = resolve_target(energy="x0**2/2", dim=1)
    assert e.dim == 1 and float(e.energy(jnp.array([2.0]))) == 2.0
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"kind": "named", "name": "gaussian", "dim": 3}))
    assert resolve_target(str(path)).dim == 3
    with pytest.raises(TargetSpecError, match="contradicts"):
        resolve_target(str(path), dim=2)


@pytest.mark.parametrize("kwargs,match", [
    ({"target": "ring", "energy": "x0**2", "dim": 2}, "not both"),
    ({}, "no target given: name one of two-modes"),
    ({"target": "rng"}, r"unknown target 'rng' \(valid names: two-modes, ring, banana, double-well, "
                        r"funnel, many-well, gaussian; or the path of a .json spec file\); did you mean 'ring'"),
    ({"target": "two_modes"}, "did you mean 'two-modes'"),
    ({"target": "nofile.json"}, "target file not found: nofile.json"),
    ({"target": "some/dir/spec.json"}, "target file not found"),
    ({"energy": "x0**2"}, "dim is required with an energy expression"),
    ({"energy": "x0 + y", "dim": 1}, "unknown name 'y'"),
    ({"target": "ring", "dim": 3}, "2-dimensional"),
])
def test_resolve_target_errors(kwargs, match):
    with pytest.raises(TargetSpecError, match=match):
        resolve_target(**kwargs)
