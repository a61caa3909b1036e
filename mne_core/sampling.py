"""Data-free sampling from an MNE run, with a status you can trust (design note §5).

``sample(run, n, method=...)`` assembles the pieces:

* ``method="is"``: reverse probability flow from N(0, I) with the exact model log density
  (:mod:`mne_core.flow`), one-shot importance weights log w = −U_0(x_0) − log q_0(x_0) against
  the exact target energy (:mod:`mne_core.weights`), log Ẑ with its standard error, ESS,
  systematic resampling, independent Metropolis–Hastings.
* ``method="smc"``: sequential Monte Carlo along the learned path (:mod:`mne_core.smc`), whose
  weights cannot collapse the way one-shot weights do when the model energy is off by O(1).

Every result carries a :class:`~mne_core.status.Verdict`: ``failed`` when the weights have
collapsed (ESS below a few samples, Pareto k̂ > 0.7) — then ``log_z`` is withheld (NaN) instead of
reported with an error bar that does not hold — ``warning`` with the reasons (low ESS, k̂ > 0.5,
non-finite weights, a run that did not end ok), else ``ok``.

Conditionals z | y = y* and marginals: :mod:`mne_core.conditionals`.
The construction is this project's reconstruction (**[reconstructed]** in the design note).
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from .conditionals import check_run_for_condition, normalize_condition
from .diagnostics import exact_references, label_masses, mode_labels, mode_masses, target_energy_error
from .flow import LOG_2PI, FlowResult, SamplingError, base_normals, run_flow, run_mask
from .result import SampleResult, judge
from .smc import smc_sample
from .targets import original_target
from .weights import effective_sample_size, importance_weights, independent_mh, log_z_estimate, systematic_resample

METHODS = ("is", "smc")


#: Samples pushed through the reverse flow per XLA call when there are more: bounds the flow's
#: working memory, lets a progress bar advance, and lets Ctrl-C stop between chunks.  A larger
#: request runs ceil(M / FLOW_CHUNK) calls of one compiled shape (the last chunk is padded).
FLOW_CHUNK = 16384


def chunked_flow(run, x_T, log_q_T, mask, chunk: int = FLOW_CHUNK, progress=None, **flow_options) -> FlowResult:
    """:func:`~mne_core.flow.run_flow` over ``x_T`` in chunks of ``chunk`` rows (one call when
    M ≤ chunk).  Each row's flow is independent of the others up to the adaptive step control
    (each chunk picks its own steps, all to the same tolerance).  ``progress(stage, fraction,
    None)`` after each chunk.  Stops at the first chunk that fails, with that chunk's message."""
    x_T = np.asarray(x_T)
    log_q_T = np.asarray(log_q_T)
    M = x_T.shape[0]
    if M <= chunk:
        out = run_flow(run, x_T, log_q_T, mask, **flow_options)
        if progress is not None:
            progress("flow", 1.0, None)
        return out
    xs, lqs, steps, rejected = [], [], 0, 0
    for start in range(0, M, chunk):
        xb, lb = x_T[start:start + chunk], log_q_T[start:start + chunk]
        n = xb.shape[0]
        if n < chunk:  # pad with copies of its first row: one compiled shape for every chunk
            xb = np.concatenate([xb, np.repeat(xb[:1], chunk - n, axis=0)])
            lb = np.concatenate([lb, np.repeat(lb[:1], chunk - n)])
        out = run_flow(run, xb, lb, mask, **flow_options)
        steps, rejected = steps + out.num_steps, rejected + out.num_rejected
        if not out.ok:
            return FlowResult(x_T, log_q_T, steps, rejected, False, out.message + f" (in rows {start}…{start + n - 1})")
        xs.append(out.x[:n])
        lqs.append(out.log_q[:n])
        if progress is not None:
            progress("flow", min(1.0, (start + n) / M), None)
    return FlowResult(np.concatenate(xs), np.concatenate(lqs), steps, rejected, True, "")


