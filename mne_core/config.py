"""Run configuration: the one source of truth for every setting of an evolution.

Each field of :class:`EvolveConfig` carries its choices or bounds and its help text as
dataclass metadata (:func:`setting`).  Validation here, the command-line options
(``app/cli.py``) and the dashboard's ``Settings`` (``app/settings.py``) are all generated from
that metadata, so a new field cannot go missing from either and the limits cannot drift.

Sizes that should grow with the dimension (``n_points``, ``width``, ``sketch_rank``,
``fit_points``) default to ``None`` = *auto*: :func:`auto_sizes` gives them from d by a
documented rule, and :meth:`EvolveConfig.resolved` fills them in once the target (and so d)
is known.  The saved ``config.json`` of a run always holds the resolved numbers.

:func:`resource_estimate` is the one memory/time estimate the CLI and the app both use to
refuse settings that would exhaust the machine.

A :class:`EvolveConfig` plus its ``seed`` reproduces a run exactly.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

SOLVERS = ("sketch", "full", "galerkin", "subspace")
INTEGRATORS = ("tsit5", "dopri5", "dopri8")
CLOCKS = ("auto", "linear", "log")
INITS = ("mala", "exact")
PRECISIONS = ("float64", "float32")
SKETCH_KINDS = ("sparse", "gaussian")
ACTIVATIONS = ("silu", "tanh", "gelu", "softplus", "sin")
NETWORKS = ("auto", "mlp", "blocks", "radial", "scale-mixture")
STANDARDIZE = ("auto", "off")
REFRESH = ("auto", "on", "off")
SCORE_FITS = ("auto", "on", "off")
#: ``fit_scores = auto`` adds the gradient term to the initial fit above this dimension, for the
#: plain MLP (the block and rotation-aware networks are not measured with it) …
SCORE_FIT_DIM = 4
#: … with weight λ on mean |∇U_θ − ∇U_0|² (the values' term has weight 1).
SCORE_FIT_WEIGHT = 1.0

#: The largest Jacobian (N × p entries) one run may allocate (float64: 8 bytes each).
MAX_JACOBIAN_ENTRIES = 96_000_000
#: The largest fit Jacobian (fit_points × p entries).
MAX_FIT_ENTRIES = 4 * MAX_JACOBIAN_ENTRIES
#: Rough memory budget of one run in bytes (the refusal threshold of :func:`resource_estimate`).
MEMORY_BUDGET_BYTES = 6e9


class ConfigError(ValueError):
    """A setting is out of range or inconsistent; the message names it."""


def setting(default, help: str, *, choices=None, bounds=None, inclusive=(True, True), auto: bool = False,
            cli: bool = True, app_group: str = "method"):
    """A dataclass field with its metadata: ``help``, ``choices`` or ``bounds`` (inclusive as
    given), ``auto`` (None = follow the dimension), whether the CLI exposes it, and the app's
    control group."""
    meta = {"help": help, "choices": choices, "bounds": bounds, "inclusive": inclusive, "auto": auto,
            "cli": cli, "app_group": app_group}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: json.loads(json.dumps(default)), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


#: The initial fit's one-sided wide stage keeps U_θ(0) ≥ U_0 − 1 at the wide points up to the
#: level median U_0 + this (the default of ``wide_headroom``; e^−20: no mass at t = 0) …
WIDE_HEADROOM = 20.0
#: … and :func:`mne_core.evolve` retries a blown-up wide-repaired run with the level here
#: (the measurements are at ``mne_core.evolution.GAP_HEADROOM``).
GAP_HEADROOM = 40.0


def auto_sketch_rank(n_points: int, dim: int) -> int:
    """The automatic sketch rank n for N collocation points in dimension d (see :func:`auto_sizes`):
    min(N/2, 512) for d ≤ 4 (N itself below 16 points), min(N, 1024) above."""
    n = int(n_points)
    if int(dim) > 4:
        return min(n, 1024)
    return int(min(n // 2 if n >= 16 else n, 512))


def score_fit_active(fit_scores: str, dim: int, plain_mlp: bool) -> bool:
    """Whether the initial fit matches gradients (``fit_scores``): on / off as given; auto = d >
    SCORE_FIT_DIM with the plain MLP.  Measured (mixtures of ``benchmarks/highdim.py``, exact
    samples, 4096 fit points, width 128): held-out RMS of the values 3.0 → 1.06 at d = 32 and
    6.5 → 2.3 at d = 64 (8 components), at about three times the fit's cost."""
    if fit_scores not in SCORE_FITS:
        raise ConfigError(f"fit_scores must be one of {SCORE_FITS}, got {fit_scores!r}")
    return fit_scores == "on" or (fit_scores == "auto" and int(dim) > SCORE_FIT_DIM and bool(plain_mlp))


