"""Engine benchmark: right-hand-side cost per solver mode, and full runs to T.

    python benchmarks/engine.py [--quick] [--out benchmarks/results/engine.md]

Table 1 times one evaluation of the MNE right-hand side (θ̇, Ẋ) per solver mode over
N (collocation points), p (network parameters, via width) and n (sketch rank), next to
the Jacobian work alone:  J = ∂U_θ(X)/∂θ by vmap(grad) (all modes), and for ``sketch``
also J plus the sketched Jacobian Z = JᵀΩ.  Table 2 runs the default evolution on
``two-modes`` to T = 4 for each mode (fresh compile, data-free start included) and
reports integrator steps, wall time and the ρ_t-weighted energy error against the exact
OU solution.

``--scaling`` prints the scaling table instead: N from 512 to 16 384 at p = 4417, and p from
4k to 100k at N = 2048 (and N = 8192, p ≈ 100k where memory allows, e.g. one H100), per
solver mode (Gram path as the cost rule picks it): right-hand-side time, its ratio to the
Jacobian work, XLA's peak temporary memory of the compiled right-hand side, and the growth
exponent in N (log t₂/t₁ / log N₂/N₁ between neighbouring rows; sketch ≈ 1, full ≈ 2–3).
``--max-points`` / ``--full-max`` bound the sizes (defaults fit a 24 GB, 2-core machine).
"""
from __future__ import annotations

import argparse
import functools
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import mne_core as mc
from mne_core import ntk
from mne_core.operators import OUEnergy
from mne_core.solvers import jacobian


def timeit(fn, *args, repeat=20):
    """Best single-call time in ms (the minimum is robust to other work on a shared CPU)."""
    jax.block_until_ready(fn(*args))
    best = np.inf
    for _ in range(max(repeat, 10)):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def rhs_table(quick: bool):
    rows = []
    grid = [(512, 64, 256)] if quick else [(256, 64, 128), (512, 64, 128), (512, 64, 256), (1024, 64, 256),
                                            (512, 128, 256)]
    for N, width, n in grid:
        net, theta = mc.init_energy_network(2, width, 2, "silu")
        x = 1.5 * jax.random.normal(jax.random.PRNGKey(0), (N, 2))
        sk = mc.make_sketch(jax.random.PRNGKey(1), N, n)
        args = (sk, jnp.asarray(1e-6))
        jac = jax.jit(lambda th, x: jacobian(net.energy, th, x))
        t_jac = timeit(jac, theta, x)
        jz = jax.jit(lambda th, x: sk.sketch_jacobian(jacobian(net.energy, th, x)))
        t_jz = timeit(jz, theta, x)
        for mode in mc.SOLVER_MODES:
            if mode == "galerkin" and (quick or net.num_params > 5000 or N > 512):
                continue  # p×p Cholesky: O(p³), minutes per run at this size
            grams = ["jacobian", "structured"] if mode in ntk.STRUCTURED_MODES else ["jacobian"]
            auto = ntk.choose_gram(mode, net, N, n, "auto")
            for gram in grams:
                vf = jax.jit(mc.mne_vector_field(net, OUEnergy(), mode, gram))
                t = timeit(vf, 0.0, (theta, x), args, repeat=2 if mode == "galerkin" else 10)
                rows.append(dict(mode=mode, gram=gram + (" (auto)" if gram == auto else ""), N=N, p=net.num_params,
                                 n=n if mode in ("sketch", "subspace") else "-",
                                 rhs_ms=t, jac_ms=t_jac, ratio_jac=t / t_jac,
                                 ratio_jz=(t / t_jz) if mode == "sketch" else None))
    return rows


def peak_bytes(fn, *args):
    """Bytes XLA reserves for one call of the compiled ``fn``: temporaries + arguments + outputs."""
    try:
        m = jax.jit(fn).lower(*args).compile().memory_analysis()
        return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)
    except Exception:   # noqa: BLE001 - some backends give no analysis
        return None


