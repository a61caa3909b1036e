"""Executes every notebook in notebooks/ headless (nbclient) at small settings.

01 and 02 read ``MNE_NB_SMALL=1`` from the environment (inherited by the kernel) and then
use small settings (N = 128, width 32, T = 2).  Each prints one machine-readable line
(``QUICKSTART_RESULT {json}`` / ``RANK_STUDY_RESULT {json}``) in its last cell, which the
tests parse to check what the notebook demonstrates, not only that it ran.
"""
import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.notebook, pytest.mark.xdist_group("notebook")]

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def _execute(name: str, monkeypatch) -> str:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MNE_NB_SMALL", "1")
    # Small dense factorizations: a multi-threaded OpenBLAS only oversubscribes the CPU.
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    path = NB_DIR / name
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        f"{name} is committed with outputs; clear them"
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NB_DIR)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, "\n".join(f"{o['ename']}: {o['evalue']}" for o in errors)
    return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")


def _result(text: str, tag: str) -> dict:
    lines = [ln for ln in text.splitlines() if ln.startswith(tag + " ")]
    assert len(lines) == 1, f"expected one {tag} line in the notebook output:\n{text[-3000:]}"
    return json.loads(lines[0][len(tag) + 1:])


def test_quickstart_notebook(monkeypatch):
    text = _execute("01_quickstart.ipynb", monkeypatch)
    r = _result(text, "QUICKSTART_RESULT")
    assert r["status"] in ("ok", "warning") and r["T_reached"] == pytest.approx(2.0), r
    assert r["accepted_steps"] > 5, r
    # the evolution tracks the exact OU solution: the error at T is small and below the initial-fit error
    assert r["energy_error_T"] < 0.1 and r["energy_error_T"] < r["energy_error_t0"], r
    # save → load_run reproduces the interpolated energy exactly
    assert r["reload_max_abs_diff"] < 1e-10, r
    assert "rejected:" in text  # the unsafe expression was refused


def test_sketch_rank_notebook(monkeypatch):
    text = _execute("02_sketch_rank.ipynb", monkeypatch)
    r = _result(text, "RANK_STUDY_RESULT")
    assert r["small"] is True
    # rank 4 is the lesson's bad setting: its evolution may blow up, and then it must say so
    # (``failed``, energy diverged) — every other run ends ok or warning
    assert r["statuses"]["sketch n=4"] in ("ok", "warning", "failed"), r["statuses"]
    assert all(s in ("ok", "warning") for k, s in r["statuses"].items() if k != "sketch n=4"), r["statuses"]
    ranks = [str(n) for n in r["ranks"]]
    lo, hi = ranks[0], ranks[-1]
    assert lo == "4"
    # systematic improvability: the largest rank beats rank 4 in error (at T and time-averaged) and residual
    assert r["err_T"][hi] < 0.5 * r["err_T"][lo], r["err_T"]
    assert r["err_mean"][hi] < 0.5 * r["err_mean"][lo], r["err_mean"]
    assert r["residual_mean"][hi] < r["residual_mean"][lo], r["residual_mean"]
    assert 0 < r["numerical_rank"] <= r["n_points"]
    assert set(r["solvers"]) == {f"sketch n={hi}", "full", f"subspace n={hi}"}
    assert all(s["status"] in ("ok", "warning") for s in r["solvers"].values())
    # a tighter tolerance never takes fewer steps
    steps = [r["rtol"][k]["accepted"] for k in ("1e-02", "1e-04", "1e-06")]
    assert steps[0] <= steps[1] <= steps[2], r["rtol"]


def test_sampling_notebook(monkeypatch):
    text = _execute("03_sampling.ipynb", monkeypatch)
    assert "log_z_exact" in text and "conditional mode masses" in text, text[-3000:]


def test_dashboard_notebook(monkeypatch):
    text = _execute("04_dashboard.ipynb", monkeypatch)
    # T = 0.5 ends "warning" (the model energy at T is not yet |x|²/2), never a failure
    assert ("done | t = 0.50" in text or "warning | t = 0.50" in text), text[-3000:]
