"""Hard targets end to end (issue "answers you can trust"): MNE + IS, MNE + SMC along the learned
path, BlackJAX adaptive tempered SMC (HMC moves) and NUTS at EQUAL wall time.

    .venv/bin/python benchmarks/highdim.py                      # every case (hours on 2 cores)
    .venv/bin/python benchmarks/highdim.py --only mix2-d16,many-well-32
    .venv/bin/python benchmarks/highdim.py --only mix2-d8 --amortize
    .venv/bin/python benchmarks/highdim.py --no-peers           # MNE only

Cases: Gaussian mixtures with random full covariances (eigenvalues 0.3–0.8) in d = 8, 16, 32, 64
with 2 components (weights 0.3/0.7, means ±2.5 e_0) or 8 components (Dirichlet weights, means
3.5·u_k with random unit u_k), funnel-10 (σ = 3), many-well d = 8/16/32 (FAB form, exact log Z by
1-D quadrature per double well).  MNE runs at DEFAULT settings (sizes follow d) and data-free;
the peers get the MNE wall time (evolve + both samplers) as their budget.

Columns: status (MNE's own verdict), log Z error, mode-mass error (mixtures: max over components
of |weighted nearest-mean mass − w_k|; many-well: max over double wells of |P(right well) −
exact|), ESS, wall, peak RSS of the case's process; funnel: weighted std of x0 (exact 3).
Each case runs in a fresh subprocess (stopped after ``--case-timeout`` seconds); each run adds a
dated section at the top of benchmarks/results/highdim.md (rewritten after every case, so a
stopped run keeps its rows), earlier sections are kept, and writes its rows to highdim.json.
``--amortize``: after one evolution, the time for 10 000 more samples and for conditional
samples at 10 values of y* (one partial-diffusion evolution), against rerunning tempered SMC.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

N_SAMPLES = 4000


def mixture_spec(d: int, k: int, seed: int = 0) -> dict:
    import numpy as np
    rng = np.random.default_rng(1000 * k + d + seed)

    def cov():
        Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        return (Q * rng.uniform(0.3, 0.8, d)) @ Q.T
    if k == 2:
        means = np.zeros((2, d))
        means[:, 0] = (-2.5, 2.5)
        weights = [0.3, 0.7]
    else:
        u = rng.standard_normal((k, d))
        means = 3.5 * u / np.linalg.norm(u, axis=1, keepdims=True)
        weights = list(rng.dirichlet(2.0 * np.ones(k)))
    return {"kind": "gaussian_mixture", "weights": [float(w) for w in weights], "means": means.tolist(),
            "covariances": [cov().tolist() for _ in range(k)]}


def cases() -> dict:
    out = {}
    for k in (2, 8):
        for d in (8, 16, 32, 64):
            out[f"mix{k}-d{d}"] = {"target": mixture_spec(d, k)}
    out["funnel-10"] = {"target": {"kind": "named", "name": "funnel", "dim": 10}}
    for d in (8, 16, 32):
        out[f"many-well-{d}"] = {"target": {"kind": "named", "name": "many-well", "dim": d}}
    return out


def mass_error(target, x, log_w=None):
    """Mixtures / many-well ≤ 8: nearest-mode masses; many-well: per-double-well right mass."""
    import numpy as np
    import mne_core as mc
    lw = np.zeros(len(x)) if log_w is None else np.asarray(log_w)
    w = np.exp(lw - np.max(lw[np.isfinite(lw)]))
    w[~np.isfinite(lw)] = 0
    w /= w.sum()
    if target.name == "many-well":
        crit = np.sort(np.roots([4.0, 0.0, -12.0, -0.5]).real)
        exact = mc.named_target("many-well", 2)
        xs = np.asarray(exact.sampler(__import__("jax").random.PRNGKey(7), 400_000))
        p_right = float(np.mean(xs[:, 0] > crit[1]))  # Monte Carlo of the exact 1-D marginal (±0.001)
        right = (np.asarray(x)[:, 0::2] > crit[1]).astype(float)
        return float(np.max(np.abs(w @ right - p_right)))
    if target.modes is None or target.mode_weights is None:
        return None
    return float(np.max(np.abs(mc.mode_masses(x, lw, target.modes) - target.mode_weights)))


def _memory_guard(fraction: float = 0.6):
    """End this case's process with a message if its RSS passes ``fraction`` of the machine's
    memory (a peer that grows without bound must not take the machine down)."""
    import threading

    import psutil

    limit = fraction * psutil.virtual_memory().total
    proc = psutil.Process()

    def watch():
        while True:
            rss = proc.memory_info().rss
            if rss > limit:
                print(f"case stopped: RSS {rss / 1e9:.1f} GB over {limit / 1e9:.1f} GB", file=sys.stderr, flush=True)
                os._exit(3)
            time.sleep(0.2)
    threading.Thread(target=watch, daemon=True).start()


def one_case(name: str, peers: bool, n: int) -> dict:
    import numpy as np
    _memory_guard()
    import mne_core as mc
    mc.configure(compilation_cache=False)
    spec = cases()[name]["target"]
    tgt = mc.target_from_spec(spec)
    out = {"case": name, "dim": tgt.dim, "rows": []}
    t0 = time.perf_counter()
    run = mc.evolve(mc.EvolveConfig(target=spec))
    t_evolve = time.perf_counter() - t0
    rs = run.summary()
    out.update(evolve_s=t_evolve, run_status=rs["status"], run_message=rs["status_message"],
               max_energy_error=rs["max_energy_error"], fit_heldout=rs["fit"].get("heldout_rms"),
               n_points=run.config.n_points, width=run.config.width)
    mne_wall = t_evolve
    for method in ("is", "smc"):
        res = mc.sample(run, n, seed=0, method=method, imh=False)
        s = res.summary()
        mne_wall += res.wall_seconds
        row = {"method": f"MNE + {method.upper()}", "status": s["status"], "message": s["status_message"],
               "log_z_err": (res.log_z - tgt.log_z) if math.isfinite(res.log_z) else None,
               "log_z_reported": s["log_z"] is not None, "log_z_stderr": res.log_z_stderr,
               "mass_err": mass_error(tgt, res.raw_samples, res.raw_log_weights), "ess": res.ess,
               "wall": t_evolve + res.wall_seconds, "sample_s": res.wall_seconds}
        if tgt.name == "funnel":
            w = np.exp(res.raw_log_weights - res.raw_log_weights.max())
            w /= w.sum()
            mu = w @ res.raw_samples[:, 0]
            row["x0_std"] = float(np.sqrt(w @ (res.raw_samples[:, 0] - mu) ** 2))
        out["rows"].append(row)
    out["budget_s"] = mne_wall
    if peers:
        from samplers import chain_ess, run_nuts, smc_at_budget
        sm = smc_at_budget(tgt, mne_wall, 0)
        row = {"method": "tempered SMC (HMC)", "status": "n/a", "log_z_err": sm["log_z"] - tgt.log_z,
               "mass_err": mass_error(tgt, sm["x"]), "ess": float(sm["n"]), "wall": sm["wall"],
               "note": f"{sm['n']} particles, {sm['steps']} temperatures"}
        if tgt.name == "funnel":
            row["x0_std"] = float(np.std(sm["x"][:, 0]))
        out["rows"].append(row)
        nu = run_nuts(tgt, mne_wall, 0)
        flat = nu["chains"].reshape(-1, tgt.dim)
        row = {"method": "NUTS (64 chains)", "status": "n/a", "log_z_err": None, "mass_err": mass_error(tgt, flat),
               "ess": chain_ess(nu["chains"]), "wall": nu["wall"],
               "note": f"{nu['divergences']} divergent of {nu['draws']} draws per chain; ESS of every {nu['stride']}th"}
        if tgt.name == "funnel":
            row["x0_std"] = float(np.std(flat[:, 0]))
        out["rows"].append(row)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def amortize(name: str) -> dict:
    """Time for more samples and for 10 conditionals after one evolution vs rerunning SMC."""
    import numpy as np
    import mne_core as mc
    from samplers import run_smc
    mc.configure(compilation_cache=False)
    spec = cases()[name]["target"]
    tgt = mc.target_from_spec(spec)
    run = mc.evolve(mc.EvolveConfig(target=spec))
    t = time.perf_counter()
    mc.sample(run, 10_000, seed=1, method="smc", imh=False)
    more = time.perf_counter() - t
    crun = mc.evolve(mc.EvolveConfig(target=spec, diffuse=tuple(range(1, tgt.dim))))
    ys = np.linspace(-3, 3, 10)
    t = time.perf_counter()
    for y in ys:
        mc.sample(crun, 2000, seed=0, condition={0: float(y)}, method="smc", imh=False)
    cond_s = time.perf_counter() - t
    t = time.perf_counter()
    run_smc(tgt, 10_000, 0)
    smc_once = time.perf_counter() - t
    return {"case": name, "more_10000_s": more, "conditionals_10_s": cond_s, "tempered_smc_10000_s": smc_once,
            "tempered_smc_10_reruns_s": 10 * smc_once}


def fmt(v, f):
    return "–" if v is None else format(v, f)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated cases (default all): " + ",".join(cases()))
    p.add_argument("--no-peers", action="store_true", help="MNE rows only")
    p.add_argument("--n-samples", type=int, default=N_SAMPLES)
    p.add_argument("--amortize", action="store_true", help="also the amortization table (first case)")
    p.add_argument("--case-timeout", type=float, default=1800.0,
                   help="seconds before a case is stopped and reported as timed out (default 1800)")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--amortize-case", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.case:
        print("RESULT " + json.dumps(one_case(a.case, not a.no_peers, a.n_samples)), flush=True)
        return
    if a.amortize_case:
        print("RESULT " + json.dumps(amortize(a.amortize_case)), flush=True)
        return
    names = a.only.split(",") if a.only else list(cases())
    results = []
    lines = ["| case | method | status | log Z err | mode-mass err | ESS | wall s | notes |",
             "|---|---|---|---|---|---|---|---|"]
    import jax
    head = (f"## {time.strftime('%Y-%m-%d %H:%M')}: `.venv/bin/python benchmarks/highdim.py"
            f"{' --only ' + a.only if a.only else ''}`\n\n{os.cpu_count()} CPUs · jax {jax.__version__} · "
            f"{a.n_samples} MNE samples; peers at the MNE wall time (evolve + IS + SMC).\n\n")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", "highdim.md")
    # the newest run goes on top; earlier sections (other cases, other code) are kept below it
    old = open(path).read() if os.path.exists(path) else "# Hard targets\n"
    title, _, rest = old.partition("\n")

    def save(cases_done, amort=None, done=False):
        """Write this run's section so far (after every case: a stopped run keeps its rows)."""
        status = "" if done else f"(in progress: {cases_done} of {len(names)} cases so far)\n\n"
        section = head + status + "\n".join(lines) + "\n" + ("\n" + json.dumps(amort) + "\n" if amort else "")
        with open(path, "w") as f:
            f.write(title + "\n\n" + section + ("\n" + rest.lstrip("\n") if rest.strip() else ""))
        with open(os.path.join(HERE, "results", "highdim.json"), "w") as f:
            json.dump({"results": results, "amortize": amort, "complete": done}, f, indent=1)
    for i, name in enumerate(names, 1):
        cmd = [sys.executable, __file__, "--case", name, "--n-samples", str(a.n_samples)] + (
            ["--no-peers"] if a.no_peers else [])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.case_timeout)
        except subprocess.TimeoutExpired:
            print(f"{name}: stopped after {a.case_timeout:.0f} s", flush=True)
            lines.append(f"| {name} | MNE | timed out | – | – | – | {a.case_timeout:.0f} | stopped by --case-timeout |")
            save(i)
            continue
        res = next((json.loads(ln[7:]) for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if res is None:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", flush=True)
            lines.append(f"| {name} | MNE | crashed | – | – | – | – | {proc.stderr.strip().splitlines()[-1][:90] if proc.stderr.strip() else ''} |")
            save(i)
            continue
        results.append(res)
        for r in res["rows"]:
            note = r.get("note") or (r.get("message") or "")[:90]
            if "x0_std" in r:
                note = f"std x0 {r['x0_std']:.2f} (exact 3); " + note
            if r["method"].startswith("MNE"):
                note = (f"evolve {res['evolve_s']:.0f} s ({res['run_status']}), N={res['n_points']}, "
                        f"width={res['width']}, RSS {res['peak_rss_mb']:.0f} MB; ") + note
            lz = fmt(r["log_z_err"], "+.3f") + ("" if r.get("log_z_reported", True) else " (withheld)")
            lines.append(f"| {name} | {r['method']} | {r['status']} | {lz} | {fmt(r['mass_err'], '.3f')} | "
                         f"{fmt(r['ess'], '.0f')} | {fmt(r['wall'], '.0f')} | {note} |")
        print("\n".join(lines[-len(res["rows"]):]), flush=True)
        save(i)
    amort = None
    if a.amortize:
        proc = subprocess.run([sys.executable, __file__, "--amortize-case", names[0]], capture_output=True, text=True)
        amort = next((json.loads(ln[7:]) for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        print(json.dumps(amort), flush=True)
    save(len(names), amort, done=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
