"""Peer benchmark: MNE (raw flow, +IS, +IMH) vs BlackJAX NUTS and adaptive tempered SMC at EQUAL
wall time (the baselines get the MNE wall time, evolve included).

    .venv/bin/python benchmarks/samplers.py            # full: two-modes, ring, funnel-10, many-well-8
    .venv/bin/python benchmarks/samplers.py --quick    # smoke run (small settings, short budgets)

Metrics against the target's exact oracles: log Z error (NUTS: n/a), mode-mass error (max over
modes of |weighted nearest-mode mass − exact|) for targets with modes, the energy distance to
exact samples (weights used for IS), ESS (Kish for IS; autocorrelation ESS, min over
coordinates, for NUTS and IMH; particle count for SMC) and wall time.  The "exact" row is the
energy distance between two independent exact sample sets of the same size (noise floor).
Writes the markdown table to benchmarks/results/samplers.md (--quick: samplers_quick.md).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import mne_core as mc  # noqa: E402
from mne_core import mode_masses  # noqa: E402

mc.configure(compilation_cache=False)

TARGETS = {
    "two-modes": dict(spec={"kind": "named", "name": "two-modes"}, evolve={}),
    "ring": dict(spec={"kind": "named", "name": "ring"}, evolve={}),
    "funnel-10": dict(spec={"kind": "named", "name": "funnel", "dim": 10},
                      evolve=dict(n_points=256, sketch_rank=128, fit_steps=800, gn_steps=10)),
    "many-well-8": dict(spec={"kind": "named", "name": "many-well", "dim": 8},
                        evolve=dict(n_points=256, sketch_rank=128, fit_steps=800, gn_steps=10)),
}
QUICK = dict(T=2.0, n_points=128, width=32, sketch_rank=64, fit_steps=200, gn_steps=5, fit_points=256)
INIT_SCALE = 3.0  # data-free start of the baselines: N(0, 3² I)


# --------------------------------------------------------------------------- metrics


def energy_distance(x, y, wx=None, max_n=4000, seed=0):
    """Weighted energy distance 2E|X−Y| − E|X−X'| − E|Y−Y'| (≥ 0), on at most max_n points each
    (a weighted set larger than max_n is thinned by systematic resampling)."""
    rng = np.random.default_rng(seed)
    x, y = np.asarray(x, float), np.asarray(y, float)
    if wx is not None and len(x) > max_n:
        w = np.asarray(wx) / np.sum(wx)
        pos = (np.arange(max_n) + rng.uniform()) / max_n
        x, wx = x[np.clip(np.searchsorted(np.cumsum(w), pos), 0, len(x) - 1)], None
    if len(x) > max_n:
        x = x[rng.choice(len(x), max_n, replace=False)]
    if len(y) > max_n:
        y = y[rng.choice(len(y), max_n, replace=False)]
    wx = np.full(len(x), 1 / len(x)) if wx is None else np.asarray(wx) / np.sum(wx)
    wy = np.full(len(y), 1 / len(y))

    def mean_dist(a, wa, b, wb):
        tot = 0.0
        for i in range(0, len(a), 1000):
            dd = np.sqrt(np.maximum(((a[i:i + 1000, None, :] - b[None]) ** 2).sum(-1), 0))
            tot += wa[i:i + 1000] @ dd @ wb
        return tot

    return float(2 * mean_dist(x, wx, y, wy) - mean_dist(x, wx, x, wx) - mean_dist(y, wy, y, wy))


def chain_ess(chains):
    """Autocorrelation ESS (min over coordinates) of chains (C, N, d), via blackjax.diagnostics."""
    from blackjax.diagnostics import effective_sample_size as bj_ess
    c = jnp.asarray(chains)
    if c.shape[0] < 2:  # the diagnostic wants ≥ 2 chains: split one chain in halves
        n = c.shape[1] // 2
        c = jnp.stack([c[0, :n], c[0, n:2 * n]])
    return float(jnp.min(bj_ess(c, chain_axis=0, sample_axis=1)))


def mass_err(target, x, log_w=None):
    if target.modes is None or target.mode_weights is None:
        return None
    lw = np.zeros(len(x)) if log_w is None else log_w
    return float(np.max(np.abs(mode_masses(x, lw, target.modes) - target.mode_weights)))


# --------------------------------------------------------------------------- baselines


#: NUTS draws kept per chain (between NUTS_KEEP and 2 × NUTS_KEEP, evenly thinned).
NUTS_KEEP = 4096


def run_nuts(target, budget, seed, n_chains=64, n_warmup=300, block=50):
    """BlackJAX NUTS, window adaptation per chain (vmapped), then blocks of steps until the budget."""
    import blackjax
    t0 = time.perf_counter()
    logdensity = lambda x: -target.energy(x)
    key = jax.random.PRNGKey(seed)
    k_init, k_warm, k_run = jax.random.split(key, 3)
    x0 = INIT_SCALE * jax.random.normal(k_init, (n_chains, target.dim))

    def warm(k, x):
        (state, params), _ = blackjax.window_adaptation(blackjax.nuts, logdensity).run(k, x, n_warmup)
        return state, params
    states, params = jax.jit(jax.vmap(warm))(jax.random.split(k_warm, n_chains), x0)

    @jax.jit
    def run_block(k, states, params):
        def one(k, state, p):
            kern = blackjax.nuts(logdensity, p["step_size"], p["inverse_mass_matrix"])

            def body(s, kk):
                s, info = kern.step(kk, s)
                return s, (s.position, info.is_divergent)
            return jax.lax.scan(body, state, jax.random.split(k, block))
        return jax.vmap(one)(jax.random.split(k, n_chains), states, params)

    # keep at most ~2 × NUTS_KEEP draws per chain (thinned by a doubling stride): a long budget
    # otherwise stores 10⁵–10⁶ draws per chain, and their FFT-based ESS needed > 20 GB (many-well-8)
    draws, n_div, stride, kept, n_total = [], 0, 1, 0, 0
    i = 0
    while True:
        states, (pos, div) = run_block(jax.random.fold_in(k_run, i), states, params)
        jax.block_until_ready(pos)
        block_draws = np.asarray(pos)[:, ::stride]
        draws.append(block_draws)
        kept += block_draws.shape[1]
        n_total += pos.shape[1]
        if kept > 2 * NUTS_KEEP:
            thinned = np.concatenate(draws, axis=1)[:, ::2]
            draws, kept, stride = [thinned], thinned.shape[1], 2 * stride
        n_div += int(np.sum(div))
        i += 1
        if time.perf_counter() - t0 >= budget:
            break
    chains = np.concatenate(draws, axis=1)  # (C, N, d)
    return dict(chains=chains, wall=time.perf_counter() - t0, divergences=n_div, stride=stride, draws=n_total)


def run_smc(target, n_particles, seed, num_mcmc_steps=5, step_size=0.1, n_leapfrog=5):
    """BlackJAX adaptive tempered SMC from N(0, 3² I) with HMC moves; log Ẑ = Σ log increments."""
    import blackjax
    from blackjax.smc import resampling
    from blackjax.smc.base import extend_params
    t0 = time.perf_counter()
    d = target.dim
    logprior = lambda x: -0.5 * jnp.sum(x * x) / INIT_SCALE**2 - 0.5 * d * math.log(2 * math.pi * INIT_SCALE**2)
    loglik = lambda x: -target.energy(x) - logprior(x)
    params = extend_params(dict(step_size=step_size, inverse_mass_matrix=jnp.ones(d),
                                num_integration_steps=n_leapfrog))
    smc = blackjax.adaptive_tempered_smc(logprior, loglik, blackjax.hmc.build_kernel(), blackjax.hmc.init,
                                         params, resampling.systematic, 0.5, num_mcmc_steps=num_mcmc_steps)
    key = jax.random.PRNGKey(seed)
    k0, k1 = jax.random.split(key)
    state = smc.init(INIT_SCALE * jax.random.normal(k0, (n_particles, d)))

    @jax.jit
    def loop(key, state):
        def cond(c):
            return (c[1].tempering_param < 1) & (c[3] < 500)

        def body(c):
            k, s, lz, n = c
            k, sk = jax.random.split(k)
            s, info = smc.step(sk, s)
            return k, s, lz + info.log_likelihood_increment, n + 1
        return jax.lax.while_loop(cond, body, (key, state, jnp.zeros(()), 0))
    _, state, log_z, n_steps = loop(k1, state)
    jax.block_until_ready(state.particles)
    return dict(x=np.asarray(state.particles), log_z=float(log_z), steps=int(n_steps),
                wall=time.perf_counter() - t0)


def smc_at_budget(target, budget, seed, max_n=2**17):
    """Largest particle count (doubling from 256) whose own run fits in the budget."""
    n, best = 256, None
    while True:
        r = run_smc(target, n, seed)
        if r["wall"] > budget and best is not None:
            return best
        best = dict(r, n=n)
        if r["wall"] > budget or n >= max_n or r["wall"] * 2.2 > budget:
            return best
        n *= 2


# --------------------------------------------------------------------------- main


def bench_target(name, quick, n_samples, seed=0):
    spec = TARGETS[name]
    tgt = mc.target_from_spec(spec["spec"])
    ev = dict(QUICK) if quick else dict(spec["evolve"])
    cfg = mc.EvolveConfig(target=spec["spec"], **ev)
    t0 = time.perf_counter()
    run = mc.evolve(cfg)
    status = run.status.value
    t_evolve = time.perf_counter() - t0
    res = mc.sample(run, n_samples, seed=seed)
    wall = time.perf_counter() - t0
    exact = np.asarray(tgt.sampler(jax.random.PRNGKey(1234), 4000))
    exact2 = np.asarray(tgt.sampler(jax.random.PRNGKey(4321), 4000))
    w = np.exp(res.raw_log_weights - np.max(res.raw_log_weights))
    lz_exact = tgt.log_z
    rows = [dict(method="exact (noise floor)", log_z_err=None, mass_err=mass_err(tgt, exact2),
                 edist=energy_distance(exact2, exact), ess=None, wall=None, note="independent exact draws")]
    rows.append(dict(method="MNE raw flow", log_z_err=None, mass_err=mass_err(tgt, res.raw_samples),
                     edist=energy_distance(res.raw_samples, exact), ess=float(n_samples), wall=wall,
                     note=f"evolve {t_evolve:.0f} s ({status}) + sample {res.wall_seconds:.1f} s"))
    rows.append(dict(method="MNE + IS", log_z_err=res.log_z - lz_exact, mass_err=mass_err(tgt, res.raw_samples,
                                                                                          res.raw_log_weights),
                     edist=energy_distance(res.raw_samples, exact, wx=w), ess=res.ess, wall=wall,
                     note=f"log Ẑ stderr {res.log_z_stderr:.4f}, ESS {100 * res.ess_fraction:.1f} %"))
    rows.append(dict(method="MNE + IMH", log_z_err=None, mass_err=mass_err(tgt, res.imh_samples),
                     edist=energy_distance(res.imh_samples, exact), ess=chain_ess(res.imh_samples[None]),
                     wall=wall, note=f"acceptance {res.imh_acceptance:.3f}"))
    budget = min(wall, 10.0) if quick else wall
    nuts = run_nuts(tgt, budget, seed)
    ch = nuts["chains"]
    flat = ch.reshape(-1, tgt.dim)
    rows.append(dict(method="NUTS (64 chains)", log_z_err=None, mass_err=mass_err(tgt, flat),
                     edist=energy_distance(flat, exact), ess=chain_ess(ch), wall=nuts["wall"],
                     note=f"{ch.shape[1]} draws/chain after 300 warm-up, {nuts['divergences']} divergent"))
    smc = smc_at_budget(tgt, budget, seed, max_n=4096 if quick else 2**17)
    rows.append(dict(method="tempered SMC (HMC)", log_z_err=smc["log_z"] - lz_exact, mass_err=mass_err(tgt, smc["x"]),
                     edist=energy_distance(smc["x"], exact), ess=float(smc["n"]), wall=smc["wall"],
                     note=f"{smc['n']} particles, {smc['steps']} temperatures"))
    return rows, dict(target=name, evolve_s=t_evolve, budget_s=budget, status=status)


def fmt(v, f):
    return "n/a" if v is None else format(v, f)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: small MNE settings, two-modes only, baselines capped at 10 s / 4096 particles")
    p.add_argument("--targets", help="comma-separated subset of " + ",".join(TARGETS))
    p.add_argument("--n-samples", type=int, default=None, help="MNE samples (default 10000; quick 2000)")
    a = p.parse_args()
    names = a.targets.split(",") if a.targets else (["two-modes"] if a.quick else list(TARGETS))
    n = a.n_samples or (2000 if a.quick else 10000)
    out = ["| target | method | log Z err | mode-mass err | energy dist. | ESS | wall s | notes |",
           "|---|---|---|---|---|---|---|---|"]
    meta = []
    for name in names:
        t = time.perf_counter()
        rows, m = bench_target(name, a.quick, n)
        meta.append(m)
        for r in rows:
            out.append(f"| {name} | {r['method']} | {fmt(r['log_z_err'], '+.4f')} | {fmt(r['mass_err'], '.4f')} | "
                       f"{fmt(r['edist'], '.5f')} | {fmt(r['ess'], '.0f')} | {fmt(r['wall'], '.0f')} | {r['note']} |")
        print("\n".join(out[-len(rows):]), f"\n({name}: {time.perf_counter() - t:.0f} s)", flush=True)
    table = "\n".join(out)
    head = (f"# Samplers at equal wall time\n\n`.venv/bin/python benchmarks/samplers.py{' --quick' if a.quick else ''}`"
            f" · {os.cpu_count()} CPUs (shared; load {os.getloadavg()[0]:.1f}) · jax {jax.__version__} · "
            f"MNE samples {n}.\nBudgets (MNE evolve + sample): "
            + ", ".join(f"{m['target']} {m['budget_s']:.0f} s" for m in meta)
            + ".\nBaselines start data-free from N(0, 3² I). Energy distance to 4000 exact samples "
              "(IS: weighted). ESS: Kish (IS), autocorrelation min over coordinates (NUTS, IMH), "
              "particles (SMC).\n\n")
    print(table)
    os.makedirs(os.path.join(ROOT, "benchmarks", "results"), exist_ok=True)
    path = os.path.join(ROOT, "benchmarks", "results", "samplers_quick.md" if a.quick else "samplers.md")
    with open(path, "w") as f:
        f.write(head + table + "\n")
    print(f"wrote {path}")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