def sample(run, n_samples: int = 10000, seed: int = 0, condition=None, resample: bool = False,
           rtol: float = 1e-6, atol: float = 1e-8, imh: bool = True, max_steps: int = 16384,
           qmc: bool = True, knots: bool = False, method: str = "is", smc_options: dict | None = None,
           progress=None, chunk: int = FLOW_CHUNK) -> SampleResult:
    """Sample the model of ``run`` and remove its bias (see module doc).

    Everything is returned in the target's original coordinates, also for a run that evolved in
    standardized ones (``run.target.standardization``, x = shift + scale ⊙ y): ``condition`` is
    read there too (:func:`in_original_coordinates` says what changes).

    ``condition``: {index: value} (or '0=1.5,2=-1') for z | y = y*; the run must have been
    evolved with ``diffuse`` = the complementary coordinates.  ``resample``: systematic
    resampling of the weighted set into ``samples`` (``raw_samples`` keeps the flow output).
    ``qmc``: draw x_T by randomized QMC (scrambled Sobol' through the normal inverse CDF; each
    x_T is still exactly N(0, I), so the weights stay exact; the iid standard error is then
    conservative).  ``knots``: make the solver stop at every recorded time of the run (θ(t) is
    only C¹ there); slower, and log q accurate to the ODE tolerance instead of ~1e-4.
    ``method``: ``"is"`` or ``"smc"`` (``smc_options`` go to :func:`mne_core.smc.smc_sample`).
    ``progress(stage, fraction, None)``: called as the work advances (the IS flow runs in chunks of
    ``chunk`` samples, :func:`chunked_flow`).
    """
    std = run.target.standardization
    kwargs = dict(n_samples=n_samples, seed=seed, resample=resample, rtol=rtol, atol=atol, imh=imh,
                  max_steps=max_steps, qmc=qmc, knots=knots, method=method, smc_options=smc_options,
                  progress=progress, chunk=chunk)
    if std is None:
        return _sample(run, condition=condition, **kwargs)
    cond = normalize_condition(condition, run.target.dim)
    cond_y = None if cond is None else {i: float((v - std.shift[i]) / std.scale[i]) for i, v in cond.items()}
    return in_original_coordinates(_sample(run, condition=cond_y, **kwargs), std, cond)


def in_original_coordinates(res: SampleResult, std, condition=None) -> SampleResult:
    """A result computed in standardized coordinates y, mapped to x = shift + scale ⊙ y.

    With L = Σ log scale_i over the sampled (free) coordinates: samples map point by point, a
    density over them picks up −L (log q), an integral +L (log Ẑ, every log weight, since
    w = e^{−U}/q and U is the same function value), so the normalized weights, the ESS and the
    verdict do not change (its messages quote log Ẑ in the run's coordinates).  Exact references
    (log Z, mode masses) are recomputed against the original target in x, and the SMC groups'
    log Ẑ shifted like log Ẑ."""
    base = std.base
    d = base.dim
    fixed = [] if condition is None else sorted(int(i) for i in condition)
    free = [i for i in range(d) if i not in fixed]
    ld = std.log_det(free)
    to_x = lambda y: None if y is None else std.to_original(y)      # noqa: E731
    samples, raw = to_x(res.samples), to_x(res.raw_samples)
    groups = 1 if res.smc_info is None else int(res.smc_info.get("groups", 1))
    ref = exact_references(base, raw, res.raw_log_weights + ld, condition, fixed, free, groups=groups)
    imh_masses = None
    if res.imh_samples is not None and base.modes is not None:
        imh_masses = mode_masses(to_x(res.imh_samples), np.zeros(len(res.imh_samples)), base.modes,
                                 None if condition is None else free)
    smc_info = res.smc_info
    if smc_info is not None and "log_z_groups" in smc_info:
        smc_info = {**smc_info, "log_z_groups": [g + ld for g in smc_info["log_z_groups"]]}
    return dataclasses.replace(
        res, samples=samples, log_weights=res.log_weights + ld, raw_samples=raw, smc_info=smc_info,
        raw_log_weights=res.raw_log_weights + ld, log_q=None if res.log_q is None else res.log_q - ld,
        log_z=res.log_z + ld, imh_samples=to_x(res.imh_samples), condition=condition,
        mode_masses=ref["mode_masses"], mode_masses_stderr=ref["mode_masses_stderr"],
        raw_mode_masses=ref["raw_mode_masses"], imh_mode_masses=imh_masses,
        mode_masses_exact=ref["mode_masses_exact"], log_z_exact=ref["log_z_exact"])


