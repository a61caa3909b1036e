"""mne_core — Minimal Neural Evolution (MNE) in JAX / Flax NNX / diffrax.

Evolve the energy U_θ(t) = −log ρ_t + const of a density given only by a formula under the
Ornstein–Uhlenbeck process, by the least-norm parameter velocity that satisfies the energy
equation at moving collocation points (a sketched NTK solve), then sample it and remove the
network's bias.

The front door:

    run = mne_core.evolve(mne_core.EvolveConfig(target={"kind": "named", "name": "two-modes"}))
    res = mne_core.sample(run, 10_000)            # res.status: ok / warning / failed

The engine computes in float64: it switches JAX's x64 on when a float64 run is created
(:func:`mne_core.runtime.ensure_x64`); entry points call :func:`mne_core.runtime.configure`
for the process-wide set-up.  Importing the package has no side effects.
"""

from .conditionals import exact_conditional_density as exact_conditional_density
from .conditionals import exact_marginal_log_density as exact_marginal_log_density
from .conditionals import marginal_energy as marginal_energy
from .conditionals import parse_condition as parse_condition
from .config import AUTO_FIELDS as AUTO_FIELDS
from .config import FIELDS as FIELDS
from .config import ConfigError as ConfigError
from .config import EvolveConfig as EvolveConfig
from .config import auto_sizes as auto_sizes
from .config import auto_sketch_rank as auto_sketch_rank
from .config import check_resources as check_resources
from .config import resource_estimate as resource_estimate
from .diagnostics import mode_mass_stderr as mode_mass_stderr
from .diagnostics import mode_masses as mode_masses
from .diagnostics import target_energy_error as target_energy_error
from .evolution import Evolution as Evolution
from .evolution import EvolutionError as EvolutionError
from .evolution import Snapshot as Snapshot
from .evolution import evolve as evolve
from .evolution import mne_diagnostics as mne_diagnostics
from .evolution import mne_vector_field as mne_vector_field
from .expressions import ExpressionError as ExpressionError
from .expressions import parse_expression as parse_expression
from .flow import FlowResult as FlowResult
from .flow import SamplingError as SamplingError
from .flow import base_normals as base_normals
from .flow import reverse_flow as reverse_flow
from .flow import run_flow as run_flow
from .initialize import fit_energy as fit_energy
from .initialize import tempered_points as tempered_points
from .integrate import Stepper as Stepper
from .integrate import make_controller as make_controller
from .network import BlockEnergyMLP as BlockEnergyMLP
from .network import EnergyMLP as EnergyMLP
from .network import FlatEnergy as FlatEnergy
from .network import init_energy_network as init_energy_network
from .operators import HeatEnergy as HeatEnergy
from .operators import LocalDerivatives as LocalDerivatives
from .operators import OUEnergy as OUEnergy
from .operators import local_derivatives as local_derivatives
from .run import Run as Run
from .run import RunFileError as RunFileError
from .run import check_output_dir as check_output_dir
from .run import hermite_theta as hermite_theta
from .run import load_run as load_run
from .run import run_resources as run_resources
from .runtime import configure as configure
from .runtime import enable_compilation_cache as enable_compilation_cache
from .sampling import METHODS as METHODS
from .sampling import SampleResult as SampleResult
from .sampling import sample as sample
from .sampling import sample_to_disk as sample_to_disk
from .solvers import SOLVER_MODES as SOLVER_MODES
from .solvers import Sketch as Sketch
from .solvers import SolveInfo as SolveInfo
from .solvers import jacobian as jacobian
from .solvers import make_sketch as make_sketch
from .solvers import parameter_velocity as parameter_velocity
from .status import Reason as Reason
from .status import Status as Status
from .status import Verdict as Verdict
from .structure import energy_blocks as energy_blocks
from .structure import rotation_group as rotation_group
from .structure import resolve_network as resolve_network
from .structure import resolve_config as resolve_config
from .targets import NAMED_TARGETS as NAMED_TARGETS
from .targets import Target as Target
from .targets import TargetSpecError as TargetSpecError
from .targets import gaussian_mixture as gaussian_mixture
from .targets import named_target as named_target
from .targets import original_target as original_target
from .targets import resolve_target as resolve_target
from .targets import standardized_target as standardized_target
from .targets import target_from_expression as target_from_expression
from .targets import target_from_json as target_from_json
from .targets import target_from_spec as target_from_spec
from .weights import effective_sample_size as effective_sample_size
from .weights import importance_weights as importance_weights
from .weights import independent_mh as independent_mh
from .weights import log_z_estimate as log_z_estimate
from .weights import pareto_k as pareto_k
from .weights import systematic_resample as systematic_resample
from .weights import weight_diagnostics as weight_diagnostics

__version__ = "0.2.0"
