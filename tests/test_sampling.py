"""Tests of mne_core.sampling: reverse flow with exact model density, importance weights,
log Z, conditionals, marginals, CLI.  Exact answers come from the OU-evolved Gaussian-mixture
oracles (design note §6): exact evolved energies, closed-form conditionals and marginals.
"""
from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mne_core as mc
from mne_core import sampling as S
from mne_core.cli import main as cli_main, run_evolution
from mne_core.operators import local_derivatives

SMALL = dict(n_points=128, width=32, T=2.0, fit_steps=300, gn_steps=10, sketch_rank=64)
LOG2PI = math.log(2 * math.pi)


def _evolve(target, **kw):
    cfg = mc.EvolveConfig(target=target, **{**SMALL, **kw})
    run, status = run_evolution(cfg, quiet=True)
    assert status == "done", status
    return run


@pytest.fixture(scope="module")
def gauss_run():
    return _evolve({"kind": "named", "name": "gaussian", "dim": 2})


@pytest.fixture(scope="module")
def gauss_run_dir(gauss_run, tmp_path_factory):
    return gauss_run.save(tmp_path_factory.mktemp("gauss") / "run")


@pytest.fixture(scope="module")
def cond_gauss_run():
    """gaussian (d = 2), x1 diffuses, x0 held fixed: samples x1 | x0."""
    return _evolve({"kind": "named", "name": "gaussian", "dim": 2}, diffuse=(1,), T=3.0)


@pytest.fixture(scope="module")
def cond_mix_run():
    """two-modes, x0 diffuses, x1 held fixed: x0 | x1 is bimodal (0.3 / 0.7)."""
    return _evolve({"kind": "named", "name": "two-modes"}, diffuse=(0,), T=3.0)


def _cov_of(d):
    eig = np.geomspace(0.5, 2.0, d) if d > 1 else np.array([0.5])
    Q = np.eye(d)
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    for i in range(d - 1):
        G = np.eye(d)
        G[i, i], G[i, i + 1], G[i + 1, i], G[i + 1, i + 1] = c, -s, s, c
        Q = G @ Q
    return Q @ np.diag(eig) @ Q.T


# --------------------------------------------------------------------------- estimators


def test_ess_and_log_z_basic():
    assert S.effective_sample_size(np.zeros(100)) == pytest.approx(100)
    lw = np.log(np.array([1.0, 0.0, 0.0, 0.0]) + 1e-300)
    assert S.effective_sample_size(lw) == pytest.approx(1.0)
    w = np.array([1.0, 2.0, 3.0, 4.0])
    lz, se = S.log_z_estimate(np.log(w) + 5.0)
    assert lz == pytest.approx(5.0 + math.log(2.5), abs=1e-12)
    assert se == pytest.approx(np.std(w, ddof=1) / (2.0 * 2.5), rel=1e-12)
    assert S.effective_sample_size(np.log(w)) == pytest.approx(100.0 / 30.0)
    assert S.effective_sample_size(np.full(3, -np.inf)) == 0.0
    lw = S.importance_weights(np.array([0.0, np.nan, 1.0]), np.array([0.0, 0.0, np.inf]))
    assert lw[0] == 0 and lw[1] == -np.inf and lw[2] == -np.inf


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=1, max_size=40), st.integers(1, 200), st.integers(0, 10_000))
def test_systematic_resample_counts(logw, n, seed):
    lw = np.asarray(logw)
    idx = S.systematic_resample(seed, lw, n)
    counts = np.bincount(idx, minlength=lw.size)
    w = np.exp(lw - lw.max())
    w /= w.sum()
    assert counts.sum() == n
    assert np.all(counts >= np.floor(n * w) - 1e-9 - 1) and np.all(counts <= np.ceil(n * w) + 1)
    assert np.all(np.abs(counts - n * w) < 1.0 + 1e-9)


