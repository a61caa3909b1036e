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

from mne_core.config import DEFAULTS, FIELDS, START_FIELDS, auto_sizes, resource_estimate
from mne_core.targets import NAMED_TARGETS

NAMED_TARGET_NAMES = list(NAMED_TARGETS)
#: Auto sizes of the default (2-D) preset: the app shows concrete numbers on its sliders.
_AUTO_2D = auto_sizes(2)


def config_param(name: str, **extra) -> param.Parameter:
    """The param.Parameter of EvolveConfig field ``name``: default, choices or bounds and help
    come from the field's metadata in ``mne_core/config.py`` (auto sizes: their 2-D value)."""
    meta = FIELDS[name].metadata
    default = getattr(DEFAULTS, name)
    if default is None and meta["auto"]:
        default = _AUTO_2D[name]
    doc = meta["help"]
    if meta["choices"] is not None:
        return param.Selector(default=default, objects=list(meta["choices"]), doc=doc, **extra)
    lo, hi = meta["bounds"]
    if isinstance(lo, int) and isinstance(hi, int):
        return param.Integer(default=default, bounds=(lo, hi), doc=doc, **extra)
    return param.Number(default=default, bounds=(lo, hi), inclusive_bounds=tuple(meta["inclusive"]), doc=doc,
                        **extra)


#: Named targets whose dimension is configurable (the spec then carries ``dim``).
DIM_CONFIGURABLE = ("funnel", "many-well", "gaussian")

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

    # --- method, start and limits: generated from mne_core.config (one source of truth) ---
    solver = config_param("solver")
    sketch_kind = config_param("sketch_kind")
    sketch_rank = config_param("sketch_rank", softbounds=(1, 1024))
    reg = config_param("reg")
    integrator = config_param("integrator")
    clock = config_param("clock")
    rtol = config_param("rtol")
    atol = config_param("atol")
    n_points = config_param("n_points", softbounds=(8, 4096))
    width = config_param("width", softbounds=(4, 256))
    depth = config_param("depth")
    activation = config_param("activation")
    network = config_param("network")
    standardize = config_param("standardize")
    refresh = config_param("refresh")
    fit_scores = config_param("fit_scores")
    T = config_param("T", softbounds=(0.1, 10))
    seed = config_param("seed")
    precision = config_param("precision")
    init = config_param("init")
    fit_points = config_param("fit_points")
    fit_steps = config_param("fit_steps")
    gn_steps = config_param("gn_steps")
    mala_steps = config_param("mala_steps")
    wide_headroom = config_param("wide_headroom")
    max_steps = config_param("max_steps")
    diffuse = param.String(default="", doc=FIELDS["diffuse"].metadata["help"])

    # --- display -------------------------------------------------------------------------
    speed = param.Selector(default="max", objects=list(SPEEDS), doc="Playback speed of the live run.")
    autorun = param.Boolean(default=True, doc="Run the settings as soon as the page opens.")
    present = param.Boolean(default=False, doc="Presentation mode: hide the controls and enlarge the fonts "
                                               "(URL: ?present=1).")
    theme = param.Selector(default="light", objects=["light", "dark"], doc="Colour theme of the page.")
    broadcast = param.Boolean(default=False, doc="Share this page's run with the class: every page open at "
                                                 "/watch follows it (URL: ?broadcast=1).")

    #: parameters that belong to a preset / a run (everything but display settings)
    RUN_PARAMS = ("target_kind", "target_name", "expression", "mixture", "dim", "solver", "sketch_kind", "sketch_rank",
                  "reg", "integrator", "clock", "rtol", "atol", "n_points", "width", "depth", "activation", "network",
                  "standardize", "refresh", "fit_scores", "T", "seed", "precision", "init", "fit_points", "fit_steps", "gn_steps", "mala_steps",
                  "wide_headroom", "max_steps", "diffuse")
    #: parameters put in the URL
    URL_PARAMS = ("preset",) + RUN_PARAMS + ("proj_x", "proj_y", "speed", "autorun", "present", "theme", "broadcast")
    #: settings that define the target (changing one makes a preset's teaching text wrong)
    TARGET_PARAMS = ("target_kind", "target_name", "expression", "mixture", "dim")
    #: run settings that define the data-free start and initial fit: the target and the engine's
    #: ``mne_core.config.START_FIELDS``; the worker reuses the start when only other settings change
    START_PARAMS = TARGET_PARAMS + tuple(f for f in START_FIELDS if f != "target")

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

    # --- what the page says about the settings ----------------------------------------
    def preset_changes(self) -> list[str]:
        """Run settings that differ from the preset's (empty while the preset is unmodified)."""
        base = self.preset_values(self.preset)
        return [p for p in self.RUN_PARAMS if getattr(self, p) != base[p]]

    @property
    def modified(self) -> bool:
        """Whether some run setting differs from the chosen preset."""
        return bool(self.preset_changes())

    @property
    def preset_label(self) -> str:
        """The preset's name, with ``(modified)`` once a run setting differs from it."""
        return f"{self.preset} (modified)" if self.modified else self.preset

    def _preset_text_holds(self) -> bool:
        """The preset's teaching text describes these settings: its target and every setting the
        preset names are unchanged (other changes, e.g. rtol in the default preset, keep it)."""
        named = set(PRESETS["presets"].get(self.preset, {}).get("settings", {})) | set(self.TARGET_PARAMS)
        return not (named & set(self.preset_changes()))

    def describe(self) -> str:
        """A generic description of the current settings (when no preset's text applies)."""
        if self.target_kind == "named":
            target = f"named target *{self.target_name}*"
        elif self.target_kind == "energy":
            target = f"energy `{self.expression}` in d = {self.dim}"
        else:
            target = "a Gaussian mixture from JSON"
        return (f"{target}; {self.solver} solve in a {self.sketch_kind} sketch of rank n = {self.sketch_rank} "
                f"with λ = {self.reg:.0e}, {self.integrator} with rtol = {self.rtol:.0e}, N = {self.n_points} "
                f"collocation points, T = {self.T:g}, seed {self.seed}. MNE fits U_θ(0) ≈ U₀ without data, "
                "then evolves θ along the Ornstein–Uhlenbeck energy equation; a run that ends inaccurate "
                "says so (amber) with the reason.")

    @property
    def teach(self) -> str:
        """The teaching text: the preset's while it describes the settings, else a generic one."""
        p = PRESETS["presets"].get(self.preset, {})
        if self._preset_text_holds():
            suffix = " *(settings modified)*" if self.modified else ""
            return f"**{p.get('title', self.preset)}.**{suffix} {p.get('teach', '')}"
        return f"**Custom settings** (from preset *{self.preset}*, modified): {self.describe()}"

    def start_key(self) -> tuple:
        """The settings that determine the data-free start and initial fit (a cache key)."""
        return tuple((p, getattr(self, p)) for p in self.START_PARAMS)

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
        """Settings the engine would accept but that cannot work here (NaN, memory); empty if fine.
        The memory check is the engine's own :func:`mne_core.config.resource_estimate`."""
        out = []
        for p in ("reg", "rtol", "atol", "T"):
            v = getattr(self, p)
            if not math.isfinite(v):
                out.append(f"{p} must be a finite number, got {v}")
        if out:
            return out
        est = self._resources()
        if est is not None and not est["feasible"]:
            out.append(est["reason"])
        return out

    def _resources(self) -> dict | None:
        """The engine's resource estimate for the network the run would build (a block network on
        a separable target counts its own parameters); None when the settings do not parse."""
        from mne_core import run_resources, target_from_spec

        try:
            cfg = self._raw_config()
        except Exception:
            return None
        try:
            return run_resources(cfg, target_from_spec(self.target_spec()))
        except Exception:       # a target that does not build: the run reports it; size the MLP
            return resource_estimate(cfg, self._dim())

    def _dim(self) -> int:
        if self.target_kind == "named" and self.target_name not in DIM_CONFIGURABLE:
            return 2
        if self.target_kind == "gaussian_mixture":
            try:
                return len(json.loads(self.mixture)["means"][0])
            except Exception:
                return int(self.dim)
        return int(self.dim)

    def num_params(self) -> int | None:
        """p, the number of parameters (weights and biases) of the network these settings build
        (None when they do not parse)."""
        est = self._resources()
        return None if est is None else int(est["num_params"])

    def _raw_config(self):
        from mne_core import EvolveConfig
        from mne_core.config import parse_coordinates

        run = {p: getattr(self, p) for p in self.RUN_PARAMS if p in FIELDS and p not in ("diffuse",)}
        run["diffuse"] = parse_coordinates(self.diffuse)
        return EvolveConfig(target=self.target_spec(), **run)

    def to_config(self):
        """The :class:`mne_core.EvolveConfig` of these settings (raises ConfigError/ValueError with a clear message)."""
        from mne_core import ConfigError

        issues = self.problems()
        if issues:
            raise ConfigError("; ".join(issues))
        return self._raw_config()

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


