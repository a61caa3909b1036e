"""Shared test set-up: JAX on one CPU device in float64; a persistent compilation cache of this
test session only (a fresh temporary directory, shared by the xdist workers and the subprocesses
they start — CLI, server, notebook kernels — and removed at the end; ``MNE_JAX_CACHE=off`` or a
directory of your own overrides it); session-wide small runs that several test modules sample
(each xdist worker evolves them once)."""
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# the controller (or a lone pytest) makes the directory before any worker starts; workers inherit it
_OWN_CACHE = None
if "MNE_JAX_CACHE" not in os.environ:
    _OWN_CACHE = os.environ["MNE_JAX_CACHE"] = tempfile.mkdtemp(prefix="mne-test-jax-cache-")

import math  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import mne_core as mc  # noqa: E402

mc.configure()  # float64, one BLAS thread, the cache at $MNE_JAX_CACHE ("off": none)


def pytest_unconfigure(config):
    if _OWN_CACHE is not None and not hasattr(config, "workerinput"):
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Modules with long tests (``slow``, ``notebook``, ``browser``) first, each kept whole (its
    module fixtures are set up once) and in its own order: pytest-xdist hands out work in
    collection order, so the long units start early and the short ones fill the gaps at the end
    instead of one worker running a long test while the other idles."""
    def module(it):
        return getattr(getattr(it, "module", None), "__name__", None)
    long_marks = ("slow", "notebook", "browser")
    long_modules = {module(it) for it in items if any(it.get_closest_marker(m) for m in long_marks)} - {None}
    items.sort(key=lambda it: 0 if module(it) in long_modules else 1)


SMALL = dict(n_points=128, width=32, T=2.0, fit_steps=300, gn_steps=10, sketch_rank=64, fit_points=1024)
LOG2PI = math.log(2 * math.pi)


def evolve_small(target, **kw):
    """A small run (SMALL settings, overridable) that must end ok."""
    run = mc.evolve(mc.EvolveConfig(target=target, **{**SMALL, **kw}))
    assert run.status == mc.Status.OK, run.summary()
    return run


@pytest.fixture(scope="session")
def gauss_run():
    return evolve_small({"kind": "named", "name": "gaussian", "dim": 2})


@pytest.fixture(scope="session")
def gauss_run_dir(gauss_run, tmp_path_factory):
    return gauss_run.save(tmp_path_factory.mktemp("gauss") / "run")


@pytest.fixture(scope="session")
def cond_gauss_run():
    """gaussian (d = 2), x1 diffuses, x0 held fixed: samples x1 | x0."""
    return evolve_small({"kind": "named", "name": "gaussian", "dim": 2}, diffuse=(1,), T=3.0)


@pytest.fixture(scope="session")
def cond_mix_run():
    """two-modes, x0 diffuses, x1 held fixed: x0 | x1 is bimodal (0.3 / 0.7)."""
    return evolve_small({"kind": "named", "name": "two-modes"}, diffuse=(0,), T=3.0)


def cov_of(d):
    eig = np.geomspace(0.5, 2.0, d) if d > 1 else np.array([0.5])
    Q = np.eye(d)
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    for i in range(d - 1):
        G = np.eye(d)
        G[i, i], G[i, i + 1], G[i + 1, i], G[i + 1, i + 1] = c, -s, s, c
        Q = G @ Q
    return Q @ np.diag(eig) @ Q.T


def exact_energy_at(tgt, mask=None):
    """energy_at(params, t) of the EXACT OU-evolved energy of a target with known evolution."""
    m = None if mask is None else jnp.asarray(mask)
    return lambda params, t: (lambda x: tgt.evolved_energy(t, x, m))
