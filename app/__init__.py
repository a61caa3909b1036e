"""MNE Explorer dashboard: settings (:class:`Settings`), the Panel app (:class:`MNEExplorer`)
and :func:`serve`.

Importing the package switches JAX to 64-bit once, at process start (the per-thread
``jax.enable_x64`` context would not reach the worker threads).
"""

import os as _os

# Small dense factorizations (n×n Cholesky, eigvalsh) go through OpenBLAS; its thread pool
# oversubscribes small machines and made them up to 100× slower under load.  One thread is
# as fast for these sizes; set OPENBLAS_NUM_THREADS yourself (before importing numpy) to override.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax

jax.config.update("jax_enable_x64", True)

from mne_core.config import enable_compilation_cache  # noqa: E402

enable_compilation_cache()  # a restarted server finds the default preset's compiled functions

from app.settings import Settings  # noqa: E402

__all__ = ["Settings", "MNEExplorer", "serve"]


def __getattr__(name):
    if name in ("MNEExplorer", "serve", "create_app"):
        from app import main

        return getattr(main, name)
    raise AttributeError(f"module 'app' has no attribute {name!r}")
