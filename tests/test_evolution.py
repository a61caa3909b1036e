"""End-to-end engine tests at small settings: exact-answer accuracy, improvability,
no recompilation, saved runs, the heat equation, and the CLI."""
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mne_core as mc
from mne_core.evolution import compiled_pieces
from mne_core.integrate import Stepper, make_controller

SMALL = dict(n_points=128, width=32, depth=2, fit_points=256, fit_steps=400, gn_steps=25,
             sketch_rank=64, mala_steps=20)


def small(**kw):
    base = dict(SMALL, target={"kind": "named", "name": "gaussian"}, T=1.0)
    base.update(kw)
    return mc.EvolveConfig(**base)


def exact_error(run, t, n=3000, seed=11):
    """ρ_t-weighted RMS of U_model − U_exact up to a constant, on exact samples."""
    tgt = run.target
    xs = np.asarray(tgt.evolved_sampler(jax.random.PRNGKey(seed), t, n))
    r = run.energy(t, xs) + np.asarray(jax.vmap(lambda x: tgt.evolved_log_density(t, x))(xs))
    return float(np.sqrt(np.mean((r - r.mean()) ** 2)))


@pytest.fixture(scope="module")
def gaussian_run():
    evo = mc.Evolution(small())
    evo.run_to_end()
    assert evo.status.succeeded, evo.message  # T = 1: ok or "T too small" warning
    return evo.run


def test_network_flat_view_roundtrip():
    net, theta = mc.init_energy_network(3, 16, 2, "silu")
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
    # at init the output layer is zero: U = |x|²/2
    np.testing.assert_allclose(net.energies(theta, x), 0.5 * jnp.sum(x * x, -1), rtol=1e-12)
    w = net.layer_weights(theta)
    assert [v.shape for v in w.values()] == [(3, 16), (16, 16), (16, 1)]
    assert sum(v.size for v in w.values()) + 16 + 16 + 1 == net.num_params


def test_gaussian_evolution_tracks_exact_solution(gaussian_run):
    run = gaussian_run
    assert run.times[0] == 0 and abs(run.times[-1] - 1.0) < 1e-12
    errs = [exact_error(run, t) for t in (0.0, 0.3, 0.6, 1.0)]
    assert max(errs) < 0.02, errs
    # the engine's own diagnostic agrees with the independent check
    d = run.diagnostics
    assert np.nanmax(d["energy_error"]) < 0.02
    # collocation points follow the probability flow: their spread approaches ρ_t's
    assert np.all(np.isfinite(run.points))


def test_interpolated_energy_is_smooth_between_steps(gaussian_run):
    run = gaussian_run
    tm = 0.5 * (run.times[3] + run.times[4])
    x = np.asarray(run.target.evolved_sampler(jax.random.PRNGKey(2), tm, 500))
    err_mid = exact_error(run, tm)
    assert err_mid < 0.02
    s = run.score(tm, x[:10])
    assert s.shape == (10, 2)
    # score = −∇U: compare with finite differences of run.energy
    h = 1e-5
    fd = -(run.energy(tm, x[:10] + [h, 0]) - run.energy(tm, x[:10] - [h, 0])) / (2 * h)
    np.testing.assert_allclose(s[:, 0], fd, rtol=1e-5, atol=1e-6)


def test_load_run_roundtrip(gaussian_run, tmp_path):
    gaussian_run.save(tmp_path / "r")
    loaded = mc.load_run(tmp_path / "r")
    assert loaded.config == gaussian_run.config
    np.testing.assert_array_equal(loaded.times, gaussian_run.times)
    x = np.random.default_rng(0).normal(size=(20, 2))
    for t in (0.0, 0.37, 1.0):
        np.testing.assert_allclose(loaded.energy(t, x), gaussian_run.energy(t, x), rtol=1e-12)
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["status"] == gaussian_run.status.value and s["num_accepted_steps"] == len(gaussian_run.times) - 1
    with pytest.raises(ValueError, match="shape"):
        loaded.energy(0.1, np.zeros((3, 5)))
    with pytest.raises(FileNotFoundError, match="not a saved MNE run"):
        mc.load_run(tmp_path / "nothing")