def test_independent_mh_exact_proposal_and_stationarity():
    # q = π: every move accepted
    idx, acc = S.independent_mh(0, np.zeros(500))
    assert acc == 1.0 and np.all(idx == np.arange(500))
    # proposal N(0, 1.5²), target N(0.5, 1): the chain's mean/variance must match the target
    rng = np.random.default_rng(1)
    x = 1.5 * rng.standard_normal(60_000)
    lw = -0.5 * (x - 0.5) ** 2 - (-0.5 * (x / 1.5) ** 2 - math.log(1.5))
    idx, acc = S.independent_mh(2, lw)
    y = x[idx]
    assert 0.3 < acc < 0.95
    assert y.mean() == pytest.approx(0.5, abs=0.03) and y.var() == pytest.approx(1.0, abs=0.04)


def test_parse_condition_errors():
    assert S.parse_condition("0=1.5, 2=-1") == {0: 1.5, 2: -1.0}
    for bad in ("0=1.5,foo", "a=1", "0=x", "0=1,0=2", "1=nan"):
        with pytest.raises(S.SamplingError):
            S.parse_condition(bad)


def test_hermite_matches_run(gauss_run):
    run = gauss_run
    times, thetas, dots, n = S._padded_trajectory(run)
    f = jax.jit(lambda t: S.hermite_theta(jnp.asarray(times), jnp.asarray(thetas), jnp.asarray(dots), t, n))
    for t in np.concatenate([run.times[:3], np.linspace(0, run.T, 17), [run.T]]):
        np.testing.assert_allclose(np.asarray(f(t)), run.theta(t), rtol=1e-12, atol=1e-12)


def test_grad_and_laplacian_matches_operators(gauss_run):
    th = jnp.asarray(gauss_run.thetas[5])
    e = lambda x: gauss_run.net.energy(th, x)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((50, 2)))
    m = jnp.asarray([0.0, 1.0])
    g, lap = S.grad_and_laplacian(e, x, m)
    ref = local_derivatives(e, x, m)
    np.testing.assert_allclose(g, ref.grad, atol=1e-12)
    np.testing.assert_allclose(lap, ref.laplacian, atol=1e-12)


# --------------------------------------------------------------------------- exact-energy flows


def _exact_energy_at(tgt, mask=None):
    m = None if mask is None else jnp.asarray(mask)
    return lambda params, t: (lambda x: tgt.evolved_energy(t, x, m))


@pytest.mark.parametrize("name", ["gaussian", "two-modes"])
def test_reverse_flow_exact_energy_recovers_target_density(name):
    """With the EXACT U_t and x_T ~ ρ_T exactly, log q_0(x_0) must equal log π(x_0): this pins
    the sign of the divergence term (a flipped sign is off by O(1))."""
    tgt = mc.named_target(name)
    T = 2.5
    x_T = tgt.evolved_sampler(jax.random.PRNGKey(0), T, 300)
    lq_T = jax.vmap(lambda x: tgt.evolved_log_density(T, x))(x_T)
    fl = S.reverse_flow(_exact_energy_at(tgt), x_T, lq_T, T, rtol=1e-9, atol=1e-11)
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
    fl = S.reverse_flow(_exact_energy_at(tgt), z, lq_T, T, rtol=1e-9, atol=1e-11)
    lw = S.importance_weights(-np.asarray(tgt.energies(fl.x)), fl.log_q)
    assert np.abs(lw).max() < 1e-3
    assert S.effective_sample_size(lw) > 399.9


