"""float32 evolution against float64 from the same start (two-modes, small settings).

The float32 right-hand side forms its Gram (structured NTK) and factorizes it in float64
(``mne_core.solvers.factor_dtype``); everything else — network, derivatives, state, integrator —
is float32.  Stated accuracy: the ρ_T-weighted energy error of the float32 run is within
FACTOR × that of float64 (plus a float32-resolution floor)."""
import jax
import jax.numpy as jnp
import numpy as np

import mne_core as mc
from mne_core.diagnostics import centred_rms
from mne_core.evolution import compiled_pieces
from mne_core.integrate import make_controller
from mne_core.solvers import make_sketch, psd_solve

from conftest import SMALL

FACTOR = 1.1
FLOOR = 1e-3


def _integrate(stepper, theta, x, sketch, reg, T, rtol, atol, dtype):
    ctrl = make_controller(rtol, atol, dtype)
    args = (sketch, jnp.asarray(reg, dtype))
    s = stepper.init(jnp.asarray(0.0, dtype), jnp.asarray(T, dtype), (theta, x), args, ctrl)
    for _ in range(400):
        if float(s.tprev) >= T * (1 - 1e-6):
            break
        s = stepper.step(s, args, ctrl, T).state
    assert float(s.tprev) >= T * (1 - 1e-6)
    return s.y


def test_float32_psd_solve_factorizes_in_float64():
    """A Gram with κ ≈ 1e6 (λ_rel = 1e-6) given in float32: the solve equals the float64 solve of the
    same (rounded) input, while a float32 Cholesky of it would be off by > 1e-3."""
    A = jax.random.normal(jax.random.PRNGKey(0), (40, 40))
    G32 = (A @ jnp.diag(jnp.geomspace(1.0, 1e-8, 40)) @ A.T).astype(jnp.float32)
    b32 = jax.random.normal(jax.random.PRNGKey(1), (40,)).astype(jnp.float32)
    z64, lam64, _ = psd_solve(G32.astype(jnp.float64), b32.astype(jnp.float64), 1e-6, False)
    z32, lam32, _ = psd_solve(G32, b32, 1e-6, False)
    assert z32.dtype == jnp.float32 and lam32.dtype == jnp.float32
    assert float(jnp.linalg.norm(z32 - z64) / jnp.linalg.norm(z64)) < 1e-6       # float32 rounding of z only
    lam = 1e-6 * jnp.trace(G32) / 40
    naive = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(G32 + lam * jnp.eye(40, dtype=jnp.float32)), b32)
    assert float(jnp.linalg.norm(naive - z64) / jnp.linalg.norm(z64)) > 1e-3


def test_float32_evolution_within_factor_of_float64():
    cfg = mc.EvolveConfig(target={"kind": "named", "name": "two-modes"}, **{**SMALL, "T": 1.5})
    evo = mc.Evolution(cfg)
    evo.prepare()
    theta0, x0 = evo.state.step_state.y
    c = evo.config
    tgt = evo.target
    xs = tgt.evolved_sampler(jax.random.PRNGKey(5), c.T, 2000)
    errs = {}
    for name, dt in (("float64", jnp.float64), ("float32", jnp.float32)):
        net, _, stepper, *_ = compiled_pieces(tgt.dim, c.width, c.depth, c.activation, None, c.solver,
                                              c.integrator, name)
        sk = make_sketch(evo.last_start.sketch_key, c.n_points, c.sketch_rank, c.sketch_kind, dt)
        theta, _ = _integrate(stepper, theta0.astype(dt), x0.astype(dt), sk, c.reg, c.T, c.rtol, c.atol, dt)
        assert theta.dtype == dt
        u = net.energies(theta, xs.astype(dt)).astype(jnp.float64)
        errs[name] = float(centred_rms(u - tgt.evolved_energies(c.T, xs)))
    print(errs)
    assert errs["float32"] <= FACTOR * errs["float64"] + FLOOR, errs


def test_float32_data_free_start_runs_end_to_end():
    """The whole float32 path, data-free start included (the tempering once mixed a float64
    target energy into float32 MALA carries): it ends ok, its points are float32, and its
    initial fit and its energy error stay small."""
    cfg = mc.EvolveConfig(target={"kind": "named", "name": "two-modes"}, precision="float32",
                          **{**SMALL, "T": 0.25})
    run = mc.evolve(cfg, reg_retries=0, point_retries=0)
    assert run.status.succeeded, run.summary()
    assert run.points.dtype == np.float32
    assert run.fit_info["heldout_rms_target"] < 0.03, run.fit_info
    assert np.nanmax(run.diagnostics["energy_error"]) < 0.05, run.summary()
