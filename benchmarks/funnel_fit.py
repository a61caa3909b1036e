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

``--radial`` probes a network the engine does not have: the funnel's energy depends on x_1..x_9
only through s = Σ_{i≥1} x_i² (it is invariant under their rotations), the OU process keeps that
invariance, so every exact U_t is a function of (x0, s).  The probe fits

    U_θ(x) = ½ e^{q} x0² + NN_a(x0, √(1+s) − 1, log(1+s)) + ½ s · exp(c·x0 + NN_b(x0))

(e^{−U_θ} integrable for every θ; U_0 is in the family: q = log(1/9), c = −1, NN_b = 0,
NN_a = (d−1)x0/2) to the EXACT U_t on exact ρ_t samples at several t, warm-starting each t from
the last, and reports the same errors.  Not an evolution: only whether the family can hold U_t.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree

import mne_core as mc
from mne_core.diagnostics import centred_rms


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--betas", default="1,0.1,0.01,0.001")
    p.add_argument("--points", type=int, default=4096, help="fit points (exact samples)")
    p.add_argument("--radial", action="store_true", help="the rotation-aware network at several t (module doc)")
    p.add_argument("--times", default="0,0.3,1", help="--radial: the times t")
    p.add_argument("--fit-steps", type=int, default=None, help="Adam steps (default: the engine's 1500)")
    p.add_argument("--gn-steps", type=int, default=None, help="Gauss–Newton steps (default: the engine's 20)")
    a = p.parse_args()
    mc.configure(compilation_cache=False)
    if a.radial:
        return radial(a)
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


class RadialEnergy(nnx.Module):
    """U_θ(x) = ½ e^{q} x0² + NN_a(x0, √(1+s) − 1, log(1+s)) + ½ s exp(c·x0 + NN_b(x0)), s = Σ_{i≥1} x_i²."""

    def __init__(self, width: int, depth: int, *, rngs: nnx.Rngs):
        zeros = nnx.initializers.zeros_init()
        sa, sb = [3] + [width] * depth, [1] + [width] * depth
        self.ha = nnx.List([nnx.Linear(i, o, rngs=rngs) for i, o in zip(sa[:-1], sa[1:])])
        self.oa = nnx.Linear(width, 1, kernel_init=zeros, rngs=rngs)
        self.hb = nnx.List([nnx.Linear(i, o, rngs=rngs) for i, o in zip(sb[:-1], sb[1:])])
        self.ob = nnx.Linear(width, 1, kernel_init=zeros, rngs=rngs)
        self.c = nnx.Linear(1, 1, kernel_init=zeros, rngs=rngs)
        self.q = nnx.Param(jnp.zeros(()))

    def __call__(self, x):
        x0, s = x[..., :1], jnp.sum(x[..., 1:] ** 2, axis=-1)
        h = jnp.concatenate([x0, (jnp.sqrt(1.0 + s) - 1.0)[..., None], jnp.log1p(s)[..., None]], -1)
        for layer in self.ha:
            h = jax.nn.silu(layer(h))
        g = x0
        for layer in self.hb:
            g = jax.nn.silu(layer(g))
        b = self.ob(g)[..., 0] + self.c(x0)[..., 0]
        return 0.5 * jnp.exp(self.q[...]) * x0[..., 0] ** 2 + self.oa(h)[..., 0] + 0.5 * s * jnp.exp(b)


def radial(a):
    tgt = mc.named_target("funnel", 10)
    cfg = mc.EvolveConfig(target={"kind": "named", "name": "funnel", "dim": 10}).resolved(10)
    steps = a.fit_steps if a.fit_steps is not None else cfg.fit_steps
    gn = a.gn_steps if a.gn_steps is not None else cfg.gn_steps
    graphdef, params = nnx.split(RadialEnergy(cfg.width, cfg.depth, rngs=nnx.Rngs(0)), nnx.Param)
    theta, unravel = ravel_pytree(jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), params))
    energies = lambda th, xs: nnx.merge(graphdef, unravel(th))(xs)  # noqa: E731
    energy = energies
    print(f"funnel-10, rotation-aware network ({theta.size} parameters, width {cfg.width}, depth {cfg.depth}); "
          f"{a.points} exact ρ_t fit points, Adam {steps} + Gauss–Newton {gn}, warm-started along t; "
          f"20 000 fresh exact ρ_t samples\n")
    print("| t | fit held-out RMS | energy error (fresh samples) | mouth x0 > 4.5 | neck x0 < −4.5 | fit s |")
    print("|---|---|---|---|---|---|")
    for i, t in enumerate(float(v) for v in a.times.split(",")):
        k_fit, k_val, k_test = jax.random.split(jax.random.PRNGKey(i), 3)
        xs = [jnp.asarray(tgt.evolved_sampler(k, t, n), jnp.float64)
              for k, n in ((k_fit, a.points), (k_val, 1024), (k_test, 20_000))]
        us = [tgt.evolved_energies(t, z) for z in xs]
        t0 = time.perf_counter()
        theta, info = mc.fit_energy(energies, energy, theta, xs[0], us[0], xs[1], us[1], adam_steps=steps, gn_steps=gn)
        wall = time.perf_counter() - t0
        x_test = np.asarray(xs[2])
        r = np.asarray(energies(theta, xs[2])) - np.asarray(us[2])
        mouth, neck = x_test[:, 0] > 4.5, x_test[:, 0] < -4.5
        part = lambda m: f"{float(centred_rms(r[m])):.3g} ({m.sum()})" if m.sum() > 1 else "–"  # noqa: E731
        print(f"| {t:g} | {info.heldout_rms:.3g} | {float(centred_rms(r)):.3g} | {part(mouth)} | {part(neck)} | "
              f"{wall:.0f} |", flush=True)


if __name__ == "__main__":
    main()
