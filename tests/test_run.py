"""Tests of mne_core.run: output checks, atomic saves, damaged run directories, and of
mne_core.energy_checks: non-normalizable or pathological energies refused, normal ones accepted."""
from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest

import mne_core as mc
from mne_core.energy_checks import EnergyCheckError, check_energy, energy_problems
from mne_core.run import RunFileError, check_output_dir


def _snapshot(d):
    """{relative path: bytes} of every file under d."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- output checks


def test_check_output_dir_refusals(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        check_output_dir(f)
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        check_output_dir(f / "sub" / "run")
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--force"):
        check_output_dir(full)
    with pytest.raises(FileExistsError, match="does not hold a previous run"):
        check_output_dir(full, overwrite=True)
    # /proc and /sys refuse new files even to root (os.access alone says yes there)
    for where in ("/proc", "/sys"):
        if os.path.isdir(where):
            with pytest.raises(PermissionError, match="not writable"):
                check_output_dir(f"{where}/mne-test-out/run")
    # fine: a new path (parents created later), an empty directory
    check_output_dir(tmp_path / "a" / "b" / "run")
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_output_dir_unwritable_parent(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            check_output_dir(ro / "run")
    finally:
        ro.chmod(0o700)


def test_save_refuses_overwrite_and_force_replaces_only_runs(gauss_run, tmp_path):
    out = gauss_run.save(tmp_path / "run")
    before = _snapshot(out)
    with pytest.raises(FileExistsError, match="--force"):
        gauss_run.save(out)
    assert _snapshot(out) == before
    # --force: a previous run is replaced (the summary is rewritten, the run still loads)
    (out / "stale.txt").write_text("left from an older run")
    gauss_run.save(out, overwrite=True)
    assert not (out / "stale.txt").exists()
    assert mc.load_run(out).T == gauss_run.T
    # ... but never an unrelated directory
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="does not hold a previous run"):
        gauss_run.save(other, overwrite=True)
    assert (other / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize("existing", [False, True])
def test_save_is_atomic(gauss_run, tmp_path, monkeypatch, existing):
    """An exception in the middle of Run.save leaves neither half a run nor temporary
    directories, and a previous run being replaced is untouched."""
    out = tmp_path / "run"
    if existing:
        gauss_run.save(out)
        before = _snapshot(out)

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(OSError, match="disk full"):
        gauss_run.save(out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["run"] if existing else [])
    if existing:
        assert _snapshot(out) == before
        mc.load_run(out)


# --------------------------------------------------------------------------- damaged directories


def _damage(d, how):
    if how == "truncated trajectory":
        p = d / "trajectory.npz"
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        return "trajectory.npz"
    if how == "invalid config JSON":
        (d / "config.json").write_text('{"T": 2.0, ')
        return "config.json"
    if how == "width as a string":
        c = json.loads((d / "config.json").read_text())
        c["width"] = str(c["width"])
        (d / "config.json").write_text(json.dumps(c))
        return "config.json"
    if how == "summary of another target":
        s = json.loads((d / "summary.json").read_text())
        s["target"] = "two-modes"
        (d / "summary.json").write_text(json.dumps(s))
        return "summary.json"
    if how == "mismatched shapes":
        with np.load(d / "trajectory.npz") as z:
            arrays = dict(z)
        arrays["points"] = arrays["points"][:, :-1]
        np.savez_compressed(d / "trajectory.npz", **arrays)
        return "trajectory.npz"
    if how == "config of another network":
        c = json.loads((d / "config.json").read_text())
        c["width"] = c["width"] * 2
        (d / "config.json").write_text(json.dumps(c))
        return "trajectory.npz"
    if how == "config of another run":
        c = json.loads((d / "config.json").read_text())
        c["T"] = c["T"] + 1.0  # valid on its own, but not the config this trajectory came from
        (d / "config.json").write_text(json.dumps(c))
        return "config.json"
    if how == "invalid summary JSON":
        (d / "summary.json").write_text("{")
        return "summary.json"
    if how == "unknown status":
        s = json.loads((d / "summary.json").read_text())
        s["status"] = "splendid"
        (d / "summary.json").write_text(json.dumps(s))
        return "summary.json"
    if how == "diagnostics not numbers":
        g = json.loads((d / "diagnostics.json").read_text())
        g["residual"] = ["a"] * len(g["residual"])
        (d / "diagnostics.json").write_text(json.dumps(g))
        return "diagnostics.json"
    raise AssertionError(how)


DAMAGES = ["truncated trajectory", "invalid config JSON", "width as a string", "summary of another target",
           "mismatched shapes", "config of another network", "config of another run", "invalid summary JSON",
           "unknown status",
           "diagnostics not numbers"]


@pytest.mark.parametrize("how", DAMAGES)
def test_load_run_names_the_damaged_file(gauss_run_dir, tmp_path, how):
    d = tmp_path / "run"
    shutil.copytree(gauss_run_dir, d)
    name = _damage(d, how)
    with pytest.raises(RunFileError) as e:
        mc.load_run(d)
    msg = str(e.value)
    assert str(d / name) in msg and "\n" not in msg, msg


def test_load_run_missing_files(gauss_run_dir, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(gauss_run_dir, d)
    (d / "trajectory.npz").unlink()
    with pytest.raises(FileNotFoundError, match="trajectory.npz is missing"):
        mc.load_run(d)


@pytest.mark.parametrize("status", [mc.Status.INTERRUPTED, mc.Status.FAILED, mc.Status.WARNING])
def test_status_round_trip(gauss_run, tmp_path, status):
    """A run's status and reasons survive save/load (a failed run never loads back as ok)."""
    run = mc.load_run(gauss_run.save(tmp_path / "a"))
    reason = {mc.Status.INTERRUPTED: mc.Reason.INTERRUPTED, mc.Status.FAILED: mc.Reason.MAX_STEPS,
              mc.Status.WARNING: mc.Reason.T_TOO_SMALL}[status]
    run.set_verdict(mc.Verdict(status, ((reason, "detail"),)))
    run.warnings = ["a note"]
    back = mc.load_run(run.save(tmp_path / "b"))
    assert back.status == status and back.verdict.reasons == ((reason, "detail"),)
    assert back.warnings == ["a note"]


