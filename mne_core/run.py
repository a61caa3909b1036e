"""A recorded MNE run: θ(t) on the integrator's accepted steps, evaluable at any t.

Between recorded times t_k < t < t_{k+1} the parameters are the cubic Hermite
interpolant of (θ_k, θ̇_k) and (θ_{k+1}, θ̇_{k+1}) (θ̇ = the MNE parameter velocity), so

    U(t, x) = U_{θ(t)}(x),     score(t, x) = ∇ log ρ_t(x) = −∇_x U_{θ(t)}(x)

are available on all of [0, T] to fourth order in the step size.  A directory written by
:meth:`Run.save` holds ``config.json`` (reproduces the run), ``trajectory.npz``,
``diagnostics.json`` and ``summary.json``; :func:`load_run` reads it back.
"""
from __future__ import annotations

import bisect
import functools
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .config import ConfigError, EvolveConfig, block_width, resource_estimate
from .network import FlatEnergy, init_energy_network
from .runtime import ensure_x64
from .status import Reason, Status, Verdict
from .structure import network_blocks, network_mixture, network_radial, resolve_config
from .targets import Target, target_from_spec

FORMAT_VERSION = 1


@functools.lru_cache(maxsize=32)
def shared_network(dim: int, width: int, depth: int, activation: str, dtype_name: str,
                   blocks: tuple | None = None, radial: tuple | None = None, mixture: bool = False) -> FlatEnergy:
    """One FlatEnergy per architecture and process, so compiled functions keyed on it are reused
    (``blocks``: a block-sum network with ``width`` per block; ``radial``: (rest, group) of the
    rotation-aware network, the scale mixture with ``mixture``; :mod:`mne_core.structure`)."""
    net, _ = init_energy_network(dim, width, depth, activation, dtype=jnp.dtype(dtype_name), blocks=blocks,
                                 radial=radial, mixture=mixture)
    return net


def network_shape(config: EvolveConfig, target: Target) -> tuple[int, tuple | None, tuple | None, bool]:
    """(hidden width, blocks, radial, mixture) of the energy network of a resolved ``config`` for
    ``target``: (width, None, None, False) for the MLP, (:func:`~mne_core.config.block_width`, the
    energy's blocks, None, False) for ``network='blocks'``, (width, None, (rest, group), False) for
    ``network='radial'`` and (width, None, (rest, group), True) for ``'scale-mixture'`` (``'auto'`` is
    decided by :func:`~mne_core.structure.resolve_network`)."""
    blocks = network_blocks(config, target)
    if blocks is not None:
        return block_width(config.width, blocks), blocks, None, False
    return config.width, None, network_radial(config, target), network_mixture(config, target)


def run_resources(config: EvolveConfig, target: Target) -> dict:
    """:func:`~mne_core.config.resource_estimate` of ``config`` for ``target`` with the network
    the run would build (``network='auto'`` resolved, so a block network counts its own
    parameters): {'num_params', 'bytes', 'feasible', 'reason', …}."""
    config = resolve_config(config, target)
    _, blocks, radial, mixture = network_shape(config, target)
    return resource_estimate(config, target.dim, blocks, radial, mixture)


def network_for(config: EvolveConfig, target: Target) -> FlatEnergy:
    width, blocks, radial, mixture = network_shape(config, target)
    return shared_network(target.dim, width, config.depth, config.activation, config.precision, blocks, radial,
                          mixture)


def hermite_basis(s):
    """The cubic Hermite basis (h00, h10, h01, h11) at s ∈ [0, 1] (floats or arrays)."""
    return 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2