def scaling_table(max_points: int, full_max: int, max_jac_bytes: float):
    """Rows of the scaling table (module doc)."""
    grid = [(N, 64) for N in (512, 1024, 2048, 4096, 8192, 16384) if N <= max_points]
    grid += [(2048, w) for w in (128, 224, 316)] + [(8192, 316)]
    rows, n = [], 256
    for N, width in grid:
        net, theta = mc.init_energy_network(2, width, 2, "silu")
        p = net.num_params
        if N * p * 8 > max_jac_bytes:
            rows.append(dict(mode="(all)", gram="skipped: J would need %.1f GB" % (N * p * 8 / 1e9), N=N, p=p,
                             rhs_ms=None, jac_ms=None, ratio_jac=None, peak_mb=None, growth=None))
            continue
        x = 1.5 * jax.random.normal(jax.random.PRNGKey(0), (N, 2))
        sk = mc.make_sketch(jax.random.PRNGKey(1), N, n)
        args = (sk, jnp.asarray(1e-6))
        jz = jax.jit(lambda th, x: sk.sketch_jacobian(jacobian(net.energy, th, x)))
        jac = jax.jit(lambda th, x: jacobian(net.energy, th, x))
        t_jac = timeit(jac, theta, x, repeat=5)
        t_jz = timeit(jz, theta, x, repeat=5)
        start = len(rows)
        for mode in ("sketch", "full"):
            if mode == "full" and N > full_max:
                rows.append(dict(mode=mode, gram="skipped: N > --full-max", N=N, p=p, rhs_ms=None, jac_ms=t_jac,
                                 ratio_jac=None, peak_mb=None, growth=None))
                continue
            auto = ntk.choose_gram(mode, net, N, n, "auto")
            for gram in ("jacobian", "structured"):
                if gram == "structured" and N > full_max:
                    continue     # N×N Gram per layer: the cost rule never picks it here
                vf = mc.mne_vector_field(net, OUEnergy(), mode, gram)
                f = jax.jit(vf)
                t0 = time.perf_counter()
                jax.block_until_ready(f(0.0, (theta, x), args))
                first = time.perf_counter() - t0
                t = timeit(f, 0.0, (theta, x), args, repeat=2 if first > 2.0 else 10)
                mem = peak_bytes(vf, 0.0, (theta, x), args)
                prev = [r for r in rows if r["mode"] == mode and r["gram"].split()[0] == gram and r["p"] == p
                        and r["rhs_ms"] is not None and r["N"] < N]
                growth = (np.log(t / prev[-1]["rhs_ms"]) / np.log(N / prev[-1]["N"])) if prev else None
                work = t_jz if mode == "sketch" else t_jac
                rows.append(dict(mode=mode, gram=gram + (" (auto)" if gram == auto else ""), N=N, p=p, rhs_ms=t,
                                 jac_ms=work, ratio_jac=t / work, peak_mb=None if mem is None else mem / 2**20,
                                 growth=growth))
        print(fmt(rows[start:], SCALING_COLS), end="", flush=True)
    return rows


SCALING_COLS = [("mode", "{}"), ("gram", "{}"), ("N", "{}"), ("p", "{}"), ("rhs_ms", "{:.2f}"), ("jac_ms", "{:.2f}"),
                ("ratio_jac", "{:.2f}"), ("peak_mb", "{:.0f}"), ("growth", "{:.2f}")]


def run_table(quick: bool):
    rows = []
    runs = [("sketch", "jacobian"), ("sketch", "auto")] if quick else \
        [("sketch", "jacobian"), ("sketch", "auto"), ("full", "jacobian"), ("full", "auto"), ("subspace", "auto")]
    for mode, gram in runs:
        ntk.DEFAULT_GRAM = gram
        mc.evolution.compiled_pieces.cache_clear()   # the compiled right-hand side bakes the Gram path in
        cfg = mc.EvolveConfig(solver=mode, T=4.0)
        t0 = time.perf_counter()
        evo = mc.Evolution(cfg)
        evo.prepare()
        t_prep = time.perf_counter() - t0
        for _ in evo.steps(spectrum_every=10):
            pass
        wall = time.perf_counter() - t0
        d = evo.run.diagnostics
        rows.append(dict(mode=mode, gram=gram, status=evo.status, accepted=len(d["t"]) - 1, rejected=int(d["num_rejected"][-1]),
                         prep_s=t_prep, wall_s=wall, err_max=float(np.nanmax(d["energy_error"])),
                         err_T=float(d["energy_error"][-1]), fit_heldout=evo.run.fit_info["heldout_rms_target"]))
    return rows


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, JAX {jax.__version__} ({jax.default_backend()}), float64"


