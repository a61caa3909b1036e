"""Parameter-velocity solvers: the minimal θ̇ with J θ̇ ≈ f.

All modes share one Jacobian J = ∂U_θ(X)/∂θ ∈ R^{N×p} (rows: collocation points) and the
right-hand side f ∈ R^N.  Regularization is relative to the scale of the Gram matrix G
that is factorized: λ = λ_rel · tr(G) / dim(G).

* ``full``     θ̇ = Jᵀ (K + λI_N)^{-1} f,                  K = J Jᵀ (empirical NTK, N×N)
* ``sketch``   θ̇ = Z (G + λI_n)^{-1} Ωᵀ f,   Z = JᵀΩ,   G = ZᵀZ = ΩᵀKΩ (n×n); Ω ∈ R^{N×n}
               is a fixed random sketch (:class:`Sketch`), so θ̇ is a smooth function of
               the state.  Cost O(Np) (sparse Ω) + O(pn²) + O(n³).
* ``galerkin`` (JᵀJ + λI_p) θ̇ = Jᵀ f   (Neural Galerkin; p×p; λ from tr(K)/N so that the
               vector equals ``full``'s — the cost differs, O(p²N + p³) vs O(pN² + N³))
* ``subspace`` θ̇ ∈ range(Z): with Q = orth(Z) (p×n) and A = JQ (N×n),
               θ̇ = Q (AᵀA + λI_n)^{-1} Aᵀ f  (least squares over all N residuals).
               Not in the paper; exposed for comparison.

Every solver returns ``(theta_dot, SolveInfo)``; ``SolveInfo.gram_eigenvalues`` holds the
spectrum of the Gram it solved with when ``spectrum=True`` (an extra eigendecomposition,
so the integrator's right-hand side leaves it off and diagnostics switch it on).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .config import SOLVERS as SOLVER_MODES  # one list of solver modes


class SolveInfo(NamedTuple):
    reg: jax.Array               # absolute λ used
    gram_eigenvalues: jax.Array  # descending; zeros(0) when spectrum=False
    residual: jax.Array          # ‖J θ̇ − f‖ / ‖f‖
    rhs_rms: Any = None          # ‖f‖ / √N (filled in by mne_core.evolution.mne_rhs)


def jacobian(energy: Callable, theta: jax.Array, x: jax.Array) -> jax.Array:
    """J_ij = ∂U_θ(x_i)/∂θ_j  (N×p), one reverse pass per point, batched with vmap."""
    return jax.vmap(jax.grad(energy), in_axes=(None, 0))(theta, x)


SKETCH_KINDS = ("sparse", "gaussian")


class Sketch(NamedTuple):
    """A fixed random sketch Ω ∈ R^{N×n}, drawn once per trajectory.

    ``sparse`` (default): a CountSketch-style sign embedding — row i of Ω has a single
    entry ±1, columns balanced (each column holds ⌊N/n⌋ or ⌈N/n⌉ rows).  Z = JᵀΩ is then a
    signed sum of gathered rows of J, O(Np) instead of the dense O(Npn):
    Zᵀ[j] = Σ_r s_{jr} J[i_{jr}]  with ``rows`` = (i_{jr}) and ``row_signs`` = (s_{jr}) (n×r,
    padded with sign 0).
    ``gaussian``: dense Ω with N(0, 1/n) entries.
    ``dense`` always holds Ω itself (N×n), used for Ωᵀf and in tests.
    """

    dense: jax.Array      # (N, n)
    rows: jax.Array       # (n, r) int row indices per column (sparse kind), or (0, 0)
    row_signs: jax.Array  # (n, r) ±1 / 0 padding (sparse kind), or (0, 0)

    @property
    def rank(self) -> int:
        return self.dense.shape[1]

    def sketch_jacobian(self, J: jax.Array) -> jax.Array:
        """Z = JᵀΩ  (p×n)."""
        if self.rows.shape[0]:
            return jnp.einsum("nr,nrp->pn", self.row_signs, J[self.rows])
        return J.T @ self.dense


def make_sketch(key: jax.Array, n_points: int, rank: int, kind: str = "sparse",
                dtype=jnp.float64) -> Sketch:
    """Draw the fixed sketch Ω ∈ R^{N×n} (n clipped to N) of the given ``kind``."""
    rank = int(min(rank, n_points))
    if kind == "gaussian":
        dense = jax.random.normal(key, (n_points, rank), dtype) / jnp.sqrt(jnp.asarray(rank, dtype))
        return Sketch(dense, jnp.zeros((0, 0), jnp.int32), jnp.zeros((0, 0), dtype))
    if kind != "sparse":
        raise ValueError(f"unknown sketch kind {kind!r}; choose one of {SKETCH_KINDS}")
    kb, ks = jax.random.split(key)
    perm = np.asarray(jax.random.permutation(kb, n_points))
    signs = np.asarray(jax.random.rademacher(ks, (n_points,))).astype(np.float64)
    r = -(-n_points // rank)
    rows = np.zeros((rank, r), np.int32)
    row_signs = np.zeros((rank, r))
    dense = np.zeros((n_points, rank))
    for pos, i in enumerate(perm):          # row i goes to column pos % n, slot pos // n
        j, k = pos % rank, pos // rank
        rows[j, k], row_signs[j, k], dense[i, j] = i, signs[i], signs[i]
    return Sketch(jnp.asarray(dense, dtype), jnp.asarray(rows), jnp.asarray(row_signs, dtype))


def factor_dtype(dtype):
    """The dtype Gram factorizations run in: float64 whenever JAX has x64 switched on (a
    float32 run then forms and factorizes its n×n or N×N Gram in float64: λ_rel = 1e-6 puts
    κ(G + λI) near 1e6, beyond float32's 1e-7 resolution), else ``dtype``."""
    return jnp.float64 if jax.config.jax_enable_x64 else dtype


def psd_solve(G: jax.Array, b: jax.Array, reg_rel, spectrum: bool):
    """Solve (G + λI) z = b for symmetric PSD G, λ = reg_rel·tr(G)/dim(G) (Cholesky), in
    :func:`factor_dtype`; z, λ and the spectrum come back in b's dtype."""
    out = b.dtype
    ft = factor_dtype(out)
    G, b = G.astype(ft), b.astype(ft)
    m = G.shape[0]
    lam = jnp.asarray(reg_rel, ft) * jnp.trace(G) / m + jnp.finfo(out).tiny
    A = G + lam * jnp.eye(m, dtype=ft)
    cho = jax.scipy.linalg.cho_factor(A, lower=True)
    z = jax.scipy.linalg.cho_solve(cho, b)
    eig = jnp.linalg.eigvalsh(G)[::-1] if spectrum else jnp.zeros((0,), ft)
    return z.astype(out), lam.astype(out), eig.astype(out)


def _residual(J, theta_dot, f):
    r = J @ theta_dot - f
    return jnp.linalg.norm(r) / (jnp.linalg.norm(f) + jnp.finfo(f.dtype).tiny)


def solve_full(J, f, reg_rel, spectrum=False):
    """θ̇ = Jᵀ (JJᵀ + λI_N)^{-1} f."""
    K = J @ J.T
    z, lam, eig = psd_solve(K, f, reg_rel, spectrum)
    td = J.T @ z
    return td, SolveInfo(lam, eig, _residual(J, td, f))


def solve_sketch(J, f, reg_rel, sketch: Sketch, spectrum=False):
    """θ̇ = Z (ZᵀZ + λI_n)^{-1} Ωᵀ f with Z = JᵀΩ."""
    Z = sketch.sketch_jacobian(J)
    G = Z.T @ Z
    z, lam, eig = psd_solve(G, sketch.dense.T @ f, reg_rel, spectrum)
    td = Z @ z
    return td, SolveInfo(lam, eig, _residual(J, td, f))


def solve_galerkin(J, f, reg_rel, spectrum=False):
    """(JᵀJ + λI_p) θ̇ = Jᵀ f with λ = reg_rel·tr(JJᵀ)/N (equal to ``full`` at equal reg)."""
    N, p = J.shape
    M = J.T @ J
    lam = reg_rel * jnp.trace(M) / N + jnp.finfo(J.dtype).tiny
    cho = jax.scipy.linalg.cho_factor(M + lam * jnp.eye(p, dtype=J.dtype), lower=True)
    td = jax.scipy.linalg.cho_solve(cho, J.T @ f)
    eig = jnp.linalg.eigvalsh(J @ J.T)[::-1] if spectrum else jnp.zeros((0,), J.dtype)
    return td, SolveInfo(lam, eig, _residual(J, td, f))


def solve_subspace(J, f, reg_rel, sketch: Sketch, spectrum=False):
    """θ̇ = Q (AᵀA + λI_n)^{-1} Aᵀ f,  Q = orth(JᵀΩ),  A = JQ."""
    Q, _ = jnp.linalg.qr(sketch.sketch_jacobian(J))
    A = J @ Q
    z, lam, eig = psd_solve(A.T @ A, A.T @ f, reg_rel, spectrum)
    td = Q @ z
    return td, SolveInfo(lam, eig, _residual(J, td, f))


def parameter_velocity(mode: str, J, f, reg_rel, sketch: Sketch | None = None,
                       spectrum: bool = False):
    """Dispatch to the solver ``mode`` (static).  Returns (θ̇, SolveInfo)."""
    if mode == "full":
        return solve_full(J, f, reg_rel, spectrum)
    if mode == "sketch":
        return solve_sketch(J, f, reg_rel, sketch, spectrum)
    if mode == "galerkin":
        return solve_galerkin(J, f, reg_rel, spectrum)
    if mode == "subspace":
        return solve_subspace(J, f, reg_rel, sketch, spectrum)
    raise ValueError(f"unknown solver mode {mode!r}; choose one of {SOLVER_MODES}")
