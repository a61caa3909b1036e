"""Cost of one SMC particle-move on Gaussian-mixture targets (the unit of the SMC work budget).

    python benchmarks/smc_moves.py [--dims 16,32,64] [--components 8] [--particles 4000]

For each dimension: an untrained width-128 energy network and the 8-component mixture of
``benchmarks/highdim.py``.  Prints µs per particle for

* the target energy's value and gradient, as the engine computes it (all components in one matrix
  product, r = A x − b with A = [L_k⁻¹] stacked) and as it did before 2026-12-04 (a triangular
  solve per particle and component, reimplemented here for the ratio);
* one MALA move of the SMC path sweep (``mne_core.smc.path_kernels``) between two model energies
  (the path) and from the model to the exact energy (the bridge).

Ratios are within one run; the machine's load moves the absolute numbers.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, os.path.dirname(__file__))

from jax.scipy.linalg import solve_triangular  # noqa: E402
from jax.scipy.special import logsumexp  # noqa: E402

from highdim import mixture_spec  # noqa: E402
from mne_core.network import init_energy_network  # noqa: E402
from mne_core.smc import path_kernels  # noqa: E402
from mne_core.targets import target_from_spec  # noqa: E402


def per_particle(f, *args, repeat: int = 5, n: int) -> float:
    jax.block_until_ready(f(*args))
    t = time.perf_counter()
    for _ in range(repeat):
        out = f(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / repeat / n * 1e6


def solve_form(spec):
    """The earlier energy: a triangular solve per particle and component."""
    w, m, S = (np.asarray(spec[k], float) for k in ("weights", "means", "covariances"))
    L = np.linalg.cholesky(S)
    c = np.log(w) - np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum(-1) - 0.5 * m.shape[1] * np.log(2 * np.pi)

    def energy(x):
        r = jax.vmap(lambda Lk, rk: solve_triangular(Lk, rk, lower=True))(L, x - m)
        return -logsumexp(c - 0.5 * jnp.sum(r * r, axis=-1))
    return energy


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dims", default="16,32,64")
    ap.add_argument("--components", type=int, default=8)
    ap.add_argument("--particles", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=32, help="MALA moves per sweep")
    a = ap.parse_args(argv)
    n = a.particles
    print(f"{os.cpu_count()} CPUs · jax {jax.__version__} · {platform.machine()} · {n} particles · float64\n")
    print("| d | U_0 value+grad, one product (µs) | U_0 value+grad, triangular solves (µs) | ratio "
          "| path move (µs) | bridge move (µs) |")
    print("|---|---|---|---|---|---|")
    for d in (int(s) for s in a.dims.split(",")):
        spec = mixture_spec(d, a.components)
        tgt = target_from_spec(spec)
        x = jnp.asarray(np.random.default_rng(0).standard_normal((n, d)))
        new = per_particle(jax.jit(jax.vmap(jax.value_and_grad(tgt.energy))), x, n=n)
        old = per_particle(jax.jit(jax.vmap(jax.value_and_grad(solve_form(spec)))), x, n=n)
        net, th = init_energy_network(d, 128, 2, "tanh", dtype=jnp.float64, seed=0)
        _, _, sweep = path_kernels(net, tgt.energy, a.steps, d, None)
        f64 = lambda v: jnp.asarray(v, jnp.float64)  # noqa: E731
        key, ls = jax.random.PRNGKey(0), f64(-2.0)
        path = per_particle(sweep, key, x, ls, th, th, f64(0.0), f64(0.0), f64(0.5), repeat=2, n=n * a.steps)
        bridge = per_particle(sweep, key, x, ls, th, th, f64(0.0), f64(1.0), f64(0.5), repeat=2, n=n * a.steps)
        print(f"| {d} | {new:.2f} | {old:.2f} | {old / new:.1f}× | {path:.2f} | {bridge:.2f} |", flush=True)


if __name__ == "__main__":
    main()
