"""Standardized coordinates: a target far from unit scale is evolved in y = (x − mean) / std of
its start points, and every output comes back in the original coordinates."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mne_core as mc
from mne_core.targets import TargetSpecError

SCALE = 10.0


def wide_mixture(d: int = 2) -> dict:
    """Two well-separated components, std SCALE, modes at ±3·SCALE on x0 (weights 0.3 / 0.7):
    the unit-scale two-mode mixture blown up by SCALE."""
    m = np.zeros((2, d))
    m[:, 0] = (-3 * SCALE, 3 * SCALE)
    return {"kind": "gaussian_mixture", "weights": [0.3, 0.7], "means": m.tolist(),
            "covariances": [(SCALE ** 2 * np.eye(d)).tolist()] * 2}


def test_standardized_target_is_the_same_distribution():
    base = mc.target_from_spec(wide_mixture(3))
    shift, scale = np.array([4.0, -1.0, 0.5]), np.array([25.0, 10.0, 8.0])
    y_t = mc.standardized_target(base, shift, scale)
    assert mc.target_from_spec(y_t.spec).spec == y_t.spec               # the spec rebuilds it
    assert mc.original_target(y_t) is base and mc.original_target(base) is base
    y = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (64, 3)))
    x = shift + scale * y
    # the same energy values, and log Z_y = log Z − Σ log scale
    np.testing.assert_allclose(y_t.energies(jnp.asarray(y)), base.energies(jnp.asarray(x)), rtol=1e-12)
    assert y_t.log_z == pytest.approx(base.log_z - np.log(scale).sum())
    # the exact OU density in y (normalized) starts at the energy: U_0 = −log ρ_0 − log Z_y
    np.testing.assert_allclose(y_t.evolved_energies(0.0, jnp.asarray(y)), y_t.energies(jnp.asarray(y)), atol=1e-9)
    ys = np.asarray(y_t.sampler(jax.random.PRNGKey(2), 200_000))
    np.testing.assert_allclose(ys.mean(0), (np.asarray(base.sampler(jax.random.PRNGKey(3), 200_000)).mean(0)
                                            - shift) / scale, atol=0.01)
    np.testing.assert_allclose(y_t.modes, (np.asarray(base.modes) - shift) / scale)
    with pytest.raises(TargetSpecError, match="positive"):
        mc.standardized_target(base, shift, -scale)
    with pytest.raises(TargetSpecError, match="again"):
        mc.standardized_target(y_t, shift, scale)


def test_a_wide_target_is_evolved_in_standardized_coordinates():
    spec = wide_mixture(2)
    off = mc.Evolution(mc.EvolveConfig(target=spec, standardize="off"))
    plain = off.data_free_start().fit_info
    assert plain["heldout_rms"] > 1.0 and not plain["standardized"]     # what goes wrong without it

    snaps = []
    run = mc.evolve(mc.EvolveConfig(target=spec), progress=lambda stage, frac, snap: snaps.append(snap))
    assert run.fit_info["standardized"] and run.target.standardization is not None
    std = run.target.standardization
    last = [s for s in snaps if s is not None][-1]       # a UI sees the points in x, the run keeps y
    np.testing.assert_allclose(last.points, std.to_original(run.points[-1]))
    assert run.fit_info["heldout_rms"] < 0.1 < plain["heldout_rms"]
    assert run.config.target["kind"] == "standardized" and run.config.target["base"] == mc.target_from_spec(spec).spec
    assert run.status == mc.Status.OK, run.message

    res = mc.sample(run, 4000, method="is", seed=1)
    assert res.verdict.status == mc.Status.OK, res.verdict.message
    # reported in the ORIGINAL coordinates: log Z of the normalized mixture is 0, masses 0.3 / 0.7
    assert res.log_z_exact == 0.0
    assert abs(res.log_z) < 0.03 and abs(res.log_z) < 5 * res.log_z_stderr + 0.005
    np.testing.assert_allclose(res.mode_masses, [0.3, 0.7], atol=0.03)
    w = np.exp(res.log_weights - res.log_weights.max())
    w /= w.sum()
    x = res.samples
    assert abs(w @ x[:, 0] - 0.4 * 3 * SCALE) < 0.1 * SCALE          # mean 0.7·30 − 0.3·30 = 12
    assert np.sqrt(w @ (x[:, 1] - w @ x[:, 1]) ** 2) == pytest.approx(SCALE, rel=0.05)

    # the dashboard's contours: the model evaluated at the display grid's x (mapped to y) matches
    # U_0 there up to a constant, where the target has mass
    from app.fields import field_at, initial_field
    base = mc.target_from_spec(spec)
    first, grid = initial_field(base, (0, 1))
    f = field_at(run, base, grid, first, 0.0, False)
    from app.export import replay_frames
    frames = replay_frames(run, (0, 1), contours=False)      # the downloads draw x too
    np.testing.assert_allclose(frames.points[-1], std.to_original(run.points[-1])[:, :2])
    near = np.isfinite(f.exact) & (f.exact < np.nanmin(f.exact) + 5)
    diff = (f.model - f.exact)[near]
    assert near.sum() > 20 and np.std(diff) < 0.1


def test_a_target_far_from_the_origin_is_standardized_even_when_it_fits():
    """Shifted by 50 the fit can pass (≈ 0.96 on a 6-D mixture) while the run and SMC fail; a start
    far from standard is evolved in y whenever the fit there is within the limit."""
    m = np.array([[-1.5, 0.0], [1.5, 0.0]]) + 50.0
    spec = {"kind": "gaussian_mixture", "weights": [0.4, 0.6], "means": m.tolist(),
            "covariances": [(0.5 * np.eye(2)).tolist()] * 2}
    start = mc.Evolution(mc.EvolveConfig(target=spec, fit_steps=300, gn_steps=5)).data_free_start()
    assert start.fit_info["standardized"] and start.target is not None
    assert start.fit_info["heldout_rms"] <= 1.0
    np.testing.assert_allclose(start.target.standardization.shift, [50.0, 50.0], atol=0.5)
    off = mc.Evolution(mc.EvolveConfig(target=spec, fit_steps=300, gn_steps=5, standardize="off")).data_free_start()
    assert not off.fit_info["standardized"] and off.target is None
