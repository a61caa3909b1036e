"""Collocation points split across devices (``jax.sharding`` + ``shard_map``) for the sketch solve.

With the N points split into blocks X_d (N_d points on device d) and the sketch Ω split by the
same rows (Ω_d, N_d×n), every N-sized quantity stays local and only n- and p×n-sized sums
cross devices:

    Z = Jᵀ Ω = Σ_d J_dᵀ Ω_d        (p×n, one all-reduce)       b = Ωᵀ f = Σ_d Ω_dᵀ f_d   (n)
    G = ZᵀZ,  z = (G + λI_n)^{-1} b,  θ̇ = Z z                     (replicated, every device)
    ‖Jθ̇ − f‖² = Σ_d ‖J_d θ̇ − f_d‖²                               (a scalar all-reduce)
    Ẋ_d = v(θ, X_d)                                               (local, stays sharded)

so the result equals the single-device ``sketch`` solve up to the order of the sums.  For a
sparse (CountSketch) Ω each local row i holds one ±1 at column c_i, and J_dᵀ Ω_d is a signed
segment sum of the rows of J_d (O(N_d p)); a Gaussian Ω uses the dense product.

Samples: the reverse flow (:mod:`mne_core.flow`) is one batched solve whose only coupling across
samples is the step-size controller's error norm over the batch.  :func:`shard_samples` places
x_T and log q_T with their rows split across the mesh; XLA then partitions the jitted solve by
rows (each device integrates its samples, the norm is one all-reduce per step) and the result
equals the single-device flow up to the order of that sum.

Several GPUs of one host: ``point_mesh()`` uses all of ``jax.devices()``.  Several hosts: call
``jax.distributed.initialize()`` on every host first; ``jax.devices()`` then lists the devices of
all hosts and the same mesh spans them (N must be divisible by the device count).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .network import FlatEnergy
from .operators import local_derivatives
from .solvers import Sketch, SolveInfo, jacobian, psd_solve

AXIS = "points"


def point_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all of ``jax.devices()``) with axis ``points``."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def shard_points(mesh: Mesh, x):
    """Place an (N, ...) array with its rows split across the mesh (N divisible by its size)."""
    return jax.device_put(x, NamedSharding(mesh, P(AXIS)))


def shard_samples(mesh: Mesh, x_T, log_q_T):
    """(x_T, log q_T) with their sample rows split across the mesh (M divisible by its size),
    ready for :func:`mne_core.flow.reverse_flow` / :func:`mne_core.flow.run_flow`."""
    return shard_points(mesh, jnp.asarray(x_T)), shard_points(mesh, jnp.asarray(log_q_T))


def replicate(mesh: Mesh, a):
    return jax.device_put(a, NamedSharding(mesh, P()))


def sharded_sketch_rhs(net: FlatEnergy, operator, mesh: Mesh, sparse: bool = True) -> Callable:
    """rhs(t, θ, X, Ω, λ_rel) -> (θ̇, Ẋ, SolveInfo) of the ``sketch`` mode with X and Ω (dense,
    N×n) split by rows across ``mesh``; ``sparse`` (static) says Ω has one nonzero per row
    (CountSketch) so that J_dᵀΩ_d is a segment sum.  θ̇ and the SolveInfo come back replicated,
    Ẋ sharded like X.  No spectrum (diagnostics use the single-device path)."""
    def local(t, theta, x, omega, reg):
        der = local_derivatives(lambda y: net.energy(theta, y), x, operator.mask, colours=net.colours)
        f = operator.rhs(x, der, t)
        J = jacobian(net.energy, theta, x)                                  # (N_d, p)
        if sparse:
            col = jnp.argmax(jnp.abs(omega), axis=1)
            sgn = jnp.take_along_axis(omega, col[:, None], axis=1)[:, 0]
            Zt = jax.ops.segment_sum(sgn[:, None] * J, col, num_segments=omega.shape[1])
            Z = jax.lax.psum(Zt.T, AXIS)                                     # (p, n)
        else:
            Z = jax.lax.psum(J.T @ omega, AXIS)
        b = jax.lax.psum(omega.T @ f, AXIS)
        z, lam, eig = psd_solve(Z.T @ Z, b, reg, False)
        td = Z @ z
        r2 = jax.lax.psum(jnp.sum((J @ td - f) ** 2), AXIS)
        f2 = jax.lax.psum(jnp.sum(f * f), AXIS)
        res = jnp.sqrt(r2) / (jnp.sqrt(f2) + jnp.finfo(f.dtype).tiny)
        return td, operator.point_velocity(x, der, t), SolveInfo(lam, eig, res)

    return jax.shard_map(local, mesh=mesh,
                         in_specs=(P(), P(), P(AXIS), P(AXIS), P()),
                         out_specs=(P(), P(AXIS), SolveInfo(P(), P(), P())),
                         check_vma=False)


def sharded_vector_field(net: FlatEnergy, operator, mesh: Mesh, sparse: bool = True) -> Callable:
    """vf(t, (θ, X), (sketch, reg_rel)) -> (θ̇, Ẋ) like :func:`mne_core.evolution.mne_vector_field`
    for ``sketch``, with the points split across ``mesh`` (usable with :class:`~mne_core.integrate.Stepper`)."""
    rhs = sharded_sketch_rhs(net, operator, mesh, sparse)

    def vf(t, y, args):
        sketch, reg = args
        theta, x = y
        td, xd, _ = rhs(t, theta, x, sketch.dense, reg)
        return td, xd
    return vf


def is_sparse(sketch: Sketch) -> bool:
    return bool(sketch.rows.shape[0])


__all__ = ["AXIS", "point_mesh", "shard_points", "shard_samples", "replicate", "sharded_sketch_rhs", "sharded_vector_field",
           "is_sparse"]
