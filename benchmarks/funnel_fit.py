"""Why funnel-10 fails: what the network U_θ(x) = ½ β |x|² + NN_θ(x) can represent at t = 0.

    python benchmarks/funnel_fit.py [--betas 1,0.1,0.01,0.001] [--points 4096]

Neal's funnel: x0 ~ N(0, 3²), x_i | x0 ~ N(0, e^{x0}); in its mouth (x0 = 6, about 2σ) the
other coordinates spread to |x_i| ≈ 20–40, where the confinement ½ β x_i² alone is 200β–800β
per coordinate while U_0 is O(1) there — and an MLP with the offered activations grows at most
linearly, so it cannot cancel a quadratic over that range.  This probe removes every other
source of error: it fits NN_θ (default sizes for d = 10: width 128, depth 2, silu) to U_0 on
EXACT target samples with the engine's own fit (``mne_core.fit_energy``: Adam, then
Gauss–Newton), for several confinements β, and reports the centred RMS of U_θ − U_0 on fresh
exact samples (the t = 0 energy error the evolution would start from) and on samples with
x0 > 4.5 (the mouth) and x0 < −4.5 (the neck).  ~20 s per β on two CPU cores.

The engine always uses β = 1 (the OU equilibrium |x|²/2, which makes e^{−U_θ} integrable for
every θ); this script builds its networks directly, the engine is not changed.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import mne_core as mc
from mne_core.diagnostics import centred_rms


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--betas", default="1,0.1,0.01,0.001")
    p.add_argument("--points", type=int, default=4096, help="fit points (exact samples)")
    a = p.parse_args()
    mc.configure(compilation_cache=False)
    tgt = mc.named_target("funnel", 10)
    cfg = mc.EvolveConfig(target={"kind": "named", "name": "funnel", "dim": 10}).resolved(10)
    k_fit, k_val, k_test = jax.random.split(jax.random.PRNGKey(0), 3)
    x_fit = jnp.asarray(tgt.sampler(k_fit, a.points), jnp.float64)
    x_val = jnp.asarray(tgt.sampler(k_val, 1024), jnp.float64)
    x_test = np.asarray(tgt.sampler(k_test, 20_000))
    u_fit, u_val, u_test = tgt.energies(x_fit), tgt.energies(x_val), np.asarray(tgt.energies(x_test))
    mouth, neck = x_test[:, 0] > 4.5, x_test[:, 0] < -4.5
    print(f"funnel-10, network width {cfg.width}, depth {cfg.depth}, {cfg.activation}; {a.points} exact fit points; "
          f"20 000 fresh exact samples ({mouth.sum()} in the mouth x0 > 4.5, {neck.sum()} in the neck x0 < −4.5)\n")
    print("| β | fit held-out RMS | energy error at t = 0 (fresh samples) | mouth | neck | fit s |")
    print("|---|---|---|---|---|---|")
    for beta in (float(b) for b in a.betas.split(",")):
        net, theta = mc.init_energy_network(10, cfg.width, cfg.depth, cfg.activation, quadratic=beta,
                                            dtype=jnp.float64)
        t0 = time.perf_counter()
        theta, info = mc.fit_energy(net.energies, net.energy, theta, x_fit, u_fit, x_val, u_val,
                                    adam_steps=cfg.fit_steps, gn_steps=cfg.gn_steps)
        wall = time.perf_counter() - t0
        r = np.asarray(net.energies(theta, jnp.asarray(x_test))) - u_test
        print(f"| {beta:g} | {info.heldout_rms:.3g} | {float(centred_rms(r)):.3g} | {float(centred_rms(r[mouth])):.3g} | "
              f"{float(centred_rms(r[neck])):.3g} | {wall:.0f} |", flush=True)


if __name__ == "__main__":
    main()