def auto_sizes(dim: int) -> dict[str, int]:
    """Sizes that follow from the dimension d (used where a field is None = auto).

    The rule, from measurements (README, "Hard targets"): d ≤ 4 is accurate at (N, width, n) =
    (512, 64, 256) with 2N fit points; in d = 16 the energy error of the evolution dropped from
    0.69 to 0.17 with a wider network (width 128), and the SMC sampler along the learned path
    removes the remaining bias, so the collocation set is sized for the 10-minute budget of a
    2-core CPU rather than for the last digit of the evolution.  More fit points generalize
    better (d = 32 mixture: held-out fit error 1.32 with 1024 points, 0.53 with 4096) and cost
    little, because the Gauss–Newton refinement uses at most 1024 of them (its Gram is O(M² p)).
    So

        d ≤ 4:  N = 512,  width = 64,  fit_points = 2N,  sketch_rank n = min(N/2, 512);
        d > 4:  N = 1024, width = 128, fit_points = 4N,  sketch_rank n = min(N, 1024).

    The sketch keeps every equation above d = 4 (:func:`auto_sketch_rank`): with n = N/2 an
    8-component mixture in d = 16 lost accuracy along the evolution (energy error 0.54 → 6.3,
    SMC log Ẑ −0.85…+4.1 with error bars that did not hold), with n = N it stayed at 2.4 and
    SMC gave +0.043 ± 0.037 / −0.004 ± 0.059; the two-component d = 32 mixture went from
    −0.046 to +0.017 ± 0.017.  The evolve took 57 s instead of 49 s.  More collocation points
    (N = 2048, n = 1024) or fit points (16 384) did not help.
    """
    d = int(dim)
    if d <= 4:
        n_points, width, fit_points = 512, 64, 1024
    else:
        n_points, width, fit_points = 1024, 128, 4096
    return {"n_points": n_points, "width": width, "sketch_rank": auto_sketch_rank(n_points, d),
            "fit_points": fit_points}


