"""Process-wide runtime set-up, explicit and idempotent.

The engine computes in float64 by default, which JAX only allows after
``jax_enable_x64`` is switched on.  Instead of doing this as a side effect of ``import
mne_core``, the entry points that need it call :func:`ensure_x64` (``Evolution``, ``load_run``,
the sampler) and the command line and the server call :func:`configure` once at start:

* ``OPENBLAS_NUM_THREADS=1`` — small dense factorizations (n×n Cholesky, eigvalsh) go through
  OpenBLAS, whose thread pool oversubscribed small machines and made them up to 100× slower
  under load (only effective before NumPy is imported: the CLI calls it first);
* float64 on;
* JAX's persistent compilation cache (a second run of the same shapes skips most compilation).
"""
from __future__ import annotations

import os


def ensure_x64() -> None:
    """Switch on JAX's float64 (global, also seen by worker threads); a no-op when it is on."""
    import jax
    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Switch on JAX's persistent compilation cache.  Directory: ``path``, else
    ``$MNE_JAX_CACHE``, else ``~/.cache/mne-explorer/jax``; ``MNE_JAX_CACHE=off`` disables it.
    Returns the directory (None when disabled)."""
    import jax
    cache = path or os.environ.get("MNE_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                      "mne-explorer", "jax")
    if cache.lower() == "off":
        return None
    try:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    except Exception:  # pragma: no cover - older JAX without these options
        return None
    return cache


def configure(*, x64: bool = True, blas_threads: int | None = 1, compilation_cache: bool | str = True) -> None:
    """One call at process start (CLI, ``serve``, benchmarks): BLAS threads, float64, cache."""
    if blas_threads is not None:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(int(blas_threads)))
    if x64:
        ensure_x64()
    if compilation_cache:
        enable_compilation_cache(compilation_cache if isinstance(compilation_cache, str) else None)


__all__ = ["configure", "ensure_x64", "enable_compilation_cache"]