def hermite_theta(times, thetas, theta_dots, t, n=None):
    """Cubic Hermite interpolation of θ(t) from (t_k, θ_k, θ̇_k), k < n; jittable.

    On [t_k, t_{k+1}] with h = t_{k+1} − t_k and s = (t − t_k)/h:
    θ(t) = h00(s) θ_k + h10(s) h θ̇_k + h01(s) θ_{k+1} + h11(s) h θ̇_{k+1}.
    ``t`` is clipped to [t_0, t_{n−1}].  ``n`` (may be traced; default all rows) allows padded
    arrays: rows ≥ n are ignored, so runs with different step counts share one compilation.
    """
    times = jnp.asarray(times)
    n = times.shape[0] if n is None else n
    t = jnp.clip(t, times[0], times[n - 1])
    k = jnp.clip(jnp.searchsorted(times, t, side="right") - 1, 0, jnp.maximum(n - 2, 0))
    k1 = jnp.minimum(k + 1, times.shape[0] - 1)
    h = times[k1] - times[k]
    safe_h = jnp.where(h > 0, h, 1.0)
    s = jnp.where(h > 0, (t - times[k]) / safe_h, 0.0)
    h00, h10, h01, h11 = hermite_basis(s)
    return h00 * thetas[k] + h10 * h * theta_dots[k] + h01 * thetas[k1] + h11 * h * theta_dots[k1]


@functools.lru_cache(maxsize=32)
def run_functions(net: FlatEnergy):
    """Jitted U_θ(x) and −∇_x U_θ(x) over batches, once per network structure."""
    energy = jax.jit(lambda th, xs: net.energies(th, xs))
    score = jax.jit(lambda th, xs: -jax.vmap(jax.grad(net.energy, argnums=1), (None, 0))(th, xs))
    return energy, score


@functools.lru_cache(maxsize=8)
def _spectrum_function(net: FlatEnergy):
    from .ntk import ntk_spectrum

    return jax.jit(functools.partial(ntk_spectrum, net))