@dataclasses.dataclass(frozen=True)
class EvolveConfig:
    """All settings of one MNE evolution (defaults are the accurate, tested preset).

    The help text of every field is in its metadata (``EvolveConfig.help(name)``); fields
    that are None follow the dimension (:func:`auto_sizes`).
    """

    target: dict = setting({"kind": "named", "name": "two-modes"},
                           "target spec: {'kind': 'named', 'name': …} | energy expression | Gaussian mixture",
                           cli=False, app_group="target")
    T: float = setting(4.0, "final time of the OU evolution (ρ_T ≈ N(0, I) needs T ≳ 3)",
                       bounds=(0.0, 100.0), inclusive=(False, True))
    solver: str = setting("sketch", "parameter-velocity solver: sketched NTK solve (the paper's), full "
                          "N×N NTK, Neural-Galerkin p×p, or sketch-subspace least squares", choices=SOLVERS)
    sketch_rank: int | None = setting(None, "sketch rank n: columns of the fixed random sketch Ω ∈ R^{N×n} "
                                      "(clipped to N; auto: min(N/2, 512) for d ≤ 4, min(N, 1024) above)",
                                      bounds=(1, 8192), auto=True)
    sketch_kind: str = setting("sparse", "sketch Ω: sparse (one ±1 per row, Z = JᵀΩ in O(Np)) or dense Gaussian",
                               choices=SKETCH_KINDS)
    reg: float = setting(3e-5, "relative regularization λ_rel; the solve uses λ = λ_rel · tr(G)/dim(G)",
                         bounds=(0.0, 1.0), inclusive=(True, False))
    integrator: str = setting("tsit5", "explicit Runge–Kutta integrator (diffrax), PI step control",
                              choices=INTEGRATORS)
    clock: str = setting("auto", "time variable of the integrator: t, or τ = log(t + 1e-6) (steps grow with t, "
                         "so fine scales that relax fast at the start, like the funnel's neck, do not force "
                         "tiny steps all the way); auto: log for the rotation-aware network, else linear",
                         choices=CLOCKS)
    rtol: float = setting(1e-4, "relative tolerance of the step-size controller", bounds=(0.0, 1.0),
                          inclusive=(False, False))
    atol: float = setting(1e-6, "absolute tolerance of the step-size controller", bounds=(0.0, 1.0),
                          inclusive=(False, False))
    n_points: int | None = setting(None, "N, number of collocation points (auto: 512 for d ≤ 4, else 1024)",
                                   bounds=(8, 16384), auto=True)
    width: int | None = setting(None, "hidden width of the energy network (auto: 64 for d ≤ 4, else 128)",
                                bounds=(1, 1024), auto=True)
    depth: int = setting(2, "hidden layers of the energy network", bounds=(1, 8))
    activation: str = setting("silu", "activation of the energy network", choices=ACTIVATIONS)
    network: str = setting("auto", "energy network: one MLP on all coordinates, or one MLP per block of coordinates "
                           "over which U_0 separates (then U_t stays a block sum; 32 units per block coordinate, "
                           "at most width), or, when U_0 is invariant under rotations of a group G of coordinates "
                           "(Neal's funnel), a network of the other coordinates x_R and s = |x_G|²: radial = two MLPs "
                           "of x_R and s with a learned scale of s (right on funnel-10 for some seeds, honestly "
                           "failed for others), scale-mixture = a Gaussian scale mixture of x_G given x_R, for an "
                           "energy that increases with |x_G| (the exact U_t's form on the funnel; experimental: "
                           "closer on three funnel seeds, failed on the fourth); both get the width and sketch "
                           "rank of their |R| + 1 inputs; auto, above d = 4: blocks when U_0 separates, else "
                           "radial when U_0 has a rotation group, else mlp; mlp for d ≤ 4",
                           choices=NETWORKS)
    refresh: str = setting("auto", "refresh of the collocation points: every 0.25 in t, 10 Langevin (MALA) steps on the "
                           "model's own density e^{−U_θ(t)} (the broad half at power 0.5) keep the points where ρ_t is, "
                           "where the model's probability flow alone lets them drift as the model errs; auto: on above "
                           "d = 4 when every coordinate diffuses, else off", choices=REFRESH)
    fit_scores: str = setting("auto", "initial fit also matches the gradients ∇U_θ ≈ ∇U_0 at the fit points "
                              f"(λ = {SCORE_FIT_WEIGHT:g} on their mean squared error): d numbers a point instead of "
                              "one, so the fit generalizes in high d where the values alone are interpolated; auto: "
                              f"on above d = {SCORE_FIT_DIM} for the MLP network, else off", choices=SCORE_FITS,
                              app_group="start")
    standardize: str = setting("auto", "coordinates of the run: auto = when the initial fit in the target's own "
                               "coordinates is off by more than 1 on held-out points, refit in y = (x − mean) / std of "
                               "the start points (the OU equilibrium N(0, I) then matches the target's spread) and keep "
                               "the better fit; samples and log Z are always reported in the original coordinates; "
                               "off = never", choices=STANDARDIZE, app_group="start")
    seed: int = setting(0, "random seed (start points, network init, sketch)", bounds=(0, 2**31 - 1))
    precision: str = setting("float64", "floating-point precision", choices=PRECISIONS)
    init: str = setting("mala", "start points: data-free tempered SMC + MALA, or exact samples "
                        "(a labelled diagnostic, only for targets that have them)", choices=INITS,
                        app_group="start")
    fit_points: int | None = setting(None, "points of the initial fit U_θ(0) ≈ U_0 (≥ N; auto: 2N for d ≤ 4, else 4N)",
                                     bounds=(1, 262144), auto=True, app_group="start")
    fit_steps: int = setting(1500, "Adam steps of the initial fit", bounds=(0, 100000), app_group="start")
    gn_steps: int = setting(20, "Gauss–Newton (Levenberg–Marquardt) steps of the initial fit", bounds=(0, 1000),
                            app_group="start")
    mala_steps: int = setting(30, "Langevin steps per tempering stage of the data-free start",
                              bounds=(0, 10000), app_group="start")
    wide_headroom: float = setting(WIDE_HEADROOM, "separated modes (d ≤ 4): where the plain initial fit dips into a "
                                   "spurious well, the refit keeps U_θ(0) ≥ U_0 − 1 at the start's wide points "
                                   "(tempering particles at β ≈ 0.1) up to the level median U_0 + this; evolve's "
                                   f"retry raises it to {GAP_HEADROOM:g} when such a run blows up",
                                   bounds=(0.0, 1000.0), app_group="start")
    max_steps: int = setting(5000, "cap on integrator steps (accepted + rejected)", bounds=(1, 10**6),
                             app_group="start")
    diffuse: tuple | None = setting(None, "coordinates that diffuse (partial diffusion for conditionals and "
                                    "marginals), comma-separated; empty = all", app_group="start")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _validate(f, getattr(self, f.name))
        if self.diffuse is not None:
            try:
                diffuse = tuple(int(i) for i in self.diffuse)
            except (TypeError, ValueError):
                raise ConfigError(f"diffuse must be a list of coordinate indices, got {self.diffuse!r}") from None
            if not diffuse or len(set(diffuse)) != len(diffuse) or min(diffuse) < 0:
                raise ConfigError(f"diffuse must list distinct non-negative coordinates, got {list(diffuse)}")
            object.__setattr__(self, "diffuse", diffuse)
        _check(isinstance(self.target, dict) and "kind" in self.target, "target must be a spec dict with a 'kind'")

    @staticmethod
    def help(name: str) -> str:
        return FIELDS[name].metadata["help"]

    def replace(self, **changes) -> "EvolveConfig":
        return dataclasses.replace(self, **changes)

    def resolved(self, dim: int, reduced_dim: int | None = None) -> "EvolveConfig":
        """This config with every auto field (None) filled in for dimension ``dim``.

        ``reduced_dim``: the number of inputs of a network that sees the points only through fewer
        coordinates (the rotation-aware network: |R| + 1).  Its width and sketch rank then follow
        ``auto_sizes(reduced_dim)`` (the NTK of a function of |R| + 1 variables has the rank of one),
        while N and the fit points follow ``dim`` (the points still sample ρ_t in d dimensions).
        Measured on funnel-10 (|R| + 1 = 2, seed 0, T = 3): width 64 and n = 256 gave log Ẑ −0.008 ±
        0.042 and a weighted std of x0 2.89 (exact 0, 3) in 4 min 26 s, where width 64 and n = N = 1024
        gave −0.011 ± 0.051 in 11 min (seed 1 fails at n = 256 and n = 512 alike: the evolution, not
        the sketch)."""
        auto = auto_sizes(dim)
        reduced = reduced_dim is not None and int(reduced_dim) < int(dim)
        if reduced:
            small = auto_sizes(reduced_dim)
            auto["width"], auto["sketch_rank"] = small["width"], small["sketch_rank"]
        changes = {k: v for k, v in auto.items() if getattr(self, k) is None}
        n = changes.get("n_points", self.n_points)
        if "fit_points" in changes:
            changes["fit_points"] = max(changes["fit_points"], n)
        if "sketch_rank" in changes:
            changes["sketch_rank"] = (min(auto_sketch_rank(n, reduced_dim), changes["sketch_rank"]) if reduced
                                      else auto_sketch_rank(n, dim))
        return self.replace(**changes) if changes else self

    @property
    def is_resolved(self) -> bool:
        return all(getattr(self, k) is not None for k in AUTO_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvolveConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a JSON object, got {type(d).__name__}")
        unknown = set(d) - set(FIELDS)
        if unknown:
            raise ConfigError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(EvolveConfig)}