def test_conditional_exact_energy_gives_exact_conditional_density():
    """Partial diffusion (x1, x2 diffuse; x0 = y* held): the z-flow of the exact evolved energy
    from N(0, I) at large T gives the closed-form Gaussian conditional density."""
    d = 3
    tgt = mc.named_target("gaussian", d)
    mean = np.array([1.0, -0.5, 0.0])
    C = _cov_of(d)
    mask = np.array([0.0, 1.0, 1.0])
    y = 0.7
    T = 12.0
    z = np.random.default_rng(0).standard_normal((300, 2))
    x_T = np.column_stack([np.full(300, y), z])
    lq_T = -0.5 * (z * z).sum(1) - LOG2PI
    fl = S.reverse_flow(_exact_energy_at(tgt, mask.astype(bool)), x_T, lq_T, T, mask=mask, rtol=1e-9, atol=1e-11)
    assert np.all(fl.x[:, 0] == y)
    mu = mean[1:] + C[1:, :1] @ np.linalg.solve(C[:1, :1], [y - mean[0]])
    Sc = C[1:, 1:] - C[1:, :1] @ np.linalg.solve(C[:1, :1], C[:1, 1:])
    r = fl.x[:, 1:] - mu
    exact = -0.5 * np.einsum("ni,ij,nj->n", r, np.linalg.inv(Sc), r) - 0.5 * np.log(np.linalg.det(Sc)) - LOG2PI
    np.testing.assert_allclose(fl.log_q, exact, atol=1e-4)


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
    fl = S.run_flow(run, X, lq, rtol=1e-11, atol=1e-12, knots=True)
    assert fl.ok
    n = len(xs)
    x0 = fl.x[:n]
    J = np.stack([(fl.x[n * (1 + 2 * j): n * (2 + 2 * j)] - fl.x[n * (2 + 2 * j): n * (3 + 2 * j)]) / (2 * h)
                  for j in range(2)], axis=2)
    logdet = np.log(np.abs(np.linalg.det(J)))
    np.testing.assert_allclose(fl.log_q[:n], lq[:n] - logdet, atol=1e-5)
    assert np.abs(x0 - xs).max() > 0.1  # the map is not trivial
    # default (no knots) tolerance: within ~1e-3 of the precise value
    fd = S.run_flow(run, xs, lq[:n])
    np.testing.assert_allclose(fd.log_q, fl.log_q[:n], atol=2e-3)


def test_sample_gaussian_log_z_and_moments(gauss_run):
    res = mc.sample(gauss_run, 4000, seed=0)
    s = res.summary()
    assert res.samples.shape == (4000, 2) and res.log_weights.shape == (4000,) and res.log_q.shape == (4000,)
    assert s["log_z_exact"] == 0.0
    assert abs(res.log_z) < max(4 * res.log_z_stderr, 0.01), s
    assert res.ess_fraction > 0.5, s
    w = np.exp(res.log_weights - res.log_weights.max())
    w /= w.sum()
    mean = w @ res.samples
    np.testing.assert_allclose(mean, [1.0, -0.5], atol=0.05)
    C = np.cov(res.samples.T, aweights=w)
    np.testing.assert_allclose(C, _cov_of(2), atol=0.08)
    assert 0.3 < res.imh_acceptance <= 1.0
    np.testing.assert_allclose(res.imh_samples.mean(0), [1.0, -0.5], atol=0.08)
    # resampling: uniform weights equal to log Ẑ, samples drawn from the raw set
    rs = mc.sample(gauss_run, 4000, seed=0, resample=True)
    assert np.allclose(rs.log_weights, rs.log_z)
    assert np.all(np.isin(rs.samples[:, 0], rs.raw_samples[:, 0]))
    np.testing.assert_allclose(rs.samples.mean(0), mean, atol=0.05)
    # iid base draws also work, with a consistent log Z
    iid = mc.sample(gauss_run, 4000, seed=1, qmc=False)
    assert abs(iid.log_z) < max(5 * iid.log_z_stderr, 0.02)


def test_sample_detects_wrong_density():
    """The weights must expose a wrong log q: shifting log q by 0.3 shifts log Ẑ by −0.3."""
    lw = np.random.default_rng(0).normal(0, 0.1, 1000)
    assert S.log_z_estimate(lw - 0.3)[0] == pytest.approx(S.log_z_estimate(lw)[0] - 0.3)