# --------------------------------------------------------------------------- energy checks


BAD_ENERGIES = [
    ("x0", 1, "decreases without bound"),
    ("-x0**2", 1, "decreases without bound"),
    ("-x0**2 - x1**2", 2, "decreases without bound"),
    ("0*x0", 1, "does not grow"),
    ("x0**2", 2, "does not grow along +x1"),
    ("exp(exp(exp(x0)))", 1, "explodes"),
    ("log(x0)", 1, "NaN"),
]


@pytest.mark.parametrize("expr,dim,msg", BAD_ENERGIES)
def test_pathological_energies_are_refused(expr, dim, msg):
    t = mc.target_from_expression(expr, dim)
    problems = energy_problems(t)
    assert any(msg in p for p in problems), problems
    with pytest.raises(EnergyCheckError, match="cannot be sampled"):
        check_energy(t)


GOOD = ([(n, None) for n in mc.NAMED_TARGETS]
        + [("funnel", d) for d in (8, 16, 32)] + [("many-well", d) for d in (8, 16, 32)]
        + [("gaussian", d) for d in (8, 32)])


@pytest.mark.parametrize("name,dim", GOOD)
def test_named_targets_pass_the_energy_check(name, dim):
    t = mc.named_target(name, dim)
    t0 = time.perf_counter()
    assert energy_problems(t) == []
    assert time.perf_counter() - t0 < 5.0  # cheap (≈ 0.1–0.5 s incl. compilation)


@pytest.mark.parametrize("expr,dim", [
    ("x0**2/8 + (x1 - x0**2/4 + 1)**2/2", 2),   # banana
    ("(x0**2 - 1)**2 + 0.5*x1**2", 2),          # double well
    ("log(1 + x0**2)", 1),                      # Cauchy: heavy-tailed but normalizable
    ("x0**2/(2*1e4) + x1**2/2", 2),             # very broad (σ = 100)
    ("x0**4 - 6*x0**2 + 0.5*x1**2", 2),
])
def test_normal_expressions_pass_the_energy_check(expr, dim):
    assert energy_problems(mc.target_from_expression(expr, dim)) == []


def test_mixtures_pass_the_energy_check():
    t = mc.gaussian_mixture([0.3, 0.7], [[-2.0, 0.0], [3.0, 1.0]],
                            [[[1.0, 0.0], [0.0, 1.0]], [[0.2, 0.0], [0.0, 3.0]]])
    assert energy_problems(t) == []
    far = mc.gaussian_mixture([1.0, 1.0], [[-50.0, 0.0, 0.0], [50.0, 10.0, 0.0]],
                              [np.eye(3).tolist(), (0.01 * np.eye(3)).tolist()])
    assert energy_problems(far) == []


def test_evolution_refuses_a_non_normalizable_energy_before_the_fit():
    cfg = mc.EvolveConfig(target={"kind": "energy", "expression": "x0", "dim": 1})
    evo = mc.Evolution(cfg)
    t0 = time.perf_counter()
    with pytest.raises(mc.EvolutionError, match="not normalizable"):
        evo.prepare()
    assert time.perf_counter() - t0 < 10.0
    assert evo.run is None


def test_run_theta_is_the_hermite_interpolant_of_the_recorded_steps(gauss_run):
    """Run.theta (host, two rows) and hermite_theta (jittable, whole arrays) are one formula:
    they agree everywhere, including outside [t_0, T] (clipped) and at the recorded times."""
    from mne_core.run import hermite_theta

    times = gauss_run.times
    assert len(times) >= 3
    ts = np.concatenate([[times[0] - 1.0, times[-1] + 1.0], times, np.linspace(times[0], times[-1], 41)])
    for t in ts:
        ref = np.asarray(hermite_theta(times, gauss_run.thetas, gauss_run.theta_dots, float(t)))
        np.testing.assert_allclose(gauss_run.theta(t), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(gauss_run.theta(times[1]), gauss_run.thetas[1])
