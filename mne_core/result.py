"""The result of sampling and its verdict: a weighted sample set with its estimates and a status.

A SampleResult carries a :class:`~mne_core.status.Verdict` from :func:`judge`: ``failed`` when the
weights have collapsed (ESS below a few samples, Pareto k̂ > 0.7, a degenerate SMC system) — then
the estimates are withheld (``log_z`` is None in the summary) — ``warning`` with the reasons (low
ESS, k̂ > 0.5, non-finite weights, a run that did not end ok), else ``ok``.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from .status import Reason, Status, Verdict, verdict
from .weights import weight_diagnostics


@dataclasses.dataclass
class SampleResult:
    """Output of :func:`sample`.

    samples / log_weights: the weighted sample set (the flow samples, or after ``resample``
    the resampled set with every log weight = log Ẑ); raw_samples / raw_log_weights / log_q:
    the unweighted flow samples, their importance log weights and exact model log density;
    imh_samples: the independent-MH chain (unweighted).  ``mode_masses`` are weighted
    (nearest-mode cells) with their standard error ``mode_masses_stderr``
    (:func:`~mne_core.diagnostics.mode_mass_stderr`), ``raw_mode_masses`` unweighted,
    ``mode_masses_exact`` the target's.  ``verdict``: ok / warning / failed with reasons; on
    ``failed`` the estimates (log Ẑ, the weighted mode masses) are withheld from the summary.
    """

    samples: np.ndarray
    log_weights: np.ndarray
    raw_samples: np.ndarray
    raw_log_weights: np.ndarray
    log_q: np.ndarray | None
    log_z: float
    log_z_stderr: float
    ess: float
    ess_fraction: float
    imh_samples: np.ndarray | None
    imh_acceptance: float | None
    wall_seconds: float
    flow_seconds: float
    verdict: Verdict = dataclasses.field(default_factory=lambda: Verdict(Status.OK))
    method: str = "is"
    pareto_k: float | None = None
    mode_masses: np.ndarray | None = None
    mode_masses_stderr: np.ndarray | None = None
    raw_mode_masses: np.ndarray | None = None
    imh_mode_masses: np.ndarray | None = None
    mode_masses_exact: np.ndarray | None = None
    log_z_exact: float | None = None
    condition: dict | None = None
    num_steps: int = 0
    num_rejected_steps: int = 0
    n_nonfinite: int = 0
    run_status: str = "ok"
    resampled: bool = False
    model_energy_error: float | None = None
    smc_info: dict | None = None

    @property
    def status(self) -> Status:
        return self.verdict.status

    def summary(self) -> dict:
        trusted = self.verdict.status != Status.FAILED
        s = {
            **self.verdict.to_dict(),
            "method": self.method,
            "n_samples": int(np.shape(self.samples)[0]),
            "dim": int(self.raw_samples.shape[1]),
            "log_z": _finite_or_none(self.log_z) if trusted else None,
            "log_z_stderr": _finite_or_none(self.log_z_stderr) if trusted else None,
            "ess": self.ess,
            "ess_fraction": self.ess_fraction,
            "pareto_k": _finite_or_none(self.pareto_k),
            "imh_acceptance": self.imh_acceptance,
            "wall_seconds": self.wall_seconds,
            "flow_seconds": self.flow_seconds,
            "flow_steps": self.num_steps,
            "flow_rejected_steps": self.num_rejected_steps,
            "n_nonfinite_weights": self.n_nonfinite,
            "resampled": self.resampled,
            "run_status": self.run_status,
            "model_energy_error": self.model_energy_error,
        }
        if not trusted:
            s["log_z_withheld"] = _finite_or_none(self.log_z)
        if self.smc_info is not None:
            s["smc"] = self.smc_info
        if self.condition is not None:
            s["condition"] = {str(k): v for k, v in self.condition.items()}
        if self.log_z_exact is not None:
            s["log_z_exact"] = self.log_z_exact
            s["log_z_error"] = self.log_z - self.log_z_exact if math.isfinite(self.log_z) else None
        for name in ("mode_masses", "mode_masses_stderr", "raw_mode_masses", "imh_mode_masses", "mode_masses_exact"):
            v = getattr(self, name)
            if v is not None:
                s[name] = [float(a) for a in v]
        if not trusted and "mode_masses" in s:     # an estimate from collapsed weights: withheld, like log Ẑ
            s["mode_masses_withheld"] = s.pop("mode_masses")
            s.pop("mode_masses_stderr", None)
        if self.mode_masses is not None and self.mode_masses_exact is not None:
            s["mode_mass_max_error"] = float(np.max(np.abs(self.mode_masses - self.mode_masses_exact)))
        return s


def _finite_or_none(v):
    return None if v is None or not math.isfinite(v) else float(v)


def judge(log_w, run_status, extra_failures=(), extra_warnings=(), *, one_shot: bool = True) -> tuple[Verdict, dict]:
    """The verdict of a weighted sample set: weight diagnostics (ESS, and Pareto k̂ for one-shot
    importance weights), the status of the run it came from, and any extra (Reason, detail)
    pairs.  Every sampler inherits the caveats of its run: a run that did not end ok gives a
    warning.  (An SMC system corrects the model against the exact energy, and it was once exempt
    from a ``warning`` run; on an 8-mode mixture in d = 16 whose run ended ``warning`` it then
    reported log Ẑ 0.45–1.0 below the truth at 3–5 of its own standard errors, because the
    particles reach a poor model's missing mass only rarely.)  Returns (verdict, diagnostics)."""
    diag = weight_diagnostics(log_w, pareto=one_shot)
    failures, warnings = list(extra_failures) + diag["failures"], list(extra_warnings) + diag["warnings"]
    rs = Status(run_status) if not isinstance(run_status, Status) else run_status
    if rs != Status.OK:
        warnings.append((Reason.RUN_NOT_OK, f"run status {rs.value}"))
    return verdict(failures, warnings), diag


__all__ = ["SampleResult", "judge"]
