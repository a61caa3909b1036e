"""Blind check: the command line on Gaussian mixtures no test and no default was tuned on.

    .venv/bin/python benchmarks/blind_mixtures.py                 # 9 mixtures, d = 6–32 (≈ 15 min, 2 cores)
    .venv/bin/python benchmarks/blind_mixtures.py --seed 5 --only 0,3
    .venv/bin/python benchmarks/blind_mixtures.py --only 6 --extra=--standardize=off --case-timeout 300

This does what a check outside the repository does: write a mixture as JSON, run

    mne-explorer sample --target FILE.json --n-samples 4000 --out DIR

at default settings, and score only the files it leaves — ``summary.json`` (status, ``log_z``,
``ess_fraction``), ``samples.npy`` and ``log_weights.npy``.  The scoring is independent of the
engine: log Z of a normalized mixture is 0, and the mode masses are the self-normalized weighted
means of the exact component responsibilities p(k | x) (computed here with NumPy / SciPy, not with
``mne_core``), compared with the mixture weights.

The generator differs from ``highdim.py``'s on purpose: 2–5 components, means of norm ``sep`` (4–6)
along random directions, full covariances with eigenvalues drawn from per-case ranges (0.2–1.5),
Dirichlet(3) weights, all from ``--seed``.  Cases 6–8 are such mixtures far from unit scale: blown
up ×10, shrunk ×0.1, and shifted by 50 along every axis (``standardize``, evolution.py).  A case passes when |log Ẑ| ≤ 0.05 and the mode-mass
error ≤ 0.02 (the issue's bar for d = 16 / 32) and the status is not ``failed``; a status of
``warning`` is shown with its reasons.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from scipy.special import logsumexp

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
#: (d, components, norm of the means, eigenvalue range of the covariances, scale, shift): the
#: mixture is drawn at unit scale, then x ↦ scale·x + shift (every coordinate)
CASES = ((12, 3, 4.0, (0.2, 1.5), 1, 0), (24, 3, 4.0, (0.3, 1.0), 1, 0), (8, 4, 5.0, (0.2, 1.0), 1, 0),
         (20, 2, 6.0, (0.5, 1.5), 1, 0), (32, 2, 4.0, (0.3, 0.8), 1, 0), (16, 5, 4.5, (0.3, 1.0), 1, 0),
         (8, 2, 3.0, (0.5, 1.0), 10, 0), (8, 3, 3.0, (0.5, 1.0), 0.1, 0), (6, 2, 3.0, (0.5, 1.0), 1, 50))
CASE_TIMEOUT = 900
LOG_Z_TOL, MASS_TOL = 0.05, 0.02


def mixture(d: int, k: int, sep: float, eig: tuple, scale: float, shift: float, rng) -> dict:
    u = rng.standard_normal((k, d))
    means = shift + scale * sep * u / np.linalg.norm(u, axis=1, keepdims=True)

    def cov():
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        return scale ** 2 * (q * rng.uniform(*eig, d)) @ q.T
    return {"kind": "gaussian_mixture", "weights": rng.dirichlet(3.0 * np.ones(k)).tolist(),
            "means": means.tolist(), "covariances": [cov().tolist() for _ in range(k)]}


def responsibilities(spec: dict, x: np.ndarray) -> np.ndarray:
    """p(k | x) of the mixture at every row of x, (M, K)."""
    logs = []
    for w, m, s in zip(spec["weights"], np.asarray(spec["means"]), np.asarray(spec["covariances"])):
        r = x - m
        logs.append(np.log(w) - 0.5 * np.einsum("ni,ij,nj->n", r, np.linalg.inv(s), r)
                    - 0.5 * np.linalg.slogdet(2 * np.pi * s)[1])
    logs = np.stack(logs, axis=1)
    return np.exp(logs - logsumexp(logs, axis=1, keepdims=True))


def score(spec: dict, out: str) -> dict:
    s = json.load(open(os.path.join(out, "summary.json")))
    x, lw = np.load(os.path.join(out, "samples.npy")), np.load(os.path.join(out, "log_weights.npy"))
    row = {"status": s.get("status"), "log_z": s.get("log_z"), "log_z_stderr": s.get("log_z_stderr"),
           "ess_fraction": s.get("ess_fraction"), "reasons": [r.get("reason") for r in s.get("reasons", [])],
           "run_status": s.get("run_status"), "mass_error": None, "particles": (s.get("smc") or {}).get("particles")}
    ok = np.isfinite(lw)
    if ok.any():
        w = np.where(ok, np.exp(lw - lw[ok].max()), 0.0)
        masses = (w / w.sum()) @ responsibilities(spec, x)
        row["mass_error"] = float(np.max(np.abs(masses - np.asarray(spec["weights"]))))
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0, help="draws every mixture (default 0)")
    p.add_argument("--only", default=None, help="comma-separated case indices (0–8)")
    p.add_argument("--n-samples", type=int, default=4000)
    p.add_argument("--case-timeout", type=float, default=CASE_TIMEOUT, help="seconds per case (default 900)")
    p.add_argument("--extra", default="", help="more options for `mne-explorer sample`, e.g. --extra=--standardize=off")
    p.add_argument("--out", default=os.path.join(HERE, "results", "blind_mixtures.md"))
    a = p.parse_args()
    rng = np.random.default_rng(1_000_003 + a.seed)
    specs = [mixture(*case, rng) for case in CASES]
    keep = range(len(CASES)) if a.only is None else [int(i) for i in a.only.split(",")]
    exe = os.path.join(os.path.dirname(sys.executable), "mne-explorer")
    cmd0 = [exe] if os.path.exists(exe) else [sys.executable, "-m", "app.cli"]
    lines = [f"## {time.strftime('%Y-%m-%d %H:%M')}: `benchmarks/blind_mixtures.py --seed {a.seed}"
             f"{' --only ' + a.only if a.only else ''}{' --extra=' + a.extra if a.extra else ''}` · {os.cpu_count()} CPUs · "
             f"{a.n_samples} samples, default settings", "",
             "| case | d | K | sep | eigenvalues | ×scale + shift | status | log Ẑ − log Z | ± | ESS fraction | "
             "mode-mass err | SMC particles | wall s | pass | reasons |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    passed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in keep:
            d, k, sep, eig, scale, shift = CASES[i]
            head = f"| {i} | {d} | {k} | {sep:g} | {eig[0]:g}–{eig[1]:g} | ×{scale:g} + {shift:g} |"
            f, out = os.path.join(tmp, f"m{i}.json"), os.path.join(tmp, f"out{i}")
            json.dump(specs[i], open(f, "w"))
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd0 + ["sample", "--target", f, "--n-samples", str(a.n_samples), "--out", out,
                                              "--quiet"] + a.extra.split(), capture_output=True, text=True, cwd=ROOT,
                                      timeout=a.case_timeout)
                rc, err = proc.returncode, proc.stderr.strip().splitlines()[-1:]
            except subprocess.TimeoutExpired:
                rc, err = "timeout", [f"stopped after {a.case_timeout:g} s"]
            wall = time.perf_counter() - t0
            if not os.path.exists(os.path.join(out, "summary.json")):
                line = f"{head} no output (exit {rc}) | – | – | – | – | – | {wall:.0f} | NO | {' '.join(err)} |"
            else:
                r = score(specs[i], out)
                good = (r["status"] != "failed" and r["log_z"] is not None and abs(r["log_z"]) <= LOG_Z_TOL
                        and r["mass_error"] is not None and r["mass_error"] <= MASS_TOL)
                passed += good
                fmt = lambda v, f: "–" if v is None else format(v, f)      # noqa: E731
                line = (f"{head} {r['status']} (exit {rc}) | "
                        f"{fmt(r['log_z'], '+.4f')} | {fmt(r['log_z_stderr'], '.4f')} | {fmt(r['ess_fraction'], '.3f')} | "
                        f"{fmt(r['mass_error'], '.4f')} | {fmt(r['particles'], 'd')} | {wall:.0f} | {'yes' if good else 'NO'} | "
                        f"{', '.join(r['reasons']) or '–'} |")
            lines.append(line)
            print(line, flush=True)
    lines += ["", f"{passed} of {len(keep)} within |log Ẑ| ≤ {LOG_Z_TOL} and mode-mass error ≤ {MASS_TOL}.", ""]
    print(lines[-2])
    old = open(a.out).read() if os.path.exists(a.out) else "# Blind mixtures\n\n"
    title, _, rest = old.partition("\n\n")
    with open(a.out, "w") as fh:
        fh.write(title + "\n\n" + "\n".join(lines) + "\n" + rest)


if __name__ == "__main__":
    main()