AUTO_FIELDS = tuple(n for n, f in FIELDS.items() if f.metadata["auto"])


def _check(ok: bool, msg: str):
    if not ok:
        raise ConfigError(msg)


def _validate(f: dataclasses.Field, value):
    meta, name = f.metadata, f.name
    if value is None and (meta["auto"] or name == "diffuse"):
        return
    if meta["choices"] is not None:
        _check(value in meta["choices"], f"{name} must be one of {meta['choices']}, got {value!r}")
    if meta["bounds"] is not None:
        lo, hi = meta["bounds"]
        integer = isinstance(lo, int) and isinstance(hi, int)
        if integer:
            _check(isinstance(value, (int,)) and not isinstance(value, bool),
                   f"{name} must be an integer, got {value!r}")
        else:
            _check(isinstance(value, (int, float)) and not isinstance(value, bool),
                   f"{name} must be a number, got {value!r}")
            _check(math.isfinite(value), f"{name} must be finite, got {value}")
        ilo, ihi = meta["inclusive"]
        ok = (value >= lo if ilo else value > lo) and (value <= hi if ihi else value < hi)
        _check(ok, f"{name} must be in {'[' if ilo else '('}{lo:g}, {hi:g}{']' if ihi else ')'}, got {value}")


DEFAULTS = EvolveConfig()


