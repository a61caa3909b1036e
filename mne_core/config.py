"""Run configuration: every setting of an evolution, JSON-serializable and validated.

A :class:`EvolveConfig` plus its ``seed`` reproduces a run exactly; it is written to
``config.json`` in every saved run and is what the app puts in the URL.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

SOLVERS = ("sketch", "full", "galerkin", "subspace")
INTEGRATORS = ("tsit5", "dopri5", "dopri8")
INITS = ("mala", "exact")
PRECISIONS = ("float64", "float32")


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Switch on JAX's persistent compilation cache (a second run of the same shapes skips
    most compilation).  Directory: ``path``, else ``$MNE_JAX_CACHE``, else
    ``~/.cache/mne-explorer/jax``; ``MNE_JAX_CACHE=off`` disables it.  Returns the directory."""
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


class ConfigError(ValueError):
    """A setting is out of range or inconsistent; the message names it."""


@dataclasses.dataclass(frozen=True)
class EvolveConfig:
    """All settings of one MNE evolution (defaults are the accurate, tested preset).

    target:       target spec dict (see :func:`mne_core.targets.target_from_spec`),
                  e.g. ``{"kind": "named", "name": "two-modes"}``.
    T:            final time of the OU evolution.
    solver:       parameter-velocity solver: ``sketch`` | ``full`` | ``galerkin`` | ``subspace``.
    sketch_rank:  n, columns of the fixed random sketch Ω ∈ R^{N×n} (clipped to N).
    sketch_kind:  ``sparse`` (one ±1 per row, Z = JᵀΩ in O(Np)) or ``gaussian`` (dense).
    reg:          relative regularization λ_rel; the solve uses λ = λ_rel · tr(G)/dim(G).
    integrator:   ``tsit5`` | ``dopri5`` | ``dopri8`` (diffrax), PID-controlled by rtol/atol.
    n_points:     N, number of collocation points.
    width, depth, activation: energy network MLP.
    init:         ``mala`` (data-free, default) or ``exact`` (exact target samples; a
                  labelled diagnostic, only for targets that have them).
    fit_points:   number of points the initial fit U_θ(0) ≈ U_0 uses (≥ n_points).
    fit_steps:    Adam steps before the Gauss–Newton refinement of the initial fit.
    gn_steps:     Gauss–Newton (Levenberg–Marquardt) steps of the initial fit.
    mala_steps:   Langevin steps per tempering stage of the data-free start.
    max_steps:    cap on integrator steps (accepted + rejected).
    diffuse:      coordinates that diffuse (partial diffusion for conditionals/marginals);
                  None = all.
    """

    target: dict = dataclasses.field(default_factory=lambda: {"kind": "named", "name": "two-modes"})
    T: float = 4.0
    solver: str = "sketch"
    sketch_rank: int = 256
    sketch_kind: str = "sparse"
    reg: float = 3e-5
    integrator: str = "tsit5"
    rtol: float = 1e-4
    atol: float = 1e-6
    n_points: int = 512
    width: int = 64
    depth: int = 2
    activation: str = "silu"
    seed: int = 0
    precision: str = "float64"
    init: str = "mala"
    fit_points: int = 1024
    fit_steps: int = 1500
    gn_steps: int = 20
    mala_steps: int = 30
    max_steps: int = 5000
    diffuse: tuple | None = None

    def __post_init__(self):
        _check(self.solver in SOLVERS, f"solver must be one of {SOLVERS}, got {self.solver!r}")
        _check(self.integrator in INTEGRATORS, f"integrator must be one of {INTEGRATORS}, got {self.integrator!r}")
        _check(self.init in INITS, f"init must be one of {INITS}, got {self.init!r}")
        _check(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        _check(0 < self.T <= 100, f"T must be in (0, 100], got {self.T}")
        _check(1 <= self.sketch_rank <= 8192, f"sketch_rank must be in [1, 8192], got {self.sketch_rank}")
        _check(0 <= self.reg < 1, f"reg must be in [0, 1), got {self.reg}")
        _check(0 < self.rtol < 1 and 0 < self.atol < 1, "rtol and atol must be in (0, 1)")
        _check(8 <= self.n_points <= 16384, f"n_points must be in [8, 16384], got {self.n_points}")
        _check(1 <= self.width <= 1024 and 1 <= self.depth <= 8, "width must be in [1, 1024], depth in [1, 8]")
        _check(self.fit_points >= 1 and self.fit_steps >= 0 and self.gn_steps >= 0 and self.mala_steps >= 0,
               "fit_points must be positive; fit_steps, gn_steps, mala_steps non-negative")
        _check(self.max_steps >= 1, "max_steps must be positive")
        _check(self.sketch_kind in ("sparse", "gaussian"), f"sketch_kind must be 'sparse' or 'gaussian', got {self.sketch_kind!r}")
        if self.diffuse is not None:
            object.__setattr__(self, "diffuse", tuple(int(i) for i in self.diffuse))
        _check(isinstance(self.target, dict) and "kind" in self.target, "target must be a spec dict with a 'kind'")

    def replace(self, **changes) -> "EvolveConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvolveConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)


def _check(ok: bool, msg: str):
    if not ok:
        raise ConfigError(msg)
