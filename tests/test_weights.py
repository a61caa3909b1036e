"""Tests of mne_core.weights: ESS, log Ẑ and its error, Pareto k̂, resampling, independent MH."""
from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mne_core as mc


# --------------------------------------------------------------------------- estimators


def test_ess_and_log_z_basic():
    assert mc.effective_sample_size(np.zeros(100)) == pytest.approx(100)
    lw = np.log(np.array([1.0, 0.0, 0.0, 0.0]) + 1e-300)
    assert mc.effective_sample_size(lw) == pytest.approx(1.0)
    w = np.array([1.0, 2.0, 3.0, 4.0])
    lz, se = mc.log_z_estimate(np.log(w) + 5.0)
    assert lz == pytest.approx(5.0 + math.log(2.5), abs=1e-12)
    assert se == pytest.approx(np.std(w, ddof=1) / (2.0 * 2.5), rel=1e-12)
    assert mc.effective_sample_size(np.log(w)) == pytest.approx(100.0 / 30.0)
    assert mc.effective_sample_size(np.full(3, -np.inf)) == 0.0
    lw = mc.importance_weights(np.array([0.0, np.nan, 1.0]), np.array([0.0, 0.0, np.inf]))
    assert lw[0] == 0 and lw[1] == -np.inf and lw[2] == -np.inf


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=1, max_size=40), st.integers(1, 200), st.integers(0, 10_000))
def test_systematic_resample_counts(logw, n, seed):
    lw = np.asarray(logw)
    idx = np.asarray(mc.systematic_resample(jax.random.PRNGKey(seed), lw, n))
    counts = np.bincount(idx, minlength=lw.size)
    w = np.exp(lw - lw.max())
    w /= w.sum()
    assert counts.sum() == n
    assert np.all(counts >= np.floor(n * w) - 1e-9 - 1) and np.all(counts <= np.ceil(n * w) + 1)
    assert np.all(np.abs(counts - n * w) < 1.0 + 1e-9)


def test_independent_mh_exact_proposal_and_stationarity():
    # q = π: every move accepted
    idx, acc = mc.independent_mh(jax.random.PRNGKey(0), np.zeros(500))
    assert acc == 1.0 and np.all(idx == np.arange(500))
    # proposal N(0, 1.5²), target N(0.5, 1): the chain's mean/variance must match the target
    rng = np.random.default_rng(1)
    x = 1.5 * rng.standard_normal(60_000)
    lw = -0.5 * (x - 0.5) ** 2 - (-0.5 * (x / 1.5) ** 2 - math.log(1.5))
    idx, acc = mc.independent_mh(jax.random.PRNGKey(2), lw)
    y = x[idx]
    assert 0.3 < acc < 0.95
    assert y.mean() == pytest.approx(0.5, abs=0.03) and y.var() == pytest.approx(1.0, abs=0.04)


def test_sample_detects_wrong_density():
    """The weights must expose a wrong log q: shifting log q by 0.3 shifts log Ẑ by −0.3."""
    lw = np.random.default_rng(0).normal(0, 0.1, 1000)
    assert mc.log_z_estimate(lw - 0.3)[0] == pytest.approx(mc.log_z_estimate(lw)[0] - 0.3)


def test_pareto_k_separates_light_and_heavy_tails():
    rng = np.random.default_rng(0)
    light = rng.normal(0, 0.1, 4000)            # log-normal weights with tiny spread: k̂ ≪ 0.5
    heavy = np.log(rng.pareto(0.8, 4000) + 1)   # Pareto tail with index 0.8: k̂ ≈ 1/0.8 > 0.7
    assert mc.pareto_k(light) < 0.3
    assert mc.pareto_k(heavy) > 0.7


def test_weight_diagnostics_verdicts():
    rng = np.random.default_rng(1)
    ok = mc.weight_diagnostics(rng.normal(0, 0.2, 4000))
    assert not ok["failures"] and not ok["warnings"] and ok["ess_fraction"] > 0.9
    collapsed = np.full(4000, -np.inf)
    collapsed[:3] = 0.0
    d = mc.weight_diagnostics(collapsed)
    reasons = {r for r, _ in d["failures"]}
    assert mc.Reason.WEIGHTS_COLLAPSED in reasons and d["ess"] == pytest.approx(3.0)
    low = mc.weight_diagnostics(rng.normal(0, 2.3, 4000))  # ESS ≈ exp(−σ²) ≈ 0.5 %: a warning or worse
    assert low["failures"] or low["warnings"]


def test_failed_sample_withholds_log_z():
    """A SampleResult whose verdict failed reports no log Z and no error bar, only the withheld value."""
    lw = np.full(1000, -np.inf)
    lw[0] = 0.0
    v, _ = mc.sampling.judge(lw, mc.Status.OK)
    assert v.status == mc.Status.FAILED


def test_flat_weights_do_not_fail_on_a_noisy_pareto_k():
    """Near-constant weights have no tail: their k̂ is a fit to noise and must not fail or warn a
    sample (ESS 99.9 %); a heavy tail with the same bulk still fails."""
    rng = np.random.default_rng(3)
    flat = np.log1p(0.04 * rng.uniform(-1, 1, 2000))  # weights within ±4 % of each other
    d = mc.weight_diagnostics(flat)
    assert not d["failures"] and not d["warnings"] and d["pareto_k_informative"] is False
    heavy = flat.copy()
    heavy[:40] = np.log(rng.pareto(0.6, 40) * 50 + 1)  # a few huge weights: not flat any more
    d = mc.weight_diagnostics(heavy)
    assert d["pareto_k_informative"] and (d["failures"] or d["warnings"])
