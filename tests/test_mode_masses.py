"""The weighted mode masses' standard error (mne_core.diagnostics.mode_mass_stderr): calibrated
against exact cell masses over many independent replications, for one importance-sampling set
and for independent particle groups whose particles are dependent within a group."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

import mne_core as mc
from mne_core.diagnostics import mode_labels

# 1-D target: 0.3 N(−2, 0.7²) + 0.7 N(2, 0.7²); proposal N(1, 3.5²) (ESS ≈ 44 %)
W, MU, SD, Q_MU, Q_SD = np.array([0.3, 0.7]), np.array([-2.0, 2.0]), 0.7, 1.0, 3.5
MODES = MU[:, None]
# exact mass of the nearest-mode cells (−∞, 0] and (0, ∞)
CELL = np.array([W @ norm.cdf((0 - MU) / SD), W @ norm.sf((0 - MU) / SD)])


def _draw(rng, n):
    x = rng.normal(Q_MU, Q_SD, n)
    log_p = np.log(W @ norm.pdf(x[None, :], MU[:, None], SD))
    return x[:, None], log_p - norm.logpdf(x, Q_MU, Q_SD)


def test_cell_masses_and_labels():
    x = np.array([[-3.0], [-0.1], [0.1], [5.0]])
    assert mode_labels(x, MODES).tolist() == [0, 0, 1, 1]
    m = mc.mode_masses(x, np.array([0.0, 0.0, math.log(2.0), -np.inf]), MODES)
    np.testing.assert_allclose(m, [0.5, 0.5])
    # one point carrying everything: no spread, s.e. 0
    se = mc.mode_mass_stderr(mode_labels(x, MODES), np.array([0.0, -np.inf, -np.inf, -np.inf]), 2)
    np.testing.assert_allclose(se, [0.0, 0.0])


def test_importance_sampling_stderr_is_calibrated():
    """Over 400 independent sets of 500 weighted points the z-scores (m̂ − m)/s.e. have mean square
    ≈ 1 (χ² with 400 degrees of freedom: 1 ± 0.07); the binomial error bar √(m(1−m)/M), which
    ignores the weights, is too small by about √(M/ESS) (mean z² ≈ 2) and fails the same check."""
    rng = np.random.default_rng(0)
    z, z_binom = [], []
    for _ in range(400):
        x, lw = _draw(rng, 500)
        m = mc.mode_masses(x, lw, MODES)
        se = mc.mode_mass_stderr(mode_labels(x, MODES), lw, 2)
        z.append((m[1] - CELL[1]) / se[1])
        z_binom.append((m[1] - CELL[1]) / math.sqrt(m[1] * (1 - m[1]) / 500))
    assert np.mean(np.square(z)) == pytest.approx(1.0, abs=0.2)
    assert abs(np.mean(z)) < 0.15                      # no bias beyond O(1/M)
    assert np.mean(np.square(z_binom)) > 1.6


@pytest.mark.parametrize("ragged", [False, True])
def test_grouped_stderr_sees_the_dependence_within_groups(ragged):
    """R = 40 groups, each 25 weighted draws resampled to 100 equal particles (an SMC group after
    resampling), the group weighted by its Ẑ_r.  The between-group s.e. is calibrated (mean z²
    ≈ 1 over 300 replications); treating the 4000 particles as independent is about 2.8× too small
    (mean z² ≈ 8).  ``ragged``: groups of 50 and 150 particles (an SMC system grown by a second
    batch of larger groups), given as every point's group index."""
    rng = np.random.default_rng(1)
    R, n_draw = 40, 25
    sizes = np.where(np.arange(R) % 2, 150, 50) if ragged else np.full(R, 100)
    gid = np.repeat(np.arange(R), sizes)
    z, z_flat = [], []
    for _ in range(300):
        xs, lws = [], []
        for m in sizes:
            x, lw = _draw(rng, n_draw)
            w = np.exp(lw - lw.max())
            idx = rng.choice(n_draw, m, p=w / w.sum())
            xs.append(x[idx])
            # every particle carries Ẑ_r / m: the group's weights sum to Ẑ_r
            lws.append(np.full(m, lw.max() + math.log(w.mean()) - math.log(m)))
        x, lw = np.concatenate(xs), np.concatenate(lws)
        est = mc.mode_masses(x, lw, MODES)[1]
        labels = mode_labels(x, MODES)
        se = mc.mode_mass_stderr(labels, lw, 2, groups=gid)
        if not ragged:
            np.testing.assert_allclose(se, mc.mode_mass_stderr(labels, lw, 2, groups=R), rtol=1e-12)
        z.append((est - CELL[1]) / se[1])
        z_flat.append((est - CELL[1]) / mc.mode_mass_stderr(labels, lw, 2)[1])
    assert np.mean(np.square(z)) == pytest.approx(1.0, abs=0.25)
    assert np.mean(np.square(z_flat)) > 3.0


def test_a_failed_result_withholds_its_estimates():
    """A result whose weights collapsed reports neither log Ẑ nor mode masses, only the withheld values."""
    x, lw = _draw(np.random.default_rng(2), 1000)
    lw = np.full_like(lw, -np.inf)
    lw[:2] = 0.0
    v, wd = mc.sampling.judge(lw, mc.Status.OK)
    assert v.status == mc.Status.FAILED
    res = mc.SampleResult(samples=x, log_weights=lw, raw_samples=x, raw_log_weights=lw, log_q=None,
                          log_z=-1.0, log_z_stderr=0.1, ess=wd["ess"], ess_fraction=wd["ess"] / 1000,
                          imh_samples=None, imh_acceptance=None, wall_seconds=0.0, flow_seconds=0.0, verdict=v,
                          mode_masses=mc.mode_masses(x, lw, MODES),
                          mode_masses_stderr=mc.mode_mass_stderr(mode_labels(x, MODES), lw, 2),
                          mode_masses_exact=W)
    s = res.summary()
    assert s["status"] == "failed"
    assert s["log_z"] is None and s["log_z_stderr"] is None and s["log_z_withheld"] == -1.0
    assert "mode_masses" not in s and "mode_masses_stderr" not in s and len(s["mode_masses_withheld"]) == 2
