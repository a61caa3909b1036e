"""Structured empirical NTK of the energy MLP: Grams without the N×p Jacobian.

The model energy is U_θ(x) = ½β|x|² + NN_θ(x) with NN_θ an MLP (:class:`~mne_core.network.EnergyMLP`)

    h_0 = x,   z_l = h_{l-1} W_l + b_l,   h_l = σ(z_l)  (l = 1..L),   NN = z_{L+1} = h_L W_out + b_out.

For one point, ∂U/∂W_l = a_l δ_lᵀ and ∂U/∂b_l = δ_l with the layer input a_l = h_{l-1} and the
back-propagated signal δ_l = ∂U/∂z_l (δ_{L+1} = 1).  Hence the empirical NTK K = J Jᵀ (N×N) is

    K = Σ_{l=1}^{L+1} (A_l A_lᵀ + 1) ⊙ (D_l D_lᵀ),     A_l = (a_l(x_i))_i  (N×a),  D_l = (δ_l(x_i))_i  (N×m)

(the fast finite-width NTK of Novak, Sohl-Dickstein & Schoenholz 2022), which costs
O(N² Σ_l (a_l + m_l)) instead of O(N² p) for J Jᵀ, and never materializes J.  Everything the
solvers need follows from K and two matrix-free products:

* sketched Gram   G = Ωᵀ K Ω              (= ZᵀZ with Z = JᵀΩ; a gather for a sparse Ω),
* parameter step  θ̇ = Jᵀ w                (one reverse pass over the batch, w ∈ R^N),
* residual        J θ̇ − f = K w − f        (O(N²)).

So ``sketch``: w = Ω (G + λI_n)^{-1} Ωᵀ f, θ̇ = Jᵀ w, and ``full``: w = (K + λI_N)^{-1} f, θ̇ = Jᵀ w —
the same vectors as the J-based solvers of :mod:`mne_core.solvers` (tested to 1e-10 in float64).

Cost rule (:func:`choose_gram`).  Both paths pay O(Np) per right-hand side, but not alike: the
J-based one materializes J by a per-point vmap(grad), measured at ≈ 30 multiply-add equivalents
per entry (``JACOBIAN_ENTRY_COST``: 1.08 s for J and Z at N = 2048, p = 51 297 on two CPU cores,
where the whole structured right-hand side took 0.33 s; benchmarks/results/engine_scaling*.md),
while the structured one needs only the per-point layer factors and one Jᵀw product.  So, in
multiply-adds,

    J-based   sketch: p n² + 30 N p  (ZᵀZ, J)      full: p N² + 30 N p  (J Jᵀ, J)
    structured        N² c                              N² c,     c = Σ_l (a_l + m_l + 2) + n_extra

with c the per-entry cost of K (a_l + m_l for the two small Grams, 2 for the +1 and the Hadamard
product and sum) and n_extra = 2 for the Ωᵀ K Ω gather and K w.  Structured is chosen when its
term is smaller: always for ``full`` (c ≪ p), and for ``sketch`` while N ≲ n √(p / c), e.g.
N ≲ 1000 at the default (p, n) = (4417, 256) with width 64, depth 2.  Beyond that (N ≫ n) the
J-based sketch, linear in N, wins.  ``galerkin`` and ``subspace`` are always J-based (they need
JᵀJ or an explicit basis of range(Z)).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .network import ACTIVATIONS, FlatEnergy
from .solvers import Sketch, SolveInfo, factor_dtype, jacobian, parameter_velocity, psd_solve

GRAM_METHODS = ("auto", "jacobian", "structured")
#: What ``method="default"`` (the evolution's right-hand side) means, read when a function is
#: traced: ``auto`` applies the cost rule (module doc; benchmarks/results/engine.md has the
#: measurement behind it).  Set it before building a new evolution to force a path.
DEFAULT_GRAM = "auto"
STRUCTURED_MODES = ("sketch", "full")
#: Multiply-add equivalents per entry of J = ∂U/∂θ built by vmap(grad) (module doc, cost rule).
JACOBIAN_ENTRY_COST = 30


def layer_sizes(net: FlatEnergy) -> list[tuple[int, int]]:
    """(a_l, m_l) = (fan-in, fan-out) of every affine layer, output layer last."""
    with jax.ensure_compile_time_eval():   # static shapes, also when called under a trace
        shapes = [np.shape(w) for w in net.layer_weights(np.zeros(net.num_params)).values()]
    return [(int(a), int(m)) for a, m in shapes]


def _layers(net: FlatEnergy, theta):
    model = net.model(theta)
    act = ACTIVATIONS[model.activation]
    Ws = [(lay.kernel[...], lay.bias[...]) for lay in model.hidden] + [(model.out.kernel[...], model.out.bias[...])]
    return act, Ws


def layer_factors(net: FlatEnergy, theta, x):
    """Per-point layer inputs and back-propagated signals of the network part NN_θ.

    Returns (A, D), lists over the L+1 affine layers: A[l] (N, a_l) the inputs a_l(x_i) = h_{l-1},
    D[l] (N, m_l) the signals δ_l(x_i) = ∂U/∂z_l, from one forward and one reverse pass per point
    (δ_l is the gradient of U with respect to an additive perturbation of z_l at zero), vmapped.

    For a block network (``net.blocks``) every hidden layer is B stacked layers, so A[l] is
    (N, B, a_l) and D[l] (N, B, m_l); its output layer, whose bias is shared, is one layer on the
    concatenated block features: A (N, 1, B·width), D (N, 1, 1) of ones.
    """
    if net.blocks is not None:
        return _block_layer_factors(net, theta, x)
    act, Ws = _layers(net, theta)
    n_layers = len(Ws)

    def one(xi):
        def f(eps):
            h, ins = xi, []
            for i, (W, b) in enumerate(Ws):
                ins.append(h)
                z = h @ W + b + eps[i]
                h = act(z) if i < n_layers - 1 else z
            return h[0], ins
        eps0 = [jnp.zeros((W.shape[1],), xi.dtype) for W, _ in Ws]
        D, ins = jax.grad(f, has_aux=True)(eps0)
        return ins, D

    return jax.vmap(one)(x)


def _block_layer_factors(net: FlatEnergy, theta, x):
    model = net.model(theta)
    act = ACTIVATIONS[model.activation]
    Ws = [(lay.kernel[...], lay.bias[...]) for lay in model.hidden]
    index, valid = np.asarray(model.index), np.asarray(model.valid)
    w_out = model.out.kernel[...][..., 0]                       # (B, width)

    def one(xi):
        def f(eps):
            h, ins = xi[index] * valid.astype(xi.dtype), []
            for (W, b), e in zip(Ws, eps):
                ins.append(h)
                h = act(jnp.einsum("bi,bij->bj", h, W) + b + e)
            return jnp.sum(h * w_out), (ins, h)
        eps0 = [jnp.zeros(b.shape, xi.dtype) for _, b in Ws]
        D, (ins, h_last) = jax.grad(f, has_aux=True)(eps0)
        return ins + [h_last.reshape(1, -1)], list(D) + [jnp.ones((1, 1), xi.dtype)]

    return jax.vmap(one)(x)


def structured_ntk(A, D) -> jax.Array:
    """K = Σ_l (A_l A_lᵀ + 1) ⊙ (D_l D_lᵀ)  (N×N), equal to J Jᵀ; accumulated in
    :func:`~mne_core.solvers.factor_dtype` (float64 also for float32 factors when x64 is on).
    Factors with a block axis, (N, B, ·), sum the same over the B stacked layers (a scan, so
    that only one N×N accumulator is held)."""
    K = 0.0
    ft = factor_dtype(A[0].dtype)
    for a, d in zip(A, D):
        a, d = a.astype(ft), d.astype(ft)
        if a.ndim == 2:
            K = K + (a @ a.T + 1.0) * (d @ d.T)
            continue

        def add(k, ad):
            ab, db = ad
            return k + (ab @ ab.T + 1.0) * (db @ db.T), None
        K, _ = jax.lax.scan(add, K + jnp.zeros((a.shape[0],) * 2, ft), (jnp.swapaxes(a, 0, 1), jnp.swapaxes(d, 0, 1)))
    return K


def ntk(net: FlatEnergy, theta, x) -> jax.Array:
    """The empirical NTK K = J Jᵀ at the points x, from :func:`layer_factors` (no Jacobian; for the
    rotation-aware network, whose layers are not one chain, from J)."""
    if net.radial is not None:
        J = jacobian(net.energy, theta, x)
        return J @ J.T
    return structured_ntk(*layer_factors(net, theta, x))


def ntk_spectrum(net: FlatEnergy, theta, x) -> jax.Array:
    """Eigenvalues of the full empirical NTK K = J Jᵀ (N×N) at the points x, descending: the
    spectrum the sketch compresses to n directions, G = Ωᵀ K Ω (compare with the n eigenvalues
    of G in ``SolveInfo.gram_eigenvalues``).  O(N² c + N³): for displays and diagnostics, not
    for every step."""
    return jnp.linalg.eigvalsh(ntk(net, theta, x))[::-1]


def sketch_gram(sketch: Sketch, K) -> jax.Array:
    """G = Ωᵀ K Ω  (n×n).  For a sparse Ω: G_jk = Σ_{r,s} s_jr s_ks K[i_jr, i_ks] (a gather, O(N²))."""
    if sketch.rows.shape[0]:
        Kg = K[sketch.rows][:, :, sketch.rows]          # (n, r, n, r)
        return jnp.einsum("jr,jrks,ks->jk", sketch.row_signs, Kg, sketch.row_signs)
    return sketch.dense.T @ K @ sketch.dense


def jt_product(net: FlatEnergy, theta, x, w) -> jax.Array:
    """Jᵀ w = Σ_i w_i ∂U_θ(x_i)/∂θ  (p,), one reverse pass of the batched energy."""
    _, vjp = jax.vjp(lambda th: net.energies(th, x), theta)
    return vjp(w)[0]


def _residual_from(Kw, f):
    return jnp.linalg.norm(Kw - f) / (jnp.linalg.norm(f) + jnp.finfo(f.dtype).tiny)


def solve_structured(mode: str, net: FlatEnergy, theta, x, f, reg_rel, sketch: Sketch | None = None,
                     spectrum: bool = False):
    """θ̇ of ``mode`` (``sketch`` or ``full``) from the structured NTK; returns (θ̇, SolveInfo)
    with the same λ, spectrum and residual ‖Jθ̇ − f‖/‖f‖ as the J-based solver."""
    K = ntk(net, theta, x)
    fk = f.astype(K.dtype)
    if mode == "sketch":
        G = sketch_gram(sketch, K)
        om = sketch.dense.astype(K.dtype)
        z, lam, eig = psd_solve(G, om.T @ fk, reg_rel, spectrum)
        w = om @ z
    elif mode == "full":
        w, lam, eig = psd_solve(K, fk, reg_rel, spectrum)
    else:
        raise ValueError(f"structured Gram supports {STRUCTURED_MODES}, not {mode!r}")
    info = SolveInfo(lam.astype(f.dtype), eig.astype(f.dtype), _residual_from(K @ w, fk).astype(f.dtype))
    return jt_product(net, theta, x, w.astype(f.dtype)), info


def gram_costs(mode: str, net: FlatEnergy, n_points: int, rank: int) -> tuple[float, float]:
    """(J-based, structured) multiply-adds of the Gram step of ``mode`` (module doc: cost rule)."""
    N, p = n_points, net.num_params
    if net.blocks is not None:       # B stacked hidden layers, one output layer on B·width features
        with jax.ensure_compile_time_eval():   # static shapes, also when called under a trace
            shapes = [np.shape(w) for w in net.layer_weights(np.zeros(p)).values()]
        c = sum(B * (a + m + 2) for B, a, m in shapes[:-1]) + shapes[-1][0] * shapes[-1][1] + 3 + 2
    else:
        c = sum(a + m + 2 for a, m in layer_sizes(net)) + 2
    j = JACOBIAN_ENTRY_COST * N * p
    if mode == "sketch":
        n = min(rank, N)
        return float(p * n * n + j), float(N * N * c)
    if mode == "full":
        return float(p * N * N + j), float(N * N * c)
    return 0.0, float("inf")


def choose_gram(mode: str, net: FlatEnergy, n_points: int, rank: int, method: str = "auto") -> str:
    """``jacobian`` or ``structured`` for this (mode, shapes): ``method`` if forced, else (``auto``;
    ``default`` means :data:`DEFAULT_GRAM`) the cheaper by :func:`gram_costs`.  Modes other than sketch/full are always ``jacobian``."""
    if method == "default":
        method = DEFAULT_GRAM
    if method not in GRAM_METHODS:
        raise ValueError(f"unknown Gram method {method!r}; choose one of {GRAM_METHODS}")
    if mode not in STRUCTURED_MODES or net.radial is not None:   # the radial network: J only
        return "jacobian"
    if method != "auto":
        return method
    cj, cs = gram_costs(mode, net, n_points, rank)
    return "structured" if cs < cj else "jacobian"


def velocity(mode: str, net: FlatEnergy, theta, x, f, reg_rel, sketch: Sketch | None = None,
             spectrum: bool = False, method: str = "default"):
    """θ̇ = the minimal-norm parameter velocity of ``mode`` at (θ, X) for the right-hand side f,
    by the J-based solver or the structured NTK as :func:`choose_gram` decides (static shapes)."""
    rank = sketch.rank if sketch is not None else 0
    if choose_gram(mode, net, x.shape[0], rank, method) == "structured":
        return solve_structured(mode, net, theta, x, f, reg_rel, sketch, spectrum)
    J = jacobian(net.energy, theta, x)
    return parameter_velocity(mode, J, f, reg_rel, sketch, spectrum=spectrum)


__all__ = ["GRAM_METHODS", "DEFAULT_GRAM", "STRUCTURED_MODES", "JACOBIAN_ENTRY_COST", "layer_sizes", "layer_factors", "structured_ntk", "ntk", "ntk_spectrum", "sketch_gram", "jt_product",
           "solve_structured", "gram_costs", "choose_gram", "velocity"]