def test_changing_rtol_and_reg_does_not_recompile():
    cfg = small(T=0.2, n_points=64, sketch_rank=32)
    traces = {"n": 0}
    net, op, stepper, *_ = compiled_pieces(2, 32, 2, "silu", None, "sketch", "tsit5", "float64")
    inner = stepper.vector_field

    def counting(t, y, args):
        traces["n"] += 1
        return inner(t, y, args)
    st = Stepper(counting, "tsit5")
    _, theta = mc.init_energy_network(2, 32, 2, "silu")
    x = jax.random.normal(jax.random.PRNGKey(0), (64, 2))
    sk = mc.make_sketch(jax.random.PRNGKey(1), 64, 32)
    counts = []
    for rtol, reg in [(1e-3, 1e-8), (1e-5, 1e-6), (3e-4, 1e-3)]:
        ctrl = make_controller(rtol, rtol * 1e-2)
        args = (sk, jnp.asarray(reg))
        s = st.init(jnp.asarray(0.0), jnp.asarray(cfg.T), (theta, x), args, ctrl)
        for _ in range(3):
            s = st.step(s, args, ctrl, cfg.T).state
        counts.append(traces["n"])
    assert counts[1] == counts[0] == counts[2], counts


def test_improvability_in_sketch_rank():
    """Error against the exact solution falls as the sketch rank grows."""
    errs = {}
    for n in (2, 64):
        evo = mc.Evolution(small(sketch_rank=n, init="exact", T=0.6, target={"kind": "named", "name": "two-modes"}))
        evo.run_to_end()
        errs[n] = max(exact_error(evo.run, t) for t in (0.3, 0.6))
    assert errs[64] < 0.5 * errs[2], errs


def test_convergence_in_tolerance():
    """The solution converges as rtol tightens: distance to a tight reference falls."""
    ref = None
    dists = []
    x = np.random.default_rng(1).normal(size=(400, 2))
    for rtol in (1e-9, 1e-3, 1e-5):
        evo = mc.Evolution(small(rtol=rtol, atol=rtol * 1e-2, init="exact", T=0.5, fit_steps=200, gn_steps=5))
        evo.run_to_end()
        u = evo.run.energy(0.5, x)
        if ref is None:
            ref = u
        else:
            r = u - ref
            dists.append(float(np.sqrt(np.mean((r - r.mean()) ** 2))))
    assert dists[1] < 0.3 * dists[0], dists


def test_heat_equation_neural_evolution_matches_exact():
    """The operator interface drives a second equation: heat flow of a Gaussian."""
    kappa, s2, T = 0.5, 0.6, 0.4
    net, theta = mc.init_energy_network(2, 24, 2, "silu", quadratic=0.0)
    x = np.sqrt(s2) * jax.random.normal(jax.random.PRNGKey(0), (96, 2))
    exact = lambda t, y: 0.5 * jnp.sum(y * y, -1) / (s2 + 2 * kappa * t)
    theta, info = mc.fit_energy(net.energies, net.energy, theta, x, exact(0.0, x), x[:20], exact(0.0, x[:20]),
                                adam_steps=600, gn_steps=15)
    assert info.train_rms < 2e-3
    vf = mc.mne_vector_field(net, mc.HeatEnergy(kappa), "full")
    st = Stepper(vf, "tsit5")
    args = (mc.make_sketch(jax.random.PRNGKey(0), 96, 96), jnp.asarray(1e-9))
    ctrl = make_controller(1e-6, 1e-8)
    s = st.init(jnp.asarray(0.0), jnp.asarray(T), (theta, jnp.asarray(x)), args, ctrl)
    for _ in range(500):
        if float(s.tprev) >= T:
            break
        s = st.step(s, args, ctrl, T).state
    assert abs(float(s.tprev) - T) < 1e-12
    th, pts = s.y
    xt = np.sqrt(s2 + 2 * kappa * T) * np.random.default_rng(0).normal(size=(2000, 2))
    r = np.asarray(net.energies(th, xt) - exact(T, xt))
    err = np.sqrt(np.mean((r - r.mean()) ** 2))
    r0 = np.asarray(net.energies(theta, xt) - exact(0.0, xt))
    assert err < 0.02 and err < 0.2 * np.sqrt(np.mean((r0 - r0.mean()) ** 2)), err
    # points follow the heat probability flow: x_t = x_0 · sqrt((s²+2κt)/s²)
    np.testing.assert_allclose(np.asarray(pts), x * np.sqrt((s2 + 2 * kappa * T) / s2), rtol=2e-2, atol=2e-2)


