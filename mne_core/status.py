"""Status as data: what every computation of the engine ends with.

A script reads ``status`` (one of :class:`Status`) and, when it is not ``ok``, the ``reason``
(one of :class:`Reason`, with a fixed message template) and the concrete ``message``.  This
follows diffrax's ``RESULTS``: a failure is an enumerated value carried in the returned
state, never an exception raised mid-computation and never a string to be parsed.

    ok        the computation finished and its diagnostics are within their limits
    warning   it finished, but a diagnostic says the answer may be inaccurate (reasons listed)
    failed    no trustworthy answer: what was computed is kept, the estimate is withheld
    interrupted   stopped by the user (Ctrl-C, SIGTERM, a closed session); what was accepted is kept

``ready``, ``prepared`` and ``running`` are the states of an evolution before it ends.
"""
from __future__ import annotations

import dataclasses
import enum


class Status(str, enum.Enum):
    """Lifecycle and outcome of a computation (a ``str`` enum: ``Status.OK == "ok"``)."""

    READY = "ready"
    PREPARED = "prepared"
    RUNNING = "running"
    OK = "ok"
    WARNING = "warning"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:  # json.dumps and f-strings show the plain value
        return self.value

    @property
    def finished(self) -> bool:
        return self in (Status.OK, Status.WARNING, Status.FAILED, Status.INTERRUPTED)

    @property
    def succeeded(self) -> bool:
        """True for ``ok`` and ``warning``: an answer exists (maybe with caveats)."""
        return self in (Status.OK, Status.WARNING)

    @property
    def exit_code(self) -> int:
        """Command-line exit code: 0 ok, 1 warning, 3 failed, 130 interrupted (2 is bad input)."""
        return {Status.OK: 0, Status.WARNING: 1, Status.FAILED: 3, Status.INTERRUPTED: 130}.get(self, 0)


class Reason(enum.Enum):
    """Why a computation did not end ``ok``; ``value`` is the message template."""

    # evolution
    NONFINITE_STATE = "the state became non-finite (NaN/inf)"
    STEP_COLLAPSE = "the step size collapsed: the evolution is becoming singular"
    MAX_STEPS = "reached max_steps before T"
    NONFINITE_VELOCITY = "the parameter velocity is not finite"
    ERROR_GROWTH = "the energy error grew far above its starting value"
    ENERGY_ERROR_LARGE = "the model energy is far from the exact evolved energy"
    FIT_INACCURATE = "the initial fit does not represent the target energy"
    ENERGY_DIVERGED = "the model energy diverged from the exact evolution (energy error blew up)"
    RESIDUAL_GROWTH = "the equation residual grew far above its starting value"
    REG_ESCALATED = "the regularization was raised to survive a singular evolution"
    T_TOO_SMALL = "at T the model energy is not yet close to |x|²/2 (T too small, or the model inaccurate)"
    INTERRUPTED = "interrupted by the user"
    # sampling
    LOW_ESS = "the effective sample size is small"
    WEIGHTS_COLLAPSED = "the importance weights collapsed onto a few samples"
    PARETO_K = "the Pareto k̂ of the importance weights is too large for the error bar to hold"
    RUN_NOT_OK = "the run being sampled did not end ok"
    FLOW_FAILED = "the reverse-flow solve did not finish"
    SMC_DEGENERATE = "the SMC particle system degenerated"
    NONFINITE_WEIGHTS = "some importance weights are not finite"
    ESTIMATES_DISAGREE = "log Ẑ disagrees with an independent estimate"

    @property
    def message(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The outcome of a finished computation: a status and the reasons behind it.

    ``reasons`` is a tuple of (Reason, detail) pairs; ``message`` joins them for humans.
    """

    status: Status
    reasons: tuple = ()

    @property
    def message(self) -> str:
        return "; ".join(f"{r.message} ({detail})" if detail else r.message for r, detail in self.reasons)

    def to_dict(self) -> dict:
        return {"status": self.status.value, "status_message": self.message,
                "reasons": [{"reason": r.name.lower(), "detail": detail} for r, detail in self.reasons]}


def verdict(failures=(), warnings=()) -> Verdict:
    """``failed`` if any failure, else ``warning`` if any warning, else ``ok``; each item a
    (Reason, detail) pair."""
    failures, warnings = tuple(failures), tuple(warnings)
    if failures:
        return Verdict(Status.FAILED, failures + warnings)
    if warnings:
        return Verdict(Status.WARNING, warnings)
    return Verdict(Status.OK, ())


__all__ = ["Status", "Reason", "Verdict", "verdict"]