#: Hidden units per coordinate of a block in the block network (``block_width``).
BLOCK_UNITS_PER_COORDINATE = 32
#: Components J of the scale-mixture network (``network='scale-mixture'``).
MIXTURE_COMPONENTS = 8


def block_width(width: int, blocks) -> int:
    """The hidden width of each block's MLP in the block network (``network='blocks'``, coordinate
    ``blocks``): 32 per coordinate of the largest block, at most ``width``.  Measured on many-well (one-
    coordinate blocks, ``benchmarks/highdim.py``): with 16 units d = 8 was as accurate (log Ẑ
    −0.0001 ± 0.0016) but d = 32 ended ``warning`` (max energy error 0.81: the blocks' errors add
    up); with 32 units its max energy error was 0.12 (README, "Hard targets")."""
    return min(int(width), BLOCK_UNITS_PER_COORDINATE * max(len(b) for b in blocks))


def num_params(dim: int, width: int, depth: int, blocks=None, radial=None, mixture: bool = False) -> int:
    """p, the parameters of the energy MLP d → width (×depth) → 1 (weights and biases), of
    the block network with ``blocks`` (``width`` per block; inputs padded to the largest block), or
    of the rotation-aware network with ``radial = (rest, group)`` (two MLPs of |R| + 2 and |R|
    inputs, the linear term c of the scale and the |R| confinement exponents; with ``mixture``
    the scale mixture: one MLP of |R| inputs with 1 + 2J outputs, J = MIXTURE_COMPONENTS, the J × |R|
    linear log-variance terms, J biases and the |R| confinement exponents)."""
    w = int(width)
    if radial is not None and mixture:
        r, j = len(radial[0]), MIXTURE_COMPONENTS
        return num_params(r, w, depth) + 2 * j * (w + 1) + j * r + j + r
    if radial is not None:
        r = len(radial[0])
        return num_params(r + 2, w, depth) + num_params(r, w, depth) + 2 * r
    if blocks is not None:
        s = max(len(b) for b in blocks)
        return len(blocks) * (s * w + w + (int(depth) - 1) * (w * w + w) + w) + 1
    return int(dim) * w + w + (int(depth) - 1) * (w * w + w) + w + 1


def resource_estimate(config: EvolveConfig, dim: int, blocks=None, radial=None,
                      mixture: bool = False) -> dict[str, float]:
    """Rough peak memory (bytes) and relative cost of a run, and whether it is feasible here.

    Memory is dominated by the Jacobians: N × p during the evolution (plus the Laplacian's d
    Hessian-vector products and the solver's copies, ~3×) and fit_points × p during the
    Gauss–Newton fit.  Returns {'num_params', 'jacobian_entries', 'fit_entries', 'bytes',
    'feasible' (bool), 'reason' (str)}.  ``blocks``: the coordinate blocks of a block network;
    ``radial``: (rest, group) of the rotation-aware network.
    """
    cfg = config.resolved(dim)
    p = (num_params(dim, block_width(cfg.width, blocks), cfg.depth, blocks) if blocks is not None
         else num_params(dim, cfg.width, cfg.depth, radial=radial, mixture=mixture))
    item = 8 if cfg.precision == "float64" else 4
    jac = cfg.n_points * p
    fit = max(cfg.fit_points, cfg.n_points) * p
    nbytes = item * max(3 * jac, fit) + item * cfg.n_points * max(dim, 1) * cfg.width * cfg.depth * 4
    reasons = []
    if jac > MAX_JACOBIAN_ENTRIES:
        reasons.append(f"N × p = {cfg.n_points} × {p} Jacobian entries ({jac * item / 2**30:.1f} GiB) would exhaust "
                       f"memory (limit {MAX_JACOBIAN_ENTRIES:.1e} entries); reduce n_points, width or depth")
    if fit > MAX_FIT_ENTRIES:
        reasons.append(f"fit_points × p = {cfg.fit_points} × {p} ({fit * item / 2**30:.1f} GiB) would exhaust "
                       f"memory (limit {MAX_FIT_ENTRIES:.1e} entries); reduce fit_points, width or depth")
    if nbytes > MEMORY_BUDGET_BYTES and not reasons:
        reasons.append(f"the run would exhaust memory: about {nbytes / 1e9:.1f} GB, over the budget of "
                       f"{MEMORY_BUDGET_BYTES / 1e9:.0f} GB; reduce n_points, width or fit_points")
    return {"num_params": p, "jacobian_entries": jac, "fit_entries": fit, "bytes": float(nbytes),
            "feasible": not reasons, "reason": "; ".join(reasons)}