def fmt(rows, cols):
    head = "| " + " | ".join(c for c, _ in cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = ""
    for r in rows:
        body += "| " + " | ".join(("-" if r[k] is None else (f.format(r[k]) if not isinstance(r[k], str) else r[k]))
                                  for k, f in [(c, f) for c, f in cols]) + " |\n"
    return head + body


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--rhs-only", action="store_true", help="only the right-hand-side table")
    ap.add_argument("--scaling", action="store_true", help="only the scaling table in N and p")
    ap.add_argument("--max-points", type=int, default=16384, help="largest N of the scaling table")
    ap.add_argument("--full-max", type=int, default=4096, help="largest N at which the full mode is timed")
    ap.add_argument("--max-jac-gb", type=float, default=4.0, help="skip rows whose N×p Jacobian exceeds this")
    a = ap.parse_args()
    mc.configure(compilation_cache=False, blas_threads=None)   # float64 from the first array on
    if a.scaling:
        out = f"Machine: {machine()}\n\n### Scaling of the right-hand side in N and p (sketch rank n = 256)\n\n"
        print(out, flush=True)
        rows = scaling_table(a.max_points, a.full_max, a.max_jac_gb * 1e9)
        out += fmt(rows, SCALING_COLS)
        out += ("\nrhs_ms: one evaluation of (θ̇, Ẋ), best call; jac_ms: the mode's Jacobian work (sketch: J and "
                "Z = JᵀΩ; full: J); ratio_jac = rhs/that; peak_mb: XLA's memory for one compiled call "
                "(temporaries + arguments + outputs); growth: exponent of rhs_ms in N against the previous row "
                "of the same mode, Gram path and p.  gram: jacobian (from J) or structured (Σ_l (A_lA_lᵀ+1)⊙(D_lD_lᵀ), N×N); (auto) marks the path the cost rule picks (mne_core.ntk.choose_gram).\n")
        print(out, flush=True)
        if a.out:
            os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
            with open(a.out, "w") as f:
                f.write(out)
        return
    out = f"Machine: {machine()}\n\n### Right-hand side per solver mode\n\n"
    rows = rhs_table(a.quick)
    out += fmt(rows, [("mode", "{}"), ("gram", "{}"), ("N", "{}"), ("p", "{}"), ("n", "{}"), ("rhs_ms", "{:.2f}"),
                      ("jac_ms", "{:.2f}"), ("ratio_jac", "{:.2f}"), ("ratio_jz", "{:.2f}")])
    out += ("\nrhs_ms: one evaluation of (θ̇, Ẋ); jac_ms: J by vmap(grad) alone; ratio_jac = rhs/J; "
            "ratio_jz = rhs/(J + Z=JᵀΩ), the sketch mode's whole Jacobian work.  gram: how the Gram is formed "
            "(jacobian: from J; structured: Σ_l (A_lA_lᵀ+1)⊙(D_lD_lᵀ) without J, mne_core.ntk); (auto) marks the "
            "path the cost rule picks.  Times: best single call.\n")
    print(out, flush=True)
    runs = [] if a.rhs_only else run_table(a.quick)
    t2 = "\n### Default evolution on two-modes, 0 → T (cold start: compile + data-free start included)\n\n"
    t2 += fmt(runs, [("mode", "{}"), ("gram", "{}"), ("status", "{}"), ("accepted", "{}"), ("rejected", "{}"), ("prep_s", "{:.1f}"),
                     ("wall_s", "{:.1f}"), ("err_max", "{:.4f}"), ("err_T", "{:.4f}"), ("fit_heldout", "{:.4f}")])
    t2 += "\nerr: ρ_t-weighted RMS of U_θ − U_t up to a constant on 2000 exact samples, max over accepted steps.\n"
    print(t2, flush=True)
    if a.out:
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out, "w") as f:
            f.write(out + t2)


if __name__ == "__main__":
    main()