def test_conditional_gaussian(cond_gauss_run):
    run = cond_gauss_run
    C = _cov_of(2)
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
    C = _cov_of(2)
    ys = np.linspace(1.0 - 1.5 * math.sqrt(C[0, 0]), 1.0 + 1.5 * math.sqrt(C[0, 0]), 9)[:, None]
    exact = 0.5 * (ys[:, 0] - 1.0) ** 2 / C[0, 0] + 0.5 * math.log(2 * math.pi * C[0, 0])  # −log π_Y, log Z = 0
    # the network's energy constant is free (the initial fit is up to a constant): compare centred
    for n_z, tol in ((256, 0.1), (0, 0.15)):
        u = S.marginal_energy(run, ys, n_z=n_z)
        assert u.shape == (9,)
        r = u - exact
        assert np.abs(r - r.mean()).max() < tol, (n_z, r - r.mean())
    # the exact marginal oracle itself
    np.testing.assert_allclose(-S.exact_marginal_log_density(run.target, ys, [0]), exact, atol=1e-10)
    with pytest.raises(S.SamplingError):
        S.marginal_energy(run, np.zeros((3, 2)))


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
    u = S.marginal_energy(run, np.array([[-0.5], [0.0], [0.8]]))
    ex = 0.5 * np.array([-0.5, 0.0, 0.8]) ** 2 / 0.5
    np.testing.assert_allclose(u - u.mean(), ex - ex.mean(), atol=0.05)


def test_condition_validation(gauss_run, cond_gauss_run):
    with pytest.raises(S.SamplingError, match="partial diffusion"):
        mc.sample(gauss_run, 100, condition={0: 1.0})
    with pytest.raises(S.SamplingError, match="out of range"):
        mc.sample(cond_gauss_run, 100, condition={5: 1.0})
    with pytest.raises(S.SamplingError, match="diffuse"):
        mc.sample(cond_gauss_run, 100, condition={1: 1.0})
    with pytest.raises(S.SamplingError, match="condition"):
        mc.sample(cond_gauss_run, 100)
    with pytest.raises(S.SamplingError, match="all 2"):
        mc.sample(cond_gauss_run, 100, condition={0: 1.0, 1: 0.0})


# --------------------------------------------------------------------------- CLI


def test_cli_sample_from_run(gauss_run_dir, tmp_path, capsys):
    out = tmp_path / "s"
    rc = cli_main(["sample", "--run", str(gauss_run_dir), "--n-samples", "1000", "--seed", "3",
                   "--resample", "--out", str(out)])
    assert rc == 0
    x = np.load(out / "samples.npy")
    lw = np.load(out / "log_weights.npy")
    assert x.shape == (1000, 2) and lw.shape == (1000,)
    s = json.loads((out / "summary.json").read_text())
    for k in ("log_z", "log_z_stderr", "ess", "ess_fraction", "wall_seconds", "log_z_exact", "imh_acceptance"):
        assert k in s
    assert np.allclose(lw, s["log_z"])
    sc = json.loads((out / "sample_config.json").read_text())
    assert sc["n_samples"] == 1000 and sc["seed"] == 3 and sc["resample"]
    assert mc.EvolveConfig.from_dict(json.loads((out / "config.json").read_text())).target["name"] == "gaussian"
    # reproducible
    rc = cli_main(["sample", "--run", str(gauss_run_dir), "--n-samples", "1000", "--seed", "3",
                   "--resample", "--out", str(tmp_path / "s2")])
    assert rc == 0 and np.array_equal(np.load(tmp_path / "s2" / "samples.npy"), x)


