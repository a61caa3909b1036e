"""MNE Explorer dashboard: settings (:class:`Settings`), the Panel app (:class:`MNEExplorer`),
:func:`serve` and the command line (:mod:`app.cli`).

Importing the package has no side effects; :func:`serve` and the command line call
:func:`mne_core.runtime.configure` (float64, BLAS threads, compilation cache) at start.
"""

__all__ = ["Settings", "MNEExplorer", "serve"]


def __getattr__(name):
    if name == "Settings":
        from app.settings import Settings

        return Settings
    if name in ("MNEExplorer", "serve", "create_app"):
        from app import main

        return getattr(main, name)
    raise AttributeError(f"module 'app' has no attribute {name!r}")