def test_data_free_start_covers_both_modes():
    evo = mc.Evolution(small(target={"kind": "named", "name": "two-modes"}, T=0.1))
    snap = evo.prepare()
    x = snap.points
    n = x.shape[0] // 2  # the first half approximates π
    frac_right = np.mean(x[:n, 0] > 0)
    assert 0.5 < frac_right < 0.9, frac_right  # exact: 0.7
    assert evo.run.fit_info["heldout_rms_target"] < 0.05


def test_failure_keeps_recorded_state():
    """A diverging run (absurd tolerance budget) stops with a clear status and keeps its steps."""
    evo = mc.Evolution(small(max_steps=4, T=1.0, init="exact"))
    evo.run_to_end()
    assert evo.status == mc.Status.FAILED and evo.reason == mc.Reason.MAX_STEPS
    assert "max_steps = 4" in evo.message
    assert len(evo.run.times) >= 2 and evo.run.status == evo.status


def test_config_and_target_errors_are_clear():
    with pytest.raises(mc.ConfigError, match="solver"):
        mc.EvolveConfig(solver="magic")
    with pytest.raises(mc.ConfigError, match="n_points"):
        mc.EvolveConfig(n_points=10**6)
    with pytest.raises(mc.TargetSpecError):
        mc.Evolution(mc.EvolveConfig(target={"kind": "gaussian_mixture", "weights": [1], "means": [[0, 0]],
                                             "covariances": [[[1, 2], [2, 1]]]}))
    with pytest.raises(mc.EvolutionError, match="exact samples"):
        mc.Evolution(mc.EvolveConfig(target={"kind": "energy", "expression": "x0**2+x1**2", "dim": 2}, init="exact"))


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_cli_evolve_json_target_and_errors(tmp_path, capsys):
    spec = {"kind": "gaussian_mixture", "weights": [0.6, 0.4], "means": [[-1.0, 0.5], [1.5, -0.5]],
            "covariances": [[[0.6, 0.2], [0.2, 0.4]], [[0.5, -0.1], [-0.1, 0.7]]]}
    f = tmp_path / "t.json"
    f.write_text(json.dumps(spec))
    out = tmp_path / "run"
    small_args = ["--n-points", "128", "--width", "32", "--fit-points", "256", "--fit-steps", "400",
                  "--gn-steps", "12", "--sketch-rank", "64"]
    p = _cli("evolve", "--target", str(f), "--T", "0.5", "--quiet", "--out", str(out), *small_args)
    assert p.returncode in (0, 1), p.stderr  # T = 0.5 may end "warning: T too small"
    run = mc.load_run(out)
    assert json.loads((out / "summary.json").read_text())["status"] == ("ok", "warning")[p.returncode]
    assert run.config.T == 0.5 and run.target.dim == 2
    assert exact_error(run, 0.5) < 0.05
    # bad input: the same entry point in this process (a subprocess per case only re-imports JAX)
    from app.cli import main as cli_main

    def bad(*argv):
        capsys.readouterr()
        rc = cli_main(list(argv))
        return rc, capsys.readouterr().err

    rc, err = bad("evolve", "--energy", "x0**2 + os.system(1)", "--dim", "2", "--out", str(tmp_path / "b"))
    assert rc == 2 and "error:" in err and "os" in err, err
    rc, err = bad("evolve", "--target", str(tmp_path / "missing.json"), "--out", str(tmp_path / "b"))
    assert rc == 2 and "error:" in err, err
    f.write_text("{not json")
    rc, err = bad("evolve", "--target", str(f), "--out", str(tmp_path / "b"))
    assert rc == 2 and "JSON" in err, err