from mne_core.sampling import METHODS as SAMPLE_METHODS  # noqa: E402  (one source of truth)


class SampleSettings(param.Parameterized):
    """UI-free inputs of the Samples tab (URL-synced with a ``sample_`` prefix, see URL_NAMES)."""

    n_samples = param.Integer(default=2000, bounds=(10, 200_000), doc="Number of samples drawn from the model.")
    seed = param.Integer(default=0, bounds=(0, 2**31 - 1), doc="Random seed of the sampler.")
    method = param.Selector(default="is", objects=list(SAMPLE_METHODS),
                            doc="is: importance weights against the target; smc: sequential Monte Carlo "
                                "along the learned path.")
    conditional = param.Boolean(default=False, doc="Sample z | y = y*: fix one coordinate (the tab evolves the "
                                                   "partial-diffusion run this needs, with a notice).")
    axis = param.Integer(default=1, bounds=(0, 63), doc="The fixed coordinate y (its index).")
    value = param.Number(default=0.0, bounds=(-1e6, 1e6), doc="The value y* of the fixed coordinate.")

    #: parameter -> URL query name
    URL_NAMES = {"n_samples": "sample_n", "seed": "sample_seed", "method": "sample_method",
                 "conditional": "sample_conditional", "axis": "sample_axis", "value": "sample_y"}

    def condition(self, dim: int | None = None) -> dict[int, float] | None:
        """The engine's condition ``{axis: value}``, or None; raises ValueError if the axis is
        not a coordinate of a ``dim``-dimensional target."""
        if not self.conditional:
            return None
        if dim is not None and not 0 <= self.axis < dim:
            raise ValueError(f"coordinate {self.axis} does not exist in d = {dim} (choose 0 … {dim - 1})")
        if not math.isfinite(self.value):
            raise ValueError("the conditioning value must be a finite number")
        return {int(self.axis): float(self.value)}

    def request(self, dim: int | None = None) -> dict[str, Any]:
        """Keyword arguments for :func:`mne_core.sample` (besides the run)."""
        return {"n_samples": int(self.n_samples), "seed": int(self.seed), "method": self.method,
                "condition": self.condition(dim)}

    def url_query(self) -> str:
        from urllib.parse import urlencode

        out = {}
        for p, q in self.URL_NAMES.items():
            v = self.param[p].serialize(getattr(self, p))
            out[q] = v if isinstance(v, str) else json.dumps(v)
        return urlencode(out)
