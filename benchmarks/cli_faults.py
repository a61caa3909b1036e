"""How fast the command line refuses bad input and stops on a signal (issue 10, parts 1–3).

    .venv/bin/python benchmarks/cli_faults.py [--skip-signal]

Each row is one fresh ``python -m app.cli`` process (imports and JAX start-up included), so the
numbers are what a user waits for:

* refusals before any work: an existing file as ``--out``, a non-empty directory, an unwritable
  path, a non-normalizable energy (``x0`` in 1-D), ``--n-samples 100000000``;
* SIGINT and SIGTERM sent after the third accepted step of a small evolution: seconds from the
  signal to the exit (code 130, the run saved as ``interrupted``);
* the energy check of every named target in-process (compilation included).

Prints a markdown table; nothing is written outside a temporary directory.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "app.cli"]
LONG_EVOLVE = ["--target", "gaussian", "--n-points", "64", "--width", "16", "--fit-steps", "100", "--gn-steps",
               "5", "--fit-points", "256", "--sketch-rank", "32", "--T", "100", "--rtol", "1e-10",
               "--atol", "1e-12", "--max-steps", "1000000"]


def timed(args) -> tuple[float, int, str]:
    t = time.perf_counter()
    p = subprocess.run(CLI + args, capture_output=True, text=True, cwd=ROOT, timeout=600)
    return time.perf_counter() - t, p.returncode, p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""


def signal_latency(tmp: Path, sig) -> tuple[float, int]:
    out = tmp / f"run-{sig.name}"
    p = subprocess.Popen(CLI + ["evolve", *LONG_EVOLVE, "--out", str(out)], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    buf = bytearray()

    def pump():
        while chunk := os.read(p.stderr.fileno(), 65536):
            buf.extend(chunk)

    threading.Thread(target=pump, daemon=True).start()
    while p.poll() is None:
        steps = [int(m) for m in re.findall(rb"steps (\d+)", bytes(buf))]
        if steps and max(steps) >= 3:
            break
        time.sleep(0.05)
    t = time.perf_counter()
    p.send_signal(sig)
    p.wait(timeout=120)
    return time.perf_counter() - t, p.returncode


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-signal", action="store_true", help="skip the SIGINT/SIGTERM rows (≈ 1 min)")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "file").write_text("x")
        (tmp / "full").mkdir()
        (tmp / "full" / "notes.txt").write_text("mine")
        cases = [
            ("evolve --out EXISTING_FILE", ["evolve", "--target", "two-modes", "--out", str(tmp / "file")]),
            ("evolve --out NON_EMPTY_DIR", ["evolve", "--target", "two-modes", "--out", str(tmp / "full")]),
            ("evolve --out /proc/x/run", ["evolve", "--target", "two-modes", "--out", "/proc/x/run"]),
            ("evolve --energy x0 --dim 1", ["evolve", "--energy", "x0", "--dim", "1", "--out", str(tmp / "o")]),
            ("sample --n-samples 1e8", ["sample", "--target", "gaussian", "--n-samples", "100000000",
                                        "--out", str(tmp / "o")]),
        ]
        for name, args in cases:
            s, rc, line = timed(args)
            rows.append((name, f"{s:.2f}", rc, line[:90]))
        if not a.skip_signal:
            for sig in (signal.SIGINT, signal.SIGTERM):
                s, rc = signal_latency(tmp, sig)
                rows.append((f"{sig.name} after step 3 (signal → exit)", f"{s:.2f}", rc, "run saved: interrupted"))
    sys.path.insert(0, str(ROOT))
    import mne_core as mc
    from mne_core.energy_checks import energy_problems
    mc.configure(compilation_cache=False)
    for n, dim in [(n, None) for n in mc.NAMED_TARGETS] + [("funnel", 32), ("many-well", 32)]:
        t = mc.named_target(n, dim)
        s = time.perf_counter()
        probs = energy_problems(t)
        rows.append((f"energy check {n} (d = {t.dim})", f"{time.perf_counter() - s:.2f}", "-",
                     "ok" if not probs else "; ".join(probs)[:90]))
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores\n")
    print("| case | seconds | exit | last stderr line |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(v) for v in r) + " |")


if __name__ == "__main__":
    main()
