"""Tests of the command line (app.cli): options generated from the config, exit codes and
statuses, output checks, sampling from runs and from targets."""
from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mne_core as mc
from app.cli import main as cli_main
from conftest import LOG2PI, SMALL, cov_of, evolve_small


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