def _sample(run, n_samples, seed, condition, resample, rtol, atol, imh, max_steps, qmc, knots, method,
            smc_options, progress, chunk) -> SampleResult:
    """:func:`sample` in the run's own coordinates."""
    if method not in METHODS:
        raise SamplingError(f"method must be one of {METHODS}, got {method!r}")
    if int(n_samples) < 2:
        raise SamplingError(f"n_samples must be at least 2, got {n_samples}")
    if method == "smc":
        return smc_sample(run, n_samples, seed=seed, condition=condition, resample=resample,
                          rtol=rtol, atol=atol, max_steps=max_steps, progress=progress, **(smc_options or {}))
    t_start = time.perf_counter()
    tgt = run.target
    d = tgt.dim
    M = int(n_samples)
    cond = normalize_condition(condition, d)
    check_run_for_condition(run, cond)
    mask = run_mask(run)
    free = np.flatnonzero(mask == 1)
    fixed = np.flatnonzero(mask == 0)
    key = jax.random.PRNGKey(int(seed))
    k_x, k_res, k_imh, k_acc = jax.random.split(key, 4)
    dtype = run.thetas.dtype
    z = base_normals(k_x, M, len(free), qmc).astype(dtype)
    x_T = np.zeros((M, d), dtype)
    x_T[:, free] = z
    if cond is not None:
        x_T[:, fixed] = np.array([cond[int(i)] for i in fixed])
    log_q_T = -0.5 * (z * z).sum(1) - 0.5 * len(free) * LOG_2PI
    t_flow = time.perf_counter()
    flow = chunked_flow(run, x_T, log_q_T, mask, chunk=int(chunk), progress=progress, rtol=rtol, atol=atol,
                        max_steps=max_steps, knots=knots)
    if not flow.ok:
        raise SamplingError(flow.message + f" after {flow.num_steps} steps; try a larger max_steps or rtol")
    flow_seconds = time.perf_counter() - t_flow
    x0, log_q = flow.x, flow.log_q
    u0 = np.asarray(tgt.energies(jnp.asarray(x0)), np.float64)
    log_w = importance_weights(-u0, log_q)
    n_bad = int((~np.isfinite(log_w)).sum())
    if n_bad == M:
        raise SamplingError("every importance weight is zero or non-finite (target energy not finite "
                            "at the flow samples)")
    log_z, log_z_se = log_z_estimate(log_w)
    ess = effective_sample_size(log_w)
    if resample:
        idx = np.asarray(systematic_resample(k_res, log_w, M))
        samples, lw_out = x0[idx], np.full(M, log_z)
    else:
        samples, lw_out = x0, log_w
    imh_samples = imh_acc = None
    if imh:
        order = np.asarray(jax.random.permutation(k_imh, M))
        start = int(np.argmax(np.isfinite(log_w[order])))
        idx_chain, imh_acc = independent_mh(k_acc, log_w[order], M, start=start)
        imh_samples = x0[order][idx_chain]
    ref = exact_references(tgt, x0, log_w, cond, fixed, free)
    imh_masses = None
    if imh_samples is not None and tgt.modes is not None:
        imh_masses = mode_masses(imh_samples, np.zeros(M), tgt.modes, None if cond is None else free)
    v, wd = judge(log_w, run.status)
    return SampleResult(
        samples=samples, log_weights=lw_out, raw_samples=x0, raw_log_weights=log_w, log_q=log_q,
        log_z=log_z, log_z_stderr=log_z_se, ess=ess, ess_fraction=ess / M,
        imh_samples=imh_samples, imh_acceptance=imh_acc, wall_seconds=time.perf_counter() - t_start,
        flow_seconds=flow_seconds, verdict=v, method="is", pareto_k=wd["pareto_k"], mode_masses=ref["mode_masses"],
        mode_masses_stderr=ref["mode_masses_stderr"], raw_mode_masses=ref["raw_mode_masses"], imh_mode_masses=imh_masses, mode_masses_exact=ref["mode_masses_exact"],
        log_z_exact=ref["log_z_exact"], condition=cond, num_steps=flow.num_steps,
        num_rejected_steps=flow.num_rejected, n_nonfinite=n_bad, run_status=run.status.value,
        resampled=bool(resample),
        model_energy_error=target_energy_error(run) if cond is None and tgt.sampler is not None else None)


#: Samples per batch of :func:`sample_to_disk` (each batch is one :func:`sample` call).
STREAM_BATCH = 1 << 18
#: Files :func:`sample_to_disk` writes (``.npy``, rows in batch order).
STREAM_FILES = ("samples", "log_weights", "log_q")


def batch_seed(seed: int, k: int) -> int:
    """The seed of batch ``k`` of a streamed sample (distinct for every (seed, k))."""
    return int(np.random.SeedSequence([int(seed), int(k)]).generate_state(1)[0] & 0x7FFFFFFF)


