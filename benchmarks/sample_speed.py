"""Time 10 000 weighted samples of a 2-D target after the forward run.

    .venv/bin/python benchmarks/sample_speed.py [--run DIR] [--n 10000] [--repeat 2]

Without --run it evolves two-modes at default settings first (not timed here).  Prints the
wall time of ``mne_core.sample(run, n)`` — reverse-flow ODE solve (Tsit5, rtol 1e-6) with the
exact log density, importance weights, log Ẑ, ESS, independent MH — for the first call in a
fresh process (includes JIT compilation; the persistent compilation cache is OFF unless
--cache) and for warm repeats.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--run", help="saved run directory (default: evolve two-modes now)")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--cache", action="store_true", help="use the JAX persistent compilation cache")
    p.add_argument("--method", choices=["is", "smc"], default="is", help="bias removal (default is)")
    a = p.parse_args()
    import jax
    import mne_core as mc
    mc.configure(compilation_cache=a.cache)
    if a.run:
        run = mc.load_run(a.run)
    else:
        t = time.perf_counter()
        run = mc.evolve(mc.EvolveConfig())
        print(f"forward run (two-modes, defaults): {time.perf_counter() - t:.1f} s", flush=True)
    load = os.getloadavg()
    rows = []
    for i in range(1 + a.repeat):
        t = time.perf_counter()
        r = mc.sample(run, a.n, seed=i, method=a.method)
        dt = time.perf_counter() - t
        rows.append(dt)
        print(f"{'cold (incl. compile)' if i == 0 else 'warm'}: {a.n} weighted samples in {dt:.2f} s "
              f"(flow {r.flow_seconds:.2f} s, {r.num_steps}+{r.num_rejected_steps} steps) · "
              f"log Ẑ − log Z = {r.log_z - (r.log_z_exact or 0):+.4f} · ESS {r.ess_fraction:.1%}", flush=True)
    print(json.dumps({"n": a.n, "dim": run.target.dim, "cold_seconds": rows[0], "warm_seconds": rows[1:],
                      "loadavg": load, "cpus": os.cpu_count(), "jax": jax.__version__}))


if __name__ == "__main__":
    main()