def test_stepper_rejects_non_finite_steps_and_shrinks_dt():
    """A vector field that returns NaN beyond x = 1 never produces an accepted NaN state:
    the step is rejected and dt shrinks, so the state stays finite up to the singularity."""
    def vf(t, y, args):
        return jnp.where(y < 1.0, jnp.ones_like(y), jnp.nan)
    st = Stepper(vf, "tsit5")
    ctrl = make_controller(1e-6, 1e-9)
    s = st.init(jnp.asarray(0.0), jnp.asarray(2.0), jnp.zeros(3), None, ctrl)
    rejected_nonfinite, last_dt = 0, None
    for _ in range(200):
        r = st.step(s, None, ctrl, 2.0)
        if not bool(r.accepted):
            rejected_nonfinite += int(not bool(r.finite))
        s = r.state
        last_dt = float(s.tnext - s.tprev)
    assert bool(jnp.all(jnp.isfinite(s.y)))
    assert float(s.tprev) <= 1.0 and float(s.tprev) > 0.9
    assert rejected_nonfinite > 0 and last_dt < 1e-3


def test_energy_constant_is_pinned_to_the_target(gaussian_run):
    """U_θ(0) ≈ U_0 itself (not only up to a constant), and the OU equation keeps it:
    U_θ(t) ≈ −log ρ_t − log Z at later t, absolute values included."""
    run = gaussian_run
    tgt = run.target
    for t in (0.0, 0.5, 1.0):
        xs = np.asarray(tgt.evolved_sampler(jax.random.PRNGKey(4), t, 2000))
        diff = run.energy(t, xs) - np.asarray(tgt.evolved_energies(t, xs))
        assert abs(float(np.mean(diff))) < 0.02, (t, float(np.mean(diff)))


def test_data_free_start_is_reused_by_runs_that_change_only_the_evolution():
    """A Start made by one run prepares another whose config differs only in rtol/reg/T/solver/
    sketch rank: same θ₀ and x0 as that run's own fresh start, and it runs; other seeds are refused."""
    from mne_core.config import START_FIELDS, start_key

    first = mc.Evolution(small(T=0.2))
    start = first.data_free_start()
    assert start.key == start_key(first.config)
    first.prepare(start=start)
    assert first.run.fit_info["start_reused"] is True

    changed = dict(rtol=1e-3, reg=1e-4, T=0.15, solver="full", sketch_rank=32)
    assert not set(changed) & set(START_FIELDS)
    reused = mc.Evolution(small(**changed))
    stages = []
    snap = reused.prepare(progress=lambda stage, frac: stages.append(stage), start=start)
    assert stages == []  # no tempering, no fit
    fresh = mc.Evolution(small(**changed))
    fresh_snap = fresh.prepare()
    theta_r, x_r = reused.state.step_state.y
    theta_f, x_f = fresh.state.step_state.y
    np.testing.assert_array_equal(np.asarray(theta_r), np.asarray(theta_f))
    np.testing.assert_array_equal(np.asarray(x_r), np.asarray(x_f))
    np.testing.assert_array_equal(snap.points, fresh_snap.points)
    assert snap.residual == fresh_snap.residual and snap.energy_error == fresh_snap.energy_error
    reused.run_to_end()
    assert reused.status.succeeded, reused.message
    assert reused.run.T == pytest.approx(0.15)

    with pytest.raises(mc.EvolutionError, match="start settings"):
        mc.Evolution(small(seed=1)).prepare(start=start)
    with pytest.raises(mc.EvolutionError, match="start settings"):
        mc.Evolution(small(width=16)).prepare(start=start)


