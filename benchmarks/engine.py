"""Engine benchmark: right-hand-side cost per solver mode, and full runs to T.

    python benchmarks/engine.py [--quick] [--out benchmarks/results/engine.md]

Table 1 times one evaluation of the MNE right-hand side (θ̇, Ẋ) per solver mode over
N (collocation points), p (network parameters, via width) and n (sketch rank), next to
the Jacobian work alone:  J = ∂U_θ(X)/∂θ by vmap(grad) (all modes), and for ``sketch``
also J plus the sketched Jacobian Z = JᵀΩ.  Table 2 runs the default evolution on
``two-modes`` to T = 4 for each mode (fresh compile, data-free start included) and
reports integrator steps, wall time and the ρ_t-weighted energy error against the exact
OU solution.
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
    a = ap.parse_args()
    mc.configure(compilation_cache=False, blas_threads=None)   # float64 from the first array on
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
