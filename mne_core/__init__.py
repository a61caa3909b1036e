"""mne_core — Minimal Neural Evolution (MNE) in JAX / Flax NNX / diffrax.

Evolve the energy U_θ(t) = −log ρ_t + const of a density given only by a formula under the
Ornstein–Uhlenbeck process, by the least-norm parameter velocity that satisfies the energy
equation at moving collocation points (a sketched NTK solve), then sample it.

Importing this package enables JAX's float64 (the default precision of the engine).
"""

import os as _os

# Small dense factorizations (n×n Cholesky, eigvalsh) go through OpenBLAS; its thread pool
# oversubscribes small machines and made them up to 100× slower under load.  One thread is
# as fast for these sizes; set OPENBLAS_NUM_THREADS yourself (before importing numpy) to override.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax as _jax

_jax.config.update("jax_enable_x64", True)

from .config import ConfigError, EvolveConfig, enable_compilation_cache  # noqa: E402
from .evolution import Evolution, EvolutionError, Snapshot, mne_diagnostics, mne_vector_field  # noqa: E402
from .expressions import ExpressionError, parse_expression  # noqa: E402
from .initialize import fit_energy, tempered_points  # noqa: E402
from .integrate import Stepper, make_controller  # noqa: E402
from .network import EnergyMLP, FlatEnergy, init_energy_network  # noqa: E402
from .operators import HeatEnergy, LocalDerivatives, OUEnergy, local_derivatives  # noqa: E402
from .run import Run, load_run  # noqa: E402
from .sampling import (SampleResult, SamplingError, effective_sample_size, importance_weights,  # noqa: E402
                       independent_mh, log_z_estimate, marginal_energy, sample, systematic_resample)
from .solvers import (SOLVER_MODES, Sketch, SolveInfo, jacobian, make_sketch,  # noqa: E402
                      parameter_velocity)
from .targets import (NAMED_TARGETS, Target, TargetSpecError, gaussian_mixture,  # noqa: E402
                      named_target, resolve_target, target_from_expression, target_from_json,
                      target_from_spec)

__all__ = [
    "ConfigError", "EvolveConfig", "enable_compilation_cache", "Evolution", "EvolutionError", "Snapshot", "mne_diagnostics",
    "mne_vector_field", "ExpressionError", "parse_expression", "fit_energy", "tempered_points",
    "Stepper", "make_controller", "EnergyMLP", "FlatEnergy", "init_energy_network", "HeatEnergy",
    "LocalDerivatives", "OUEnergy", "local_derivatives", "Run", "load_run", "SOLVER_MODES", "Sketch",
    "SolveInfo", "jacobian", "make_sketch", "parameter_velocity", "NAMED_TARGETS", "Target",
    "TargetSpecError", "gaussian_mixture", "named_target", "resolve_target", "target_from_expression",
    "target_from_json", "target_from_spec",
    "SampleResult", "SamplingError", "sample", "importance_weights", "effective_sample_size",
    "log_z_estimate", "systematic_resample", "independent_mh", "marginal_energy",
]
__version__ = "0.1.0"
