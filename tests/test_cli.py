"""Tests of the command line (app.cli): options generated from the config, exit codes and
statuses, output checks, sampling from runs and from targets."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import mne_core as mc
from app.cli import main as cli_main
from conftest import LOG2PI, SMALL
from test_run import _damage, _snapshot


# --------------------------------------------------------------------------- CLI


def test_cli_sample_from_run(gauss_run_dir, tmp_path, capsys):
    out = tmp_path / "s"
    rc = cli_main(["sample", "--run", str(gauss_run_dir), "--n-samples", "1000", "--seed", "3",
                   "--resample", "--out", str(out)])
    assert rc == 0
    x = np.load(out / "samples.npy")
    lw = np.load(out / "log_weights.npy")
    assert x.shape == (1000, 2) and lw.shape == (1000,)
    s = json.loads((out / "summary.json").read_text())
    for k in ("log_z", "log_z_stderr", "ess", "ess_fraction", "wall_seconds", "log_z_exact", "imh_acceptance"):
        assert k in s
    assert np.allclose(lw, s["log_z"])
    sc = json.loads((out / "sample_config.json").read_text())
    assert sc["n_samples"] == 1000 and sc["seed"] == 3 and sc["resample"]
    assert mc.EvolveConfig.from_dict(json.loads((out / "config.json").read_text())).target["name"] == "gaussian"
    # reproducible
    rc = cli_main(["sample", "--run", str(gauss_run_dir), "--n-samples", "1000", "--seed", "3",
                   "--resample", "--out", str(tmp_path / "s2")])
    assert rc == 0 and np.array_equal(np.load(tmp_path / "s2" / "samples.npy"), x)


@pytest.mark.parametrize("argv,msg", [
    (["--condition", "0=1.5,foo"], "condition"),
    (["--condition", "7=1"], "out of range"),
    (["--condition", "0=1"], "partial diffusion"),
    (["--target", "two-modes"], "not the target given"),
    (["--target", "gaussian", "--dim", "3"], "mismatched dimensions"),
    (["--dim", "3"], "mismatched dimensions"),
    (["--energy", "x0**2/2 + x1**2/2", "--dim", "2"], "not the target given"),
])
def test_cli_errors_with_run(gauss_run_dir, tmp_path, capsys, argv, msg):
    rc = cli_main(["sample", "--run", str(gauss_run_dir), "--n-samples", "100", "--out", str(tmp_path / "o")] + argv)
    err = capsys.readouterr().err
    assert rc == 2 and msg in err, err
    assert not (tmp_path / "o" / "samples.npy").exists()


def test_cli_errors_without_run(tmp_path, capsys):
    rc = cli_main(["sample", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "not found" in capsys.readouterr().err
    rc = cli_main(["sample", "--target", "gaussian", "--condition", "0=1,1=2", "--out", str(tmp_path / "o")])
    assert rc == 2 and "all 2" in capsys.readouterr().err
    rc = cli_main(["sample", "--target", "gaussian", "--condition", "0=1", "--diffuse", "0",
                   "--out", str(tmp_path / "o")])
    assert rc == 2 and "contradicts" in capsys.readouterr().err
    rc = cli_main(["sample", "--energy", "x0**2", "--dim", "2", "--n-samples", "1", "--out", str(tmp_path / "o")])
    assert rc == 2 and "n-samples" in capsys.readouterr().err


def test_cli_sample_energy_expression_evolves_first(tmp_path, capsys):
    """--energy: log Z unknown to the tool, estimated; U = (x0² + x1²)/2 + x0 has log Z = log 2π + 1/2."""
    out = tmp_path / "e"
    argv = ["sample", "--energy", "(x0**2 + x1**2)/2 + x0", "--dim", "2", "--n-samples", "2000", "--out", str(out),
            "--quiet"]
    for k, v in SMALL.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    assert cli_main(argv) == 0
    s = json.loads((out / "summary.json").read_text())
    assert "log_z_exact" not in s
    exact = LOG2PI + 0.5
    assert abs(s["log_z"] - exact) < max(4 * s["log_z_stderr"], 0.02), s
    assert (out / "run" / "config.json").is_file() and (out / "run" / "trajectory.npz").is_file()
    # the output directory is itself accepted as --run
    assert cli_main(["sample", "--run", str(out), "--n-samples", "500", "--out", str(tmp_path / "e2")]) == 0


def test_cli_condition_sets_diffusion(tmp_path):
    out = tmp_path / "c"
    argv = ["sample", "--target", "gaussian", "--condition", "0=1.6", "--n-samples", "1000", "--out", str(out),
            "--quiet", "--T", "3.0"]
    for k, v in SMALL.items():
        if k != "T":
            argv += [f"--{k.replace('_', '-')}", str(v)]
    assert cli_main(argv) == 0
    cfg = json.loads((out / "run" / "config.json").read_text())
    assert cfg["diffuse"] == [1]
    x = np.load(out / "samples.npy")
    assert np.all(x[:, 0] == 1.6)
    s = json.loads((out / "summary.json").read_text())
    assert abs(s["log_z"] - s["log_z_exact"]) < max(4 * s["log_z_stderr"], 0.02)


# --------------------------------------------------------------------------- nothing lost (issue 10)

def _small_args(**override):
    argv = []
    for k, v in {**SMALL, **override}.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return argv


def _err_lines(err: str) -> list[str]:
    """The lines of stderr that are not progress bars."""
    lines = [seg.rsplit("\r", 1)[-1].strip() for seg in err.split("\n")]
    return [ln for ln in lines if ln and "%|" not in ln]


def _bad_out(tmp_path, kind):
    if kind == "existing file":
        f = tmp_path / "file"
        f.write_text("x")
        return f, "not a directory"
    if kind == "parent is a file":
        f = tmp_path / "file"
        f.write_text("x")
        return f / "run", "not a directory"
    if kind == "unwritable":
        return Path("/proc/mne-explorer-test/run"), "not writable"
    if kind == "non-empty directory":
        d = tmp_path / "full"
        d.mkdir()
        (d / "notes.txt").write_text("mine")
        return d, "--force"
    raise AssertionError(kind)


BAD_OUTS = ["existing file", "parent is a file", "unwritable", "non-empty directory"]


@pytest.mark.parametrize("command", ["evolve", "sample"])
@pytest.mark.parametrize("kind", BAD_OUTS)
def test_cli_out_is_checked_before_any_work(tmp_path, capsys, command, kind):
    """With the default (expensive) settings the refusal still comes within seconds: the
    output path is checked before the start, the fit or the evolution."""
    out, msg = _bad_out(tmp_path, kind)
    before = _snapshot(tmp_path)
    t0 = time.perf_counter()
    rc = cli_main([command, "--target", "two-modes", "--quiet", "--out", str(out)])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and str(out) in err, err
    assert len(_err_lines(err)) == 1 and "Traceback" not in err, err
    assert elapsed < 5.0, elapsed
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", BAD_OUTS)
def test_cli_sample_from_run_checks_out_first(gauss_run_dir, tmp_path, capsys, kind):
    out, msg = _bad_out(tmp_path, kind)
    rc = cli_main(["sample", "--run", str(gauss_run_dir), "--n-samples", "100", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err, err


def test_cli_never_overwrites_a_run_silently(gauss_run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(gauss_run_dir, run)
    before = _snapshot(run)
    # evolve onto an existing run: refused without --force, before any work
    t0 = time.perf_counter()
    assert cli_main(["evolve", "--target", "gaussian", "--quiet", "--out", str(run)]) == 2
    assert time.perf_counter() - t0 < 5.0
    assert "--force" in capsys.readouterr().err
    # sample --out into the run it reads, or into a folder that holds it: refused
    assert cli_main(["sample", "--run", str(run), "--out", str(run), "--force"]) == 2
    assert "inside the run" in capsys.readouterr().err
    assert cli_main(["sample", "--run", str(run), "--out", str(run / "s")]) == 2
    assert "inside the run" in capsys.readouterr().err
    assert cli_main(["sample", "--run", str(run), "--out", str(tmp_path), "--force"]) == 2
    assert "holds the run" in capsys.readouterr().err
    assert _snapshot(run) == before
    # --force never replaces a folder that is not a previous result of the same kind
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    assert cli_main(["evolve", "--target", "gaussian", "--quiet", "--force", "--out", str(mine)]) == 2
    assert cli_main(["sample", "--run", str(run), "--force", "--out", str(mine)]) == 2
    assert cli_main(["sample", "--run", str(run), "--force", "--out", str(run.parent / "run")]) == 2
    assert (mine / "thesis.tex").read_text() == "precious" and _snapshot(run) == before


def test_cli_sample_force_replaces_previous_sample_whole(gauss_run_dir, tmp_path):
    out = tmp_path / "s"
    assert cli_main(["sample", "--run", str(gauss_run_dir), "--n-samples", "300", "--resample", "--no-imh",
                     "--quiet", "--out", str(out)]) in (0, 1)
    assert (out / "raw_samples.npy").is_file()
    assert cli_main(["sample", "--run", str(gauss_run_dir), "--n-samples", "200", "--no-imh", "--quiet",
                     "--out", str(out)]) == 2
    assert cli_main(["sample", "--run", str(gauss_run_dir), "--n-samples", "200", "--no-imh", "--quiet",
                     "--force", "--out", str(out)]) in (0, 1)
    assert np.load(out / "samples.npy").shape == (200, 2)
    assert not (out / "raw_samples.npy").exists()  # nothing stale from the previous sample
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no staging folders left


def test_cli_warning_run_force_and_renormalized_mixture(gauss_run_dir, tmp_path, capsys):
    """--T 0.3 ends ``warning`` (T too small) with exit code 1 and the status in summary.json;
    --force replaces the previous run; mixture weights summing to 2 are renormalized with a
    warning on stderr and in the summaries (also of a later ``sample --run``)."""
    spec = {"kind": "gaussian_mixture", "weights": [1.2, 0.8], "means": [[-1.0, 0.5], [1.5, -0.5]],
            "covariances": [[[0.6, 0.2], [0.2, 0.4]], [[0.5, -0.1], [-0.1, 0.7]]]}
    f = tmp_path / "mix.json"
    f.write_text(json.dumps(spec))
    out = tmp_path / "run"
    shutil.copytree(gauss_run_dir, out)
    rc = cli_main(["evolve", "--target", str(f), "--quiet", "--force", "--out", str(out)] + _small_args(T=0.3))
    cap = capsys.readouterr()
    assert rc == 1, cap.err
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "warning" and s["target"] == "gaussian-mixture"
    assert "t_too_small" in [r["reason"] for r in s["reasons"]], s["reasons"]
    assert "renormalized" in cap.err and "summed to 2" in cap.err
    assert any("renormalized" in w for w in s["warnings"])
    assert json.loads(cap.out.splitlines()[0])["status"] == "warning"
    run = mc.load_run(out)
    assert run.status == mc.Status.WARNING and run.config.T == 0.3
    # sampling it with one-shot weights: the run's warnings and its status carry over (SMC corrects
    # against the exact energy and only carries a failed or interrupted run)
    so = tmp_path / "s"
    rc = cli_main(["sample", "--run", str(out), "--method", "is", "--n-samples", "300", "--no-imh", "--quiet",
                   "--out", str(so)])
    err = capsys.readouterr().err
    ss = json.loads((so / "summary.json").read_text())
    assert rc == 1 and ss["status"] == "warning" and "ended warning" in err
    assert any("renormalized" in w for w in ss["warnings"]) and any("ended warning" in w for w in ss["warnings"])


@pytest.mark.parametrize("status,reason", [("failed", "max_steps"), ("interrupted", "interrupted")])
def test_cli_sample_warns_about_a_run_not_ok(gauss_run_dir, tmp_path, capsys, status, reason):
    d = tmp_path / "run"
    shutil.copytree(gauss_run_dir, d)
    s = json.loads((d / "summary.json").read_text())
    s.update(status=status, reasons=[{"reason": reason, "detail": "at t = 2"}])
    (d / "summary.json").write_text(json.dumps(s))
    out = tmp_path / "s"
    rc = cli_main(["sample", "--run", str(d), "--n-samples", "300", "--no-imh", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert f"warning: the run in {d} ended {status}" in err, err
    ss = json.loads((out / "summary.json").read_text())
    assert rc == 1 and ss["status"] == "warning"
    assert "run_not_ok" in [r["reason"] for r in ss["reasons"]]
    assert any(status in w for w in ss["warnings"])
    assert ss["run_status"] == status


@pytest.mark.parametrize("how", ["truncated trajectory", "invalid config JSON", "width as a string",
                                 "summary of another target", "mismatched shapes"])
def test_cli_damaged_run_gives_one_line_naming_the_file(gauss_run_dir, tmp_path, capsys, how):
    d = tmp_path / "run"
    shutil.copytree(gauss_run_dir, d)
    name = _damage(d, how)
    rc = cli_main(["sample", "--run", str(d), "--n-samples", "100", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    lines = _err_lines(err)
    assert rc == 2 and len(lines) == 1 and str(d / name) in lines[0], err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("expr,dim", [("x0", 1), ("0*x0", 1), ("-x0**2", 1), ("exp(exp(exp(x0)))", 1)])
def test_cli_refuses_non_normalizable_energy_early(tmp_path, capsys, expr, dim):
    t0 = time.perf_counter()
    rc = cli_main(["evolve", f"--energy={expr}", "--dim", str(dim), "--quiet", "--out", str(tmp_path / "o")])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 2 and "cannot be sampled" in err and len(_err_lines(err)) == 1, err
    assert elapsed < 10.0 and not (tmp_path / "o").exists()
    rc = cli_main(["sample", f"--energy={expr}", "--dim", str(dim), "--quiet", "--out", str(tmp_path / "o")])
    assert rc == 2 and "cannot be sampled" in capsys.readouterr().err


def test_cli_refuses_huge_n_samples_up_front(gauss_run_dir, tmp_path, capsys):
    from app.cli import check_sample_memory, sample_memory_estimate
    t0 = time.perf_counter()
    rc = cli_main(["sample", "--run", str(gauss_run_dir), "--n-samples", "100000000", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "GB" in err and "at most" in err, err
    assert time.perf_counter() - t0 < 5.0 and not (tmp_path / "o").exists()
    rc = cli_main(["sample", "--target", "gaussian", "--n-samples", "100000000", "--out", str(tmp_path / "o")])
    assert rc == 2 and "GB" in capsys.readouterr().err
    # the rule: M (d + 4) 8 bytes × working copies against the engine's memory budget
    assert sample_memory_estimate(10**6, 2) == 10**6 * 6 * 8 * 16
    check_sample_memory(10**6, 32)
    with pytest.raises(mc.ConfigError, match="at most"):
        check_sample_memory(10**8, 2)


# --------------------------------------------------------------------------- Ctrl-C / SIGTERM

_LONG_EVOLVE = ["--target", "gaussian", "--n-points", "64", "--width", "16", "--fit-steps", "100", "--gn-steps",
                "5", "--fit-points", "256", "--sketch-rank", "32", "--T", "100", "--rtol", "1e-10",
                "--atol", "1e-12", "--max-steps", "1000000"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_signal_saves_an_interrupted_run(tmp_path, sig):
    """A signal after the first accepted steps: exit 130 within ~2 s, one line on stderr (no
    traceback), and a loadable run with status ``interrupted`` holding the accepted steps."""
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "app.cli", "evolve", *_LONG_EVOLVE, "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    buf = bytearray()

    def pump():
        while True:
            chunk = os.read(p.stderr.fileno(), 65536)
            if not chunk:
                return
            buf.extend(chunk)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline and p.poll() is None:
            steps = [int(m) for m in re.findall(rb"steps (\d+)", bytes(buf))]
            if steps and max(steps) >= 3:
                break
            time.sleep(0.05)
        assert p.poll() is None, bytes(buf).decode(errors="replace")[-2000:]
        t0 = time.monotonic()
        p.send_signal(sig)
        p.wait(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    reader.join(timeout=5)
    err = bytes(buf).decode(errors="replace")
    lines = _err_lines(err)
    assert p.returncode == 130, err[-3000:]
    assert elapsed < 3.0, elapsed  # ≈ 1–2 s measured on the loaded 2-core machine (load ≈ 5)
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("interrupted at t ="), lines
    run = mc.load_run(out)
    assert run.status == mc.Status.INTERRUPTED and 0 < run.T < 100 and len(run.times) >= 4
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    assert [q.name for q in tmp_path.iterdir()] == ["run"]


def test_cli_sample_streams_large_requests_to_disk(gauss_run_dir, tmp_path, capsys, monkeypatch):
    """Above one batch, `sample --method is` writes batches to disk as they finish; the files,
    summary and estimates are those of the pooled set."""
    import numpy as np

    monkeypatch.setenv("MNE_STREAM_BATCH", "600")
    out = tmp_path / "s"
    rc = cli_main(["sample", "--run", str(gauss_run_dir), "--n-samples", "1500", "--method", "is", "--seed", "2",
                   "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    summ = json.loads((out / "summary.json").read_text())
    assert summ["streamed"]["batches"] == 3 and summ["streamed"]["batch"] == 600
    x, lw = np.load(out / "samples.npy"), np.load(out / "log_weights.npy")
    assert x.shape == (1500, 2) and lw.shape == (1500,) and np.isfinite(lw).all()
    lz = float(np.logaddexp.reduce(lw) - np.log(len(lw)))
    assert summ["log_z"] == pytest.approx(lz) and summ["status"] == "ok"
    assert not (out / "imh_samples.npy").exists()
    assert not list(tmp_path.glob(".*")), "no staging directory left behind"


def test_cli_refuses_a_streamed_sample_that_would_fill_the_disk(gauss_run_dir, tmp_path, capsys, monkeypatch):
    import shutil

    monkeypatch.setenv("MNE_STREAM_BATCH", "1000")
    free = shutil.disk_usage(tmp_path).free
    n = int(free / (4 * 8)) + 1  # (d + 2)·8 bytes per sample in 2-D: more than the free space
    rc = cli_main(["sample", "--run", str(gauss_run_dir), "--n-samples", str(n), "--method", "is",
                   "--out", str(tmp_path / "big")])
    err = capsys.readouterr().err
    assert rc == 2 and ("free" in err or "memory" in err), err
    assert not (tmp_path / "big").exists()
