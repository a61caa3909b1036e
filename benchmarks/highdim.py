"""Higher dimensions end to end: evolve + sample funnel (d = 10) and many-well (d = 8, 32).

    .venv/bin/python benchmarks/highdim.py [--quick] [--only funnel-10,many-well-8,many-well-32]

Each case runs in a fresh subprocess so that its peak RSS (ru_maxrss) is its own.  Prints
time (evolve / sample), peak memory, log Z error with its standard error, ESS, mode-mass error
(many-well d = 8) and writes benchmarks/results/highdim.md.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

# moderate settings: a few minutes each on 2 CPU cores
CASES = {
    "funnel-10": dict(target={"kind": "named", "name": "funnel", "dim": 10},
                      evolve=dict(T=4.0, n_points=256, width=64, sketch_rank=128, fit_steps=800, gn_steps=10,
                                  fit_points=1024), n_samples=4000),
    "many-well-8": dict(target={"kind": "named", "name": "many-well", "dim": 8},
                        evolve=dict(T=4.0, n_points=256, width=64, sketch_rank=128, fit_steps=800, gn_steps=10,
                                    fit_points=1024), n_samples=4000),
    "many-well-32": dict(target={"kind": "named", "name": "many-well", "dim": 32},
                         evolve=dict(T=4.0, n_points=256, width=64, sketch_rank=128, fit_steps=800, gn_steps=10,
                                     fit_points=1024), n_samples=2000),
}
QUICK = dict(T=2.0, n_points=128, width=32, sketch_rank=64, fit_steps=200, gn_steps=5, fit_points=256)


def one_case(name: str, quick: bool) -> dict:
    import mne_core as mc
    from mne_core.cli import run_evolution
    c = CASES[name]
    ev = dict(QUICK) if quick else dict(c["evolve"])
    cfg = mc.EvolveConfig(target=c["target"], **ev)
    t0 = time.perf_counter()
    run, status = run_evolution(cfg, quiet=True)
    t_evolve = time.perf_counter() - t0
    n = 1000 if quick else c["n_samples"]
    res = mc.sample(run, n, seed=0)
    s = res.summary()
    out = {"case": name, "dim": run.target.dim, "status": status, "evolve_s": t_evolve,
           "sample_s": res.wall_seconds, "n_samples": n, "log_z": res.log_z, "log_z_exact": res.log_z_exact,
           "log_z_err": s.get("log_z_error"), "log_z_stderr": res.log_z_stderr, "ess_fraction": res.ess_fraction,
           "mode_mass_err": s.get("mode_mass_max_error"), "flow_steps": res.num_steps,
           "max_energy_error": run.summary().get("max_energy_error"), "settings": ev,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default=",".join(CASES))
    p.add_argument("--case", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.case:
        print("RESULT " + json.dumps(one_case(a.case, a.quick)), flush=True)
        return
    rows = []
    for name in a.only.split(","):
        cmd = [sys.executable, __file__, "--case", name] + (["--quick"] if a.quick else [])
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
        if r.returncode != 0 or not line:
            print(f"{name}: FAILED ({time.perf_counter() - t:.0f} s)\n{r.stderr[-2000:]}", flush=True)
            continue
        row = json.loads(line[0][7:])
        rows.append(row)
        print(json.dumps(row), flush=True)
    hdr = ("| case | d | evolve s | sample s | M | peak RSS MB | log Ẑ − log Z | stderr | ESS % | mode-mass err "
           "| max energy err |\n|---|---|---|---|---|---|---|---|---|---|---|")
    fmt = lambda v, f: "n/a" if v is None else format(v, f)
    lines = [hdr] + [f"| {r['case']} | {r['dim']} | {r['evolve_s']:.0f} | {r['sample_s']:.1f} | {r['n_samples']} | "
                     f"{r['peak_rss_mb']:.0f} | {fmt(r['log_z_err'], '+.4f')} | {r['log_z_stderr']:.4f} | "
                     f"{100 * r['ess_fraction']:.1f} | {fmt(r['mode_mass_err'], '.4f')} | "
                     f"{fmt(r['max_energy_error'], '.3f')} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    if not a.quick:
        os.makedirs(os.path.join(ROOT, "benchmarks", "results"), exist_ok=True)
        with open(os.path.join(ROOT, "benchmarks", "results", "highdim.md"), "w") as f:
            f.write(f"# High-dimensional MNE sampling\n\n`.venv/bin/python benchmarks/highdim.py` · "
                    f"{os.cpu_count()} CPUs · load {os.getloadavg()[0]:.1f}\n\n{table}\n")


if __name__ == "__main__":
    main()
