"""UI-free settings of the dashboard: one :class:`param.Parameterized` that widgets, the URL
and tests drive, and that converts to a :class:`mne_core.EvolveConfig`.

Every parameter here is a setting of a run (seed included) or of its display, so
``pn.state.location.sync(settings)`` puts a reproducible run into the URL.  Presets are kept
as data in ``presets.json`` and applied by :meth:`Settings.apply_preset`.
"""
from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any

import param

#: Named targets of the engine (falls back to the documented list if the engine is older).
try:  # pragma: no cover - depends on the engine version
    from mne_core import NAMED_TARGETS as _NAMED

    NAMED_TARGET_NAMES = list(_NAMED)
except Exception:  # pragma: no cover
    NAMED_TARGET_NAMES = ["two-modes", "ring", "banana", "double-well", "funnel", "many-well"]

#: Named targets whose dimension is configurable (the spec then carries ``dim``).
DIM_CONFIGURABLE = ("funnel", "many-well", "gaussian")

#: Largest Jacobian (N × p entries) the app lets one run allocate.
MAX_JACOBIAN_ENTRIES = 64_000_000

SPEEDS = {"slow": 0.5, "normal": 0.08, "fast": 0.02, "max": 0.0}  # seconds between steps


def load_presets() -> dict:
    """The preset library (``app/presets.json``): ``{"default", "presets", "compare"}``."""
    text = resources.files("app").joinpath("presets.json").read_text(encoding="utf-8")
    return json.loads(text)


PRESETS = load_presets()
PRESET_NAMES = list(PRESETS["presets"])
DEFAULT_PRESET = PRESETS["default"]