def test_auto_sketch_rank_keeps_every_equation_above_d_4():
    """The documented rule (config.auto_sizes): n = min(N/2, 512) for d ≤ 4, min(N, 1024) above;
    resolved() applies it to the N in use (also a refined N)."""
    assert mc.auto_sketch_rank(512, 2) == 256 and mc.auto_sketch_rank(8, 2) == 8
    assert mc.auto_sketch_rank(1024, 16) == 1024 and mc.auto_sketch_rank(4096, 16) == 1024
    assert mc.auto_sizes(16)["sketch_rank"] == mc.auto_sizes(16)["n_points"]
    assert mc.EvolveConfig(n_points=2048).resolved(8).sketch_rank == 1024
    assert mc.EvolveConfig(n_points=300).resolved(3).sketch_rank == 150
    assert mc.EvolveConfig(sketch_rank=64).resolved(16).sketch_rank == 64   # an explicit value stays


def test_a_model_far_from_the_target_cannot_end_ok():
    """Funnel-10 with the plain network (auto picks the rotation-aware one): the MLP on top of ½|x|²
    cannot follow the funnel's mouth (x_i ~ e^{x0/2}), so the initial fit and the energy error on exact
    samples are both far above 1.  The run used to end ``ok`` whenever that error did not *grow*; it
    must say that the model is wrong."""
    cfg = mc.EvolveConfig(target={"kind": "named", "name": "funnel", "dim": 10}, network="mlp", T=0.02,
                          n_points=256, width=32, fit_points=512, fit_steps=200, gn_steps=2)
    run = mc.evolve(cfg)
    s = run.summary()
    # in standardized coordinates (the funnel's spread is far from 1) there is no exact evolution
    # to compare with, and the run checks U_θ(0) against U_0 on exact samples instead
    err = s["max_energy_error"] if not s["standardized"] else s["fit"]["energy_error_exact_samples"]
    assert err > 1.0 and s["fit"]["heldout_rms"] > 1.0
    assert run.status == mc.Status.WARNING
    reasons = {r.name for r, _ in run.verdict.reasons}
    assert {"FIT_INACCURATE"} <= reasons and reasons & {"ENERGY_ERROR_LARGE", "ERROR_GROWTH"}
    # a sample drawn from it cannot be ok either
    res = mc.sample(run, 500, seed=0, method="is", imh=False)
    assert res.status != mc.Status.OK


def test_refresh_moves_points_to_the_model_density(gaussian_run):
    """refresh_fn: MALA on the model's own density.  Points started all at one far-away spot end with
    the π half distributed as e^{−U_θ(0)} ≈ π (mean, covariance of the Gaussian target) and the broad
    half as e^{−β U_θ(0)} (covariance / β)."""
    from mne_core.evolution import refresh_fn
    from mne_core.initialize import BROAD_POWER

    run = gaussian_run
    tgt = run.target
    theta = jnp.asarray(run.theta(0.0))
    x = jnp.full((2000, 2), 4.0)
    fn = refresh_fn(run.net, 50)
    log_steps = jnp.log(jnp.asarray([0.05, 0.1]))
    for i in range(8):
        x, log_steps, acc = fn(jax.random.PRNGKey(i), theta, x, log_steps)
    assert np.all(np.asarray(acc) > 0.3), acc
    x = np.asarray(x)
    exact = np.asarray(tgt.sampler(jax.random.PRNGKey(5), 20000))
    mean, cov = exact.mean(0), np.cov(exact.T)
    pi_half, broad = x[:1000], x[1000:]
    assert np.abs(pi_half.mean(0) - mean).max() < 0.15, (pi_half.mean(0), mean)
    assert np.abs(np.cov(pi_half.T) - cov).max() < 0.25 * np.abs(cov).max(), (np.cov(pi_half.T), cov)
    assert np.abs(np.cov(broad.T) - cov / BROAD_POWER).max() < 0.25 * np.abs(cov / BROAD_POWER).max()


