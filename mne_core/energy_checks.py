"""Early checks that an energy U_0 defines a normalizable density e^{−U_0}, before any fit.

A non-normalizable or pathological energy does not make the evolution fail loudly: ``x0`` in
1-D reported a finite log Z, ``exp(exp(exp(x0)))`` ended with every sample at one point, and
``0*x0`` crawled without a word.  :func:`energy_problems` probes U_0 cheaply (a few thousand
evaluations, one compilation) and lists what is wrong:

* **not finite**: NaN or −∞ anywhere on the probes, or +∞ on most points of N(0, I);
* **not growing**: along some ray x = r·u the energy does not rise by at least
  :data:`MIN_TAIL_RISE` between |x| = R1 and |x| = R2 — it decreases without bound (``x0``,
  ``−x0²``), or is flat (``0*x0``, a coordinate that does not appear): ∫ e^{−U} diverges.
  Rays are the ±coordinate axes and random directions; a ray whose far energy is not finite
  (overflow, e.g. the funnel's e^{−x0}·x_i² at 0·∞) is not judged;
* **exploding**: ∇U_0 on N(0, I) beyond :data:`MAX_GRADIENT` (``exp(exp(exp(x0)))``): no
  integrator step can follow it.

The probes are deterministic (a fixed key); results are cached per target object, so the
command line and :meth:`mne_core.Evolution.prepare` pay for them once.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

#: Radii of the ray probe: the energy must rise between them (well beyond any target's scale).
R1, R2 = 1e4, 1e6
#: The least rise of U along every ray from |x| = R1 to R2 (nats) for e^{−U} to count as decaying.
MIN_TAIL_RISE = 1.0
#: Gradient norm on N(0, I) above which the energy counts as exploding (90 % quantile).
MAX_GRADIENT = 1e8
#: Points of the Gaussian probes per scale, and random ray directions.
N_PROBE = 1024
N_RAYS = 64
SCALES = (1.0, 3.0, 10.0)


class EnergyCheckError(ValueError):
    """The energy is not normalizable or is pathological; the message says how."""


def _probe_function(energy):
    """(U, ∇U) over a batch: one compilation for all probes."""
    return jax.jit(jax.vmap(jax.value_and_grad(energy)))


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _direction_name(u: np.ndarray) -> str:
    nz = np.flatnonzero(np.abs(u) > 1e-12)
    if nz.size == 1:
        return f"{'+' if u[nz[0]] > 0 else '−'}x{nz[0]}"
    return "a random direction"


@functools.lru_cache(maxsize=64)
def _cached_problems(target) -> tuple[str, ...]:
    return tuple(_problems(target.energy, target.dim))


def energy_problems(target, energy=None, dim: int | None = None) -> list[str]:
    """The problems of ``target``'s energy (an empty list when it looks normalizable).

    ``target`` is a :class:`mne_core.Target` (cached per object), or None with ``energy``
    (a function of x of shape (d,)) and ``dim``.
    """
    if target is not None:
        return list(_cached_problems(target))
    return _problems(energy, int(dim))


def check_energy(target, error=EnergyCheckError) -> None:
    """Raise ``error`` (default :class:`EnergyCheckError`) with a one-line message if the
    target's energy is not normalizable or is pathological."""
    problems = energy_problems(target)
    if problems:
        name = getattr(target, "name", "energy")
        raise error(f"the energy of target {name!r} cannot be sampled: " + "; ".join(problems))


def _problems(energy, d: int) -> list[str]:
    value_and_grad = _probe_function(energy)
    rng = np.random.default_rng(12345)
    problems: list[str] = []
    # Gaussian probes of growing scale.
    z = rng.standard_normal((len(SCALES), N_PROBE, d))
    pts = np.concatenate([s * z[i] for i, s in enumerate(SCALES)])
    # Rays: ±axes and random unit directions, at R1 and R2.
    axes = np.concatenate([np.eye(d), -np.eye(d)])
    rand = rng.standard_normal((N_RAYS, d))
    rand /= np.linalg.norm(rand, axis=1, keepdims=True)
    dirs = np.concatenate([axes, rand])
    ray_pts = np.concatenate([R1 * dirs, R2 * dirs])
    with np.errstate(all="ignore"):
        u_all, g_all = value_and_grad(jnp.asarray(np.concatenate([pts, ray_pts])))
        u_all, g1 = np.asarray(u_all, dtype=float), np.asarray(g_all[:N_PROBE], dtype=float)
        u_gauss, u_ray = u_all[: pts.shape[0]], u_all[pts.shape[0]:]
        u1 = u_gauss[:N_PROBE]
        bad = np.isnan(u_all) | (u_all == -np.inf)
        bad[pts.shape[0]:] = False  # far rays are judged below (overflow there is not an error)
        if bad.any():
            problems.append(f"the energy is NaN or −∞ at {int(bad.sum())} of {pts.shape[0]} probe points "
                            f"(e.g. x = {np.array2string(np.concatenate([pts, ray_pts])[np.argmax(bad)], precision=3, threshold=6)})")
        inf1 = np.isposinf(u1).mean()
        if inf1 > 0.5:
            problems.append(f"the energy is +∞ at {100 * inf1:.0f} % of points from N(0, I): "
                            "e^{−U} has (almost) no mass there")
        n_dirs = dirs.shape[0]
        near, far = u_ray[:n_dirs], u_ray[n_dirs:]
        judged = np.isfinite(near) & np.isfinite(far)
        rise = np.where(judged, far - near, np.inf)
        worst = int(np.argmin(rise))
        if judged.any() and rise[worst] < MIN_TAIL_RISE:
            way = "decreases without bound" if rise[worst] < -MIN_TAIL_RISE else "does not grow"
            problems.append(f"the energy {way} along {_direction_name(dirs[worst])} (U = {_fmt(near[worst])} at "
                            f"|x| = {R1:g}, {_fmt(far[worst])} at |x| = {R2:g}), so e^{{−U}} is not normalizable")
        # Gradients where the energy is finite near the origin.
        fin = np.isfinite(u1)
        if fin.any():
            gn = np.linalg.norm(g1[fin], axis=1)
            gn = np.where(np.isfinite(gn), gn, np.inf)
            q = float(np.quantile(gn, 0.9))
            if q > MAX_GRADIENT:
                problems.append(f"the energy explodes: |∇U| reaches {_fmt(q)} on 10 % of points from N(0, I) "
                                f"(limit {MAX_GRADIENT:.0e}); no integrator step can follow it")
    return problems


__all__ = ["EnergyCheckError", "check_energy", "energy_problems", "MIN_TAIL_RISE", "MAX_GRADIENT", "R1", "R2"]