def check_resources(config: EvolveConfig, dim: int, blocks=None, radial=None, mixture: bool = False) -> None:
    """Raise ConfigError with the estimate if ``config`` would exhaust memory for dimension ``dim``."""
    est = resource_estimate(config, dim, blocks, radial, mixture)
    if not est["feasible"]:
        raise ConfigError(est["reason"])


def diffusion_mask(diffuse, dim: int) -> tuple | None:
    """The 0/1 mask of diffusing coordinates as a tuple of floats, or None when all diffuse."""
    if diffuse is None:
        return None
    bad = [i for i in diffuse if not 0 <= int(i) < dim]
    if bad:
        raise ConfigError(f"diffuse must list coordinates in [0, {dim}), got {list(diffuse)}")
    return tuple(1.0 if i in diffuse else 0.0 for i in range(dim))


def parse_coordinates(text: str | None, what: str = "diffuse") -> tuple | None:
    """'0, 2,3' → (0, 2, 3); empty or None → None (ConfigError on malformed input)."""
    if text is None or not str(text).strip():
        return None
    try:
        return tuple(int(s) for s in str(text).replace(" ", "").split(",") if s != "")
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None


__all__ = ["EvolveConfig", "ConfigError", "FIELDS", "AUTO_FIELDS", "DEFAULTS", "auto_sizes", "auto_sketch_rank", "score_fit_active", "SCORE_FITS", "SCORE_FIT_DIM", "SCORE_FIT_WEIGHT",
           "setting", "WIDE_HEADROOM", "GAP_HEADROOM",
           "num_params", "block_width", "resource_estimate", "check_resources", "diffusion_mask", "parse_coordinates",
           "SOLVERS", "INTEGRATORS", "CLOCKS", "INITS", "PRECISIONS", "SKETCH_KINDS", "ACTIVATIONS", "NETWORKS", "STANDARDIZE"]


# ---------------------------------------------------------------------- the data-free start's key
#: The config fields that the data-free start and the initial fit depend on (read off
#: ``Evolution.data_free_start``): the target; the seed (start points, network init, sketch and
#: error keys); the start method and its sizes (init, n_points, fit_points, fit_steps, gn_steps,
#: mala_steps); the network (width, depth, activation, network), the coordinates (standardize) and the precision.  Not among them: T, rtol,
#: atol, reg, solver, sketch_rank, sketch_kind, integrator, clock and max_steps (used only after the
#: start), and diffuse (the diffusion mask enters the operator of the evolution, not the start).
START_FIELDS = ("target", "seed", "init", "n_points", "fit_points", "fit_steps", "gn_steps", "mala_steps",
                "wide_headroom", "width", "depth", "activation", "network", "standardize", "precision", "fit_scores")


def start_key(config: EvolveConfig) -> str:
    """A string that is equal for two configs exactly when their START_FIELDS agree: two runs with
    the same key can share one data-free start (compare keys of *resolved* configs, as
    ``Evolution.config`` is, so that auto sizes count by their value)."""
    return json.dumps({name: getattr(config, name) for name in START_FIELDS}, sort_keys=True,
                      separators=(",", ":"), default=str)


__all__ += ["START_FIELDS", "start_key"]