class Run:
    """Everything recorded of one evolution (see module doc)."""

    def __init__(self, config: EvolveConfig, target: Target | None = None, net: FlatEnergy | None = None):
        self.target = target if target is not None else target_from_spec(config.target)
        self.config = resolve_config(config, self.target)
        if self.config.precision == "float64":
            ensure_x64()
        self.net = net if net is not None else network_for(self.config, self.target)
        self._t: list[float] = []
        self._theta: list[np.ndarray] = []
        self._theta_dot: list[np.ndarray] = []
        self._points: list[np.ndarray] = []
        self._diag: dict[str, list] = {k: [] for k in ("t", "dt", "residual", "num_rejected", "energy_error", "reg",
                                                                "rhs_rms")}
        self.verdict = Verdict(Status.RUNNING)
        self.fit_info: dict = {}
        self.wall_seconds: float | None = None
        self.reg_escalations: list = []
        self.point_refinements: list = []
        #: refreshes of the collocation points during the evolution (Evolution: config.refresh)
        self.point_refreshes: dict = {"count": 0}
        #: Notes for the user that do not change the status (e.g. mixture weights renormalized).
        self.warnings: list[str] = []
        self._jit_energy, self._jit_score = run_functions(self.net)

    # -------------------------------------------------------------- status
    @property
    def status(self) -> Status:
        return self.verdict.status

    @property
    def message(self) -> str:
        return self.verdict.message

    def set_verdict(self, verdict: Verdict) -> None:
        self.verdict = verdict

    # -------------------------------------------------------------- recording
    def append(self, t, theta, theta_dot, points, **diag):
        self._t.append(float(t))
        self._theta.append(np.asarray(theta))
        self._theta_dot.append(np.asarray(theta_dot))
        self._points.append(np.asarray(points))
        for k in self._diag:
            v = diag.get(k, t if k == "t" else None)
            self._diag[k].append(np.nan if v is None else float(v))

    # -------------------------------------------------------------- views
    @property
    def times(self) -> np.ndarray:
        return np.asarray(self._t)

    @property
    def thetas(self) -> np.ndarray:
        return np.stack(self._theta) if self._theta else np.zeros((0, self.net.num_params))

    @property
    def theta_dots(self) -> np.ndarray:
        return np.stack(self._theta_dot) if self._theta_dot else np.zeros((0, self.net.num_params))

    @property
    def points(self) -> np.ndarray:
        return np.stack(self._points) if self._points else np.zeros((0, 0, self.target.dim))

    @property
    def diagnostics(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self._diag.items()}

    @property
    def T(self) -> float:
        return float(self._t[-1]) if self._t else 0.0

    def theta(self, t: float) -> np.ndarray:
        """θ(t) by cubic Hermite interpolation on the recorded steps."""
        if not self._t:
            raise ValueError("the run has no recorded state yet")
        # the formula of :func:`hermite_theta` (equal to rounding), on the host and on the two
        # rows it needs, in the dtype of the recorded θ: no stacking of the whole trajectory and
        # no device dispatch (the dashboard's worker calls this after every step)
        times = self._t
        n = len(times)
        t = min(max(float(t), times[0]), times[-1])
        k = min(max(bisect.bisect_right(times, t) - 1, 0), max(n - 2, 0))
        k1 = min(k + 1, n - 1)
        h = times[k1] - times[k]
        s = (t - times[k]) / h if h > 0 else 0.0
        h00, h10, h01, h11 = hermite_basis(s)
        return (h00 * self._theta[k] + (h10 * h) * self._theta_dot[k] + h01 * self._theta[k1]
                + (h11 * h) * self._theta_dot[k1])

    def _check_x(self, x):
        x = np.asarray(x)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.target.dim:
            raise ValueError(f"x must have shape (M, {self.target.dim}), got {np.shape(x)}")
        return jnp.asarray(x, self.thetas.dtype)

    def energy(self, t: float, x) -> np.ndarray:
        """U(t, x) = U_{θ(t)}(x) for x of shape (M, d) → (M,)  (unnormalized; −log ρ_t up to a constant)."""
        return np.asarray(self._jit_energy(jnp.asarray(self.theta(t)), self._check_x(x)))

    def score(self, t: float, x) -> np.ndarray:
        """∇_x log ρ_t(x) = −∇_x U_{θ(t)}(x) for x of shape (M, d) → (M, d)."""
        return np.asarray(self._jit_score(jnp.asarray(self.theta(t)), self._check_x(x)))

    def ntk_spectrum(self, t: float) -> tuple[float, np.ndarray]:
        """``(t_k, eig)``: the eigenvalues (descending) of the full N×N neural tangent kernel
        K = J Jᵀ, J = ∂U_θ(X)/∂θ, at the recorded step t_k nearest to t (θ(t_k) and the
        collocation points X_{t_k}) — see :func:`mne_core.ntk.ntk_spectrum`."""
        if not self._t:
            raise ValueError("the run has no recorded state yet")
        k = int(np.argmin(np.abs(self.times - float(t))))
        fn = _spectrum_function(self.net)
        eig = fn(jnp.asarray(self._theta[k]), jnp.asarray(self._points[k], self._theta[k].dtype))
        return float(self._t[k]), np.asarray(eig)

    def summary(self) -> dict:
        d = self.diagnostics
        err = d["energy_error"]
        return {
            "status": self.status.value,
            "status_message": self.message,
            "reasons": self.verdict.to_dict()["reasons"],
            "target": self.target.name,
            "dim": self.target.dim,
            "standardized": self.target.standardization is not None,
            "T_reached": self.T,
            "T": self.config.T,
            "num_accepted_steps": int(len(self._t) - 1) if self._t else 0,
            "num_rejected_steps": int(d["num_rejected"][-1]) if len(d["num_rejected"]) else 0,
            "max_residual": float(np.nanmax(d["residual"])) if len(d["residual"]) else None,
            "max_energy_error": float(np.nanmax(err)) if len(err) and np.isfinite(err).any() else None,
            "energy_error_at_T": float(err[-1]) if len(err) and np.isfinite(err[-1]) else None,
            "num_params": self.net.num_params,
            "n_points": self.config.n_points,
            "fit": self.fit_info,
            "reg_escalations": self.reg_escalations,
            "point_refinements": self.point_refinements,
            "point_refreshes": self.point_refreshes,
            "wall_seconds": self.wall_seconds,
            "warnings": list(self.warnings),
        }

    # -------------------------------------------------------------- persistence
    def save(self, directory, *, overwrite: bool = False) -> Path:
        """Write config.json, trajectory.npz, diagnostics.json and summary.json to ``directory``.

        Atomic: the files are written to a temporary directory beside it, which then replaces
        ``directory`` by a rename, so a crash never leaves half a run.  An existing non-empty
        ``directory`` is refused (FileExistsError) unless ``overwrite``, and then only if it
        is itself a saved run (never an unrelated folder)."""
        out = Path(directory)
        check_output_dir(out, overwrite=overwrite)
        tmp = staging_directory(out)
        try:
            (tmp / "config.json").write_text(self.config.to_json())
            np.savez_compressed(tmp / "trajectory.npz", times=self.times, thetas=self.thetas,
                                theta_dots=self.theta_dots, points=self.points)
            diag = {k: [None if not np.isfinite(v) else v for v in vals] for k, vals in self.diagnostics.items()}
            (tmp / "diagnostics.json").write_text(json.dumps(diag))
            summ = dict(self.summary(), format_version=FORMAT_VERSION, config_sha256=_config_hash(self.config))
            (tmp / "summary.json").write_text(json.dumps(summ, indent=2, default=_json_default))
            replace_directory(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return out


RUN_FILES = ("config.json", "trajectory.npz", "diagnostics.json", "summary.json")


def _config_hash(config: EvolveConfig) -> str:
    """Fingerprint of a (resolved) config, kept in summary.json so that a config.json edited or
    copied from another run is caught on load."""
    return hashlib.sha256(config.to_json().encode()).hexdigest()
#: Files that mark a directory as a previous result of each kind (what ``--force`` may replace);
#: a sample output interrupted before its samples holds only ``run/``.
RESULT_MARKERS = {"run": ("trajectory.npz",), "sample": ("log_weights.npy", "run/trajectory.npz")}


def staging_directory(out) -> Path:
    """A fresh temporary directory beside ``out`` (same file system, so a rename can replace it)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))


def replace_directory(tmp, out) -> Path:
    """Move the finished directory ``tmp`` to ``out`` by renames; an existing ``out`` is moved
    aside first and deleted only once the new one is in place."""
    tmp, out = Path(tmp), Path(out)
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)  # put the previous result back
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out


def _probe_writable(directory: Path) -> str | None:
    """None if a file can really be created in ``directory`` (os.access says yes to root
    even on read-only or virtual file systems), else the OS error."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def check_output_dir(out, *, overwrite: bool = False, kind: str = "run") -> Path:
    """Check before any work that ``out`` can receive a new result (raise with a clear message):
    its parent must be a writable directory, and an existing ``out`` must be an empty
    directory, or (with ``overwrite``) a previous result of the same ``kind``."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise NotADirectoryError(f"cannot write to {out}: {probe} is not a directory")
    why = "no write permission" if not os.access(probe, os.W_OK) else _probe_writable(probe)
    if why is not None and why != "no write permission":
        why = f"creating a file there fails: {why}"
    if why is not None:
        raise PermissionError(f"cannot write to {out}: {probe} is not writable ({why})")
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out} exists and is not a directory; choose another output path")
        if any(out.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{out} already exists and is not empty; choose a new output directory "
                                      "or pass --force to replace it")
            if not any((out / m).is_file() for m in RESULT_MARKERS[kind]):
                raise FileExistsError(f"{out} is not empty and does not hold a previous {kind}; refusing to "
                                      "replace it even with --force")
    return out


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o)}")


class RunFileError(ValueError):
    """A saved run directory is damaged or inconsistent; the message names the file."""


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunFileError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RunFileError(f"{path}: cannot be read ({e})") from None


def load_run(directory) -> Run:
    """Read a run written by :meth:`Run.save`.

    Raises FileNotFoundError when a required file is missing and :class:`RunFileError` (a
    ValueError) naming the file when one is damaged or the files do not belong together
    (trajectory shape against the config's network, summary against the config's target)."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"{d} is not a saved MNE run: the directory does not exist")
    for name in ("config.json", "trajectory.npz"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d} is not a saved MNE run: {name} is missing")
    try:
        raw = _read_json(d / "config.json")
        if isinstance(raw, dict) and "network" not in raw:
            raw = {**raw, "network": "mlp"}    # saved before the block network existed
        config = EvolveConfig.from_dict(raw)
    except (ConfigError, TypeError) as e:
        raise RunFileError(f"{d / 'config.json'}: {e}") from None
    try:
        run = Run(config)
    except (ValueError, TypeError) as e:
        raise RunFileError(f"{d / 'config.json'}: {e}") from None
    try:
        with np.load(d / "trajectory.npz") as z:
            times, thetas, theta_dots, points = z["times"], z["thetas"], z["theta_dots"], z["points"]
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise RunFileError(f"{d / 'trajectory.npz'}: damaged or incomplete ({type(e).__name__}: {e})") from None
    p = run.net.num_params
    if thetas.ndim != 2 or thetas.shape[1] != p or theta_dots.shape != thetas.shape \
            or times.shape != (thetas.shape[0],) or points.shape[0] != thetas.shape[0] \
            or points.shape[1:] != (run.config.n_points, run.target.dim):
        raise RunFileError(f"{d / 'trajectory.npz'}: shapes {thetas.shape} / {points.shape} do not match the "
                           f"config (p = {p}, N = {run.config.n_points}, d = {run.target.dim})")
    if len(times) == 0 or not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        raise RunFileError(f"{d / 'trajectory.npz'}: the recorded times are empty, non-finite or not increasing")
    diag = _read_json(d / "diagnostics.json") if (d / "diagnostics.json").is_file() else {}
    if not isinstance(diag, dict):
        raise RunFileError(f"{d / 'diagnostics.json'}: expected a JSON object")
    try:
        for i, t in enumerate(times):
            extra = {k: (diag[k][i] if k in diag and isinstance(diag[k], list) and i < len(diag[k]) else None)
                     for k in run._diag if k != "t"}
            run.append(t, thetas[i], theta_dots[i], points[i], **extra)
    except (TypeError, ValueError) as e:
        raise RunFileError(f"{d / 'diagnostics.json'}: a value is not a number ({e})") from None
    if (d / "summary.json").is_file():
        s = _read_json(d / "summary.json")
        if not isinstance(s, dict):
            raise RunFileError(f"{d / 'summary.json'}: expected a JSON object")
        if "target" in s and s["target"] != run.target.name:
            raise RunFileError(f"{d / 'summary.json'}: records target {s['target']!r} but config.json describes "
                               f"{run.target.name!r}; the files do not belong to the same run")
        if "config_sha256" in s and s["config_sha256"] != _config_hash(run.config):
            raise RunFileError(f"{d / 'config.json'}: does not match the config this run was saved with (its "
                               f"fingerprint in summary.json differs); the files do not belong to the same run")
        run.set_verdict(_verdict_from_summary(s, d / "summary.json"))
        run.fit_info = s.get("fit", {}) or {}
        run.wall_seconds = s.get("wall_seconds")
        run.reg_escalations = s.get("reg_escalations", []) or []
        run.point_refinements = s.get("point_refinements", []) or []
        run.point_refreshes = s.get("point_refreshes", {"count": 0}) or {"count": 0}
        run.warnings = [str(w) for w in s.get("warnings", []) or [] if isinstance(s.get("warnings"), list)]
    else:
        run.set_verdict(Verdict(Status.OK))
    return run


def _verdict_from_summary(s: dict, path="summary.json") -> Verdict:
    raw = s.get("status", "ok")
    legacy = {"done": "ok"}
    raw = legacy.get(raw, raw)
    if isinstance(raw, str) and raw.startswith("failed"):
        raw = "failed"
    try:
        status = Status(raw)
    except (ValueError, TypeError):
        raise RunFileError(f"{path}: unknown status {raw!r}") from None
    reasons = []
    for r in s.get("reasons", []) or []:
        try:
            reasons.append((Reason[str(r.get("reason", "")).upper()], r.get("detail", "")))
        except (KeyError, AttributeError):
            continue
    return Verdict(status, tuple(reasons))
