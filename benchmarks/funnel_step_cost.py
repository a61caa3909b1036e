"""Per-step cost of the funnel-10 rotation-aware evolution against the sketch rank (one data-free
start, reused): ``python benchmarks/funnel_step_cost.py 1024,512,256 [N] [step attempts]``.
Prints, per sketch rank, the prepare time, the first (compiling) step and the median step after it."""
from __future__ import annotations

import sys
import time

import numpy as np

from mne_core.config import EvolveConfig
from mne_core.evolution import Evolution


def main(argv: list[str]) -> None:
    ranks = [int(r) for r in (argv[0] if argv else "1024,512,256").split(",")]
    n_points = int(argv[1]) if len(argv) > 1 else 1024
    attempts = int(argv[2]) if len(argv) > 2 else 10
    base = EvolveConfig(target={"kind": "named", "name": "funnel", "dim": 10}, network="radial", width=64, T=3.0,
                        n_points=n_points)
    t0 = time.perf_counter()
    start = Evolution(base.replace(sketch_rank=ranks[0])).data_free_start()
    print(f"data-free start {time.perf_counter() - t0:.1f} s", flush=True)
    print("| sketch rank | prepare (s) | first step (s) | median step (s) | t reached |")
    print("|---|---|---|---|---|")
    for rank in ranks:
        evo = Evolution(base.replace(sketch_rank=rank))
        t0 = time.perf_counter()
        evo.prepare(start=start)
        prepare = time.perf_counter() - t0
        times, t_now = [], 0.0
        t1 = time.perf_counter()
        for k, snap in enumerate(evo.steps(spectrum_every=1000)):
            times.append(time.perf_counter() - t1)
            t_now = float(snap.t)
            t1 = time.perf_counter()
            if k + 1 >= attempts:
                break
        print(f"| {rank} | {prepare:.1f} | {times[0]:.1f} | {np.median(times[1:]):.2f} | {t_now:.3g} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