def test_refresh_rule_and_record(gaussian_run):
    """refresh = auto is on above d = 4 only; a 2-D run at the default never refreshes, and the
    run records how often it did (summary.json: point_refreshes)."""
    from mne_core.evolution import refresh_active

    assert refresh_active("auto", 5) and not refresh_active("auto", 4)
    assert refresh_active("on", 2) and not refresh_active("off", 16) and not refresh_active("auto", 16, True)
    assert gaussian_run.summary()["point_refreshes"]["count"] == 0
    evo = mc.Evolution(small(refresh="on", T=1.0))
    evo.run_to_end()
    assert evo.status.succeeded, evo.message
    rec = evo.run.summary()["point_refreshes"]
    # after the first step past each of t = 0.25, 0.5, 0.75 (a step may pass two), never at T
    assert 2 <= rec["count"] <= 3 and rec["interval"] == 0.25, rec
    assert exact_error(evo.run, 1.0) < 0.05
    with pytest.raises(mc.ConfigError, match="refresh"):
        mc.EvolveConfig(refresh="sometimes")


def test_residual_growth_is_judged_on_the_absolute_residual():
    """A relative residual |Jθ̇ − f|/|f| that rises only because f → 0 near equilibrium is no
    warning; an absolute residual that grows 100× is; without RMS f the relative rule applies."""
    from mne_core.evolution import residual_growth

    rel = np.array([4e-4, 1e-3, 1e-2, 0.1, 0.15])
    shrinking_f = np.array([10.0, 5.0, 1.0, 0.1, 0.02])
    assert residual_growth(rel, shrinking_f) is None
    steady_f = np.full(5, 10.0)
    msg = residual_growth(rel, steady_f)
    assert msg is not None and "RMS |Jθ̇ − f|" in msg
    assert residual_growth(rel, None) is not None                  # a run saved before RMS f was recorded
    assert residual_growth(np.array([4e-4, 0.05]), steady_f) is None   # small in relative terms: fine


def test_fitting_gradients_generalizes_in_high_dimension():
    """The Sobolev term (fit_scores): with few points in d = 24 the values alone are interpolated
    (held-out error several times the training error); matching ∇U_0 too brings the held-out error
    of the values down by more than a third.  And the auto rule: on above d = 4 for the MLP only."""
    from mne_core.config import score_fit_active

    rng = np.random.default_rng(0)
    d, n = 24, 384
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    P = (Q * rng.uniform(1.2, 3.0, d)) @ Q.T                     # precision of a correlated Gaussian
    energy = lambda x: 0.5 * x @ P @ x + 0.3 * jnp.sin(x[0])     # noqa: E731
    energies = jax.jit(jax.vmap(energy))
    x = jnp.asarray(rng.standard_normal((n + 256, d)) @ np.linalg.cholesky(np.linalg.inv(P)).T * 1.3)
    xf, xv = x[:n], x[n:]
    held = {}
    for lam in (0.0, 1.0):
        net, theta = mc.init_energy_network(d, 64, 2, "tanh", seed=0)
        g = jax.vmap(jax.grad(energy))(xf) if lam else None
        _, info = mc.fit_energy(net.energies, net.energy, theta, xf, energies(xf), xv, energies(xv),
                                adam_steps=400, gn_steps=0, g_fit=g, score_weight=lam)
        held[lam] = info.heldout_rms
    assert held[1.0] < 0.65 * held[0.0], held
    assert score_fit_active("auto", 5, True) and not score_fit_active("auto", 4, True)
    assert not score_fit_active("auto", 32, False) and score_fit_active("on", 2, False)
    assert not score_fit_active("off", 32, True)
    with pytest.raises(mc.ConfigError):
        mc.EvolveConfig(fit_scores="sometimes")