class Settings(param.Parameterized):
    """Every setting of one MNE run and of its display.

    Run settings have the names of :class:`mne_core.EvolveConfig`; the target is given by
    ``target_kind`` (``named`` | ``energy`` | ``gaussian_mixture``) and ``target_name`` /
    ``expression`` + ``dim`` / ``mixture`` (a JSON spec).
    """

    preset = param.Selector(default=DEFAULT_PRESET, objects=PRESET_NAMES,
                            doc="Named preset (from presets.json); choosing one sets the run settings.")

    # --- target ------------------------------------------------------------------------
    target_kind = param.Selector(default="named", objects=["named", "energy", "gaussian_mixture"],
                                 doc="How the target is given: a named target, an energy expression, or a JSON mixture.")
    target_name = param.Selector(default="two-modes", objects=NAMED_TARGET_NAMES, doc="Named target.")
    expression = param.String(default="(x0**2 - 4)**2/4 + x1**2/2",
                              doc="Energy U₀(x) in x0 … x{d-1}: + - * / ** exp log sqrt sin cos tanh abs logaddexp pi.")
    mixture = param.String(default="", doc="Gaussian-mixture spec as JSON (weights, means, covariances).")
    dim = param.Integer(default=2, bounds=(1, 64), doc="Dimension d (energy expressions, funnel, many-well).")
    proj_x = param.Integer(default=0, bounds=(0, 63), doc="Coordinate on the horizontal axis when d > 2.")
    proj_y = param.Integer(default=1, bounds=(0, 63), doc="Coordinate on the vertical axis when d > 2.")

    # --- method ------------------------------------------------------------------------
    solver = param.Selector(default="sketch", objects=["sketch", "full", "galerkin", "subspace"],
                            doc="Parameter-velocity solver.")
    sketch_kind = param.Selector(default="sparse", objects=["sparse", "gaussian"],
                                 doc="Sketch Ω: sparse (one ±1 per row) or dense Gaussian.")
    sketch_rank = param.Integer(default=256, bounds=(1, 8192), softbounds=(1, 1024),
                                doc="Sketch rank n (columns of the random sketch Ω).")
    reg = param.Number(default=1e-8, bounds=(0, 1), inclusive_bounds=(True, False),
                       doc="Relative regularization λ of the Gram solve.")
    integrator = param.Selector(default="tsit5", objects=["tsit5", "dopri5", "dopri8"], doc="ODE integrator.")
    rtol = param.Number(default=1e-4, bounds=(0, 1), inclusive_bounds=(False, False), doc="Relative tolerance.")
    atol = param.Number(default=1e-6, bounds=(0, 1), inclusive_bounds=(False, False), doc="Absolute tolerance.")
    n_points = param.Integer(default=512, bounds=(8, 16384), softbounds=(8, 4096),
                             doc="Number N of collocation points.")
    width = param.Integer(default=64, bounds=(1, 1024), softbounds=(4, 256), doc="Network width.")
    depth = param.Integer(default=2, bounds=(1, 8), doc="Network depth (hidden layers).")
    activation = param.Selector(default="tanh", objects=["tanh", "gelu", "silu", "softplus", "sin"],
                                doc="Activation of the energy network.")
    T = param.Number(default=4.0, bounds=(0, 100), inclusive_bounds=(False, True), softbounds=(0.1, 10),
                     doc="Final time of the OU evolution.")
    seed = param.Integer(default=0, bounds=(0, 2**31 - 1), doc="Random seed (network init, points, sketch).")
    precision = param.Selector(default="float64", objects=["float64", "float32"], doc="Floating-point precision.")

    # --- advanced (data-free start, limits) ---------------------------------------------
    init = param.Selector(default="mala", objects=["mala", "exact"],
                          doc="Initial points: data-free MALA (default) or exact samples (diagnostic).")
    fit_points = param.Integer(default=2048, bounds=(1, 65536), doc="Points of the initial fit.")
    fit_steps = param.Integer(default=1500, bounds=(0, 100000), doc="Adam steps of the initial fit.")
    gn_steps = param.Integer(default=30, bounds=(0, 1000), doc="Gauss–Newton steps of the initial fit.")
    mala_steps = param.Integer(default=30, bounds=(0, 10000), doc="MALA steps per tempering stage.")
    max_steps = param.Integer(default=5000, bounds=(1, 10**6), doc="Cap on integrator steps.")
    diffuse = param.String(default="", doc="Coordinates that diffuse, comma-separated (partial diffusion); "
                                           "empty = all.")

    # --- display -------------------------------------------------------------------------
    speed = param.Selector(default="max", objects=list(SPEEDS), doc="Playback speed of the live run.")
    autorun = param.Boolean(default=True, doc="Run the settings as soon as the page opens.")

    #: parameters that belong to a preset / a run (everything but display settings)
    RUN_PARAMS = ("target_kind", "target_name", "expression", "mixture", "dim", "solver", "sketch_kind", "sketch_rank",
                  "reg", "integrator", "rtol", "atol", "n_points", "width", "depth", "activation", "T",
                  "seed", "precision", "init", "fit_points", "fit_steps", "gn_steps", "mala_steps",
                  "max_steps", "diffuse")
    #: parameters put in the URL
    URL_PARAMS = ("preset",) + RUN_PARAMS + ("proj_x", "proj_y", "speed", "autorun")

    def __init__(self, **params):
        preset = params.get("preset", self.param.preset.default)
        base = self.preset_values(preset)
        base.update(params)
        super().__init__(**base)
        self.param.watch(self._on_preset_batch, ["preset"] + [p for p in self.RUN_PARAMS])

    # --- presets ---------------------------------------------------------------------------
    @classmethod
    def preset_values(cls, name: str) -> dict[str, Any]:
        """Run settings of preset ``name``: the defaults, overridden by the preset's entries."""
        if name not in PRESETS["presets"]:
            raise ValueError(f"unknown preset {name!r}; choose one of {PRESET_NAMES}")
        values = {p: cls.param[p].default for p in cls.RUN_PARAMS}
        values.update(PRESETS["presets"][name]["settings"])
        values["preset"] = name
        return values

    def apply_preset(self, name: str) -> None:
        """Set every run setting to preset ``name``."""
        self.param.update(**self.preset_values(name))

    def _on_preset_batch(self, *events):
        # A change of `preset` resets the run settings to the preset; run settings changed in
        # the same batch (a URL such as ?preset=funnel&seed=3) are re-applied on top of it.
        names = {e.name: e.new for e in events}
        if "preset" not in names:
            return
        values = self.preset_values(names.pop("preset"))
        values.update(names)
        values.pop("preset")
        self.param.update(**{k: v for k, v in values.items() if getattr(self, k) != v})

    @property
    def teach(self) -> str:
        p = PRESETS["presets"].get(self.preset, {})
        return f"**{p.get('title', self.preset)}.** {p.get('teach', '')}"

    # --- conversion ---------------------------------------------------------------------
    def target_spec(self) -> dict[str, Any]:
        """The engine's target spec dict for the current target settings (raises ValueError on bad JSON)."""
        if self.target_kind == "named":
            spec: dict[str, Any] = {"kind": "named", "name": self.target_name}
            if self.target_name in DIM_CONFIGURABLE:
                spec["dim"] = int(self.dim)
            return spec
        if self.target_kind == "energy":
            return {"kind": "energy", "expression": self.expression, "dim": int(self.dim)}
        try:
            spec = json.loads(self.mixture) if self.mixture.strip() else None
        except json.JSONDecodeError as err:
            raise ValueError(f"mixture JSON is malformed: {err}") from None
        if not isinstance(spec, dict):
            raise ValueError("mixture JSON must be an object with weights, means and covariances")
        spec.setdefault("kind", "gaussian_mixture")
        return spec

    def problems(self) -> list[str]:
        """Settings the engine would accept but that cannot work here (NaN, memory); empty if fine."""
        out = []
        for p in ("reg", "rtol", "atol", "T"):
            v = getattr(self, p)
            if not math.isfinite(v):
                out.append(f"{p} must be a finite number, got {v}")
        p_params = self.num_params()
        entries = self.n_points * p_params
        if entries > MAX_JACOBIAN_ENTRIES:
            gib = entries * (8 if self.precision == "float64" else 4) / 2**30
            out.append(f"N × p = {self.n_points} × {p_params} Jacobian entries ({gib:.1f} GiB) would exhaust "
                       f"memory; reduce n_points, width or depth (limit {MAX_JACOBIAN_ENTRIES:.1e} entries)")
        if self.fit_points * p_params > 4 * MAX_JACOBIAN_ENTRIES:
            out.append(f"fit_points × p = {self.fit_points} × {p_params} is too large for this machine")
        return out

    def num_params(self, dim: int | None = None) -> int:
        """p, the number of network parameters (weights and biases) for these sizes."""
        d = dim or (self.dim if self.target_kind != "named" or self.target_name in DIM_CONFIGURABLE else 2)
        w = self.width
        return d * w + w + (self.depth - 1) * (w * w + w) + w + 1

    def to_config(self):
        """The :class:`mne_core.EvolveConfig` of these settings (raises ConfigError/ValueError with a clear message)."""
        from mne_core import ConfigError, EvolveConfig

        issues = self.problems()
        if issues:
            raise ConfigError("; ".join(issues))
        run = {p: getattr(self, p) for p in self.RUN_PARAMS
               if p not in ("target_kind", "target_name", "expression", "mixture", "dim", "diffuse")}
        if self.diffuse.strip():
            try:
                run["diffuse"] = tuple(int(i) for i in self.diffuse.replace(" ", "").split(",") if i)
            except ValueError:
                raise ConfigError(f"diffuse must be comma-separated coordinate indices, got {self.diffuse!r}") from None
        fields = set(EvolveConfig.__dataclass_fields__)
        return EvolveConfig(target=self.target_spec(), **{k: v for k, v in run.items() if k in fields})

    def run_values(self) -> dict[str, Any]:
        """The run settings as a plain dict (what a pinned run remembers)."""
        return {p: getattr(self, p) for p in self.RUN_PARAMS}

    def url_query(self) -> str:
        """The URL query string that reproduces these settings."""
        from urllib.parse import urlencode

        out = {}
        for p in self.URL_PARAMS:
            v = self.param[p].serialize(getattr(self, p))
            out[p] = v if isinstance(v, str) else json.dumps(v)
        return urlencode(out)


def _sync_defaults_with_engine():
    """Run-setting defaults are the engine's (EvolveConfig): a user who changes nothing gets
    the engine's accurate, tested preset."""
    try:
        from mne_core import EvolveConfig
    except Exception:  # pragma: no cover
        return
    default = EvolveConfig()
    for name in Settings.RUN_PARAMS:
        if name in EvolveConfig.__dataclass_fields__:
            value = getattr(default, name)
            p = Settings.param[name]
            if name == "diffuse":
                continue
            if isinstance(p, param.Selector) and value not in p.objects:
                p.objects = list(p.objects) + [value]
            p.default = value


_sync_defaults_with_engine()