@pytest.mark.parametrize("argv,msg", [
    (["--condition", "0=1.5,foo"], "condition"),
    (["--condition", "7=1"], "out of range"),
    (["--condition", "0=1"], "partial diffusion"),
    (["--target", "two-modes"], "not the target given"),
    (["--target", "gaussian", "--dim", "3"], "mismatched dimensions"),
    (["--dim", "3"], "mismatched dimensions"),
    (["--energy", "x0**2/2 + x1**2/2", "--dim", "2"], "not the target given"),
])
def test_cli_errors_with_run(gauss_run_dir, tmp_path, capsys, argv, msg):
    rc = cli_main(["sample", "--run", str(gauss_run_dir), "--n-samples", "100", "--out", str(tmp_path / "o")] + argv)
    err = capsys.readouterr().err
    assert rc == 2 and msg in err, err
    assert not (tmp_path / "o" / "samples.npy").exists()


def test_cli_errors_without_run(tmp_path, capsys):
    rc = cli_main(["sample", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "not found" in capsys.readouterr().err
    rc = cli_main(["sample", "--target", "gaussian", "--condition", "0=1,1=2", "--out", str(tmp_path / "o")])
    assert rc == 2 and "all 2" in capsys.readouterr().err
    rc = cli_main(["sample", "--target", "gaussian", "--condition", "0=1", "--diffuse", "0",
                   "--out", str(tmp_path / "o")])
    assert rc == 2 and "contradicts" in capsys.readouterr().err
    rc = cli_main(["sample", "--energy", "x0**2", "--dim", "2", "--n-samples", "1", "--out", str(tmp_path / "o")])
    assert rc == 2 and "n-samples" in capsys.readouterr().err


def test_cli_sample_energy_expression_evolves_first(tmp_path, capsys):
    """--energy: log Z unknown to the tool, estimated; U = (x0² + x1²)/2 + x0 has log Z = log 2π + 1/2."""
    out = tmp_path / "e"
    argv = ["sample", "--energy", "(x0**2 + x1**2)/2 + x0", "--dim", "2", "--n-samples", "2000", "--out", str(out),
            "--quiet"]
    for k, v in SMALL.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    assert cli_main(argv) == 0
    s = json.loads((out / "summary.json").read_text())
    assert "log_z_exact" not in s
    exact = LOG2PI + 0.5
    assert abs(s["log_z"] - exact) < max(4 * s["log_z_stderr"], 0.02), s
    assert (out / "run" / "config.json").is_file() and (out / "run" / "trajectory.npz").is_file()
    # the output directory is itself accepted as --run
    assert cli_main(["sample", "--run", str(out), "--n-samples", "500", "--out", str(tmp_path / "e2")]) == 0


def test_cli_condition_sets_diffusion(tmp_path):
    out = tmp_path / "c"
    argv = ["sample", "--target", "gaussian", "--condition", "0=1.6", "--n-samples", "1000", "--out", str(out),
            "--quiet", "--T", "3.0"]
    for k, v in SMALL.items():
        if k != "T":
            argv += [f"--{k.replace('_', '-')}", str(v)]
    assert cli_main(argv) == 0
    cfg = json.loads((out / "run" / "config.json").read_text())
    assert cfg["diffuse"] == [1]
    x = np.load(out / "samples.npy")
    assert np.all(x[:, 0] == 1.6)
    s = json.loads((out / "summary.json").read_text())
    assert abs(s["log_z"] - s["log_z_exact"]) < max(4 * s["log_z_stderr"], 0.02)


# --------------------------------------------------------------------------- accuracy (default settings)


@pytest.mark.slow
def test_two_modes_default_settings_accuracy():
    cfg = mc.EvolveConfig(target={"kind": "named", "name": "two-modes"})
    run, status = run_evolution(cfg, quiet=True)
    assert status == "done"
    res = mc.sample(run, 10000, seed=0)
    assert abs(res.log_z - 0.0) <= 0.02, res.summary()
    assert np.abs(res.mode_masses - np.array([0.3, 0.7])).max() <= 0.01, res.summary()
    assert res.ess_fraction >= 0.5, res.summary()