def sample_to_disk(run, n_samples: int, directory, seed: int = 0, batch: int = STREAM_BATCH, condition=None,
                   rtol: float = 1e-6, atol: float = 1e-8, max_steps: int = 16384, qmc: bool = True,
                   progress=None) -> SampleResult:
    """Importance sampling of ``n_samples`` points in independent batches of ≤ ``batch``, each
    written to ``directory`` as it finishes (``samples.npy`` (M, d), ``log_weights.npy`` and
    ``log_q.npy`` (M,), opened as memory maps), so memory stays bounded by one batch plus the
    M log weights.

    Batch k is :func:`sample` with seed :func:`batch_seed` (seed, k): an exact draw of the model
    q_0 of its own, so the pooled weights form one importance-sampling set,

        log Ẑ = logsumexp_i(log w_i) − log M   (all M weights),

    with the usual standard error, ESS and verdict (Pareto k̂ over all M); so are the mode masses
    and their standard error, from each point's nearest mode.  No IMH chain and no resampling (they
    need the whole set in memory).  The returned arrays are read-only memory maps."""
    from pathlib import Path

    from numpy.lib.format import open_memmap

    t_start = time.perf_counter()
    M, B = int(n_samples), max(2, int(batch))
    if M < 2:
        raise SamplingError(f"n_samples must be at least 2, got {n_samples}")
    d = run.target.dim
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {name: directory / f"{name}.npy" for name in STREAM_FILES}
    x_out = open_memmap(files["samples"], mode="w+", dtype=np.float64, shape=(M, d))
    lw_out = open_memmap(files["log_weights"], mode="w+", dtype=np.float64, shape=(M,))
    lq_out = open_memmap(files["log_q"], mode="w+", dtype=np.float64, shape=(M,))
    sizes = [B] * (M // B) + ([M % B] if M % B else [])
    if len(sizes) > 1 and sizes[-1] < 2:  # every batch needs two samples
        sizes[-2] -= 1
        sizes[-1] += 1
    first = None
    steps, rejected, flow_s, start = 0, 0, 0.0, 0
    modes = original_target(run.target).modes    # sample() returns points in the user's coordinates
    coords = None
    if condition is not None:
        fixed = set(int(i) for i in normalize_condition(condition, d))
        coords = np.array([i for i in range(d) if i not in fixed])
    labels = None if modes is None else np.zeros(M, np.int32)
    for k, n in enumerate(sizes):
        sub = None if progress is None else (
            lambda stage, frac, info, _s=start, _n=n: progress(stage, (_s + frac * _n) / M, info))
        res = sample(run, n, seed=batch_seed(seed, k), condition=condition, rtol=rtol, atol=atol, imh=False,
                     max_steps=max_steps, qmc=qmc, method="is", progress=sub)
        x_out[start:start + n] = res.raw_samples
        lw_out[start:start + n] = res.raw_log_weights
        lq_out[start:start + n] = res.log_q
        if modes is not None:
            labels[start:start + n] = mode_labels(res.raw_samples, modes, coords)
        steps, rejected, flow_s = steps + res.num_steps, rejected + res.num_rejected_steps, flow_s + res.flow_seconds
        first = res if first is None else first
        start += n
    for arr in (x_out, lw_out, lq_out):
        arr.flush()
    del x_out, lw_out, lq_out
    log_w = np.load(files["log_weights"])
    n_bad = int((~np.isfinite(log_w)).sum())
    log_z, log_z_se = log_z_estimate(log_w)
    ess = effective_sample_size(log_w)
    v, wd = judge(log_w, run.status)
    mm = mm_se = raw_mm = None
    if labels is not None:     # pooled over all M weights, like log Ẑ
        mm, mm_se, raw_mm = label_masses(labels, log_w, len(modes))
    samples = np.load(files["samples"], mmap_mode="r")
    return SampleResult(
        samples=samples, log_weights=log_w, raw_samples=samples, raw_log_weights=log_w,
        log_q=np.load(files["log_q"], mmap_mode="r"), log_z=log_z, log_z_stderr=log_z_se, ess=ess,
        ess_fraction=ess / M, imh_samples=None, imh_acceptance=None, wall_seconds=time.perf_counter() - t_start,
        flow_seconds=flow_s, verdict=v, method="is", pareto_k=wd["pareto_k"], mode_masses=mm, mode_masses_stderr=mm_se,
        raw_mode_masses=raw_mm,
        mode_masses_exact=first.mode_masses_exact, log_z_exact=first.log_z_exact, condition=first.condition,
        num_steps=steps, num_rejected_steps=rejected, n_nonfinite=n_bad, run_status=run.status.value,
        model_energy_error=first.model_energy_error)


__all__ = ["SampleResult", "SamplingError", "sample", "in_original_coordinates", "sample_to_disk", "batch_seed", "judge", "METHODS",
           "FLOW_CHUNK", "STREAM_BATCH", "STREAM_FILES", "chunked_flow"]
