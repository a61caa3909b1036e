"""Tests of mne_core.sampling: the assembled sampler against exact answers, and its verdict."""
from __future__ import annotations


import numpy as np
import pytest

import mne_core as mc
from conftest import cov_of


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
    np.testing.assert_allclose(C, cov_of(2), atol=0.08)
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


def test_chunked_flow_matches_one_call_and_reports_progress(gauss_run):
    """The flow in chunks (the last one padded) gives each sample its own exact push-forward: the
    same points and log q as one call, to the ODE tolerance, and progress reaches 1."""
    from types import SimpleNamespace

    from mne_core.flow import run_flow, run_mask
    from mne_core.sampling import chunked_flow

    evo = SimpleNamespace(run=gauss_run)
    rng = np.random.default_rng(0)
    x_T = rng.normal(size=(70, 2))
    log_q_T = -0.5 * (x_T ** 2).sum(1)
    mask = run_mask(evo.run)
    seen = []
    one = run_flow(evo.run, x_T, log_q_T, mask, rtol=1e-8, atol=1e-10)
    chunks = chunked_flow(evo.run, x_T, log_q_T, mask, chunk=32, progress=lambda s, f, _: seen.append(f),
                          rtol=1e-8, atol=1e-10)
    assert chunks.ok and chunks.x.shape == (70, 2)
    np.testing.assert_allclose(chunks.x, one.x, atol=1e-5)
    np.testing.assert_allclose(chunks.log_q, one.log_q, atol=1e-5)
    assert seen == pytest.approx([32 / 70, 64 / 70, 1.0])


# --------------------------------------------------------------------------- streamed to disk


def test_sample_to_disk_pools_independent_batches_exactly(gauss_run, tmp_path):
    """Batches written as they finish are the batches sample() gives with their seeds, and the
    pooled estimates are those of the whole weight set (here 3 batches of ≤ 700)."""
    from mne_core.diagnostics import mode_labels, mode_masses
    from mne_core.sampling import batch_seed, sample_to_disk
    from mne_core.weights import effective_sample_size, log_z_estimate

    M, B = 1801, 700
    res = sample_to_disk(gauss_run, M, tmp_path, seed=5, batch=B)
    x, lw, lq = (np.load(tmp_path / f"{n}.npy") for n in ("samples", "log_weights", "log_q"))
    assert x.shape == (M, 2) and lw.shape == lq.shape == (M,)
    one = mc.sample(gauss_run, B, seed=batch_seed(5, 1), imh=False)
    np.testing.assert_allclose(x[B:2 * B], one.raw_samples, rtol=0, atol=1e-12)
    np.testing.assert_allclose(lw[B:2 * B], one.raw_log_weights, rtol=0, atol=1e-12)
    assert len({batch_seed(5, k) for k in range(3)}) == 3
    lz, se = log_z_estimate(lw)
    assert res.log_z == pytest.approx(lz) and res.log_z_stderr == pytest.approx(se)
    assert res.ess == pytest.approx(effective_sample_size(lw))
    assert abs(res.log_z) < max(4 * res.log_z_stderr, 0.01) and res.status == mc.Status.OK
    w = np.exp(lw - lw.max())
    w /= w.sum()
    np.testing.assert_allclose(w @ x, [1.0, -0.5], atol=0.06)
    tgt = gauss_run.target
    if tgt.modes is not None:
        np.testing.assert_allclose(res.mode_masses, mode_masses(x, lw, tgt.modes), atol=1e-12)
        np.testing.assert_allclose(res.mode_masses_stderr,
                                   mc.mode_mass_stderr(mode_labels(x, tgt.modes), lw, len(tgt.modes)), atol=1e-12)
    assert res.imh_samples is None
